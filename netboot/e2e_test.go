package netboot

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/qemu"
)

// The end-to-end tests boot real firmware (SeaBIOS or OVMF, with Debian's
// iPXE ROM) in QEMU on a tap inside a private network namespace, against
// this package's DHCP, TFTP and HTTP servers running in the same
// namespace: reserved address → iPXE script over HTTP → Debian kernel +
// a busybox initramfs that prints a marker and powers off. Only
// 10.99.1.0/24 inside the namespace is used.

const e2eMarker = "METALHALL-NETBOOT-E2E-OK"

func e2ePrereqs(t *testing.T, fw qemu.Firmware) (kernel string) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping QEMU network boot in -short mode")
	}
	if err := netns.Available(); err != nil {
		t.Skipf("skipping QEMU network boot: %v", err)
	}
	if err := qemu.Available(fw); err != nil {
		t.Skipf("skipping QEMU network boot: %v", err)
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Skip("skipping QEMU network boot: no /boot/vmlinuz-* (Debian package linux-image-amd64)")
	}
	for _, p := range []string{"/bin/busybox", "/usr/lib/ipxe/ipxe.efi", "/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("skipping QEMU network boot: %s missing (Debian packages busybox-static, ipxe)", p)
		}
	}
	return kernels[len(kernels)-1]
}

// BIOS: SeaBIOS runs the NIC's iPXE ROM, which asks DHCP as iPXE and
// gets its script URL straight away.
func TestE2EBootBIOS(t *testing.T) { t.Parallel(); e2eBoot(t, qemu.BIOS, false, false) }

// BIOS in proxy mode: dnsmasq, in a second namespace on the same bridge,
// hands out the address; netboot only sends boot options (port 67) and
// answers iPXE's boot-server REQUEST (port 4011).
func TestE2EBootBIOSProxy(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("skipping proxy-mode network boot: dnsmasq not installed (Debian package dnsmasq)")
	}
	e2eBoot(t, qemu.BIOS, false, true)
}

// UEFI: OVMF with iPXE's EFI driver as the NIC ROM.
func TestE2EBootUEFI(t *testing.T) { t.Parallel(); e2eBoot(t, qemu.UEFI, false, false) }

// UEFI chain: OVMF's own PXE client (arch 7) gets ipxe.efi over TFTP,
// which asks DHCP again as iPXE and gets its script: the whole table.
func TestE2EBootUEFIChain(t *testing.T) { t.Parallel(); e2eBoot(t, qemu.UEFI, true, false) }

