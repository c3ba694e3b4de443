package demoos

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/qemu"
)

func TestInitramfsHasNetModulesInOrder(t *testing.T) {
	k, err := FindKernel()
	if err != nil {
		t.Skip("skipping: ", err)
	}
	mods := "/lib/modules/" + strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
	if _, err := os.Stat(Busybox); err != nil {
		t.Skip("skipping: no ", Busybox)
	}
	files, err := Initramfs(Options{}, mods)
	if err != nil {
		t.Fatal(err)
	}
	var order string
	for _, f := range files {
		if f.Path == "etc/modules.order" {
			order = string(f.Data)
		}
	}
	lines := strings.Fields(order)
	idx := map[string]int{}
	for i, m := range lines {
		idx[m] = i
	}
	// A module built into the kernel needs no loading; every other one
	// must be listed, and in dependency order.
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(mods, "modules.builtin")); err == nil {
		for _, p := range strings.Fields(string(b)) {
			builtin[strings.TrimSuffix(filepath.Base(p), ".ko")] = true
		}
	}
	for _, m := range []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net"} {
		if _, ok := idx[m]; !ok && !builtin[m] {
			t.Errorf("%s neither in the initramfs's modules.order nor built in: %v", m, lines)
		}
	}
	for _, pair := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_net"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}} {
		a, oka := idx[pair[0]]
		b, okb := idx[pair[1]]
		if oka && okb && a > b {
			t.Errorf("%s loaded after %s: %v", pair[0], pair[1], lines)
		}
	}
}

// TestBootsAndFetchesMetadata builds the image and boots it in QEMU (TCG)
// from a virtio disk, with SeaBIOS and with OVMF. QEMU's user-mode network
// gives it an address and forwards 10.0.2.2 to this test's HTTP server on
// the host's loopback: nothing else is reached.
func TestBootsAndFetchesMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping QEMU boot in -short mode")
	}
	if err := Available(); err != nil {
		t.Skip("skipping: ", err)
	}
	if err := qemu.Available(qemu.UEFI); err != nil {
		t.Skip("skipping: ", err)
	}
	dir := t.TempDir()
	var mu sync.Mutex
	hits := 0
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		switch r.URL.Path {
		case "/metadata/meta-data":
			fmt.Fprint(w, "instance-id: demo-test\nlocal-hostname: demo-test\n")
		case "/metadata/user-data":
			fmt.Fprint(w, "#cloud-config\n")
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	img := filepath.Join(dir, "demo.img")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := Build(ctx, Options{Out: img, MetadataURL: fmt.Sprintf("http://10.0.2.2:%d/metadata", port), Banner: "test v1"}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(img)
	t.Logf("image %d bytes built in %s", st.Size(), time.Since(start).Round(time.Millisecond))

	for _, fw := range []qemu.Firmware{qemu.BIOS, qemu.UEFI} {
		t.Run(fw.String(), func(t *testing.T) {
			d := t.TempDir()
			serial := filepath.Join(d, "serial.log")
			args := []string{"-accel", "tcg", "-m", "256", "-display", "none", "-monitor", "none", "-no-reboot",
				"-serial", "file:" + serial,
				"-drive", "file=" + img + ",format=raw,if=none,id=d0,snapshot=on",
				"-device", "virtio-blk-pci,drive=d0,bootindex=1",
				"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="}
			if fw == qemu.UEFI {
				vars := filepath.Join(d, "vars.fd")
				b, _ := os.ReadFile(qemu.OVMFVars)
				os.WriteFile(vars, b, 0o644)
				args = append(args, "-machine", "q35",
					"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+qemu.OVMFCode,
					"-drive", "if=pflash,format=raw,unit=1,file="+vars)
			}
			cmd := exec.CommandContext(ctx, qemu.Binary, args...)
			out := &strings.Builder{}
			cmd.Stderr = out
			t0 := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			for {
				b, _ := os.ReadFile(serial)
				s := string(b)
				if strings.Contains(s, Marker+" test v1") {
					if !strings.Contains(s, "instance-id: demo-test") {
						t.Errorf("metadata not printed:\n%s", s)
					}
					break
				}
				if strings.Contains(s, FailMarker) || strings.Contains(s, "Kernel panic") || time.Since(t0) > 3*time.Minute {
					t.Fatalf("no marker; qemu stderr %s; serial:\n%s", out, tail(s, 3000))
				}
				time.Sleep(300 * time.Millisecond)
			}
			t.Logf("%s: disk boot to metadata in %s", fw, time.Since(t0).Round(time.Millisecond))
		})
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
