#!/bin/sh
# Boot-storm bench (issue 11): N simulated machines against the real
# `metalhall serve` in a network namespace, with nginx beside it. Run as
# root from anywhere; see README.md.
#   N=1000 IMAGE_MIB=32 bench/storm/run.sh            # the full storm
#   N=50 IMAGE_MIB=4 bench/storm/run.sh               # a quick one
# Extra flags go through: bench/storm/run.sh -streams 64 -keep
set -eu
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, a veth pair)" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx missing: make bench-deps" >&2; exit 1; }
bin=$(mktemp -d /tmp/mhstorm-bin-XXXXXX)
trap 'rm -rf "$bin"' EXIT INT TERM
go build -o "$bin/storm" ./bench/storm
# The bench builds metalhall from this tree itself, cleans up its
# namespaces, processes and temp dir on success, failure and Ctrl-C, and
# writes its raw output to bench/storm/results/storm-<UTC time>-n<N>.txt.
# The simulated machines run at nice 10: in a hall each machine hashes its
# image on its own CPUs, not on the service's. The bench starts the service
# and its DHCP probe back at nice 0 (bench/storm/probe.go).
nice -n 10 "$bin/storm" -n "${N:-1000}" -image-mib "${IMAGE_MIB:-32}" "$@"
