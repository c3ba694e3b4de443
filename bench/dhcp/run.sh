#!/usr/bin/env bash
# DHCP load benchmark: metalhall netboot vs kea-dhcp4 vs dnsmasq, same run,
# same machine. perfdhcp (Debian kea-admin) runs in one network namespace,
# the server in another, joined by a veth pair; only 10.99.0.0/16 inside
# those namespaces is used. Needs root and:
#   apt-get install -y kea-admin kea-dhcp4-server dnsmasq
# Usage: bench/dhcp/run.sh [RATES...]   (default: 1000 4000 8000)
# Env: SECONDS_PER_RUN (10), CLIENTS (20000), SERVERS ("metalhall kea dnsmasq";
#      also "metalhall-inv": the service's inventory-backed path, leases
#      persisted to bbolt; its peak RSS is printed after each row)
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=("${@:-1000 4000 8000}"); read -r -a RATES <<<"${RATES[*]}"
PERIOD=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-20000}
SERVERS=${SERVERS:-metalhall kea dnsmasq}
for c in perfdhcp kea-dhcp4 dnsmasq ip; do command -v $c >/dev/null || { echo "missing $c (apt-get install -y kea-admin kea-dhcp4-server dnsmasq iproute2)"; exit 2; }; done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 2; }

TMP=$(mktemp -d /tmp/mh-dhcp-bench.XXXXXX)
SRV=mhb-srv-$$; CLI=mhb-cli-$$
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true
  ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link set lo up; ip -n "$CLI" link set lo up
ip -n "$SRV" link add vs type veth peer name vc netns "$CLI"
ip -n "$SRV" addr add 10.99.0.1/16 dev vs; ip -n "$CLI" addr add 10.99.0.2/16 dev vc
ip -n "$SRV" link set vs up; ip -n "$CLI" link set vc up

go build -o "$TMP/netbootd" ./bench/dhcp/netbootd

cat >"$TMP/kea.json" <<JSON
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "vs" ] },
  "lease-database": { "type": "memfile", "persist": true, "name": "$TMP/kea-leases.csv", "lfc-interval": 0 },
  "valid-lifetime": 3600,
  "multi-threading": { "enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 1024 },
  "subnet4": [ { "id": 1, "subnet": "10.99.0.0/16", "pools": [ { "pool": "10.99.1.0 - 10.99.255.254" } ],
                 "option-data": [ { "name": "routers", "data": "10.99.0.1" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "severity": "WARN", "output_options": [ { "output": "$TMP/kea.log" } ] } ]
} }
JSON

start_server() {
  case "$1" in
    metalhall) ip netns exec "$SRV" "$TMP/netbootd" -iface vs -server 10.99.0.1 -workers 4 -queue 1024 >"$TMP/metalhall.out" 2>&1 & ;;
    metalhall-inv) rm -rf "$TMP/inv"; mkdir -p "$TMP/inv"
        ip netns exec "$SRV" "$TMP/netbootd" -inventory "$TMP/inv" -iface vs -server 10.99.0.1 -workers 4 -queue 1024 >"$TMP/metalhall-inv.out" 2>&1 & ;;
    kea) KEA_LOCKFILE_DIR=none KEA_PIDFILE_DIR="$TMP" ip netns exec "$SRV" kea-dhcp4 -c "$TMP/kea.json" >"$TMP/kea.out" 2>&1 & ;;
    dnsmasq) ip netns exec "$SRV" dnsmasq --no-daemon --no-ping --quiet-dhcp --port=0 --interface=vs --bind-interfaces \
        --dhcp-range=10.99.1.0,10.99.255.254,255.255.0.0,1h --dhcp-lease-max=200000 --dhcp-leasefile="$TMP/dnsmasq.leases" \
        --no-resolv --no-hosts --pid-file= --conf-file=/dev/null >"$TMP/dnsmasq.out" 2>&1 & ;;
  esac
  PID=$!
  sleep 1.5
}
stop_server() {
  kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""
  rm -f "$TMP/dnsmasq.leases" "$TMP/kea-leases.csv"*
}

printf "%-10s %6s %9s %9s %9s %9s %7s %12s\n" server rate disc offer req ack loss% "DORA/s"
for s in $SERVERS; do
  for r in "${RATES[@]}"; do
    start_server "$s"
    out=$(ip netns exec "$CLI" perfdhcp -4 -l vc -r "$r" -R "$CLIENTS" -p "$PERIOD" 10.99.0.1 2>&1 || true)
    stop_server
    echo "$out" >"$TMP/$s-$r.perfdhcp"
    # perfdhcp prints a DISCOVER-OFFER block, then a REQUEST-ACK block.
    read -r ds dr rs rr < <(echo "$out" | awk 'BEGIN{n=0} /sent packets:/{s[n]=$3} /received packets:/{r[n]=$3; n++} END{print s[0]+0, r[0]+0, s[1]+0, r[1]+0}')
    rate2=$(echo "$out" | awk '/^Rate:/{print $2; exit}')
    loss=$(awk -v s="$ds" -v r="$rr" 'BEGIN{ if (s>0) printf "%.1f", 100*(s-r)/s; else print "n/a" }')
    printf "%-10s %6s %9s %9s %9s %9s %7s %12s\n" "$s" "$r" "$ds" "$dr" "$rs" "$rr" "$loss" "${rate2:-?}"
    if [ "$s" = metalhall ] && [ -n "${VERBOSE:-}" ]; then cat "$TMP/metalhall.out"; fi
    if [ "$s" = metalhall-inv ]; then grep -o 'leases_persisted=[0-9]* peak_rss_mib=[0-9.]*' "$TMP/metalhall-inv.out" | sed 's/^/           /'; fi
    echo "$out" | awk '/min delay/||/avg delay/||/max delay/{printf "           %s\n", $0}' | head -6
    if [ -n "${VERBOSE:-}" ]; then echo "$out"; fi
  done
done
