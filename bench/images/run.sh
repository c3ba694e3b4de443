#!/usr/bin/env bash
# Image store benchmarks, each next to its peer in the same run:
#   1. import of a 2 GiB raw and a zstd image (checksums + format check +
#      zero map + temp file + rename) vs `sha256sum` of the same file;
#   2. blob serving of the 2 GiB image to 1, 8 and 32 concurrent HTTP
#      clients on loopback, metalhall's BlobHandler vs nginx serving the
#      same file, with the servers' peak RSS.
#
# Run from the repository root, as root (nginx runs with a temp config on a
# loopback port and is stopped afterwards):
#
#   bench/images/run.sh                 # SIZE=2G CLIENTS="1 8 32" ROUNDS=2
#
# Results go to stdout as JSON lines (and to $WORK/results.jsonl with
# KEEP=1). Everything it creates, the 2 GiB files included, is removed at
# the end unless KEEP=1.
set -euo pipefail

SIZE=${SIZE:-2G}
CLIENTS=${CLIENTS:-"1 8 32"}
ROUNDS=${ROUNDS:-2}
GO_PORT=${GO_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/metalhall-imgbench.XXXXXX")
NGINX=${NGINX:-/usr/sbin/nginx}
pids=()

cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ -f "$WORK/nginx.pid" ]; then kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null || true; fi
	wait 2>/dev/null || true
	if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi
}
trap cleanup EXIT

if [ ! -x "$NGINX" ]; then
	echo "nginx missing: apt-get install -y nginx" >&2
	exit 1
fi

log() { echo "# $*" >&2; }
emit() { echo "$1" | tee -a "$WORK/results.jsonl"; }

# timeit LABEL BYTES CMD...: wall time of CMD as a JSON line.
timeit() {
	local label=$1 bytes=$2; shift 2
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	emit "$(awk -v l="$label" -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN{s=z-a; printf "{\"what\":\"%s\",\"bytes\":%.0f,\"seconds\":%.3f,\"mb_per_s\":%.1f}\n", l, b, s, b/1e6/s}')"
}

log "building imagebench; work dir $WORK"
go build -o "$WORK/imagebench" ./bench/images/imagebench
B=$WORK/imagebench

log "making a $SIZE disk-like image and its zstd (-3)"
$B mkimage -out "$WORK/disk.raw" -size "$SIZE"
zstd -q -T0 -3 "$WORK/disk.raw" -o "$WORK/disk.raw.zst"
ls -l "$WORK/disk.raw" "$WORK/disk.raw.zst" >&2

## 1. Import vs sha256sum
for f in disk.raw disk.raw.zst; do
	file=$WORK/$f
	bytes=$(stat -c %s "$file")
	cat "$file" >/dev/null # page cache warm for everyone
	# One untimed import first: on a VM the first writes into fresh page
	# cache are slow (the host backs the guest's pages on first touch), a
	# cost that is the VM's, not the pipeline's.
	$B import -file "$file" -dir "$WORK/st" >/dev/null 2>&1
	for r in $(seq "$ROUNDS"); do
		timeit "sha256sum $f" "$bytes" sha256sum "$file"
		emit "$($B sha256 -file "$file" | sed "s/\"what\":\"go sha256 [0-9a-f]*\"/\"what\":\"go sha256 $f\"/")"
		emit "$($B import -file "$file" -dir "$WORK/st" 2>/dev/null | sed 's/,"extra":.*}$/}/')"
		sync
		# What writing the file alone costs here, into the page cache and
		# then durably: an import writes as much.
		timeit "cp, no fsync $f" "$bytes" dd if="$file" of="$WORK/ddcopy" bs=1M status=none
		rm -f "$WORK/ddcopy"
		timeit "cp + fsync $f" "$bytes" dd if="$file" of="$WORK/ddcopy" bs=1M conv=fsync status=none
		rm -f "$WORK/ddcopy"
		sync
	done
done
rm -f "$WORK/disk.raw.zst"

## 2. Serving vs nginx
log "starting metalhall BlobHandler on 127.0.0.1:$GO_PORT"
mkfifo "$WORK/serve.out"
$B serve -dir "$WORK/store" -file "$WORK/disk.raw" -listen "127.0.0.1:$GO_PORT" >"$WORK/serve.out" 2>"$WORK/serve.err" &
gopid=$!
pids+=("$gopid")
exec 3<"$WORK/serve.out"
read -r _ blob <&3
read -r _ sha <&3
rm -f "$WORK/disk.raw" # the store holds its own copy now
log "blob $blob"

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<CONF
# Stock settings for static files: sendfile, workers = cores.
user root;
worker_processes auto;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /images/ { alias $(dirname "$blob")/; }
    }
}
CONF
log "starting nginx on 127.0.0.1:$NGINX_PORT"
$NGINX -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" &
pids+=($!)
for _ in $(seq 50); do
	[ -s "$WORK/nginx.pid" ] && curl -sfI "http://127.0.0.1:$NGINX_PORT/images/$sha" >/dev/null && break
	sleep 0.1
done
for _ in $(seq 50); do curl -sfI "http://127.0.0.1:$GO_PORT/images/$sha" >/dev/null && break; sleep 0.1; done
nmaster=$(cat "$WORK/nginx.pid")
npids=$(echo "$nmaster" $(pgrep -P "$nmaster") | tr ' ' ',')
log "nginx pids $npids, metalhall pid $gopid"

for r in $(seq "$ROUNDS"); do
	for c in $CLIENTS; do
		emit "$($B load -label metalhall -clients "$c" -pids "$gopid" -url "http://127.0.0.1:$GO_PORT/images/$sha")"
		emit "$($B load -label nginx -clients "$c" -pids "$npids" -url "http://127.0.0.1:$NGINX_PORT/images/$sha")"
	done
done
log "summary (median of $ROUNDS rounds)"
$B summarize <"$WORK/results.jsonl"
