package bootenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/metalhall/metalhall/agent/wire"
)

// bootQEMU boots the kernel with a freshly built boot environment under
// software emulation and returns the serial console output. QEMU is
// killed when ctx ends. extra are more QEMU arguments (disks, NICs).
func bootQEMU(t *testing.T, ctx context.Context, appendLine string, extra ...string) string {
	t.Helper()
	qemu := needQEMU(t)
	kernel, _ := debianKernel(t)
	agent := buildAgent(t)
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd.cpio.gz")
	var buf bytes.Buffer
	if _, err := Build(ctx, Options{Kernel: kernel, AgentBinary: agent, Compression: Gzip, Out: &buf}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(dir, "serial.log")
	args := append([]string{
		"-accel", "tcg", "-m", "512", "-smp", "1",
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + serial,
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 " + appendLine,
	}, extra...)
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	out, _ := os.ReadFile(serial)
	if ctx.Err() != nil {
		t.Fatalf("QEMU did not power off in time (killed after %s); console:\n%s", time.Since(start).Round(time.Second), tail(string(out), 60))
	}
	if err != nil {
		t.Fatalf("qemu: %v: %s\nconsole:\n%s", err, stderr.String(), tail(string(out), 60))
	}
	t.Logf("VM ran %s", time.Since(start).Round(100*time.Millisecond))
	return string(out)
}

// needQEMU skips the test unless a VM can boot here; it returns QEMU's path.
func needQEMU(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM: not in -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("QEMU boot test runs as root only (kernel images are often root-readable only)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (Debian: apt install qemu-system-x86)")
	}
	return qemu
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func agentLines(console string) []string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if i := strings.Index(l, "metalhall-agent: "); i >= 0 {
			out = append(out, strings.TrimSpace(l[i:]))
		}
	}
	return out
}

// TestQEMUBootNoURL: the agent comes up as PID 1, loads its modules, sees
// there is no service to call, says so, and powers the VM off.
func TestQEMUBootNoURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	console := bootQEMU(t, ctx, "", "-nic", "none", "-device", "virtio-rng-pci")
	lines := agentLines(console)
	t.Logf("agent lines:\n%s", strings.Join(lines, "\n"))
	if len(lines) == 0 || lines[0] != "metalhall-agent: starting (pid 1)" {
		t.Fatalf("first agent line is not the start line; console:\n%s", tail(console, 60))
	}
	want := []string{"modules loaded", "ERROR: failed", "no metalhall.url= on the kernel command line", "powering off"}
	joined := strings.Join(lines, "\n")
	for _, w := range want {
		if !strings.Contains(joined, w) {
			t.Errorf("console lacks %q", w)
		}
	}
	if strings.Contains(console, "Kernel panic") {
		t.Errorf("kernel panic:\n%s", tail(console, 30))
	}
}

// vmTask boots a VM with one virtio NIC and one virtio disk (the file
// disk) and serves task to it from a fake service on loopback; QEMU's
// user-mode network runs with restrict=on, so the only way out of the VM
// is the one forward to that service. It returns the console, and what
// the service received.
// extra are more QEMU arguments (more disks).
func vmTask(t *testing.T, task wire.Task, image []byte, disk string, extra ...string) (string, *wire.Inventory, *wire.Done) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var gotInv *wire.Inventory
	var gotDone *wire.Done
	mux := http.NewServeMux()
	mux.HandleFunc("GET /agent/v1/task", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer vmtoken" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(task)
	})
	mux.HandleFunc("POST /agent/v1/inspection", func(w http.ResponseWriter, r *http.Request) {
		var inv wire.Inventory
		json.NewDecoder(r.Body).Decode(&inv)
		mu.Lock()
		gotInv = &inv
		mu.Unlock()
	})
	mux.HandleFunc("POST /agent/v1/progress", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /agent/v1/done", func(w http.ResponseWriter, r *http.Request) {
		var d wire.Done
		json.NewDecoder(r.Body).Decode(&d)
		mu.Lock()
		gotDone = &d
		mu.Unlock()
	})
	mux.HandleFunc("GET /images/vm.zst", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "vm.zst", time.Unix(0, 0), bytes.NewReader(image))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	mac := "52:54:00:4d:48:01"
	args := []string{
		// cmd: runs once per guest connection (see TestMain's relay).
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:8080-cmd:env METALHALL_TEST_RELAY=%s %s",
			srv.Listener.Addr(), self),
		"-device", "virtio-net-pci,netdev=n0,mac=" + mac,
		"-device", "virtio-rng-pci",
		"-drive", "file=" + disk + ",format=raw,if=virtio,cache=unsafe,discard=unmap"}
	console := bootQEMU(t, ctx, "metalhall.url=http://10.0.2.100:8080 metalhall.token=vmtoken metalhall.mac="+mac,
		append(args, extra...)...)
	t.Logf("agent lines:\n%s", strings.Join(agentLines(console), "\n"))
	mu.Lock()
	defer mu.Unlock()
	if gotDone == nil || !gotDone.OK {
		t.Fatalf("done = %+v; console:\n%s", gotDone, tail(console, 40))
	}
	t.Logf("done: %s", gotDone.Detail)
	return console, gotInv, gotDone
}

