// Package e2e is metalhall's end-to-end suite: a virtual rack (lab/rack)
// of QEMU machines with real firmware (SeaBIOS/OVMF + iPXE) behind real
// protocol BMCs (the Redfish emulator, ipmi_sim), managed by the real
// `metalhall serve` binary running in the rack's network namespace, driven
// only through the `metalhall` CLI. Each scenario asserts real outcomes:
// disk bytes, serial-console markers, BMC state, inventory state, events.
//
// It needs root, /dev/net/tun, QEMU with iPXE and OVMF, ipmi_sim, a Debian
// kernel, busybox-static, syslinux, mtools and dosfstools; without them (or
// under -short) it skips with one line saying what is missing.
package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent"
	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/lab/demoos"
	"github.com/metalhall/metalhall/lab/rack"
)

// env is the suite's shared world: one service, one rack.
type env struct {
	t       *testing.T
	dir     string
	data    string
	bin     string
	agent   string
	kernel  string
	r       *rack.Rack
	token   string
	srv     *exec.Cmd
	srvDone chan struct{}
	srvLog  string
	// server is the API the CLI talks to (default http://127.0.0.1:8280);
	// the high-availability test points it at a living instance.
	server string
	images map[string][]byte // name -> uncompressed bytes
	// serveArgs are added to serve's flags (a scenario that needs the
	// power sync restarts the service with it).
	serveArgs []string

	mu      sync.Mutex
	timings []timing
}

type timing struct {
	name   string
	d      time.Duration
	result string
}

func prereqs(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode (boots QEMU machines)")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: skipped: needs root (network namespaces, taps)")
	}
	if err := rack.Available(rack.Config{Firmware: "mixed", BMC: "mixed"}); err != nil {
		t.Skip("e2e: skipped: ", err)
	}
	if err := demoos.Available(); err != nil {
		t.Skip("e2e: skipped: ", err)
	}
	if _, err := exec.LookPath("zstd"); err != nil {
		t.Skip("e2e: skipped: zstd not found (Debian package zstd)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("e2e: skipped: the go tool is not on PATH (builds metalhall)")
	}
	k, err := demoos.FindKernel()
	if err != nil {
		t.Skip("e2e: skipped: ", err)
	}
	return k
}

func repoRoot() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(f), "..", ".."))
}

// TestEndToEnd runs the scenarios in order on one rack of three machines:
// lab-m01 BIOS + Redfish, lab-m02 UEFI + Redfish, lab-m03 BIOS + IPMI
// (whose profile expects GPUs it does not have).
func TestEndToEnd(t *testing.T) {
	kernel := prereqs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Minute)
	defer cancel()
	e := &env{t: t, dir: t.TempDir(), kernel: kernel, images: map[string][]byte{}}
	defer e.printTimings()
	e.data = filepath.Join(e.dir, "data")
	e.srvLog = filepath.Join(e.dir, "serve.log")

	e.step("setup: build, bootenv, images, rack, service", func() error { return e.setup(ctx) })
	defer e.teardown()
	if t.Failed() {
		return
	}
	ok := e.scenario(t, "1 onboarding: import, commission, profile mismatch", func(t *testing.T) { e.onboarding(ctx, t) })
	if !ok {
		return
	}
	ok = e.scenario(t, "2 provision BIOS+UEFI: disk bytes, disk boot, metadata", func(t *testing.T) { e.provision(ctx, t) })
	e.scenario(t, "4 release: wipe, first MiB zeroed, available", func(t *testing.T) { e.release(ctx, t) })
	if ok {
		e.scenario(t, "3 tenant reimage (zstd) and 404 on another tenant's machine", func(t *testing.T) { e.tenantReimage(ctx, t) })
		e.scenario(t, "3h handover: A deploys and releases, B's OS sees nothing of A's", func(t *testing.T) { e.handover(ctx, t) })
	}
	e.scenario(t, "5a kill -9 the service mid-provision of two machines", func(t *testing.T) { e.killService9(ctx, t) })
	e.scenario(t, "6 boot storm: every deployed machine power-cycled at once", func(t *testing.T) { e.bootStorm(ctx, t) })
	e.scenario(t, "4b release again (before 5c)", func(t *testing.T) { e.release(ctx, t) })
	e.scenario(t, "5c corrupted image: checksum mismatch → failed", func(t *testing.T) { e.corruptImage(ctx, t) })
	e.scenario(t, "5b BMC stops answering → failed with a BMC reason", func(t *testing.T) { e.hungBMC(ctx, t) })
	if e.scenario(t, "7 IPMI machine commissioned and provisioned end to end", func(t *testing.T) { e.ipmiProvision(ctx, t) }) {
		e.scenario(t, "7b hung ipmi_sim: power job fails within its bounds, BMC answers again", func(t *testing.T) { e.hungIPMI(ctx, t) })
		e.scenario(t, "7c energisation interlock: API power-on refused, reimage waits for the budget", func(t *testing.T) { e.interlock(ctx, t) })
	}
}

