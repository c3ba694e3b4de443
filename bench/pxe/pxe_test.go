// Package pxe compares, in one run, one BIOS machine's time from power-on
// (PXE) to its image written (a) through metalhall and (b) through a
// minimal baseline: dnsmasq (DHCP + TFTP), a static Go HTTP file server,
// the same Debian kernel and a busybox initramfs that does
// `wget | dd of=/dev/vda`. See README.md. Issue 8 ("Performance").
//
// It only runs with METALHALL_PXE_BENCH=1, as root (bench/pxe/run.sh):
// plain `go test ./...` skips it.
package pxe

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/bootenv"
	"github.com/metalhall/metalhall/lab/demoos"
	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/qemu"
	"github.com/metalhall/metalhall/lab/rack"
	"github.com/metalhall/metalhall/netboot"
)

const (
	doneMarker = "PXEBENCH-IMAGE-WRITTEN"
	randMiB    = 32 // random (incompressible, non-zero) MiB appended to the 16 MiB demo OS image
)

func repoRoot() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(f), "..", ".."))
}

type result struct {
	side  string // metalhall, metalhall-old, baseline or baseline+v
	run   int
	qemu  time.Duration // QEMU start → image written
	cycle time.Duration // metalhall only: power-cycle step start → write-image end
	boot  time.Duration // QEMU start → image transfer starts (metalhall: write-image step start; baseline: GET /image.raw)
	write time.Duration // image transfer start → written
	// phases splits QEMU start → written by the guest's console lines
	// (phaseNames); a phase whose marks were not seen is absent.
	phases map[string]time.Duration
	note   string
}

// phaseNames are the parts of QEMU start → written, in order, each
// ending at a console line of the guest (host clock, see serialClock)
// or, for "report", at the service's (the baseline server's) record of
// the end:
//
//	fw+kernel     QEMU start → /init's first line (firmware, PXE, iPXE, kernel+initramfs download, kernel boot)
//	modules       → modules loaded
//	dhcp          → network up (metalhall: "network up"; baseline: udhcpc's address)
//	task          → the agent has its task (baseline: → "writing", nothing to ask)
//	inspect       → "writing image" (the inspection, its POST, the target chosen; baseline has none)
//	stream+write  → "image written, verifying" (download, decode, write, fsync; baseline: wget | dd, sync)
//	read-back     → "task done" (read the disk back, sha256; baseline+v: head | sha256sum)
//	report        → the service records done (baseline: GET /done)
var phaseNames = []string{"fw+kernel", "modules", "dhcp", "task", "inspect", "stream+write", "read-back", "report"}

// phaseMark is a phase and the console line (substring) that ends it.
type phaseMark struct{ phase, line string }

var (
	agentMarks = []phaseMark{
		{"fw+kernel", "metalhall-agent: starting"},
		{"modules", "metalhall-agent: modules loaded"},
		{"dhcp", "metalhall-agent: network up"},
		{"task", "metalhall-agent: task job="},
		{"inspect", "metalhall-agent: writing image"},
		{"stream+write", "metalhall-agent: image written, verifying"},
		{"read-back", "metalhall-agent: task done"},
	}
	baselineMarks = []phaseMark{
		{"fw+kernel", "pxebench: init"},
		{"modules", "pxebench: modules loaded"},
		{"dhcp", "pxebench: address"},
		{"task", "pxebench: writing"},
		{"stream+write", "pxebench: written"},
		{"read-back", "pxebench: sha256 verified"},
	}
)

// splitPhases turns the times at which the marks' lines appeared into
// phase durations from start to end. A phase is the time from the
// previous mark seen to its own; an unseen mark leaves its phase out.
func splitPhases(c *serialClock, marks []phaseMark, start, end time.Time) map[string]time.Duration {
	ph := map[string]time.Duration{}
	prev := start
	for _, m := range marks {
		at := c.first(m.line)
		if at.IsZero() {
			continue
		}
		ph[m.phase] = at.Sub(prev)
		prev = at
	}
	if !end.IsZero() {
		ph["report"] = end.Sub(prev)
	}
	return ph
}

// serialClock timestamps the lines of a serial log on the host's clock
// as they appear: the console lines of the agent (and of the baseline's
// /init) carry no time of their own, and the guest's clock is not the
// one QEMU start and the service's records are taken on. It polls every
// 20 ms (a line shows up at most that late, the same for every side).
type serialClock struct {
	mu    sync.Mutex
	lines []stampedLine
	quit  chan struct{}
	done  chan struct{}
}

type stampedLine struct {
	at   time.Time
	text string
}

