#!/bin/sh
# scripts/demo.sh — what `make demo` runs after installing the Debian
# packages: builds metalhall, its agent and the demo driver, then runs the
# driver (lab/rack/cmd/demo) as root. Everything it starts lives in a
# temporary directory and a network namespace, and is removed at the end
# or on Ctrl-C. KEEP=1 keeps the rack and the service up until Ctrl-C.
#
#   sudo scripts/demo.sh [-machines 4] [-keep]
set -eu
cd "$(dirname "$0")/.."
GO=${GO:-go}
if [ "$(id -u)" != 0 ]; then
	echo "demo: needs root (network namespaces, taps, QEMU): sudo make demo" >&2
	exit 2
fi
mkdir -p bin
$GO build -o bin/metalhall ./cmd/metalhall
CGO_ENABLED=0 $GO build -trimpath -ldflags='-s -w' -o bin/metalhall-agent ./cmd/metalhall-agent
$GO build -o bin/metalhall-demo ./lab/rack/cmd/demo
exec bin/metalhall-demo -bin bin/metalhall -agent bin/metalhall-agent "$@"
