#!/bin/bash
# Boots tcgprobe (main.go) under TCG with each CPU model given, like the
# lab's machines (-accel tcg -m 512, virtio-blk on a sparse raw file), and
# prints its lines. No network, no root needed. Run under the CPU lock:
#   flock /work/bench.lock bench/pxe/tcgprobe/run.sh qemu64 max
set -euo pipefail
cd "$(dirname "$0")"
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)
release=${kernel#/boot/vmlinuz-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root/bin" "$work/root/lib/modules" "$work/root/dev" "$work/root/proc" "$work/root/sys"
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/root/probe" .
cp /bin/busybox "$work/root/bin/"
# virtio-blk and its dependencies, in load order.
mods="virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci virtio_blk"
for m in $mods; do
	f=$(grep -E "/$m\.ko:" "/lib/modules/$release/modules.dep" | cut -d: -f1)
	cp "/lib/modules/$release/$f" "$work/root/lib/modules/"
done
cat > "$work/root/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $mods; do insmod /lib/modules/\$m.ko; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
grep -m1 flags /proc/cpuinfo
/probe
poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz")
echo "# $(date -u) $(hostname -s): $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(qemu-system-x86_64 --version | head -1), kernel $release"
echo "# command: bench/pxe/tcgprobe/run.sh $*"
echo "# uptime before: $(uptime)"
for cpu in "$@"; do
	truncate -s 64M "$work/disk.raw"
	echo "== -cpu $cpu"
	timeout 300 qemu-system-x86_64 -accel tcg -m 512 -cpu "$cpu" -kernel "$kernel" -initrd "$work/initrd.gz" \
		-append "console=ttyS0 loglevel=4" -drive "file=$work/disk.raw,format=raw,if=virtio" \
		-display none -monitor none -serial stdio -no-reboot -nodefaults 2>&1 |
		tr -d '\r' | grep -E '^(PROBE|flags)|panic|insmod|warning' | cut -c1-300
	rm -f "$work/disk.raw"
done
echo "# uptime after: $(uptime)"