// watchSerial follows path from byte offset from until stop. The file
// may not exist yet (QEMU creates it).
func watchSerial(path string, from int64) *serialClock {
	c := &serialClock{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		off := from
		var partial []byte
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if f, err := os.Open(path); err == nil {
				if _, err := f.Seek(off, io.SeekStart); err == nil {
					b, _ := io.ReadAll(f)
					off += int64(len(b))
					partial = append(partial, b...)
				}
				f.Close()
				now := time.Now()
				for {
					i := bytes.IndexByte(partial, '\n')
					if i < 0 {
						break
					}
					c.mu.Lock()
					c.lines = append(c.lines, stampedLine{now, string(partial[:i])})
					c.mu.Unlock()
					partial = partial[i+1:]
				}
			}
			select {
			case <-c.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return c
}

func (c *serialClock) stop() {
	close(c.quit)
	<-c.done
}

// first is when the first line containing s appeared (zero if none).
func (c *serialClock) first(s string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if strings.Contains(l.text, s) {
			return l.at
		}
	}
	return time.Time{}
}

// powerLog timestamps the rack's "NAME: power on" log lines.
type powerLog struct {
	mu sync.Mutex
	on []time.Time
}

func (p *powerLog) Write(b []byte) (int, error) {
	if strings.Contains(string(b), ": power on") {
		p.mu.Lock()
		p.on = append(p.on, time.Now())
		p.mu.Unlock()
	}
	return len(b), nil
}

func (p *powerLog) last() (time.Time, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.on) == 0 {
		return time.Time{}, 0
	}
	return p.on[len(p.on)-1], len(p.on)
}

