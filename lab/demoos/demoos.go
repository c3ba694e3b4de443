// Package demoos builds a small bootable "installed OS" disk image for the
// lab and the end-to-end tests: a whole-disk FAT file system (no partition
// table) holding the Debian kernel and a busybox initramfs, bootable by
// SeaBIOS (syslinux in the boot sector) and by OVMF (syslinux.efi as
// \EFI\BOOT\BOOTX64.EFI). Its /init brings the NIC up (virtio_net and
// friends, loaded in modules.dep order), asks DHCP for an address, fetches
// its metadata from metalhall (http://SERVER/metadata/meta-data), prints it
// on ttyS0 and then the marker [Marker], and stays up like an installed OS.
//
// The image is built without root or loop devices: mkfs.vfat -C, syslinux
// --install on the file, mcopy (Debian packages dosfstools, syslinux,
// syslinux-common, syslinux-efi, mtools, busybox-static).
package demoos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/metalhall/metalhall/agent/bootenv"
	"github.com/metalhall/metalhall/lab/qemu"
)

// Marker is printed on the serial console once the metadata was fetched.
const Marker = "METALHALL-DEMO-OS-BOOTED"

// FailMarker is printed when no metadata could be fetched.
const FailMarker = "METALHALL-DEMO-OS-NO-METADATA"

// Paths of the Debian packages' files.
var (
	Busybox       = "/bin/busybox"
	SyslinuxEFI   = "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi"
	LdlinuxE64    = "/usr/lib/syslinux/modules/efi64/ldlinux.e64"
	NetModules    = []string{"virtio_pci", "virtio_net", "e1000", "e1000e"}
	DefaultSizeMB = 16
)

// Options describe the image.
type Options struct {
	// Kernel is the Debian kernel (/boot/vmlinuz-X); empty picks the
	// newest /boot/vmlinuz-*. Modules defaults to /lib/modules/X.
	Kernel, Modules string
	// Out is the raw disk image written.
	Out string
	// SizeMB is the size of the image (default 16).
	SizeMB int
	// MetadataURL is the metadata base URL baked into the kernel command
	// line (demo.metadata=URL), e.g. http://10.98.0.1:8280/metadata. Empty:
	// http://<DHCP server id>:8280/metadata.
	MetadataURL string
	// Banner is printed before the metadata (tells images apart, e.g.
	// "demo OS v2").
	Banner string
	// PowerOff makes the OS power off after printing the marker (default:
	// it stays up, like an installed OS).
	PowerOff bool
}

// Available says why an image cannot be built here, or nil.
func Available() error {
	for _, t := range []string{"mkfs.vfat", "syslinux", "mcopy", "mmd"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s not found (Debian packages dosfstools, syslinux, mtools)", t)
		}
	}
	for _, p := range []string{Busybox, SyslinuxEFI, LdlinuxE64} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing (Debian packages busybox-static, syslinux-efi, syslinux-common)", p)
		}
	}
	if _, err := FindKernel(); err != nil {
		return err
	}
	return nil
}

// FindKernel returns the newest /boot/vmlinuz-*.
func FindKernel() (string, error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(ks) == 0 {
		return "", errors.New("no /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
	return ks[len(ks)-1], nil
}

const initScript = `/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /run /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "metalhall-demo-os: starting (%[1]s)"
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
ifc=""
i=0
while [ -z "$ifc" ] && [ $i -lt 100 ]; do
	for d in /sys/class/net/*; do n=${d##*/}; [ "$n" != lo ] && [ -z "$ifc" ] && ifc=$n; done
	[ -z "$ifc" ] && sleep 0.2
	i=$((i+1))
done
ip link set lo up
url=""
for p in $(cat /proc/cmdline); do case $p in demo.metadata=*) url=${p#demo.metadata=} ;; esac; done
ok=0
if [ -n "$ifc" ]; then
	ip link set "$ifc" up
	echo "metalhall-demo-os: DHCP on $ifc ($(cat /sys/class/net/$ifc/address))"
	udhcpc -i "$ifc" -s /etc/udhcpc.script -t 20 -T 2 -A 3 -n -q -f 2>&1 | grep -v "^udhcpc: sending"
	[ -z "$url" ] && url="http://$(cat /run/serverid 2>/dev/null):8280/metadata"
	n=0
	while [ $n -lt 30 ]; do
		if timeout 10 wget -q -O /tmp/meta-data "$url/meta-data"; then ok=1; break; fi
		n=$((n+1)); sleep 2
	done
fi
if [ $ok = 1 ]; then
	timeout 10 wget -q -O /tmp/user-data "$url/user-data" || true
	echo "----- metadata from $url -----"
	cat /tmp/meta-data
	if [ -s /tmp/user-data ]; then echo "----- user-data -----"; cat /tmp/user-data; echo; fi
	echo "------------------------------"
	echo "%[2]s %[1]s"
else
	echo "%[3]s: no metadata from ${url:-(no URL)} on ${ifc:-(no NIC)}"
fi
%[4]s
while true; do sleep 3600; done
`

const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
	echo "$serverid" > /run/serverid
	echo "metalhall-demo-os: address $ip/${mask:-24} from $serverid"
	;;
esac
exit 0
`

// Initramfs returns the demo OS's initramfs files.
func Initramfs(o Options, modulesDir string) ([]qemu.File, error) {
	banner := o.Banner
	if banner == "" {
		banner = "demo OS"
	}
	off := ""
	if o.PowerOff {
		off = "sync; poweroff -f"
	}
	files, err := qemu.BusyboxInitramfs(Busybox, fmt.Sprintf(initScript, sanitize(banner), Marker, FailMarker, off))
	if err != nil {
		return nil, err
	}
	files = append(files,
		qemu.File{Path: "etc", Dir: true, Mode: 0o755},
		qemu.File{Path: "etc/udhcpc.script", Mode: 0o755, Data: []byte(udhcpcScript)},
		qemu.File{Path: "lib", Dir: true, Mode: 0o755},
		qemu.File{Path: "lib/modules", Dir: true, Mode: 0o755},
		qemu.File{Path: "run", Dir: true, Mode: 0o755},
		qemu.File{Path: "tmp", Dir: true, Mode: 0o1777},
	)
	dep, err := os.ReadFile(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("demoos: %w (Debian package linux-image-amd64)", err)
	}
	deps, err := bootenv.ParseModulesDep(bytes.NewReader(dep))
	if err != nil {
		return nil, fmt.Errorf("demoos: %w", err)
	}
	order, _ := deps.Order(NetModules)
	for _, m := range order {
		src := filepath.Join(modulesDir, deps.File[m])
		if !strings.HasSuffix(src, ".ko") {
			return nil, fmt.Errorf("demoos: module %s is compressed (%s): busybox insmod wants plain .ko", m, src)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("demoos: %w", err)
		}
		files = append(files, qemu.File{Path: "lib/modules/" + m + ".ko", Mode: 0o644, Data: b})
	}
	files = append(files, qemu.File{Path: "etc/modules.order", Mode: 0o644, Data: []byte(strings.Join(order, "\n") + "\n")})
	return files, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' || strings.ContainsRune("\"'`$\\%", r) {
			return '_'
		}
		return r
	}, s)
}

