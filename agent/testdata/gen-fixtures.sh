#!/bin/sh
# Regenerates the sysfs/procfs fixture trees used by inspect_test.go.
# The layout follows real sysfs: /sys/bus/pci/devices/* and /sys/block/*
# and /sys/class/net/* are symlinks into /sys/devices/pci*/..., "driver"
# is a symlink whose last component names the driver. Root ports and
# other bridges are left out of /sys/bus/pci/devices to keep it short.
# Run from agent/testdata: sh gen-fixtures.sh
set -eu
cd "$(dirname "$0")"

# pcidev ROOT PARENT ADDR VENDOR DEVICE CLASS SUBV SUBD NUMA DRIVER
pcidev() {
	r=$1 parent=$2 addr=$3
	d=$r/sys/devices/$parent/$addr
	mkdir -p "$d" "$r/sys/bus/pci/devices"
	echo "0x$4" >"$d/vendor"; echo "0x$5" >"$d/device"; echo "0x$6" >"$d/class"
	echo "0x$7" >"$d/subsystem_vendor"; echo "0x$8" >"$d/subsystem_device"
	echo "$9" >"$d/numa_node"
	depth=$(echo "$parent" | awk -F/ '{print NF}')
	up=../..; k=0; while [ $k -lt "$depth" ]; do up=$up/..; k=$((k+1)); done
	[ -n "${10}" ] && mkdir -p "$r/sys/bus/pci/drivers/${10}" && ln -sfn "$up/bus/pci/drivers/${10}" "$d/driver"
	ln -sfn "../../../devices/$parent/$addr" "$r/sys/bus/pci/devices/$addr"
}

# ---------------------------------------------------------------- hgx-h100
R=hgx-h100
rm -rf $R
mkdir -p $R/proc $R/sys/class/dmi/id $R/sys/block $R/sys/class/net
# 2 x Xeon Platinum 8480+ (56 cores, HT): Linux numbers the first thread
# of every core first (socket 0, then 1), then the siblings.
p=0
for half in 0 1; do
	for s in 0 1; do
		c=0
		while [ $c -lt 56 ]; do
			cat >>$R/proc/cpuinfo <<CPU
processor	: $p
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
stepping	: 8
microcode	: 0x2b000571
cpu MHz		: 2000.000
cache size	: 107520 KB
physical id	: $s
siblings	: 112
core id		: $c
cpu cores	: 56
apicid		: $((s * 128 + c * 2 + half))
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc avx512f amx_tile amx_int8 amx_bf16

CPU
			p=$((p + 1)); c=$((c + 1))
		done
	done
done
cat >$R/proc/meminfo <<'MEM'
MemTotal:       2113413260 kB
MemFree:        2098765432 kB
MemAvailable:   2091234567 kB
Buffers:            4096 kB
Cached:           812344 kB
MEM
dmi() { echo "$2" >$R/sys/class/dmi/id/$1; }
dmi sys_vendor Supermicro
dmi product_name SYS-821GE-TNHR
dmi product_serial S692541X4A13207
dmi product_uuid 7c3d1e4a-91b2-11ee-8000-3cecef8a2b10
dmi board_vendor Supermicro
dmi board_name X13DEG-OAD
dmi bios_vendor "American Megatrends International, LLC."
dmi bios_version 2.1
dmi bios_date 11/29/2023

# GPUs, each behind its own PCIe switch port; NUMA 0 for the first four.
i=0
for a in 18 2a 3a 5d 9a ab ba db; do
	numa=0; [ $i -ge 4 ] && numa=1
	pcidev $R "pci0000:$a/0000:$a:01.0" "0000:$a:00.0" 10de 2330 030200 10de 16c1 $numa nvidia
	i=$((i + 1))
done
# 4 NVSwitches (bridge class 0680): must not count as GPUs.
for a in 05 06 07 08; do
	pcidev $R "pci0000:00/0000:00:0$((0x$a - 4)).0" "0000:$a:00.0" 10de 22a3 068000 10de 1796 0 nvidia
done
# 8 ConnectX-7 in InfiniBand mode (compute fabric), one per GPU.
i=0
for a in 19 2b 3b 5e 9b ac bb dc; do
	numa=0; [ $i -ge 4 ] && numa=1
	parent="pci0000:$a/0000:$a:01.0"
	pcidev $R "$parent" "0000:$a:00.0" 15b3 1021 020700 15b3 0041 $numa mlx5_core
	bus=$(printf %d 0x$a)
	n=ibp${bus}s0
	nd=$R/sys/devices/$parent/0000:$a:00.0/net/$n
	mkdir -p "$nd"
	echo "00:00:10:29:fe:80:00:00:00:00:00:00:a0:88:c2:03:00:5e:1a:$(printf %02x $((0xb0 + i)))" >"$nd/address"
	echo 1 >"$nd/carrier"; echo 400000 >"$nd/speed"
	ln -sfn ../../../0000:$a:00.0 "$nd/device"
	ln -sfn "../../devices/$parent/0000:$a:00.0/net/$n" $R/sys/class/net/$n
	i=$((i + 1))