func TestPXEBench(t *testing.T) {
	if os.Getenv("METALHALL_PXE_BENCH") != "1" {
		t.Skip("PXE benchmark: set METALHALL_PXE_BENCH=1 and run as root (bench/pxe/run.sh)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespaces, taps)")
	}
	runs := 2
	if s := os.Getenv("RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	for _, p := range []string{"/usr/sbin/dnsmasq", "/usr/lib/ipxe/undionly.kpxe", demoos.Busybox} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s missing", p)
		}
	}
	if err := rack.Available(rack.Config{Firmware: "bios", BMC: "redfish"}); err != nil {
		t.Fatal(err)
	}
	kernel, err := demoos.FindKernel()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if d := os.Getenv("BENCH_DIR"); d != "" {
		dir = d
	}

	// ---- the shared image: demo OS (16 MiB) + 32 MiB random ----
	imgPath := filepath.Join(dir, "bench.img")
	if err := demoos.Build(ctx, demoos.Options{Out: imgPath, Banner: "pxe bench", MetadataURL: "http://10.98.0.1:8280/metadata"}); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(imgPath)
	if err != nil {
		t.Fatal(err)
	}
	extra := make([]byte, randMiB<<20)
	rand.Read(extra)
	img = append(img, extra...)
	if err := os.WriteFile(imgPath, img, 0o644); err != nil {
		t.Fatal(err)
	}
	zeroBlocks := 0
	for o := 0; o+4096 <= len(img); o += 4096 {
		if bytes.Equal(img[o:o+4096], make([]byte, 4096)) {
			zeroBlocks++
		}
	}
	t.Logf("image: %d MiB raw, %d of %d 4 KiB blocks all-zero", len(img)>>20, zeroBlocks, len(img)/4096)

	// ---- (a) metalhall ----
	mh := &mhSide{t: t, dir: dir, kernel: kernel, img: img, imgPath: imgPath}
	if err := mh.setup(ctx); err != nil {
		mh.teardown()
		t.Fatal(err)
	}
	defer mh.teardown()

	// ---- (b) baseline ----
	bl := &blSide{t: t, dir: filepath.Join(dir, "baseline"), kernel: kernel, img: img}
	if err := bl.setup(ctx); err != nil {
		bl.teardown()
		t.Fatal(err)
	}
	defer bl.teardown()

	sides := []string{"metalhall", "baseline", "baseline+v"}
	if os.Getenv("OLD_REF") != "" {
		sides = []string{"metalhall", "metalhall-old", "baseline", "baseline+v"}
	}
	if s := os.Getenv("SIDES"); s != "" {
		sides = strings.Split(s, ",")
		for _, side := range sides {
			switch side {
			case "metalhall", "baseline", "baseline+v":
			case "metalhall-old":
				if os.Getenv("OLD_REF") == "" {
					t.Fatal("SIDES names metalhall-old: set OLD_REF to the git ref of the old agent (e.g. OLD_REF=main)")
				}
			default:
				t.Fatalf("SIDES: unknown side %q (want metalhall, metalhall-old, baseline, baseline+v)", side)
			}
		}
	}
	var results []result
	for i := 1; i <= runs; i++ {
		order := append([]string(nil), sides...)
		if i%2 == 0 {
			slices.Reverse(order)
		}
		for _, side := range order {
			var r result
			var err error
			if strings.HasPrefix(side, "metalhall") {
				r, err = mh.run(ctx, i, side)
			} else {
				r, err = bl.run(ctx, i, side == "baseline+v")
			}
			if err != nil {
				t.Errorf("%s run %d: %v", side, i, err)
				continue
			}
			t.Logf("%s run %d: %v (%s)", side, i, r.qemu.Round(100*time.Millisecond), r.note)
			results = append(results, r)
		}
	}
	printTable(results)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printTable(rs []result) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-13s %4s %22s %26s %12s %10s  %s\n", "side", "run", "QEMU start→written", "power-cycle→write-image", "boot part", "write part", "note")
	qemu, cycle := map[string][]time.Duration{}, map[string][]time.Duration{}
	var sides []string
	for _, r := range rs {
		if _, ok := qemu[r.side]; !ok {
			sides = append(sides, r.side)
		}
		c := "-"
		if strings.HasPrefix(r.side, "metalhall") {
			c = fmt.Sprintf("%.1fs", r.cycle.Seconds())
			cycle[r.side] = append(cycle[r.side], r.cycle)
		}
		qemu[r.side] = append(qemu[r.side], r.qemu)
		fmt.Fprintf(&b, "%-13s %4d %21.1fs %26s %11.1fs %9.1fs  %s\n", r.side, r.run, r.qemu.Seconds(), c, r.boot.Seconds(), r.write.Seconds(), r.note)
	}
	for _, side := range sides {
		if cs := cycle[side]; len(cs) > 0 {
			fmt.Fprintf(&b, "%-13s %4s %21.1fs %25.1fs\n", side, "med", median(qemu[side]).Seconds(), median(cs).Seconds())
		} else {
			fmt.Fprintf(&b, "%-13s %4s %21.1fs\n", side, "med", median(qemu[side]).Seconds())
		}
	}
	base, basev := median(qemu["baseline"]), median(qemu["baseline+v"])
	for _, side := range []string{"metalhall", "metalhall-old"} {
		mq := qemu[side]
		if len(mq) == 0 {
			continue
		}
		if base > 0 {
			fmt.Fprintf(&b, "ratio %s/baseline (median, QEMU start→written): %.2fx\n", side, median(mq).Seconds()/base.Seconds())
			fmt.Fprintf(&b, "ratio %s/baseline (median, metalhall power-cycle start→write-image end vs baseline QEMU start→written): %.2fx   (target ≤ 1.15x)\n", side, median(cycle[side]).Seconds()/base.Seconds())
		}
		if basev > 0 {
			fmt.Fprintf(&b, "ratio %s/baseline+v (median, QEMU start→written, baseline also reads back + sha256 like the agent): %.2fx\n", side, median(mq).Seconds()/basev.Seconds())
		}
	}
	if old, cur := median(qemu["metalhall-old"]), median(qemu["metalhall"]); old > 0 && cur > 0 {
		fmt.Fprintf(&b, "ratio metalhall/metalhall-old (median, QEMU start→written; same service, the agent of this checkout against OLD_REF's): %.2fx\n", cur.Seconds()/old.Seconds())
	}

	// Where the time goes: QEMU start → written split at the guest's
	// console lines (phaseNames), each round and the medians per side.
	fmt.Fprintf(&b, "\nphases (s; host clock at the guest's console lines, see phaseNames):\n%-13s %4s", "side", "run")
	for _, p := range phaseNames {
		fmt.Fprintf(&b, " %12s", p)
	}
	b.WriteByte('\n')
	row := func(side, run string, get func(p string) (time.Duration, bool)) {
		fmt.Fprintf(&b, "%-13s %4s", side, run)
		for _, p := range phaseNames {
			if d, ok := get(p); ok {
				fmt.Fprintf(&b, " %12.1f", d.Seconds())
			} else {
				fmt.Fprintf(&b, " %12s", "-")
			}
		}
		b.WriteByte('\n')
	}
	for _, r := range rs {
		row(r.side, strconv.Itoa(r.run), func(p string) (time.Duration, bool) { d, ok := r.phases[p]; return d, ok })
	}
	for _, side := range sides {
		row(side, "med", func(p string) (time.Duration, bool) {
			var ds []time.Duration
			for _, r := range rs {
				if d, ok := r.phases[p]; ok && r.side == side {
					ds = append(ds, d)
				}
			}
			return median(ds), len(ds) > 0
		})
	}
	fmt.Print(b.String())
}