func e2eBoot(t *testing.T, fw qemu.Firmware, chain, proxy bool) {
	kernel := e2ePrereqs(t, fw)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// Boot artefacts: the Debian kernel and a busybox initramfs.
	files := filepath.Join(dir, "files")
	os.Mkdir(files, 0o755)
	kb, err := os.ReadFile(kernel)
	if err != nil {
		t.Skipf("skipping: cannot read %s: %v", kernel, err)
	}
	if err := os.WriteFile(filepath.Join(files, "vmlinuz"), kb, 0o644); err != nil {
		t.Fatal(err)
	}
	ird, err := qemu.BusyboxInitramfs("/bin/busybox",
		"/bin/busybox echo "+e2eMarker+"\n/bin/busybox poweroff -f\n")
	if err != nil {
		t.Fatal(err)
	}
	var irdBuf bytes.Buffer
	if err := qemu.WriteInitramfs(&irdBuf, ird); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "initrd.cpio.gz"), irdBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The iPXE binaries, copied out of Debian's symlinks (os.Root refuses
	// /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi).
	ipxeRoot := filepath.Join(dir, "ipxe")
	if err := StageIPXE(ipxeRoot, DebianIPXEDir); err != nil {
		t.Fatal(err)
	}

	// The private segment.
	ns, err := netns.New(ctx, "mhnb-"+fw.String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := ns.Close(); err != nil {
			t.Errorf("removing namespace: %v", err)
		}
	}()
	server := netip.MustParseAddr("10.99.1.1")
	if err := ns.AddBridge(ctx, "br0", netip.PrefixFrom(server, 24)); err != nil {
		t.Fatal(err)
	}
	if err := ns.AddTap(ctx, "tap0", "br0"); err != nil {
		t.Fatal(err)
	}

	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0x99, 0x01, byte(10 + fw)}
	if chain {
		mac[5] = 0x20
	}
	if proxy {
		mac[5] = 0x30
	}
	reserved := netip.MustParseAddr("10.99.1.10")
	addrs := NewMemoryAddresses()
	if err := addrs.AddSegment(Subnet{Prefix: netip.MustParsePrefix("10.99.1.0/24"), LeaseTime: 10 * time.Minute}, netip.Addr{}, netip.Addr{}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
	if err := addrs.Reserve(mac, reserved, "e2e-"+fw.String()); err != nil {
		t.Fatal(err)
	}
	base := "http://10.99.1.1:8080"
	booter := NewMemoryBooter()
	// no_timer_check: under TCG on a loaded host the kernel's IO-APIC
	// timer check can time out and panic ("IO-APIC + timer doesn't
	// work!"); it says nothing about netboot.
	booter.Set(mac, Boot{Kind: BootProvision, Kernel: base + "/boot/files/vmlinuz",
		Initrds: []string{base + "/boot/files/initrd.cpio.gz"}, Cmdline: "console=ttyS0 panic=-1 loglevel=4 no_timer_check"})
	rec := NewMemoryRecorder()

	mode := ModeReservation
	if proxy {
		mode = ModeProxy
		startDnsmasq(ctx, t, ns, dir)
	}
	srv, err := NewServer(Config{
		Interface: "br0", Mode: mode, Advertise: server, HTTPBaseURL: base,
		TFTPRoot: ipxeRoot, Booter: booter, Addresses: addrs, Recorder: rec,
	})
	if err != nil {
		t.Fatal(err)
	}
	hh, err := NewHTTPHandler(HTTPConfig{Booter: booter, Addresses: addrs, IPXERoot: ipxeRoot, Files: os.DirFS(files), Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer hh.Close()

	// Every socket is opened on a thread inside the namespace (TFTP
	// answers every transfer from its one socket).
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	ready := make(chan error, 1)
	go func() {
		srvDone <- ns.Run(func() error {
			ln, err := net.Listen("tcp4", "10.99.1.1:8080")
			if err != nil {
				ready <- err
				return err
			}
			hs := &http.Server{Handler: hh, ReadHeaderTimeout: 10 * time.Second}
			go hs.Serve(ln)
			defer hs.Close()
			ready <- nil
			return srv.Run(srvCtx)
		})
	}()
	// ns.Run can fail before the function runs, and then ready never comes.
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-srvDone:
		t.Fatalf("server: %v", err)
	}
	defer func() {
		stopSrv()
		select {
		case err := <-srvDone:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	}()

	vmDir := filepath.Join(dir, "vm")
	os.Mkdir(vmDir, 0o755)
	start := time.Now()
	vm, err := qemu.Start(ctx, qemu.Config{Firmware: fw, FirmwareNIC: chain, MAC: mac, Tap: "tap0", Dir: vmDir, Wrap: []string{"ip", "netns", "exec", ns.Name}})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Stop()
	err = vm.WaitSerial(ctx, e2eMarker)
	elapsed := time.Since(start)
	if err != nil {
		t.Errorf("%v\nserial (tail):\n%s", err, tail(vm.Serial(), 3000))
	}
	// poweroff -f ends QEMU; give it a moment, then kill it anyway.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	vm.Wait(wctx)
	wcancel()
	vm.Stop()

	evs := rec.Events()
	var log strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&log, "  %s %s %s %s\n", e.Time.Sub(start).Round(time.Millisecond), e.MAC, e.Step, e.Detail)
	}
	t.Logf("%s boot took %s; events:\n%s", fw, elapsed.Round(time.Second), log.String())
	want := []Step{StepDHCPAck, StepScript, StepKernel, StepInitrd}
	if proxy {
		// iPXE boots straight from a proxy offer that names the file; it
		// sends no boot-server REQUEST, so there is no proxy ACK.
		want[0] = StepDHCPOffer
	}
	if chain {
		found := false
		for _, e := range evs {
			found = found || (e.Step == StepTFTP && e.MAC == mac.String() && strings.Contains(e.Detail, "file=ipxe.efi"))
		}
		if !found {
			t.Error("no TFTP transfer of ipxe.efi")
		}
	}
	for _, step := range want {
		found := false
		for _, e := range evs {
			if e.Step == step && e.MAC == mac.String() {
				found = true
				if step == StepDHCPAck && !proxy && !strings.Contains(e.Detail, "ip="+reserved.String()) {
					t.Errorf("ACK without the reserved address: %s", e.Detail)
				}
			}
		}
		if !found {
			t.Errorf("no %s event for %s", step, mac)
		}
	}
	if proxy {
		// The address came from dnsmasq; netboot learnt it on port 4011.
		learnt := false
		for i := 50; i <= 60; i++ {
			if m, ok := addrs.Owner(ctx, netip.AddrFrom4([4]byte{10, 99, 1, byte(i)})); ok && m.String() == mac.String() {
				learnt = true
			}
		}
		if !learnt {
			t.Error("proxy mode did not learn the client's dnsmasq address")
		}
	} else if l, ok := rec.Leases()[mac.String()]; !ok || l.IP != reserved {
		t.Errorf("lease %+v, want %s", l, reserved)
	}
	if t.Failed() {
		t.Logf("DHCP/TFTP stats: %+v", srv.Stats())
	}
}

// startDnsmasq runs dnsmasq as the address server (no boot options) in
// a second namespace, joined to ns's bridge by a veth pair.
func startDnsmasq(ctx context.Context, t *testing.T, ns *netns.Namespace, dir string) {
	t.Helper()
	ns2, err := netns.New(ctx, "mhnb-dhcp")
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.AddVeth(ctx, "vd", netip.Prefix{}, ns2, "eth0", netip.MustParsePrefix("10.99.1.2/24")); err != nil {
		ns2.Close()
		t.Fatal(err)
	}
	if err := ns.IP(ctx, "link", "set", "vd", "master", "br0"); err != nil {
		ns2.Close()
		t.Fatal(err)
	}
	cmd := ns2.Command(ctx, "dnsmasq", "--no-daemon", "--port=0", "--no-ping", "--interface=eth0", "--bind-interfaces",
		"--dhcp-range=10.99.1.50,10.99.1.60,255.255.255.0,10m", "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"),
		"--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		ns2.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", tail(out.String(), 2000))
		}
		if err := ns2.Close(); err != nil {
			t.Errorf("removing namespace: %v", err)
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