func (e *env) scenario(t *testing.T, name string, fn func(t *testing.T)) bool {
	start := time.Now()
	ok := t.Run(name, fn)
	res := "pass"
	if !ok {
		res = "FAIL"
	}
	e.mu.Lock()
	e.timings = append(e.timings, timing{name, time.Since(start), res})
	e.mu.Unlock()
	return ok
}

func (e *env) step(name string, fn func() error) {
	start := time.Now()
	err := fn()
	res := "ok"
	if err != nil {
		res = "FAIL"
		e.t.Errorf("%s: %v", name, err)
	}
	e.mu.Lock()
	e.timings = append(e.timings, timing{name, time.Since(start), res})
	e.mu.Unlock()
}

func (e *env) printTimings() {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-62s %10s  %s\n", "scenario", "time", "result")
	var total time.Duration
	for _, x := range e.timings {
		fmt.Fprintf(&b, "%-62s %10s  %s\n", x.name, x.d.Round(100*time.Millisecond), x.result)
		total += x.d
	}
	fmt.Fprintf(&b, "%-62s %10s\n", "total", total.Round(time.Second))
	fmt.Print(b.String())
}

func (e *env) setup(ctx context.Context) error {
	if err := e.build(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(e.data, "profiles"), 0o700); err != nil {
		return err
	}
	// A profile the QEMU machines meet, and one they cannot.
	os.WriteFile(filepath.Join(e.data, "profiles", "lab-vm.yaml"), []byte("min_memory_gib: 0\nmin_disks: 1\n"), 0o644)
	os.WriteFile(filepath.Join(e.data, "profiles", "hgx-h100.yaml"), []byte("gpu_model: H100\ngpu_count: 8\nmin_disks: 1\nos_disk: vda\n"), 0o644)
	if out, err := exec.CommandContext(ctx, e.bin, "bootenv", "build", "--kernel", e.kernel, "--data-dir", e.data, "--agent", e.agent).CombinedOutput(); err != nil {
		return fmt.Errorf("bootenv build: %v\n%s", err, out)
	}
	// Two demo OS images: v1 (raw.gz) and v2 (zstd).
	for _, v := range []string{"v1", "v2"} {
		img := filepath.Join(e.dir, "demo-"+v+".img")
		if err := demoos.Build(ctx, demoos.Options{Out: img, Banner: "demo OS " + v, MetadataURL: "http://10.98.0.1:8280/metadata"}); err != nil {
			return err
		}
		b, err := os.ReadFile(img)
		if err != nil {
			return err
		}
		e.images["demo-"+v] = b
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(e.images["demo-v1"])
	zw.Close()
	if err := os.WriteFile(filepath.Join(e.dir, "demo-v1.img.gz"), gz.Bytes(), 0o644); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "zstd", "-q", "-f", filepath.Join(e.dir, "demo-v2.img"), "-o", filepath.Join(e.dir, "demo-v2.img.zst")).CombinedOutput(); err != nil {
		return fmt.Errorf("zstd: %v: %s", err, out)
	}

	r, err := rack.Up(ctx, rack.Config{Machines: 3, Firmware: "mixed", BMC: "mixed", Dir: filepath.Join(e.dir, "rack"), NVMeDiskMiB: 32,
		Profile: "lab-vm", Profiles: map[string]string{"lab-m03": "hgx-h100"}, Log: &testLog{t: e.t}})
	if err != nil {
		return err
	}
	e.r = r
	return e.startService(ctx)
}