// ================= (a) metalhall =================

type mhSide struct {
	t       *testing.T
	dir     string
	kernel  string
	img     []byte
	imgPath string
	bin     string
	data    string
	token   string
	r       *rack.Rack
	plog    powerLog
	srv     *exec.Cmd
	srvDone chan struct{}
	// With OLD_REF: the initramfs with this checkout's agent and the one
	// with OLD_REF's, swapped into the data dir before each round.
	newInitrd, oldInitrd string
}

func (m *mhSide) setup(ctx context.Context) error {
	root := repoRoot()
	// Built here, from this checkout, into the bench's temp dir.
	m.bin = filepath.Join(m.dir, "bin", "metalhall")
	agent := filepath.Join(m.dir, "bin", "metalhall-agent")
	build := exec.CommandContext(ctx, "go", "build", "-o", m.bin, "./cmd/metalhall")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build metalhall: %v\n%s", err, out)
	}
	build = exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", agent, "./cmd/metalhall-agent")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build metalhall-agent: %v\n%s", err, out)
	}
	m.data = filepath.Join(m.dir, "data")
	os.MkdirAll(filepath.Join(m.data, "profiles"), 0o700)
	os.WriteFile(filepath.Join(m.data, "profiles", "lab-vm.yaml"), []byte("min_memory_gib: 0\nmin_disks: 1\n"), 0o644)
	// The lab's machines are QEMU: the qemu module set, as the baseline
	// carries only virtio. BOOTENV_MODULES=server measures the set for
	// real servers; BOOTENV_COMPRESSION=zstd the other compression.
	set, comp := envOr("BOOTENV_MODULES", "qemu"), envOr("BOOTENV_COMPRESSION", "gzip")
	out, err := exec.CommandContext(ctx, m.bin, "bootenv", "build", "--kernel", m.kernel, "--data-dir", m.data, "--agent", agent,
		"--module-set", set, "--compression", comp).CombinedOutput()
	m.t.Logf("metalhall: bootenv --module-set %s --compression %s: %s", set, comp, bytes.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("bootenv build: %v\n%s", err, out)
	}
	if ref := os.Getenv("OLD_REF"); ref != "" {
		if err := m.buildOld(ctx, ref, set, comp); err != nil {
			return err
		}
	}
	r, err := rack.Up(ctx, rack.Config{Machines: 1, Firmware: "bios", BMC: "redfish", Dir: filepath.Join(m.dir, "rack"),
		Profile: "lab-vm", Log: &m.plog})
	if err != nil {
		return err
	}
	m.r = r
	lf, err := os.OpenFile(filepath.Join(m.dir, "serve.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := r.Command(context.Background(), m.bin, "serve", "--data-dir", m.data, "--listen", "127.0.0.1:8280",
		// Machines reach the provisioning listener on the bridge; the API
		// stays on the namespace's loopback.
		"--provision-listen", net.JoinHostPort(r.Server.String(), "8280"),
		"--netboot-interface", r.Bridge, "--dhcp-mode", "reservation", "--advertise-address", r.Server.String(),
		"--power-sync-interval", "0", "--boot-timeout", "4m", "--stall-timeout", "2m", "--metadata-timeout", "4m")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return err
	}
	lf.Close()
	m.srv, m.srvDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(m.srvDone) }()
	deadline := time.Now().Add(60 * time.Second)
	for m.token == "" || func() bool { _, err := m.cli(ctx, "site", "list"); return err != nil }() {
		if time.Now().After(deadline) {
			return fmt.Errorf("service not answering: %s", tailFile(filepath.Join(m.dir, "serve.log"), 2000))
		}
		time.Sleep(300 * time.Millisecond)
		if tok, err := os.ReadFile(filepath.Join(m.data, "admin.token")); err == nil {
			m.token = strings.TrimSpace(string(tok))
		}
	}
	for _, args := range [][]string{
		{"site", "create", "lab-site"},
		{"hall", "create", "--site", "lab-site", "lab-hall"},
		{"phase", "create", "--hall", "lab-hall", "--number", "1", "--power-kw", "100"},
		{"phase", "set-state", "--hall", "lab-hall", "--number", "1", "--to", "commissioning"},
		{"subnet", "create", "--cidr", r.Subnet.String(), "--gateway", r.Server.String(), "lab-net"},
		{"rack", "import", "--file", r.Manifest},
		{"rack", "set-state", "--to", "installed", r.Rack},
		{"image", "import", "--quiet", "--file", m.imgPath, "bench"},
		{"rack", "commission", "--wait", r.Rack},
	} {
		start := time.Now()
		if _, err := m.cli(ctx, args...); err != nil {
			return err
		}
		if args[1] == "commission" {
			m.t.Logf("metalhall: commissioning (not measured) took %v", time.Since(start).Round(time.Second))
		}
	}
	return nil
}

