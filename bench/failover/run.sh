#!/usr/bin/env bash
# Failover time, two `metalhall serve --store etcd` instances on a
# three-member etcd cluster: kill -9 the owner of a commission job at
# wait-agent, time until the other instance resumes it, ROUNDS times
# (default 5) with --takeover-after 10s and 3s. See failover_test.go.
#
#   bench/failover/run.sh
#
# The output, headed by the date, commit, machine, load and command, is
# kept in bench/failover/results/failover-DATE-COMMIT.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v etcd >/dev/null || { echo "missing etcd (apt-get install -y etcd-server)" >&2; exit 2; }
stamp=$(date -u +%Y%m%dT%H%M%SZ)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo -dirty)
mkdir -p bench/failover/results
f=bench/failover/results/failover-$stamp-$commit.txt
cmd=(go test -run Failover -count 1 -v -timeout 30m ./bench/failover/)
{
	echo "# $(date -u) $commit nproc=$(nproc) $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) kernel=$(uname -r) $(go env GOVERSION) etcd=$(etcd --version | awk '/etcd Version/{print $3}') load: $(cat /proc/loadavg)"
	echo "# METALHALL_BENCH_FAILOVER=1 ROUNDS=${ROUNDS:-5} ${cmd[*]}"
	METALHALL_BENCH_FAILOVER=1 ROUNDS=${ROUNDS:-5} "${cmd[@]}" 2>&1
	echo "# end $(date -u) load: $(cat /proc/loadavg)"
} | tee "$f"