// TestQEMUProvision is the whole agent path in a VM: modules, DHCP,
// task, inspection, image streamed and written to the virtio disk,
// verified by read-back, done, power off.
func TestQEMUProvision(t *testing.T) {
	needQEMU(t)
	img := make([]byte, 16<<20)
	for i := 0; i < 4<<20; i++ { // data in the first 4 MiB and the last MiB
		img[i] = byte(i*7 + i>>12)
	}
	for i := 15 << 20; i < len(img); i++ {
		img[i] = byte(i >> 8)
	}
	var zst bytes.Buffer
	zw, _ := zstd.NewWriter(&zst)
	zw.Write(img)
	zw.Close()
	sum := sha256.Sum256(img)
	task := wire.Task{JobID: "vm-job", Kind: wire.KindProvision, After: wire.AfterPoweroff, Image: &wire.ImageSpec{
		URL: "/images/vm.zst", Format: "raw.zst", Size: int64(zst.Len()), SHA256: hex.EncodeToString(sum[:]),
		UncompressedSize: int64(len(img)), BlockMap: []wire.Range{{Offset: 0, Length: 4 << 20}, {Offset: 15 << 20, Length: 1 << 20}}}}
	// Old data everywhere: the holes must come out zero (BLKZEROOUT).
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, bytes.Repeat([]byte{0xEE}, 64<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	_, inv, done := vmTask(t, task, zst.Bytes(), disk)
	if inv == nil || len(inv.Disks) != 1 || inv.Disks[0].Name != "vda" || inv.Disks[0].SizeBytes != 64<<20 {
		t.Errorf("inventory = %+v", inv)
	}
	if done.Step != wire.StepVerify || !strings.Contains(done.Detail, "verified") {
		t.Errorf("done = %+v", done)
	}
	got, _ := os.ReadFile(disk)
	if !bytes.Equal(got[:len(img)], img) {
		t.Error("the VM's disk does not hold the image")
	}
}

// TestQEMUWipe wipes a real virtio block device, fast (BLKDISCARD plus
// the edges) and full.
func TestQEMUWipe(t *testing.T) {
	needQEMU(t)
	for _, mode := range []wire.WipeMode{wire.WipeFast, wire.WipeFull} {
		t.Run(string(mode), func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk.raw")
			if err := os.WriteFile(disk, bytes.Repeat([]byte{0xEE}, 32<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, done := vmTask(t, wire.Task{JobID: "wipe", Kind: wire.KindWipe, WipeMode: mode}, nil, disk)
			got, _ := os.ReadFile(disk)
			if mode == wire.WipeFull && !bytes.Equal(got, make([]byte, len(got))) {
				t.Error("full wipe left data")
			}
			edge := 1 << 20
			if !bytes.Equal(got[:edge], make([]byte, edge)) || !bytes.Equal(got[len(got)-edge:], make([]byte, edge)) {
				t.Error("the first or last MiB is not zero")
			}
			if mode == wire.WipeFast && (len(done.Erase) != 1 || !strings.Contains(done.Erase[0].Verification.Summary, "discard true")) {
				t.Errorf("fast wipe did not discard: %+v", done.Erase)
			}
		})
	}
}

// TestQEMUBootNoNetwork: a service URL but no way to reach it (no NIC at
// all): the agent gives up after metalhall.timeout, says why, powers off.
func TestQEMUBootNoNetwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	console := bootQEMU(t, ctx, "metalhall.url=http://10.0.2.100:8080 metalhall.token=x metalhall.timeout=5",
		"-nic", "none", "-device", "virtio-rng-pci")
	lines := strings.Join(agentLines(console), "\n")
	t.Logf("agent lines:\n%s", lines)
	for _, w := range []string{"metalhall-agent: starting (pid 1)", "ERROR: failed", "network: no interface with a carrier", "powering off"} {
		if !strings.Contains(lines, w) {
			t.Errorf("console lacks %q", w)
		}
	}
}