// buildOld builds OLD_REF's agent (from `git archive`, so the checkout
// is not touched) and a boot environment around it with this checkout's
// builder and the same module set and compression: the two metalhall
// sides differ only in the agent.
func (m *mhSide) buildOld(ctx context.Context, ref, set, comp string) error {
	root := repoRoot()
	src := filepath.Join(m.dir, "old-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	// safe.directory: the bench runs as root in someone else's checkout.
	arch := exec.CommandContext(ctx, "sh", "-c", `git -c safe.directory='*' -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, ref, src)
	if out, err := arch.CombinedOutput(); err != nil {
		return fmt.Errorf("git archive %s: %v\n%s", ref, err, out)
	}
	agent := filepath.Join(m.dir, "bin", "metalhall-agent-old")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", agent, "./cmd/metalhall-agent")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build metalhall-agent at %s: %v\n%s", ref, err, out)
	}
	oldData := filepath.Join(m.dir, "old-data")
	out, err := exec.CommandContext(ctx, m.bin, "bootenv", "build", "--kernel", m.kernel, "--data-dir", oldData, "--agent", agent,
		"--module-set", set, "--compression", comp).CombinedOutput()
	m.t.Logf("metalhall-old (agent at %s): bootenv: %s", ref, bytes.TrimSpace(out))
	if err != nil {
		return fmt.Errorf("bootenv build (old agent): %v\n%s", err, out)
	}
	m.oldInitrd = filepath.Join(oldData, "bootenv", "initrd.img")
	m.newInitrd = filepath.Join(m.dir, "new-initrd.img")
	return installFile(filepath.Join(m.data, "bootenv", "initrd.img"), m.newInitrd)
}

func (m *mhSide) cli(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	cmd := m.r.Command(cctx, m.bin, args...)
	cmd.Env = append(os.Environ(), "METALHALL_SERVER=http://127.0.0.1:8280", "METALHALL_TOKEN="+m.token)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("metalhall %s: %v: %s %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()), tail(out.String(), 1500))
	}
	return out.String(), nil
}

type jobView struct {
	State string `json:"state"`
	Job   *struct {
		ID    string `json:"id"`
		State string `json:"state"`
		Steps []struct {
			Name      string    `json:"name"`
			State     string    `json:"state"`
			StartedAt time.Time `json:"started_at"`
			EndedAt   time.Time `json:"ended_at"`
		} `json:"steps"`
	} `json:"job"`
}

func (m *mhSide) run(ctx context.Context, i int, side string) (result, error) {
	const name = "lab-m01"
	lm := m.r.Machine(name)
	// This round's agent: the checkout's, or OLD_REF's (metalhall-old).
	initrd := m.newInitrd
	if side == "metalhall-old" {
		initrd = m.oldInitrd
	}
	if initrd != "" {
		if err := installFile(initrd, filepath.Join(m.data, "bootenv", "initrd.img")); err != nil {
			return result{}, err
		}
	}
	_, boots0 := m.plog.last()
	clock := watchSerial(lm.SerialLog(), lm.SerialSize())
	defer clock.stop()
	if _, err := m.cli(ctx, "machine", "provision", "--image", "bench", "--wait", name); err != nil {
		return result{}, fmt.Errorf("%v\nserve.log: %s\nserial: %s", err, tailFile(filepath.Join(m.dir, "serve.log"), 1500), tail(lm.Serial(0), 1500))
	}
	out, err := m.cli(ctx, "machine", "show", "-o", "json", name)
	if err != nil {
		return result{}, err
	}
	var v jobView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Job == nil {
		return result{}, fmt.Errorf("machine show: %v: %s", err, tail(out, 800))
	}
	var cycleStart, writeStart, writeEnd time.Time
	for _, s := range v.Job.Steps {
		switch s.Name {
		case "power-cycle":
			cycleStart = s.StartedAt
		case "write-image":
			writeStart, writeEnd = s.StartedAt, s.EndedAt
		}
	}
	if cycleStart.IsZero() || writeEnd.IsZero() {
		return result{}, fmt.Errorf("job %s has no power-cycle/write-image times: %s", v.Job.ID, tail(out, 1500))
	}
	// The QEMU start of this job's PXE boot: the first power-on after
	// power-cycle began (the disk boot after write-image is a later one).
	m.plog.mu.Lock()
	var on time.Time
	for k := boots0; k < len(m.plog.on); k++ {
		if !m.plog.on[k].Before(cycleStart.Add(-time.Second)) {
			on = m.plog.on[k]
			break
		}
	}
	m.plog.mu.Unlock()
	if on.IsZero() {
		return result{}, fmt.Errorf("no QEMU power-on seen after power-cycle start %v", cycleStart)
	}
	head, err := lm.ReadDisk(len(m.img))
	note := "job " + v.Job.State + ", machine " + v.State
	if err != nil || !bytes.Equal(head, m.img) {
		note += ", DISK MISMATCH"
	} else {
		note += ", disk = image"
	}
	return result{side: side, run: i, qemu: writeEnd.Sub(on), cycle: writeEnd.Sub(cycleStart),
		boot: writeStart.Sub(on), write: writeEnd.Sub(writeStart), phases: splitPhases(clock, agentMarks, on, writeEnd), note: note}, nil
}

// installFile copies src over dst by a rename, so the service never
// hands out half a file.
func installFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".bench-tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func (m *mhSide) teardown() {
	if m.srv != nil && m.srv.Process != nil {
		m.srv.Process.Kill()
		<-m.srvDone
	}
	if m.r != nil {
		if err := m.r.Down(); err != nil {
			m.t.Errorf("rack down: %v", err)
		}
	}
}

// ================= (b) baseline =================

const (
	blBridge = "pxebr0"
	blTap    = "pxetap0"
	blPort   = "8380"
)

var (
	blServer = netip.MustParseAddr("10.97.0.1")
	blMAC    = net.HardwareAddr{0x52, 0x54, 0x00, 0x97, 0x00, 0x01}
)

type blSide struct {
	t       *testing.T
	dir     string
	kernel  string
	img     []byte
	ns      *netns.Namespace
	dnsmasq *exec.Cmd
	dnsDone chan struct{}
	ln      net.Listener
	mu      sync.Mutex
	doneAt  time.Time
	seen    map[string]time.Time // first request per path, this run
	mode    string               // "write" or "verify" (what /mode answers)
	disk    string
}

const blInit = `/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin /proc /sys /dev /run /tmp
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
echo "pxebench: init"
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
echo "pxebench: modules loaded"
ifc=""
i=0
while { [ -z "$ifc" ] || [ ! -b /dev/vda ]; } && [ $i -lt 100 ]; do
	for d in /sys/class/net/*; do n=${d##*/}; [ "$n" != lo ] && [ -z "$ifc" ] && ifc=$n; done
	[ -z "$ifc" ] || [ ! -b /dev/vda ] && sleep 0.1
	i=$((i+1))
done
ip link set lo up
ip link set "$ifc" up
udhcpc -i "$ifc" -s /etc/udhcpc.script -t 20 -T 2 -A 3 -n -q -f 2>&1 | grep -v "^udhcpc: sending"
srv=$(cat /run/serverid)
echo "pxebench: writing http://$srv:` + blPort + `/image.raw to /dev/vda"
wget -q -O - "http://$srv:` + blPort + `/image.raw" | dd of=/dev/vda bs=1M 2>&1
sync
echo "pxebench: written"
if [ "$(wget -q -O - "http://$srv:` + blPort + `/mode")" = verify ]; then
	# Like the agent: read the written bytes back and check their sha256.
	echo 3 > /proc/sys/vm/drop_caches
	want=$(wget -q -O - "http://$srv:` + blPort + `/sha256")
	got=$(head -c $(wget -q -O - "http://$srv:` + blPort + `/size") /dev/vda | sha256sum)
	got=${got%% *}
	[ "$got" = "$want" ] && echo "pxebench: sha256 verified" || echo "pxebench: SHA256 MISMATCH $got"
fi
wget -q -O /dev/null "http://$srv:` + blPort + `/done" || true
echo "` + doneMarker + ` $(date +%s)"
poweroff -f
`

const blUdhcpc = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	echo "$serverid" > /run/serverid
	echo "pxebench: address $ip from $serverid"
	;;
esac
exit 0
`

func (b *blSide) setup(ctx context.Context) error {
	files := filepath.Join(b.dir, "http")
	tftp := filepath.Join(b.dir, "tftp")
	for _, d := range []string{files, tftp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	kb, err := os.ReadFile(b.kernel)
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(files, "vmlinuz"), kb, 0o644)
	if err := os.WriteFile(filepath.Join(files, "image.raw"), b.img, 0o644); err != nil {
		return err
	}
	base := "http://" + blServer.String() + ":" + blPort
	// Same command line as metalhall's agent boot (provisioner/booter.go).
	script := "#!ipxe\nkernel " + base + "/vmlinuz console=tty0 console=ttyS0,115200 initrd=initrd.cpio.gz || goto failed\n" +
		"initrd " + base + "/initrd.cpio.gz || goto failed\nboot || goto failed\n:failed\necho pxebench boot failed\nshell\n"
	os.WriteFile(filepath.Join(files, "boot.ipxe"), []byte(script), 0o644)

	ird, err := qemu.BusyboxInitramfs(demoos.Busybox, blInit)
	if err != nil {
		return err
	}
	ird = append(ird,
		qemu.File{Path: "etc", Dir: true, Mode: 0o755},
		qemu.File{Path: "etc/udhcpc.script", Mode: 0o755, Data: []byte(blUdhcpc)},
		qemu.File{Path: "lib", Dir: true, Mode: 0o755},
		qemu.File{Path: "lib/modules", Dir: true, Mode: 0o755},
		qemu.File{Path: "run", Dir: true, Mode: 0o755},
		qemu.File{Path: "tmp", Dir: true, Mode: 0o1777},
	)
	modDir := filepath.Join("/lib/modules", strings.TrimPrefix(filepath.Base(b.kernel), "vmlinuz-"))
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return err
	}
	deps, err := bootenv.ParseModulesDep(bytes.NewReader(dep))
	if err != nil {
		return err
	}
	order, _ := deps.Order([]string{"virtio_pci", "virtio_net", "virtio_blk"})
	for _, mod := range order {
		mb, err := os.ReadFile(filepath.Join(modDir, deps.File[mod]))
		if err != nil {
			return err
		}
		ird = append(ird, qemu.File{Path: "lib/modules/" + mod + ".ko", Mode: 0o644, Data: mb})
	}
	ird = append(ird, qemu.File{Path: "etc/modules.order", Mode: 0o644, Data: []byte(strings.Join(order, "\n") + "\n")})
	var buf bytes.Buffer
	if err := qemu.WriteInitramfs(&buf, ird); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(files, "initrd.cpio.gz"), buf.Bytes(), 0o644)
	b.t.Logf("baseline: initramfs %d KiB (modules %v)", buf.Len()>>10, order)
	if err := netboot.StageIPXE(tftp, netboot.DebianIPXEDir, "undionly.kpxe"); err != nil {
		return err
	}

	// The private segment: its own namespace, bridge, tap.
	b.ns, err = netns.New(ctx, "mhpxebench")
	if err != nil {
		return err
	}
	if err := b.ns.AddBridge(ctx, blBridge, netip.PrefixFrom(blServer, 24)); err != nil {
		return err
	}
	if err := b.ns.AddTap(ctx, blTap, blBridge); err != nil {
		return err
	}
	// dnsmasq: DHCP (reserved address), TFTP of undionly.kpxe for plain
	// PXE ROMs, and the HTTP script for iPXE (QEMU's ROM is iPXE, so it
	// gets the script at once, as with metalhall).
	cmd := b.ns.Command(context.Background(), "/usr/sbin/dnsmasq", "--no-daemon", "--port=0", "--no-ping",
		"--interface="+blBridge, "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-range=10.97.0.100,10.97.0.150,255.255.255.0,10m",
		"--dhcp-host="+blMAC.String()+",10.97.0.10",
		"--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:ipxe,175",
		"--dhcp-boot=tag:!ipxe,undionly.kpxe", "--dhcp-boot=tag:ipxe,"+base+"/boot.ipxe",
		"--enable-tftp", "--tftp-root="+tftp,
		"--dhcp-leasefile="+filepath.Join(b.dir, "dnsmasq.leases"),
		"--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts", "--user=root", "--log-dhcp")
	dl, err := os.Create(filepath.Join(b.dir, "dnsmasq.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = dl, dl
	if err := cmd.Start(); err != nil {
		dl.Close()
		return err
	}
	dl.Close()
	b.dnsmasq, b.dnsDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(b.dnsDone) }()

	// Static HTTP server, its socket opened inside the namespace.
	mux := http.NewServeMux()
	fs := http.FileServer(http.Dir(files))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.seen == nil {
			b.seen = map[string]time.Time{}
		}
		if _, ok := b.seen[r.URL.Path]; !ok {
			b.seen[r.URL.Path] = time.Now()
		}
		b.mu.Unlock()
		fs.ServeHTTP(w, r)
	})
	mux.HandleFunc("/done", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.doneAt.IsZero() {
			b.doneAt = time.Now()
		}
		b.mu.Unlock()
	})
	sum := sha256.Sum256(b.img)
	mux.HandleFunc("/sha256", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%x", sum) })
	mux.HandleFunc("/size", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, len(b.img)) })
	mux.HandleFunc("/mode", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		defer b.mu.Unlock()
		fmt.Fprint(w, b.mode)
	})
	ready := make(chan error, 1)
	go b.ns.Run(func() error {
		ln, err := net.Listen("tcp4", blServer.String()+":"+blPort)
		if err != nil {
			ready <- err
			return err
		}
		b.ln = ln
		ready <- nil
		return http.Serve(ln, mux)
	})
	if err := <-ready; err != nil {
		return err
	}
	b.disk = filepath.Join(b.dir, "disk.raw")
	return nil
}

