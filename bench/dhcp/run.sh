#!/usr/bin/env bash
# DHCP load benchmark: metalhall netboot vs kea-dhcp4 vs dnsmasq, same run,
# same machine. perfdhcp (Debian kea-admin) runs in one network namespace,
# the server in another, joined by a veth pair; only 10.99.0.0/16 inside
# those namespaces is used. Needs root and:
#   apt-get install -y kea-admin kea-dhcp4-server dnsmasq
# (and Debian's time, optional: perfdhcp's CPU seconds per row)
# Usage: bench/dhcp/run.sh [RATES...]   (default: 1000 4000 8000)
# Env: SECONDS_PER_RUN (10), CLIENTS (20000), SERVERS ("metalhall kea dnsmasq";
#      also "metalhall-inv": the service's inventory-backed path, leases
#      persisted to bbolt; its peak RSS is printed after each row; and
#      "metalhall-etcd": the same path with the inventory on a three-member
#      etcd cluster (Debian etcd-server) started in the server's namespace,
#      dynamic leases claimed in etcd); KNOWN (0): with N > 0, the
#      inventory servers first enroll N machines with reserved addresses
#      and every server is asked by those N MACs only (perfdhcp -M): the
#      known-machine path, answered from the in-memory boot view);
#      OLD (unset): the path of a netbootd built from an older commit
#      (`go build -o /tmp/netbootd-old ./bench/dhcp/netbootd` in a checkout
#      of it): every metalhall side then runs twice per rate, old and new
#      alternating, as "SIDE-old" and "SIDE", in the same run;
#      PROFILE_DIR (unset): an absolute directory where every metalhall
#      side writes a CPU profile per rate, SIDE-RATE.prof)
set -euo pipefail
cd "$(dirname "$0")/../.."
RATES=("${@:-1000 4000 8000}"); read -r -a RATES <<<"${RATES[*]}"
PERIOD=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-20000}
SERVERS=${SERVERS:-metalhall kea dnsmasq}
KNOWN=${KNOWN:-0}
for c in perfdhcp kea-dhcp4 dnsmasq ip curl; do command -v $c >/dev/null || { echo "missing $c (apt-get install -y kea-admin kea-dhcp4-server dnsmasq iproute2)"; exit 2; }; done
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
MACLIST=(); KNOWNARGS=()
if [ "$KNOWN" -gt 0 ]; then
  # The MACs netbootd -known enrolls (bench/dhcp/netbootd/inventory.go).
  for ((i = 0; i < KNOWN; i++)); do printf '52:54:01:%02x:%02x:%02x\n' $((i >> 16 & 255)) $((i >> 8 & 255)) $((i & 255)); done >"$TMP/macs.txt"
  MACLIST=(-M "$TMP/macs.txt")
  # Reservations may not lie in the dynamic range: it ends below them.
  KNOWNARGS=(-known "$KNOWN" -last 10.99.127.254)
fi

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

if [ -n "${OLD:-}" ]; then
  [ -x "$OLD" ] || { echo "OLD=$OLD: not an executable netbootd"; exit 2; }
  cp "$OLD" "$TMP/netbootd-old"
  sides=()
  for s in $SERVERS; do
    case "$s" in metalhall*) sides+=("$s-old" "$s") ;; *) sides+=("$s") ;; esac
  done
  SERVERS="${sides[*]}"
fi

# bin SIDE RATE: the netbootd a side runs, with its profile flag.
bin() {
  local b="$TMP/netbootd"
  case "$1" in *-old) b="$TMP/netbootd-old" ;; esac
  echo "$b"
  if [ -n "${PROFILE_DIR:-}" ]; then echo "-cpuprofile $PROFILE_DIR/$1-$2.prof"; fi
}

start_server() {
  local b prof
  b=$(bin "$1" "$2" | head -1); prof=$(bin "$1" "$2" | sed -n 2p)
  # shellcheck disable=SC2086 # prof is empty or two words
  case "${1%-old}" in
    metalhall) ip netns exec "$SRV" "$b" $prof -iface vs -server 10.99.0.1 -workers 4 -queue 1024 >"$TMP/metalhall.out" 2>&1 & ;;
    metalhall-inv|metalhall-etcd) rm -rf "$TMP/inv"; mkdir -p "$TMP/inv"
        store=bolt; [ "${1%-old}" = metalhall-etcd ] && store=etcd
        ip netns exec "$SRV" "$b" $prof -inventory "$TMP/inv" -store $store "${KNOWNARGS[@]}" -iface vs -server 10.99.0.1 -workers 4 -queue 1024 >"$TMP/$1.out" 2>&1 &
        PID=$!
        # An etcd cluster, and the known machines' enrolment, take a
        # while: wait for the admin listener (loopback in the namespace).
        for _ in $(seq 1500); do
          ip netns exec "$SRV" curl -sf -o /dev/null http://127.0.0.1:8280/healthz && break
          kill -0 "$PID" 2>/dev/null || { cat "$TMP/$1.out"; exit 1; }
          sleep 0.2
        done
        if [ "$KNOWN" -gt 0 ]; then cmp -s "$TMP/macs.txt" "$TMP/inv/macs.txt" || { echo "netbootd enrolled other MACs than $TMP/macs.txt"; exit 1; }; fi ;;
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