done
# 2-port Intel X550 on board (provisioning network on port 1).
for f in 0 1; do
	parent="pci0000:c0/0000:c0:01.0"
	addr="0000:c1:00.$f"
	pcidev $R "$parent" "$addr" 8086 1563 020000 15d9 1ad4 1 ixgbe
	n=eno$((f + 1))
	nd=$R/sys/devices/$parent/$addr/net/$n
	mkdir -p "$nd"
	echo "3c:ec:ef:8a:2b:1$f" >"$nd/address"
	if [ $f = 0 ]; then echo 1 >"$nd/carrier"; echo 10000 >"$nd/speed"; else echo 0 >"$nd/carrier"; echo -1 >"$nd/speed"; fi
	ln -sfn ../../../$addr "$nd/device"
	ln -sfn "../../devices/$parent/$addr/net/$n" $R/sys/class/net/$n
done
# loopback: virtual, no device link, must be skipped.
mkdir -p $R/sys/devices/virtual/net/lo
echo 00:00:00:00:00:00 >$R/sys/devices/virtual/net/lo/address
ln -sfn ../../devices/virtual/net/lo $R/sys/class/net/lo
# BMC VGA
pcidev $R "pci0000:00/0000:00:1c.0/0000:02:00.0" "0000:03:00.0" 1a03 2000 030000 15d9 1ad4 0 ast

# nvmedisk ADDR PARENT CTRL VENDOR DEVICE SUBV SUBD NUMA SECTORS MODEL SERIAL
nvmedisk() {
	pcidev $R "$2" "$1" "$4" "$5" 010802 "$6" "$7" "$8" nvme
	cd=$R/sys/devices/$2/$1/nvme/$3
	mkdir -p "$cd/${3}n1/queue"
	echo "${10}" >"$cd/model"; echo "${11}" >"$cd/serial"; echo "GDC7302Q" >"$cd/firmware_rev"
	ln -sfn ../../../$1 "$cd/device"
	bd=$cd/${3}n1
	echo "$9" >"$bd/size"; echo 0 >"$bd/removable"; echo 0 >"$bd/queue/rotational"
	ln -sfn ../../$3 "$bd/device"
	ln -sfn "../devices/$2/$1/nvme/$3/${3}n1" $R/sys/block/${3}n1
}
nvmedisk 0000:01:00.0 pci0000:00/0000:00:1b.0 nvme0 144d a80a 144d a801 0 1875385008 "SAMSUNG MZ1L2960HCJR-00A07" S665NE0T101234
nvmedisk 0000:02:00.0 pci0000:00/0000:00:1b.4 nvme1 144d a80a 144d a801 0 1875385008 "SAMSUNG MZ1L2960HCJR-00A07" S665NE0T101235
i=0
for a in 45 46 47 48 c5 c6 c7 c8; do
	numa=0; [ $i -ge 4 ] && numa=1
	nvmedisk 0000:$a:00.0 "pci0000:$(printf %02x $((0x$a - 1)))/0000:$(printf %02x $((0x$a - 1))):01.0" nvme$((i + 2)) 1e0f 0007 1e0f 0001 $numa 15002931888 "KCD6XLUL7T68" "Z1E0A0$((10 + i))T7H8"
	i=$((i + 1))
done

# PCIe links (current vs max). GPUs and CX-7 at Gen5 x16, NVMe at Gen4
# x4, the X550 at Gen3 x4: every link at its maximum, as on a healthy
# machine. Faults are injected by the tests, on a copy.
link() {
	d=$R/sys/bus/pci/devices/$1
	echo "$2 GT/s PCIe" >"$d/current_link_speed"; echo "$3" >"$d/current_link_width"
	echo "$2 GT/s PCIe" >"$d/max_link_speed"; echo "$3" >"$d/max_link_width"
}
for a in 18 2a 3a 5d 9a ab ba db 19 2b 3b 5e 9b ac bb dc; do link 0000:$a:00.0 32.0 16; done
for a in 01 02 45 46 47 48 c5 c6 c7 c8; do link 0000:$a:00.0 16.0 4; done
link 0000:c1:00.0 8.0 4; link 0000:c1:00.1 8.0 4
# InfiniBand: one mlx5 device per CX-7, port 1 ACTIVE at NDR 400.
mkdir -p $R/sys/class/infiniband
i=0
for a in 19 2b 3b 5e 9b ac bb dc; do
	dev=$R/sys/bus/pci/devices/0000:$a:00.0
	real=$R/sys/devices/pci0000:$a/0000:$a:01.0/0000:$a:00.0
	ib=$real/infiniband/mlx5_$i
	mkdir -p "$ib/ports/1/gids"
	guid=a088:c203:005e:1a$(printf %02x $((0xb0 + i)))
	echo "$guid" >"$ib/node_guid"; echo 28.39.1002 >"$ib/fw_ver"
	echo "4: ACTIVE" >"$ib/ports/1/state"; echo "5: LinkUp" >"$ib/ports/1/phys_state"
	echo "400 Gb/sec (4X NDR)" >"$ib/ports/1/rate"; echo InfiniBand >"$ib/ports/1/link_layer"
	echo "fe80:0000:0000:0000:$guid" >"$ib/ports/1/gids/0"
	ln -sfn ../../../0000:$a:00.0 "$ib/device"
	ln -sfn "../../devices/pci0000:$a/0000:$a:01.0/0000:$a:00.0/infiniband/mlx5_$i" $R/sys/class/infiniband/mlx5_$i
	i=$((i + 1))