func (b *blSide) run(ctx context.Context, i int, verify bool) (result, error) {
	// A fresh sparse 64 MiB disk each run, like the rack machine's.
	os.Remove(b.disk)
	f, err := os.Create(b.disk)
	if err != nil {
		return result{}, err
	}
	f.Truncate(64 << 20)
	f.Close()
	serial := filepath.Join(b.dir, fmt.Sprintf("serial-%d.log", i))
	// The rack machine's QEMU arguments (lab/rack Machine.Args, BIOS, boot pxe).
	args := []string{"netns", "exec", b.ns.Name, qemu.Binary,
		"-name", "pxebench", "-accel", "tcg", "-m", "512",
		"-display", "none", "-monitor", "none", "-no-reboot",
		"-chardev", "file,id=ser0,path=" + serial + ",append=on", "-serial", "chardev:ser0",
		"-netdev", "tap,id=n0,ifname=" + blTap + ",script=no,downscript=no",
		"-drive", "file=" + b.disk + ",format=raw,if=none,id=d0",
		"-device", "virtio-blk-pci,drive=d0,bootindex=2",
		"-device", "virtio-rng-pci",
		"-device", "virtio-net-pci,netdev=n0,mac=" + blMAC.String() + ",bootindex=1"}
	b.mu.Lock()
	b.doneAt = time.Time{}
	b.seen = map[string]time.Time{}
	b.mode = "write"
	if verify {
		b.mode = "verify"
	}
	b.mu.Unlock()
	cmd := exec.Command("ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ql, _ := os.Create(filepath.Join(b.dir, fmt.Sprintf("qemu-%d.log", i)))
	cmd.Stdout, cmd.Stderr = ql, ql
	// Both baseline sides of a round append to the same serial log.
	var from int64
	if st, err := os.Stat(serial); err == nil {
		from = st.Size()
	}
	clock := watchSerial(serial, from)
	defer clock.stop()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		ql.Close()
		return result{}, err
	}
	ql.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	select {
	case <-done:
	case <-time.After(8 * time.Minute):
		return result{}, fmt.Errorf("no poweroff within 8 min; serial: %s", tailFile(serial, 1500))
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	b.mu.Lock()
	at := b.doneAt
	imgAt := b.seen["/image.raw"]
	b.mu.Unlock()
	s, _ := os.ReadFile(serial)
	if at.IsZero() || !strings.Contains(string(s), doneMarker) {
		return result{}, fmt.Errorf("guest ended without %s; serial: %s", doneMarker, tail(string(s), 2000))
	}
	got := make([]byte, len(b.img))
	df, err := os.Open(b.disk)
	note := "disk = image"
	if err == nil {
		_, err = df.ReadAt(got, 0)
		df.Close()
	}
	if err != nil || !bytes.Equal(got, b.img) {
		note = "DISK MISMATCH"
	}
	side := "baseline"
	if verify {
		side = "baseline+v"
		if strings.Contains(string(s), "pxebench: sha256 verified") {
			note += ", guest sha256 verified"
		} else {
			note += ", guest verify FAILED"
		}
	}
	return result{side: side, run: i, qemu: at.Sub(start), boot: imgAt.Sub(start), write: at.Sub(imgAt),
		phases: splitPhases(clock, baselineMarks, start, at), note: note}, nil
}

func (b *blSide) teardown() {
	if b.ln != nil {
		b.ln.Close()
	}
	if b.dnsmasq != nil && b.dnsmasq.Process != nil {
		b.dnsmasq.Process.Kill()
		<-b.dnsDone
	}
	if b.ns != nil {
		if err := b.ns.Close(); err != nil {
			b.t.Errorf("removing namespace %s: %v", b.ns.Name, err)
		}
	}
}

func tailFile(p string, n int) string {
	b, _ := os.ReadFile(p)
	return tail(string(b), n)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
