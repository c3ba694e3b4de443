#!/bin/bash
# PXE power-on → image-written benchmark: metalhall vs a dnsmasq + static
# HTTP + busybox baseline, interleaved in one run. Run as root. See README.md.
#   RUNS=3 bench/pxe/run.sh
# BOOTENV_MODULES=server|qemu (default qemu) and BOOTENV_COMPRESSION=gzip|zstd
# (default gzip) choose metalhall's boot environment. OLD_REF=<git ref> adds a
# metalhall-old side (that ref's agent); SIDES=metalhall,metalhall-old,baseline
# picks the sides (default: all, baseline+v included). The output, headed by
# the machine, its load and the command, is also written to
# bench/pxe/results/DATE-pxe-MODULES-COMPRESSION.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces, taps)" >&2; exit 1; }
export METALHALL_PXE_BENCH=1
export RUNS="${RUNS:-3}"
export BOOTENV_MODULES="${BOOTENV_MODULES:-qemu}" BOOTENV_COMPRESSION="${BOOTENV_COMPRESSION:-gzip}"
mkdir -p bench/pxe/results
OUT=bench/pxe/results/$(date -u +%Y-%m-%dT%H%MZ)-pxe-$BOOTENV_MODULES-$BOOTENV_COMPRESSION.txt
exec > >(tee "$OUT") 2>&1
echo "# $(date -u) $(hostname -s): $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), $(go version | cut -d' ' -f3), $(qemu-system-x86_64 --version | head -1)"
echo "# command: RUNS=$RUNS BOOTENV_MODULES=$BOOTENV_MODULES BOOTENV_COMPRESSION=$BOOTENV_COMPRESSION${OLD_REF:+ OLD_REF=$OLD_REF}${SIDES:+ SIDES=$SIDES} bench/pxe/run.sh (this checkout at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes'))"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(uptime))"
# -count=1: never a cached result. The test builds metalhall and its agent
# itself, cleans up its namespaces/processes/temp dir on success and failure.
rc=0
go test -count=1 -v -timeout 55m -run '^TestPXEBench$' ./bench/pxe/ || rc=$?
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg) ($(uptime))"
exit $rc