// Build writes the disk image to o.Out.
func Build(ctx context.Context, o Options) error {
	if err := Available(); err != nil {
		return fmt.Errorf("demoos: %w", err)
	}
	if o.Out == "" {
		return errors.New("demoos: Out is required")
	}
	if o.Kernel == "" {
		k, err := FindKernel()
		if err != nil {
			return fmt.Errorf("demoos: %w", err)
		}
		o.Kernel = k
	}
	if o.Modules == "" {
		o.Modules = "/lib/modules/" + strings.TrimPrefix(filepath.Base(o.Kernel), "vmlinuz-")
	}
	if o.SizeMB == 0 {
		o.SizeMB = DefaultSizeMB
	}
	tmp, err := os.MkdirTemp("", "demoos-")
	if err != nil {
		return fmt.Errorf("demoos: %w", err)
	}
	defer os.RemoveAll(tmp)

	files, err := Initramfs(o, o.Modules)
	if err != nil {
		return err
	}
	var ird bytes.Buffer
	if err := qemu.WriteInitramfs(&ird, files); err != nil {
		return fmt.Errorf("demoos: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "initrd.gz"), ird.Bytes(), 0o644); err != nil {
		return fmt.Errorf("demoos: %w", err)
	}
	appendLine := "console=ttyS0,115200 panic=10 loglevel=3"
	if o.MetadataURL != "" {
		if strings.ContainsAny(o.MetadataURL, " \n\"") {
			return fmt.Errorf("demoos: bad metadata URL %q", o.MetadataURL)
		}
		appendLine += " demo.metadata=" + o.MetadataURL
	}
	cfg := "SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT demo\nLABEL demo\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND " + appendLine + "\n"
	if err := os.WriteFile(filepath.Join(tmp, "syslinux.cfg"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("demoos: %w", err)
	}

	img := o.Out + ".tmp"
	os.Remove(img)
	steps := [][]string{
		{"mkfs.vfat", "-C", "-n", "DEMOOS", img, fmt.Sprint(o.SizeMB * 1024)},
		{"syslinux", "--install", img},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, o.Kernel, "::/vmlinuz"},
		{"mcopy", "-i", img, filepath.Join(tmp, "initrd.gz"), "::/initrd.gz"},
		{"mcopy", "-i", img, filepath.Join(tmp, "syslinux.cfg"), "::/syslinux.cfg"},
		{"mcopy", "-i", img, SyslinuxEFI, "::/EFI/BOOT/BOOTX64.EFI"},
		{"mcopy", "-i", img, LdlinuxE64, "::/EFI/BOOT/ldlinux.e64"},
		{"mcopy", "-i", img, filepath.Join(tmp, "syslinux.cfg"), "::/EFI/BOOT/syslinux.cfg"},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s[0], s[1:]...)
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(img)
			return fmt.Errorf("demoos: %s: %w: %s", strings.Join(s, " "), err, bytes.TrimSpace(out))
		}
	}
	if err := os.Rename(img, o.Out); err != nil {
		os.Remove(img)
		return fmt.Errorf("demoos: %w", err)
	}
	return nil
}