done
# EDAC: one memory controller per socket (i10nm_edac), 8 DIMMs each, no
# errors.
for mc in 0 1; do
	m=$R/sys/devices/system/edac/mc/mc$mc
	mkdir -p $m
	echo 0 >$m/ce_count; echo 0 >$m/ue_count; echo i10nm_edac >$m/mc_name
	for c in 0 1 2 3 4 5 6 7; do
		mkdir -p $m/dimm$c
		echo "CPU_SrcID#${mc}_MC#$((c / 2))_Chan#$((c % 2))_DIMM#0" >$m/dimm$c/dimm_label
		echo 0 >$m/dimm$c/dimm_ce_count; echo 0 >$m/dimm$c/dimm_ue_count
	done
done
# SMBIOS table (16 x 128 GB DDR5) and each NVMe's SMART log page: binary,
# written by gen-binary.go.
(cd .. && go run testdata/gen-binary.go testdata/$R)

# ---------------------------------------------------------------- qemu
R=qemu
rm -rf $R
mkdir -p $R/proc $R/sys/class/dmi/id $R/sys/block $R/sys/class/net
cat >$R/proc/cpuinfo <<'CPU'
processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 15
model		: 107
model name	: QEMU Virtual CPU version 2.5+
stepping	: 1
cpu MHz		: 2995.202
cache size	: 512 KB
fpu		: yes
flags		: fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx lm nopl cpuid pni cx16 x2apic hypervisor lahf_lm

CPU
cat >$R/proc/meminfo <<'MEM'
MemTotal:         490400 kB
MemFree:          412000 kB
MEM
dmi() { echo "$2" >$R/sys/class/dmi/id/$1; }
dmi sys_vendor QEMU
dmi product_name "Standard PC (i440FX + PIIX, 1996)"
dmi bios_vendor SeaBIOS
dmi bios_version 1.16.2-debian-1.16.2-1
dmi bios_date 04/01/2014
pcidev $R pci0000:00 0000:00:00.0 8086 1237 060000 1af4 1100 -1 ""
pcidev $R pci0000:00 0000:00:01.0 8086 7000 060100 1af4 1100 -1 ""
pcidev $R pci0000:00 0000:00:02.0 1234 1111 030000 1af4 1100 -1 ""
pcidev $R pci0000:00 0000:00:03.0 1af4 1000 020000 1af4 0001 -1 virtio-pci
pcidev $R pci0000:00 0000:00:04.0 1af4 1001 010000 1af4 0002 -1 virtio-pci
# virtio devices hang off the PCI function as virtioN.
v=$R/sys/devices/pci0000:00/0000:00:03.0/virtio0
mkdir -p $v/net/eth0
ln -sfn ../../../../bus/virtio/drivers/virtio_net $v/driver
echo 52:54:00:12:34:56 >$v/net/eth0/address
echo 1 >$v/net/eth0/carrier
echo -1 >$v/net/eth0/speed
ln -sfn ../../../virtio0 $v/net/eth0/device
ln -sfn ../../devices/pci0000:00/0000:00:03.0/virtio0/net/eth0 $R/sys/class/net/eth0
v=$R/sys/devices/pci0000:00/0000:00:04.0/virtio1
mkdir -p $v/block/vda/queue
ln -sfn ../../../../bus/virtio/drivers/virtio_blk $v/driver
echo 4194304 >$v/block/vda/size; echo 0 >$v/block/vda/removable; echo 1 >$v/block/vda/queue/rotational
echo metalhall-vm-1 >$v/block/vda/serial
ln -sfn ../../../virtio1 $v/block/vda/device
ln -sfn ../devices/pci0000:00/0000:00:04.0/virtio1/block/vda $R/sys/block/vda
# A loop device: skipped.
mkdir -p $R/sys/devices/virtual/block/loop0
echo 0 >$R/sys/devices/virtual/block/loop0/size
ln -sfn ../devices/virtual/block/loop0 $R/sys/block/loop0
# CD-ROM on IDE: skipped.
mkdir -p $R/sys/devices/pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0/block/sr0
ln -sfn ../devices/pci0000:00/0000:00:01.1/ata2/host1/target1:0:0/1:0:0:0/block/sr0 $R/sys/block/sr0
