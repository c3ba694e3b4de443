#!/bin/sh
# PXE power-on → image-written benchmark: metalhall vs a dnsmasq + static
# HTTP + busybox baseline, interleaved in one run. Run as root. See README.md.
#   RUNS=3 bench/pxe/run.sh
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, taps)" >&2; exit 1; }
export METALHALL_PXE_BENCH=1
export RUNS="${RUNS:-3}"
# -count=1: never a cached result. The test builds metalhall and its agent
# itself, cleans up its namespaces/processes/temp dir on success and failure.
exec go test -count=1 -v -timeout 55m -run '^TestPXEBench$' ./bench/pxe/