# softnet_drops: packets the kernel's per-CPU input backlog dropped
# (netdev_max_backlog), all CPUs: a veth delivers through it.
softnet_drops() { local n=0 _p d _r; while read -r _p d _r; do n=$((n + 16#$d)); done </proc/net/softnet_stat; echo "$n"; }

# rcvbuf_errors NETNS: UDP datagrams dropped in NETNS because the
# receiving socket's buffer was full (perfdhcp's socket on the client
# side, the server's on the other).
rcvbuf_errors() { ip netns exec "$1" awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 } else print $c + 0 }' /proc/net/snmp; }

TIMED=(); [ -x /usr/bin/time ] && TIMED=(/usr/bin/time -f 'perfdhcp: cpu_s=%U+%S csw=%w/%c' -o "$TMP/perfdhcp.time")

uptime
printf "%-14s %6s %9s %9s %9s %9s %7s %12s\n" server rate disc offer req ack loss% "DORA/s"
# Each side runs all rates in turn; with OLD, each rate runs all sides in
# turn, so that old and new alternate under the same load.
pairs=()
if [ -n "${OLD:-}" ]; then
  for r in "${RATES[@]}"; do for s in $SERVERS; do pairs+=("$s:$r"); done; done
else
  for s in $SERVERS; do for r in "${RATES[@]}"; do pairs+=("$s:$r"); done; done
fi
for pr in "${pairs[@]}"; do
    s=${pr%:*} r=${pr##*:}
    start_server "$s" "$r"
    sn0=$(softnet_drops); cb0=$(rcvbuf_errors "$CLI"); sb0=$(rcvbuf_errors "$SRV")
    # perfdhcp's own CPU seconds and context switches (voluntary /
    # involuntary): the client shares the two cores with the server.
    out=$(ip netns exec "$CLI" "${TIMED[@]}" perfdhcp -4 -l vc -r "$r" -R "$CLIENTS" "${MACLIST[@]}" -p "$PERIOD" 10.99.0.1 2>&1 || true)
    sn1=$(softnet_drops); cb1=$(rcvbuf_errors "$CLI"); sb1=$(rcvbuf_errors "$SRV")
    stop_server
    echo "$out" >"$TMP/$s-$r.perfdhcp"
    # perfdhcp prints a DISCOVER-OFFER block, then a REQUEST-ACK block.
    read -r ds dr rs rr < <(echo "$out" | awk 'BEGIN{n=0} /sent packets:/{s[n]=$3} /received packets:/{r[n]=$3; n++} END{print s[0]+0, r[0]+0, s[1]+0, r[1]+0}')
    rate2=$(echo "$out" | awk '/^Rate:/{print $2; exit}')
    loss=$(awk -v s="$ds" -v r="$rr" 'BEGIN{ if (s>0) printf "%.1f", 100*(s-r)/s; else print "n/a" }')
    printf "%-14s %6s %9s %9s %9s %9s %7s %12s\n" "$s" "$r" "$ds" "$dr" "$rs" "$rr" "$loss" "${rate2:-?}"
    if [ "$s" = metalhall ] && [ -n "${VERBOSE:-}" ]; then cat "$TMP/metalhall.out"; fi
    if [ "${s%-old}" = metalhall-inv ] || [ "${s%-old}" = metalhall-etcd ]; then
      grep -o 'leases_persisted=[0-9]* peak_rss_mib=[0-9.]*\( cpu_s=[0-9.]*\)\?\( csw=[0-9/]*\)\?' "$TMP/$s.out" | sed 's/^/           /'
      # Where the loss is: what the server counted (queue_full is the
      # socket's own overflow) and what the kernel's input backlog
      # dropped (netdev_max_backlog) during the row.
      grep -o 'received=[0-9]* replied=[0-9]* dropped=map\[[^]]*\]' "$TMP/$s.out" | sed 's/^/           /' || true
    fi
    echo "           softnet_drops=$((sn1 - sn0)) udp_rcvbuf_errors: client=$((cb1 - cb0)) server=$((sb1 - sb0)) $(tail -1 "$TMP/perfdhcp.time" 2>/dev/null)"
    echo "$out" | awk '/min delay/||/avg delay/||/max delay/{printf "           %s\n", $0}' | head -6
    if [ -n "${VERBOSE:-}" ]; then echo "$out"; fi
done
uptime