// build builds metalhall and the agent into the suite's directory.
func (e *env) build(ctx context.Context) error {
	root := repoRoot()
	bin := filepath.Join(e.dir, "bin")
	e.bin = filepath.Join(bin, "metalhall")
	e.agent = filepath.Join(bin, "metalhall-agent")
	build := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/metalhall")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build metalhall: %v\n%s", err, out)
	}
	build = exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", e.agent, "./cmd/metalhall-agent")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build metalhall-agent: %v\n%s", err, out)
	}
	return nil
}

type testLog struct{ t *testing.T }

func (l *testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// startService runs `metalhall serve` in the rack's namespace, its netboot
// on the rack's bridge, and waits for its API.
func (e *env) startService(ctx context.Context) error {
	lf, err := os.OpenFile(e.srvLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := e.r.Command(context.Background(), e.bin, "serve", "--data-dir", e.data, "--listen", "127.0.0.1:8280",
		// Machines reach the provisioning listener on the bridge; the API
		// stays on the namespace's loopback.
		"--provision-listen", net.JoinHostPort(e.r.Server.String(), "8280"),
		"--netboot-interface", e.r.Bridge, "--dhcp-mode", "reservation", "--advertise-address", e.r.Server.String(),
		"--power-sync-interval", "0", "--boot-timeout", "4m", "--stall-timeout", "2m", "--metadata-timeout", "4m")
	cmd.Args = append(cmd.Args, e.serveArgs...) // later flags win
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	lf.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.srv, e.srvDone = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("metalhall serve exited: %s", tailFile(e.srvLog, 2000))
		case <-time.After(300 * time.Millisecond):
		}
		if tok, err := os.ReadFile(filepath.Join(e.data, "admin.token")); err == nil && e.token == "" {
			e.token = strings.TrimSpace(string(tok))
		}
		if e.token != "" {
			if _, err := e.cli(ctx, e.token, "site", "list"); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("metalhall serve not answering after 60s: %s", tailFile(e.srvLog, 2000))
}

func (e *env) killService() {
	if e.srv != nil && e.srv.Process != nil {
		e.srv.Process.Kill()
		<-e.srvDone
	}
}

func (e *env) teardown() {
	if e.t.Failed() && e.srvLog != "" {
		e.t.Logf("service log (tail):\n%s", tailFile(e.srvLog, 6000))
		if e.r != nil {
			for _, m := range e.r.Machines {
				e.t.Logf("%s serial (tail):\n%s", m.Name, tail(m.Serial(0), 2500))
				e.t.Logf("%s agent's last lines:\n%s", m.Name, agentLines(m.Serial(0), 40))
			}
		}
	}
	e.killService()
	if e.r != nil {
		if err := e.r.Down(); err != nil {
			e.t.Errorf("rack down: %v", err)
		}
	}
}

// cli runs the metalhall CLI in the namespace with token and returns stdout.
func (e *env) cli(ctx context.Context, token string, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := e.r.Command(cctx, e.bin, args...)
	server := e.server
	if server == "" {
		server = "http://127.0.0.1:8280"
	}
	cmd.Env = append(os.Environ(), "METALHALL_SERVER="+server, "METALHALL_TOKEN="+token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("metalhall %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// consoleRun is `metalhall machine console` running in the namespace,
// with a keyboard the test types on.
type consoleRun struct {
	cmd  *exec.Cmd
	keys io.WriteCloser
	out  *lockedBuffer
	errb *lockedBuffer
	done chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (e *env) console(t *testing.T, ctx context.Context, name string) *consoleRun {
	t.Helper()
	cmd := e.r.Command(ctx, e.bin, "machine", "console", name)
	cmd.Env = append(os.Environ(), "METALHALL_SERVER=http://127.0.0.1:8280", "METALHALL_TOKEN="+e.token)
	c := &consoleRun{cmd: cmd, out: &lockedBuffer{}, errb: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = c.out, c.errb
	keys, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.keys = keys
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	// Attached once it says so (or it failed).
	for !strings.Contains(c.errb.String(), "[connected to "+name) {
		select {
		case err := <-c.done:
			t.Fatalf("machine console %s: %v: %s", name, err, c.errb.String())
		case <-ctx.Done():
			t.Fatalf("machine console %s: %v", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return c
}

// leave types ~. and waits for the command to end.
func (c *consoleRun) leave(t *testing.T, ctx context.Context) {
	t.Helper()
	c.keys.Write([]byte("\r~."))
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("machine console after ~.: %v: %s", err, c.errb.String())
		}
	case <-ctx.Done():
		t.Errorf("machine console did not end after ~.")
	}
}

func (e *env) admin(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := e.cli(ctx, e.token, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type machine struct {
	Name       string          `json:"name"`
	State      string          `json:"state"`
	Reason     string          `json:"reason"`
	FailedStep string          `json:"failed_step"`
	Image      string          `json:"image"`
	IP         string          `json:"ip"`
	Tenant     string          `json:"tenant"`
	MACs       []string        `json:"macs"`
	Inspection json.RawMessage `json:"inspection"`
}

func (e *env) show(ctx context.Context, token, name string) (machine, error) {
	var m machine
	out, err := e.cli(ctx, token, "machine", "show", "-o", "json", name)
	if err != nil {
		return m, err
	}
	err = json.Unmarshal([]byte(out), &m)
	return m, err
}

// waitState waits until every named machine is in a final state (one of
// want, or failed), and returns them.
func (e *env) waitState(t *testing.T, ctx context.Context, timeout time.Duration, want []string, names ...string) map[string]machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	final := map[string]bool{"failed": true}
	for _, w := range want {
		final[w] = true
	}
	got := map[string]machine{}
	for {
		all := true
		for _, n := range names {
			m, err := e.show(ctx, e.token, n)
			if err != nil {
				all = false
				continue
			}
			got[n] = m
			if !final[m.State] {
				all = false
			}
		}
		if all {
			return got
		}
		select {
		case <-ctx.Done():
			var b strings.Builder
			for _, n := range names {
				fmt.Fprintf(&b, " %s=%s", n, got[n].State)
			}
			t.Fatalf("machines not in %v within %v:%s", want, timeout, b.String())
		case <-time.After(2 * time.Second):
		}
	}
}

func (e *env) onboarding(ctx context.Context, t *testing.T) {
	e.admin(t, ctx, "site", "create", "lab-site")
	e.admin(t, ctx, "hall", "create", "--site", "lab-site", "lab-hall")
	e.admin(t, ctx, "phase", "create", "--hall", "lab-hall", "--number", "1", "--power-kw", "100")
	e.admin(t, ctx, "phase", "set-state", "--hall", "lab-hall", "--number", "1", "--to", "commissioning")
	e.admin(t, ctx, "subnet", "create", "--cidr", e.r.Subnet.String(), "--gateway", e.r.Server.String(), "lab-net")
	e.admin(t, ctx, "rack", "import", "--file", e.r.Manifest)
	e.admin(t, ctx, "rack", "set-state", "--to", "installed", e.r.Rack)
	// A technician watches lab-m03's serial console (IPMI SOL, through
	// the service) while the rack commissions; the job's own capture
	// shares the one SOL session.
	con := e.console(t, ctx, "lab-m03")
	e.admin(t, ctx, "rack", "commission", e.r.Rack)
	names := []string{"lab-m01", "lab-m02", "lab-m03"}
	got := e.waitState(t, ctx, 12*time.Minute, []string{"available"}, names...)
	con.leave(t, ctx)
	if s := con.out.String(); !strings.Contains(s, "metalhall-agent: ") {
		t.Errorf("the console session never showed the agent's output; it read %d bytes: %q", len(s), tail(s, 400))
	}
	// The failed commission shows what the machine printed, without the
	// job's agent token from the kernel command line.
	if out, err := e.cli(ctx, e.token, "machine", "console-log", "lab-m03"); err != nil {
		t.Errorf("console-log lab-m03: %v", err)
	} else if !strings.Contains(out, "metalhall-agent: ") || !strings.Contains(out, "commission job") || strings.Contains(out, "metalhall.token=ag_") {
		t.Errorf("console-log lab-m03 lacks the agent's output or shows its token:\n%s", tail(out, 2000))
	}
	// A Redfish machine has no console metalhall can use, and says so.
	if _, err := e.cli(ctx, e.token, "machine", "console-log", "lab-m01"); err == nil || !strings.Contains(err.Error(), "Serial-over-LAN") {
		t.Errorf("console-log of a Redfish machine: %v", err)
	}
	for _, n := range names[:2] {
		m := got[n]
		if m.State != "available" {
			t.Errorf("%s: %s (%s at %s), want available", n, m.State, m.Reason, m.FailedStep)
			continue
		}
		var inv wire.Inventory
		if err := json.Unmarshal(m.Inspection, &inv); err != nil {
			t.Errorf("%s: inspection: %v (%s)", n, err, m.Inspection)
			continue
		}
		lm := e.r.Machine(n)
		macOK := false
		for _, nic := range inv.NICs {
			macOK = macOK || strings.EqualFold(nic.MAC, lm.MAC.String())
		}
		if !macOK {
			t.Errorf("%s: inspection NICs %+v lack %s", n, inv.NICs, lm.MAC)
		}
		diskOK := false
		for _, d := range inv.Disks {
			diskOK = diskOK || d.SizeBytes == int64(e.r.DiskMiB)<<20
		}
		if !diskOK {
			t.Errorf("%s: inspection disks %+v: none of %d MiB", n, inv.Disks, e.r.DiskMiB)
		}
		if mem := inv.MemoryBytes >> 20; mem < int64(e.r.MemoryMiB)*3/4 || mem > int64(e.r.MemoryMiB) {
			t.Errorf("%s: inspection memory %d MiB, want about %d", n, mem, e.r.MemoryMiB)
		}
		if on := lm.BMCPower(); on {
			t.Errorf("%s: BMC reads on after commissioning (the agent powers off)", n)
		}
	}
	m3 := got["lab-m03"]
	if m3.State != "failed" || !strings.Contains(strings.ToLower(m3.Reason), "gpu") {
		t.Errorf("lab-m03: %s (%q at %s), want failed with the GPU mismatch", m3.State, m3.Reason, m3.FailedStep)
	} else {
		t.Logf("lab-m03 failed as it should: %s", m3.Reason)
	}
}

func (e *env) provision(ctx context.Context, t *testing.T) {
	e.admin(t, ctx, "image", "import", "--quiet", "--file", filepath.Join(e.dir, "demo-v1.img.gz"), "demo-v1")
	names := []string{"lab-m01", "lab-m02"}
	from := map[string]int64{}
	for _, n := range names {
		from[n] = e.r.Machine(n).SerialSize()
		e.admin(t, ctx, "machine", "provision", "--image", "demo-v1", n)
	}
	got := e.waitState(t, ctx, 12*time.Minute, []string{"deployed"}, names...)
	want := e.images["demo-v1"]
	for _, n := range names {
		m := got[n]
		if m.State != "deployed" {
			t.Errorf("%s: %s (%s at %s), want deployed", n, m.State, m.Reason, m.FailedStep)
			continue
		}
		lm := e.r.Machine(n)
		head, err := lm.ReadDisk(len(want))
		if err != nil || !bytes.Equal(head, want) {
			t.Errorf("%s: the disk's first %d bytes differ from the image (sha256 %x, want %x; %v)", n, len(want), sha256.Sum256(head), sha256.Sum256(want), err)
		}
		if !strings.Contains(lm.Serial(from[n]), demoos.Marker+" demo OS v1") {
			t.Errorf("%s: deployed but the demo OS marker is not on its console", n)
		}
		if _, dev := lm.Boots(); dev != "disk" && dev != "default" {
			t.Errorf("%s: last boot %s, want disk", n, dev)
		}
	}
}

func (e *env) release(ctx context.Context, t *testing.T) {
	n := "lab-m02"
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "deployed" {
		t.Fatalf("%s is %s (%v), want deployed: an earlier scenario failed", n, m.State, err)
	}
	e.admin(t, ctx, "machine", "release", n)
	got := e.waitState(t, ctx, 8*time.Minute, []string{"available"}, n)
	if got[n].State != "available" {
		t.Fatalf("%s: %s (%s at %s), want available", n, got[n].State, got[n].Reason, got[n].FailedStep)
	}
	head, err := e.r.Machine(n).ReadDisk(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, make([]byte, 1<<20)) {
		t.Errorf("%s: the disk's first MiB is not zeroed after release", n)
	}
	e.checkEraseReport(t, ctx, n)
}

// checkEraseReport: the newest release of machine n erased its virtio
// disk by overwrite (clear) and its QEMU NVMe disk by Format NVM with
// user-data secure erase (purge: QEMU 7.2 offers neither Sanitize nor
// crypto erase), both verified, and every byte of both is zero.
func (e *env) checkEraseReport(t *testing.T, ctx context.Context, n string) {
	var rep struct {
		Reports []struct {
			Passed bool               `json:"passed"`
			Disks  []wire.EraseRecord `json:"disks"`
		} `json:"reports"`
	}
	out := e.admin(t, ctx, "machine", "erase-report", "-o", "json", n)
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Reports) == 0 {
		t.Fatalf("%s: erase report %v: %s", n, err, out)
	}
	last := rep.Reports[len(rep.Reports)-1]
	want := map[string][2]string{
		"vda":     {string(wire.EraseOverwrite), string(wire.LevelClear)},
		"nvme0n1": {string(wire.EraseNVMeFormatUserData), string(wire.LevelPurge)},
	}
	lm := e.r.Machine(n)
	for _, d := range last.Disks {
		w, ok := want[d.Disk]
		if !ok {
			t.Errorf("%s: erase record for an unexpected disk %+v", n, d)
			continue
		}
		delete(want, d.Disk)
		if string(d.Method) != w[0] || string(d.Level) != w[1] || d.Result != wire.ErasePassed || d.Verification.Canary != 0 {
			t.Errorf("%s: %s erased by %s (%s) %s, %s; want %s (%s) passed", n, d.Disk, d.Method, d.Level, d.Result, d.Verification.Summary, w[0], w[1])
		}
		if d.Disk == "nvme0n1" && d.Serial != lm.NVMeSerial() {
			t.Errorf("%s: nvme serial %q, want %q", n, d.Serial, lm.NVMeSerial())
		}
	}
	if len(want) > 0 || !last.Passed {
		t.Errorf("%s: erase report passed=%v, no record for %v", n, last.Passed, want)
	}
	for _, p := range []string{lm.Disk, lm.NVMeDisk} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.IndexFunc(b, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Errorf("%s: %s: byte %d is not zero after the certified erase", n, filepath.Base(p), i)
		}
	}
}

func (e *env) tenantReimage(ctx context.Context, t *testing.T) {
	e.admin(t, ctx, "image", "import", "--quiet", "--file", filepath.Join(e.dir, "demo-v2.img.zst"), "demo-v2")
	e.admin(t, ctx, "tenant", "create", "bank-x")
	e.admin(t, ctx, "tenant", "create", "bank-y")
	e.admin(t, ctx, "tenant", "assign", "--tenant", "bank-x", "--machine", "lab-m01")
	e.admin(t, ctx, "tenant", "assign", "--tenant", "bank-y", "--machine", "lab-m02")
	secret := e.tenantToken(t, ctx, "bank-x")
	// Another tenant's machine does not exist for this token.
	if _, err := e.cli(ctx, secret, "machine", "show", "lab-m02"); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not found") {
		t.Errorf("tenant token on another tenant's machine: %v, want not found (404)", err)
	}
	if _, err := e.cli(ctx, secret, "machine", "provision", "--image", "demo-v2", "lab-m02"); err == nil {
		t.Errorf("tenant token provisioned another tenant's machine")
	}
	lm := e.r.Machine("lab-m01")
	from := lm.SerialSize()
	if _, err := e.cli(ctx, secret, "machine", "provision", "--image", "demo-v2", "lab-m01"); err != nil {
		t.Fatal(err)
	}
	got := e.waitState(t, ctx, 10*time.Minute, []string{"deployed"}, "lab-m01")
	m := got["lab-m01"]
	if m.State != "deployed" {
		t.Fatalf("lab-m01: %s (%s at %s), want deployed", m.State, m.Reason, m.FailedStep)
	}
	want := e.images["demo-v2"]
	head, _ := lm.ReadDisk(len(want))
	if !bytes.Equal(head, want) {
		t.Errorf("lab-m01: disk does not hold demo-v2")
	}
	if !strings.Contains(lm.Serial(from), demoos.Marker+" demo OS v2") {
		t.Errorf("lab-m01: the v2 demo OS marker is not on its console")
	}
	if m.Image != "demo-v2" {
		t.Errorf("lab-m01: image %q, want demo-v2", m.Image)
	}
}

// tenantToken creates a tenant token for tenant and returns its secret.
func (e *env) tenantToken(t *testing.T, ctx context.Context, tenant string) string {
	t.Helper()
	out := e.admin(t, ctx, "token", "create", "-o", "json", "--role", "tenant", "--tenant", tenant)
	var tok struct {
		Token  string `json:"token"`
		Secret string `json:"secret"`
	}
	json.Unmarshal([]byte(out), &tok)
	secret := tok.Token
	if secret == "" {
		secret = tok.Secret
	}
	if secret == "" {
		t.Fatalf("no token secret in %s", out)
	}
	return secret
}

func (e *env) corruptImage(ctx context.Context, t *testing.T) {
	n := "lab-m02"
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "available" {
		t.Fatalf("%s is %s (%v), want available: an earlier scenario failed", n, m.State, err)
	}
	// Import a fresh image (its own blob), then flip bytes in the blob.
	img := append([]byte(nil), e.images["demo-v1"]...)
	copy(img[len(img)-16:], "corrupt-me-later")
	p := filepath.Join(e.dir, "demo-bad.img")
	os.WriteFile(p, img, 0o644)
	before := blobs(e.data)
	e.admin(t, ctx, "image", "import", "--quiet", "--file", p, "demo-bad")
	var blob string
	for b := range blobs(e.data) {
		if !before[b] {
			blob = b
		}
	}
	if blob == "" {
		t.Fatalf("cannot find the imported blob under %s", e.data)
	}
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Flip bytes the image really carries (a block the agent downloads:
	// all-zero regions are not fetched, they are zeroed on the disk).
	off := int64(-1)
	for o := len(img) / 4; o+4096 <= len(img); o += 4096 {
		if !bytes.Equal(img[o:o+4096], make([]byte, 4096)) {
			off = int64(o)
			break
		}
	}
	if off < 0 {
		t.Fatal("no data block in the image's second half")
	}
	bad := make([]byte, 16)
	for i := range bad {
		bad[i] = img[int(off)+i] ^ 0xff
	}
	if _, err := f.WriteAt(bad, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.admin(t, ctx, "machine", "provision", "--image", "demo-bad", n)
	got := e.waitState(t, ctx, 8*time.Minute, []string{"deployed"}, n)
	m := got[n]
	if m.State != "failed" || !strings.Contains(strings.ToLower(m.Reason), "sha256") && !strings.Contains(strings.ToLower(m.Reason), "checksum") {
		if m.State == "deployed" {
			head, _ := e.r.Machine(n).ReadDisk(len(img))
			t.Logf("%s: disk equals the corrupted blob: %v; equals the imported image: %v", n, bytes.Contains(head, bad), bytes.Equal(head, img))
		}
		t.Errorf("%s: %s (%q at %s), want failed with a checksum mismatch", n, m.State, m.Reason, m.FailedStep)
	} else {
		t.Logf("%s failed as it should: %s", n, m.Reason)
	}
}

// killService9 provisions two machines at once, kills the service with
// SIGKILL while both agents are at work, restarts it, and expects both
// deployed with no manual step.
func (e *env) killService9(ctx context.Context, t *testing.T) {
	names := []string{"lab-m01", "lab-m02"}
	from := map[string]int64{}
	for _, n := range names {
		m, err := e.show(ctx, e.token, n)
		if err != nil || (m.State != "available" && m.State != "deployed") {
			t.Fatalf("%s is %s (%v), want available or deployed: an earlier scenario failed", n, m.State, err)
		}
		from[n] = e.r.Machine(n).SerialSize()
	}
	for _, n := range names {
		e.admin(t, ctx, "machine", "provision", "--image", "demo-v1", n)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, n := range names {
		// The agent's kernel ran /init (the agent's own lines go to the
		// last console= of the command line, see the report on
		// provisioner/booter.go).
		if err := e.r.Machine(n).WaitSerial(wctx, from[n], "Run /init as init process"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(4 * time.Second) // both agents are calling home / writing
	var states []string
	for _, n := range names {
		m, _ := e.show(ctx, e.token, n)
		states = append(states, n+"="+m.State)
	}
	// The kill lands mid-provision, or it proves nothing.
	for i, n := range names {
		if !strings.HasSuffix(states[i], "=provisioning") {
			t.Fatalf("%s is not provisioning at the kill (%v): the kill did not land mid-provision", n, states)
		}
	}
	t.Logf("SIGKILL to the service with %v", states)
	e.killService()
	time.Sleep(2 * time.Second)
	if err := e.startService(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.waitState(t, ctx, 10*time.Minute, []string{"deployed"}, names...)
	for _, n := range names {
		m := got[n]
		if m.State != "deployed" {
			t.Errorf("%s: %s (%s at %s) after the restart, want deployed", n, m.State, m.Reason, m.FailedStep)
			continue
		}
		want := e.images["demo-v1"]
		if head, _ := e.r.Machine(n).ReadDisk(len(want)); !bytes.Equal(head, want) {
			t.Errorf("%s: disk does not hold demo-v1 after the restart", n)
		}
		if !strings.Contains(e.r.Machine(n).Serial(from[n]), demoos.Marker+" demo OS v1") {
			t.Errorf("%s: demo OS marker missing after the restart", n)
		}
	}
}

// bootStorm power-cycles every deployed machine of the rack at once
// through the API: each boots its disk again (demo OS marker) and stays
// deployed.
func (e *env) bootStorm(ctx context.Context, t *testing.T) {
	want := map[string]string{}
	from := map[string]int64{}
	for _, lm := range e.r.Machines {
		m, err := e.show(ctx, e.token, lm.Name)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != "deployed" {
			continue // a failed or available machine has nothing to boot
		}
		want[lm.Name] = m.State
		from[lm.Name] = lm.SerialSize()
	}
	// The machines scenarios 2-5a left deployed, all of them: a storm of
	// fewer machines, or of none, proves nothing.
	if got := slices.Sorted(maps.Keys(want)); !slices.Equal(got, []string{"lab-m01", "lab-m02"}) {
		t.Fatalf("deployed machines before the storm: %v, want lab-m01 and lab-m02", got)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(want))
	for n := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.cli(ctx, e.token, "machine", "power", "--action", "cycle", n); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for n, st := range want {
		lm := e.r.Machine(n)
		if st == "deployed" {
			if err := lm.WaitSerial(wctx, from[n], demoos.Marker); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		}
	}
	for n, st := range want {
		m, err := e.show(ctx, e.token, n)
		if err != nil || m.State != st {
			t.Errorf("%s: %s after the power cycle (%v), want %s", n, m.State, err, st)
		}
	}
}

func blobs(dir string) map[string]bool {
	out := map[string]bool{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		// Blobs are named by their sha256 (64 hex digits); their block
		// maps (NAME.bmap.json) are not blobs.
		if err == nil && fi.Mode().IsRegular() && len(fi.Name()) == 64 && !strings.Contains(fi.Name(), ".") &&
			strings.Contains(p, string(filepath.Separator)+"sha256"+string(filepath.Separator)) {
			out[p] = true
		}
		return nil
	})
	return out
}

func (e *env) hungBMC(ctx context.Context, t *testing.T) {
	n := "lab-m01"
	m, err := e.show(ctx, e.token, n)
	if err != nil || m.State != "deployed" {
		t.Fatalf("%s is %s (%v), want deployed: an earlier scenario failed", n, m.State, err)
	}
	lm := e.r.Machine(n)
	if err := lm.HangBMC(true); err != nil {
		t.Fatal(err)
	}
	defer lm.HangBMC(false)
	e.admin(t, ctx, "machine", "release", n)
	got := e.waitState(t, ctx, 8*time.Minute, []string{"available"}, n)
	m = got[n]
	if m.State != "failed" || !strings.Contains(strings.ToLower(m.Reason), "bmc") {
		t.Errorf("%s: %s (%q at %s), want failed with a BMC reason", n, m.State, m.Reason, m.FailedStep)
	} else {
		t.Logf("%s failed as it should: %s", n, m.Reason)
	}
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	return tail(string(b), n)
}

// agentLines is the last n lines the agent wrote on a serial console: a
// kernel panic's dump after them would push them out of a plain tail.
func agentLines(serial string, n int) string {
	var out []string
	for _, l := range strings.Split(serial, "\n") {
		if strings.Contains(l, agent.LinePrefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-n):], "\n")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

var _ = errors.New
