#!/usr/bin/env bash
# bbolt vs a three-member etcd cluster, same run: the inventory benchmarks
# (bench/inventory: import and lookups at 100,000 machines) and the API
# benchmarks (bench/api: 64 clients, GET and POST), once on each engine
# (METALHALL_BENCH_ENGINE=bolt, then etcd), printed side by side.
#
# The etcd members are Debian's etcd-server 3.4 (apt-get install -y
# etcd-server), started by the benchmark on a private loopback block, with
# their data dirs in the temp dir beside where the bbolt file goes (the
# same disk), etcd's default timings.
#
#   bench/inventory/run.sh                        # 100,000 machines
#   MACHINES=10000 bench/inventory/run.sh         # a smaller inventory
#   ENGINES=etcd APITIME=3s bench/inventory/run.sh
#
# The raw output of each engine, headed by the date, commit, machine, load
# and command, is kept in bench/inventory/results/engines-DATE-COMMIT-ENGINE.txt
# (the API rows in the same file); the side-by-side table goes to stdout
# and to engines-DATE-COMMIT-table.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENGINES=${ENGINES:-bolt etcd}
MACHINES=${MACHINES:-100000}
APITIME=${APITIME:-3s}
command -v etcd >/dev/null || { echo "missing etcd (apt-get install -y etcd-server)" >&2; exit 2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo -dirty)
out=bench/inventory/results
mkdir -p "$out"
machine() { echo "nproc=$(nproc) $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) kernel=$(uname -r) $(go env GOVERSION)"; }
load() { echo "load: $(cat /proc/loadavg)"; }

for e in $ENGINES; do
	f=$out/engines-$stamp-$commit-$e.txt
	inv=(go test -run '^$' -bench . -benchmem -timeout 60m ./bench/inventory/)
	api=(go test -run '^$' -bench . -benchmem -benchtime "$APITIME" -timeout 30m ./bench/api/)
	{
		echo "# $(date -u) $commit $(machine) $(load)"
		echo "# METALHALL_BENCH_ENGINE=$e METALHALL_BENCH_MACHINES=$MACHINES ${inv[*]}"
		METALHALL_BENCH_ENGINE=$e METALHALL_BENCH_MACHINES=$MACHINES "${inv[@]}" 2>&1
		echo "# $(date -u) $(load)"
		echo "# METALHALL_BENCH_ENGINE=$e ${api[*]}"
		METALHALL_BENCH_ENGINE=$e "${api[@]}" 2>&1
		echo "# end $(date -u) $(load)"
	} | tee "$f" >&2
done

# Side by side: one row per benchmark, its headline number on each engine.
{
	echo "# $stamp $commit, $MACHINES machines; raw output: $out/engines-$stamp-$commit-{$(echo $ENGINES | tr ' ' ,)}.txt"
	for e in $ENGINES; do
		awk -v e="$e" '
			/^Benchmark/ {
				name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
				v = $3 " ns/op"
				for (i = 4; i < NF; i++) {
					if ($(i+1) == "ns/machine" || $(i+1) == "req/s") v = $i " " $(i+1)
				}
				print name "\t" e "\t" v
			}' "$out/engines-$stamp-$commit-$e.txt"
	done | awk -F'\t' -v engines="$ENGINES" '
		BEGIN { n = split(engines, E, " ") }
		{ if (!($1 in seen)) { seen[$1] = 1; order[++rows] = $1 } val[$1, $2] = $3 }
		END {
			printf "%-22s", "benchmark"; for (i = 1; i <= n; i++) printf " %20s", E[i]; printf "\n"
			for (r = 1; r <= rows; r++) {
				printf "%-22s", order[r]
				for (i = 1; i <= n; i++) printf " %20s", ((order[r], E[i]) in val) ? val[order[r], E[i]] : "-"
				printf "\n"
			}
		}'
} | tee "$out/engines-$stamp-$commit-table.txt"
