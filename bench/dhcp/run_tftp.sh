#!/usr/bin/env bash
# TFTP concurrent-fetch comparison: metalhall netboot vs dnsmasq's TFTP, same
# run. Client (bench/dhcp/tftpfetch, pin/tftp's client) in one namespace,
# server in another, over a veth pair (MTU 1500, blksize 1468). Each client
# fetches from its own address (10.99.1.x), as machines do. Servers take
# turns, ROUNDS times (default 3), in the same run. Needs root, dnsmasq and
# the ipxe package. The output, with the machine and its load, is also
# written to bench/dhcp/results/tftp-DATE-HOST-FILE-CONC-N.txt.
# PROFILE=/abs/file.prof writes a CPU profile of metalhall's server (last round).
# OLD=/abs/netbootd adds a side "metalhall-old" served by that binary (built
# from an older commit with go build ./bench/dhcp/netbootd), taking its turn
# in every round: before/after comparisons in one run, under the same load.
# Usage: bench/dhcp/run_tftp.sh [FILE] [CONCURRENCY] [FETCHES]
set -euo pipefail
cd "$(dirname "$0")/../.."
FILE=${1:-ipxe.efi}; CONC=${2:-32}; N=${3:-256}; ROUNDS=${ROUNDS:-3}
[ "$CONC" -le 250 ] || { echo "at most 250 clients (one address each in 10.99.1.0/24)"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 2; }
command -v dnsmasq >/dev/null || { echo "apt-get install -y dnsmasq"; exit 2; }
TMP=$(mktemp -d /tmp/mh-tftp-bench.XXXXXX)
SRV=mht-srv-$$; CLI=mht-cli-$$; PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  ip netns del "$SRV" 2>/dev/null || true; ip netns del "$CLI" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$SRV"; ip netns add "$CLI"
ip -n "$SRV" link set lo up; ip -n "$CLI" link set lo up
ip -n "$SRV" link add vs type veth peer name vc netns "$CLI"
ip -n "$SRV" addr add 10.99.0.1/16 dev vs; ip -n "$CLI" addr add 10.99.0.2/16 dev vc
ip -n "$SRV" link set vs up; ip -n "$CLI" link set vc up
for i in $(seq 1 "$CONC"); do ip -n "$CLI" addr add "10.99.1.$i/16" dev vc; done
mkdir -p "$TMP/root"
for f in undionly.kpxe ipxe.efi snponly.efi; do cp -L "/usr/lib/ipxe/$f" "$TMP/root/"; done
go build -o "$TMP/netbootd" ./bench/dhcp/netbootd
go build -o "$TMP/tftpfetch" ./bench/dhcp/tftpfetch
mkdir -p bench/dhcp/results
OUT=bench/dhcp/results/tftp-$(date -u +%Y%m%dT%H%M%SZ)-$(hostname -s)-$FILE-$CONC-$N.txt
exec > >(tee "$OUT") 2>&1
echo "# $(date -u) $(hostname -s): $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r), $(go version | cut -d' ' -f3), $(dnsmasq --version | head -1)"
echo "# command: ${OLD:+OLD=$OLD }bench/dhcp/run_tftp.sh $FILE $CONC $N (ROUNDS=$ROUNDS)"
[ -z "${OLD:-}" ] || echo "# metalhall-old: $OLD ($(stat -c %y "$OLD" | cut -d. -f1)); metalhall: this checkout at $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- netboot bench/dhcp || echo '+changes')"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "file=$FILE ($(stat -c %s "$TMP/root/$FILE") bytes) concurrency=$CONC fetches=$N blksize=1468"
for r in $(seq 1 "$ROUNDS"); do
for s in ${OLD:+metalhall-old} metalhall dnsmasq; do
  case $s in
    metalhall|metalhall-old) BIN=$TMP/netbootd; [ "$s" = metalhall ] || BIN=$OLD
      ip netns exec "$SRV" "$BIN" -no-dhcp -server 10.99.0.1 -tftp-root "$TMP/root" -tftp-max 256 \
        ${PROFILE:+-cpuprofile "$PROFILE"} >"$TMP/$s.out" 2>&1 & ;;
    dnsmasq) ip netns exec "$SRV" dnsmasq --no-daemon --port=0 --enable-tftp --tftp-root="$TMP/root" --tftp-max=256 \
        --interface=vs --bind-interfaces --pid-file= --conf-file=/dev/null --no-resolv --no-hosts >"$TMP/$s.out" 2>&1 & ;;
  esac
  PID=$!; sleep 1.5
  printf "%-13s " "$s"; ip netns exec "$CLI" "$TMP/tftpfetch" -server 10.99.0.1:69 -file "$FILE" -c "$CONC" -n "$N" \
    -source-base 10.99.1.1 -sources "$CONC" || true
  # The server's own CPU time for the whole run (the box is shared: this
  # is steadier than wall time).
  echo "#   $s server cpu_seconds=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' /proc/"$PID"/stat)"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  if [ "$s" != dnsmasq ]; then sed -n 's/^netbootd: \(tftp={[^}]*}\).*/#   \1/p' "$TMP/$s.out"; fi
done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
