// Command storm is the boot-storm bench (issue 11): N simulated machines
// against the real `metalhall serve`, built from this tree, in a network
// namespace, driven through the API as a technician drives it — subnet,
// rack manifests, rack commission, image import, machine provision — with
// nginx serving the same image bytes to the same clients beside it.
//
// Run it as root from the repository root (see run.sh and README.md):
//
//	go build -o /tmp/storm ./bench/storm && /tmp/storm -n 50 -image-mib 4
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/redfish"
)

type config struct {
	N              int
	PerRack        int
	ImageMiB       int
	BootFileKiB    int
	MaxActive      int
	Streams        int
	ProgressEvery  time.Duration
	RequestTimeout time.Duration
	Timeout        time.Duration
	ServeFlags     string
	ResultsDir     string
	Keep           bool
	// SideBySide runs the nginx comparison after the storm. Off in the
	// end-to-end test, which needs only the storm's own checks.
	SideBySide bool
	// Probe runs the DHCP probe (probe.go) through the storm.
	Probe bool
	// ProbeEvery is the probe's interval between DORAs.
	ProbeEvery time.Duration
}

// Addresses on the bench's private link. The service end is .0.1, the
// driver (the technician's CLI) .0.2, machines from 10.77.1.10 on.
var (
	serverAddr = netip.MustParseAddr("10.77.0.1")
	driverAddr = netip.MustParseAddr("10.77.0.2")
	linkPrefix = 16
)

const (
	servePort = 8280 // admin listener: the API, /metrics, blobs for API tokens (TLS)
	provPort  = 8281 // provisioning listener: /boot/, the agent, /metadata/, /images/ for agents
	nginxPort = 8380 // nginx, plain HTTP
	nginxTLS  = 8381 // nginx, TLS with the service's own certificate
	srvLink   = "stsrv0"
	cliLink   = "stcli0"
	bmcUser   = "admin"
	bmcPass   = "storm-pw"
	profile   = "hgx-h100"
	imageName = "storm"
)

func machineAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 77, byte(1 + i/200), byte(10 + i%200)})
}

func main() {
	if iface := os.Getenv(probeEnv); iface != "" {
		os.Exit(probeMain(iface))
	}
	var cfg config
	flag.IntVar(&cfg.N, "n", 1000, "simulated machines")
	flag.IntVar(&cfg.PerRack, "per-rack", 8, "machines per rack (8-GPU servers, ~10 kW each)")
	flag.IntVar(&cfg.ImageMiB, "image-mib", 32, "image size in MiB (random bytes: nothing compresses or is skipped)")
	flag.IntVar(&cfg.BootFileKiB, "bootfile-kib", 256, "size of the stand-in kernel and initrd the script names, KiB each")
	flag.IntVar(&cfg.MaxActive, "max-active", 512, "simulated machines busy at once (the bench's own bound)")
	flag.IntVar(&cfg.Streams, "streams", 32, "concurrent clients in the side-by-side image runs (match serve's --max-image-streams)")
	flag.DurationVar(&cfg.ProgressEvery, "progress-every", 5*time.Second, "agent progress interval while streaming")
	flag.DurationVar(&cfg.RequestTimeout, "request-timeout", 5*time.Minute, "timeout of one HTTP request of a machine")
	flag.DurationVar(&cfg.Timeout, "timeout", 40*time.Minute, "the whole run; it stops and cleans up after this")
	flag.StringVar(&cfg.ServeFlags, "serve-flags", "", "extra flags for metalhall serve (space-separated)")
	flag.StringVar(&cfg.ResultsDir, "results", "bench/storm/results", "where the dated raw output is written")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir (serve.log, data dir, nginx logs)")
	flag.BoolVar(&cfg.SideBySide, "side-by-side", true, "after the storm, stream the image to every client from metalhall and from nginx")
	flag.BoolVar(&cfg.Probe, "probe", true, "measure the service's DHCP answers from a process of its own at the service's CPU priority (probe.go)")
	flag.DurationVar(&cfg.ProbeEvery, "probe-every", defaultProbeEvery, "how often the DHCP probe does a DORA (shorter: more samples in the p99)")
	flag.Parse()
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(2)
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-sigCtx.Done(); stop() }() // a second Ctrl-C kills at once
	ctx, cancel := context.WithTimeout(sigCtx, cfg.Timeout)
	_, err := run(ctx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "storm: FAILED:", err)
		os.Exit(1)
	}
}

func (c config) check() error {
	switch {
	case c.N < 1 || c.N > 10000:
		return fmt.Errorf("-n %d: use 1 to 10000 machines (addresses 10.77.1.10 up)", c.N)
	case c.PerRack < 1 || c.PerRack > 40:
		return fmt.Errorf("-per-rack %d: use 1 to 40", c.PerRack)
	case c.ImageMiB < 1:
		return fmt.Errorf("-image-mib %d: at least 1", c.ImageMiB)
	case c.MaxActive < 1 || c.Streams < 1:
		return errors.New("-max-active and -streams must be at least 1")
	case c.ProgressEvery <= 0 || c.RequestTimeout <= 0:
		return errors.New("-progress-every and -request-timeout must be positive")
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: it creates network namespaces and a veth pair")
	}
	need := []string{"ip", "go"}
	if c.SideBySide {
		need = append(need, "nginx")
	}
	for _, p := range need {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s not found on PATH (nginx: Debian package nginx, `make bench-deps`)", p)
		}
	}
	if _, err := os.Stat("go.mod"); err != nil {
		return errors.New("run from the repository root (it builds ./cmd/metalhall)")
	}
	return nil
}

// bench is one run's shared state.
type bench struct {
	cfg      config
	ctx      context.Context
	dhcp     *dhcpClients
	active   chan struct{}
	baseURL  string // the admin listener, https
	provURL  string // the provisioning listener, what machines are told to use
	machines []*machine
	probeBMC *redfish.FleetBMC
	fleet    *redfish.Fleet
	probe    *probe // nil without -probe

	spanMu sync.Mutex
	spans  []span
}

// span is one image stream of the storm.
type span struct {
	start, end time.Time
	bytes      int64
}

// imageSpan records one image stream of the storm.
func (b *bench) imageSpan(start, end time.Time, n int64) {
	b.spanMu.Lock()
	defer b.spanMu.Unlock()
	b.spans = append(b.spans, span{start, end, n})
}

// stormStreaming sums the storm's image streams: bytes, the time at least
// one stream was running (the union of their intervals), and the most
// streams running at once.
func (b *bench) stormStreaming() streaming {
	b.spanMu.Lock()
	sp := slices.Clone(b.spans)
	b.spanMu.Unlock()
	var out streaming
	slices.SortFunc(sp, func(x, y span) int { return x.start.Compare(y.start) })
	var curStart, curEnd time.Time
	for i, s := range sp {
		out.Bytes += s.bytes
		if i == 0 || s.start.After(curEnd) {
			out.Busy += curEnd.Sub(curStart)
			curStart, curEnd = s.start, s.end
		} else if s.end.After(curEnd) {
			curEnd = s.end
		}
	}
	out.Busy += curEnd.Sub(curStart)
	type ev struct {
		t time.Time
		d int
	}
	var evs []ev
	for _, s := range sp {
		evs = append(evs, ev{s.start, 1}, ev{s.end, -1})
	}
	slices.SortFunc(evs, func(x, y ev) int {
		if c := x.t.Compare(y.t); c != 0 {
			return c
		}
		return x.d - y.d // an end before a start at the same instant
	})
	n := 0
	for _, e := range evs {
		n += e.d
		out.Peak = max(out.Peak, n)
	}
	if len(sp) > 0 {
		out.Span = sp[len(sp)-1].end.Sub(sp[0].start)
		for _, s := range sp {
			out.Span = max(out.Span, s.end.Sub(sp[0].start))
		}
	}
	return out
}

// cleanups run in reverse order, also on failure and on Ctrl-C.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }
func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

// run is one storm. The report comes back also with an error: a failed
// run is a result too.
func run(ctx context.Context, cfg config) (*report, error) {
	began := time.Now()
	rep := &report{cfg: cfg, began: began.UTC(), args: os.Args}
	return rep, rep.run(ctx, began)
}

func (rep *report) run(ctx context.Context, began time.Time) (err error) {
	cfg := rep.cfg
	rep.machineInfo()
	var cl cleanups
	defer cl.run()
	defer func() {
		// The report is written whatever happened: a failed run is a result too.
		rep.err = err
		rep.wall = time.Since(began)
		if werr := rep.write(os.Stdout, cfg.ResultsDir); werr != nil && err == nil {
			err = werr
		}
	}()
	raiseNoFile()

	tmp, err := os.MkdirTemp("", "mhstorm-")
	if err != nil {
		return err
	}
	if cfg.Keep {
		fmt.Fprintf(os.Stderr, "storm: keeping %s\n", tmp)
	} else {
		cl.add(func() { os.RemoveAll(tmp) })
	}
	bin := filepath.Join(tmp, "metalhall")
	step(rep, "building metalhall from this tree")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/metalhall").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/metalhall: %w: %s", err, out)
	}

	// Two namespaces joined by a veth pair: the service on one side, every
	// machine on the other, as on a provisioning network.
	srv, err := netns.New(ctx, "mhstorm-srv")
	if err != nil {
		return err
	}
	cl.add(func() { srv.Close() })
	cli, err := netns.New(ctx, "mhstorm-cli")
	if err != nil {
		return err
	}
	cl.add(func() { cli.Close() })
	if err := srv.AddVeth(ctx, srvLink, netip.PrefixFrom(serverAddr, linkPrefix), cli, cliLink, netip.PrefixFrom(driverAddr, linkPrefix)); err != nil {
		return err
	}
	var batch strings.Builder
	for i := range cfg.N {
		fmt.Fprintf(&batch, "addr add %s/%d dev %s\n", machineAddr(i), linkPrefix, cliLink)
	}
	batchFile := filepath.Join(tmp, "addrs.batch")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o600); err != nil {
		return err
	}
	if err := cli.IP(ctx, "-batch", batchFile); err != nil {
		return fmt.Errorf("adding the machines' addresses: %w", err)
	}

	b := &bench{cfg: cfg, ctx: ctx, active: make(chan struct{}, cfg.MaxActive),
		baseURL: fmt.Sprintf("https://%s:%d", serverAddr, servePort),
		provURL: fmt.Sprintf("http://%s:%d", serverAddr, provPort)}
	if b.dhcp, err = listenDHCP(cli, cliLink); err != nil {
		return err
	}
	cl.add(func() { b.dhcp.Close() })

	inv, err := os.ReadFile("agent/testdata/hgx-h100.inventory.json")
	if err != nil {
		return fmt.Errorf("the simulated hardware: %w", err)
	}
	for i := range cfg.N {
		b.machines = append(b.machines, &machine{b: b, idx: i,
			Name: fmt.Sprintf("gpu-%s-%02d", rackName(i/cfg.PerRack), i%cfg.PerRack+1),
			MAC:  net.HardwareAddr{0x52, 0x54, 0x00, 0x77, byte((i + 1) >> 8), byte(i + 1)},
			IP:   machineAddr(i), inv: inv, http: httpClientFrom(cli, machineAddr(i), true)})
		b.machines[i].http.Timeout = cfg.RequestTimeout // the agent's calls get no other deadline
	}
	// The BMCs live on the service's loopback, where `serve` reaches them.
	var fleet *redfish.Fleet
	err = srv.Run(func() (err error) {
		fleet, err = redfish.StartFleet("127.0.0.1", cfg.N+1, 0, func(i int) redfish.Config {
			if i == cfg.N { // the probe machine's, never powered
				return redfish.Config{Username: bmcUser, Password: bmcPass, Serial: "STORMPROBE", MACs: []string{probeMAC.String()}}
			}
			m := b.machines[i]
			return redfish.Config{Username: bmcUser, Password: bmcPass, GPUs: 8, Serial: fmt.Sprintf("STORM%05d", i+1),
				Vendor: "Supermicro", Model: "SYS-821GE-TNHR", MACs: []string{m.MAC.String()},
				Hooks: redfish.Hooks{OnPower: m.onPower, OnBoot: m.onBoot}}
		})
		return err
	})
	if err != nil {
		return err
	}
	cl.add(func() {
		fleet.Close()
		for _, m := range b.machines {
			m.onPower(false)
			m.running.Wait()
		}
	})
	for i, m := range b.machines {
		m.BMC = fleet.BMCs[i]
	}
	b.probeBMC = fleet.BMCs[cfg.N]
	b.fleet = fleet

	// The data dir: a hardware profile the simulated servers match, and a
	// stand-in boot environment (the script names it; machines fetch it).
	data := filepath.Join(tmp, "data")
	for _, d := range []string{"profiles", "bootenv"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o700); err != nil {
			return err
		}
	}
	prof := "gpu_model: H100\ngpu_count: 8\nib_count: 8\nmin_memory_gib: 2000\ncpu_sockets: 2\nmin_disks: 10\nos_disk: nvme0n1\n"
	if err := os.WriteFile(filepath.Join(data, "profiles", profile+".yaml"), []byte(prof), 0o600); err != nil {
		return err
	}
	for _, f := range []string{"vmlinuz", "initrd.img"} {
		if err := os.WriteFile(filepath.Join(data, "bootenv", f), randomBytes(cfg.BootFileKiB<<10), 0o600); err != nil {
			return err
		}
	}

	step(rep, "starting metalhall serve in %s", srv.Name)
	svc, err := startServe(ctx, srv, bin, data, filepath.Join(tmp, "serve.log"), cfg.ServeFlags)
	if err != nil {
		return err
	}
	cl.add(func() { svc.stop() })
	rep.serveLog = svc.logPath
	rep.serveArgs = svc.args

	tech, err := technician(ctx, svc, cli, b.baseURL, data)
	if err != nil {
		return err
	}
	// The machines trust the admin listener as the technician does; they
	// use it only in the side-by-side (an API token's blob fetch).
	for _, m := range b.machines {
		if err := (&api.Client{HTTP: m.http}).UseTLS(tech.pin); err != nil {
			return err
		}
	}
	if err := tech.onboard(ctx, b); err != nil {
		return err
	}
	if cfg.Probe {
		step(rep, "starting the DHCP probe")
		if b.probe, err = startProbe(ctx, cli, cliLink, cfg.ProbeEvery); err != nil {
			return err
		}
		stopProbe := sync.OnceFunc(b.probe.stop)
		cl.add(stopProbe)
		defer stopProbe() // before the side-by-side: it measures the storm
	}

	// Commission: every rack at once, as after racking a row.
	step(rep, "commissioning %d machines in %d racks", cfg.N, tech.racks)
	ph, err := b.phase(ctx, rep, svc, tech, "commission", func(ctx context.Context, res *phaseResult) error {
		for r := range tech.racks {
			t := time.Now()
			for _, m := range b.machines[r*cfg.PerRack : min(cfg.N, (r+1)*cfg.PerRack)] {
				m.setSubmitted(t)
			}
			var rc api.RackCommission
			if err := tech.api.Do(ctx, "POST", "/api/v1/racks/"+rackName(r)+"/commission", nil, &rc); err != nil {
				return fmt.Errorf("rack commission %s: %w", rackName(r), err)
			}
			res.addSubmit(time.Since(t))
			if len(rc.Skipped) > 0 {
				return fmt.Errorf("rack commission %s skipped machines: %v", rackName(r), rc.Skipped)
			}
		}
		return nil
	}, "available")
	rep.phases = append(rep.phases, ph)
	if err != nil {
		return err
	}

	img := randomBytes(cfg.ImageMiB << 20)
	sum := sha256.Sum256(img)
	imgSHA := hex.EncodeToString(sum[:])
	step(rep, "importing a %d MiB image through the API", cfg.ImageMiB)
	q := url.Values{"name": {imageName}, "format": {"raw"}, "sha256": {imgSHA}}
	var imported api.Image
	if err := tech.api.DoRaw(ctx, "POST", "/api/v1/images?"+q.Encode(), "application/octet-stream",
		api.SizedReader{Reader: bytes.NewReader(img), N: int64(len(img))}, &imported); err != nil {
		return fmt.Errorf("image import: %w", err)
	}

	step(rep, "provisioning %d machines", cfg.N)
	ph, err = b.phase(ctx, rep, svc, tech, "provision", func(ctx context.Context, res *phaseResult) error {
		// Eight at once: a technician's script, not a thousand shells.
		return forEach(ctx, b.machines, 8, func(ctx context.Context, m *machine) error {
			t := time.Now()
			m.setSubmitted(t)
			var j api.Job
			if err := tech.api.Do(ctx, "POST", "/api/v1/machines/"+m.Name+"/provision", api.ProvisionRequest{Image: imageName}, &j); err != nil {
				return fmt.Errorf("provision %s: %w", m.Name, err)
			}
			res.addSubmit(time.Since(t))
			return nil
		})
	}, "deployed")
	rep.phases = append(rep.phases, ph)
	rep.stormImage = b.stormStreaming()
	if err != nil {
		return err
	}
	rep.hwmAfterStorm = svc.hwm()
	if !cfg.SideBySide {
		rep.hwmEnd, rep.cpuEnd = rep.hwmAfterStorm, svc.cpu()
		return nil
	}

	// Side by side: the same bytes, the same clients (each from its own
	// address), the same concurrency, from metalhall's blob handler and
	// from nginx.
	step(rep, "side by side: metalhall vs nginx, %d clients, %d at once", cfg.N, cfg.Streams)
	ngx, err := startNginx(ctx, srv, filepath.Join(tmp, "nginx"), img, data)
	if err != nil {
		return err
	}
	cl.add(func() { ngx.stop() })
	blobURL := b.baseURL + "/images/" + imported.SHA256
	for _, side := range []struct {
		name, url, token string
		pid              int
	}{
		{"metalhall", blobURL, tech.api.Token, svc.pid()},
		{"nginx-tls", fmt.Sprintf("https://%s:%d/image.raw", serverAddr, nginxTLS), "", ngx.pid()},
		{"nginx", fmt.Sprintf("http://%s:%d/image.raw", serverAddr, nginxPort), "", ngx.pid()},
	} {
		r, err := b.streamAll(ctx, side.url, side.token, int64(len(img)), imgSHA, side.pid, ngx)
		r.Name = side.name
		rep.sides = append(rep.sides, r)
		if err != nil {
			return fmt.Errorf("%s side: %w", side.name, err)
		}
	}
	rep.hwmEnd = svc.hwm()
	rep.cpuEnd = svc.cpu()
	return nil
}

func step(rep *report, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "storm: %s %s\n", time.Now().UTC().Format("15:04:05"), msg)
	rep.log = append(rep.log, time.Now().UTC().Format("15:04:05")+" "+msg)
}

func rackName(r int) string { return fmt.Sprintf("s%03d", r+1) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// phase runs one measured phase: submit starts the jobs; it ends when
// every machine has done its part and the service shows every machine in
// state want. A failed machine ends it at once.
func (b *bench) phase(ctx context.Context, rep *report, svc *service, tech *techn, name string,
	submit func(context.Context, *phaseResult) error, want string) (*phaseResult, error) {
	res := &phaseResult{Name: name, Samples: map[string][]time.Duration{}}
	for _, m := range b.machines {
		m.mu.Lock()
		m.phase = newPhaseRun()
		m.mu.Unlock()
	}
	res.TxnsBefore, res.CausesBefore, _ = tech.writeTxns(ctx)
	res.CPUBefore = svc.cpu()
	bmcsBefore := b.fleet.Stats()
	start := time.Now()
	if err := submit(ctx, res); err != nil {
		return res, err
	}
	res.Submit = time.Since(start)
	err := b.wait(ctx, tech, want)
	res.Wall = time.Since(start)
	if b.probe != nil {
		res.Probe, res.ProbeErrors = b.probe.between(start, time.Now())
	}
	res.CPUAfter = svc.cpu()
	res.BMCs = b.fleet.Stats().Sub(bmcsBefore)
	res.TxnsAfter, res.CausesAfter, _ = tech.writeTxns(ctx)
	for _, m := range b.machines {
		p := m.phase
		p.mu.Lock()
		for k, v := range p.samples {
			res.Samples[k] = append(res.Samples[k], v...)
		}
		if p.closed && p.err == nil {
			res.OK++
		} else if p.err != nil {
			res.Failures = append(res.Failures, p.err.Error())
		}
		res.Bytes += p.bytes
		res.Retransmits += p.retransmits
		res.CutOff += p.cutOff
		p.mu.Unlock()
	}
	res.Machines = len(b.machines)
	if err == nil && res.OK != len(b.machines) {
		err = fmt.Errorf("%d of %d machines did not finish", len(b.machines)-res.OK, len(b.machines))
	}
	return res, err
}

// wait: every machine reported its part done, and the service agrees.
func (b *bench) wait(ctx context.Context, tech *techn, want string) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for _, m := range b.machines {
		for {
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s: %w", m.Name, ctx.Err())
			case <-m.phase.done:
			case <-tick.C:
				if failed, err := tech.failed(ctx); err == nil && failed != "" {
					return fmt.Errorf("the service failed machines: %s", failed)
				}
				continue
			}
			break
		}
		if err := m.phase.err; err != nil {
			return err
		}
	}
	for {
		states, err := tech.states(ctx)
		if err == nil && states[want] == len(b.machines) {
			return nil
		}
		if err == nil && states["failed"] > 0 {
			failed, _ := tech.failed(ctx)
			return fmt.Errorf("the service failed machines: %s", failed)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for every machine to be %s (now %v): %w", want, states, ctx.Err())
		case <-tick.C:
		}
	}
}

// forEach runs fn for every machine, at most conc at once; the first
// error stops the rest.
func forEach(ctx context.Context, ms []*machine, conc int, fn func(context.Context, *machine) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for _, m := range ms {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(ctx, m); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// streamAll has every machine fetch url once, conc at a time, each from
// its own address, hashing and checking every byte as in the storm.
func (b *bench) streamAll(ctx context.Context, url, token string, size int64, sha string, pid int, ngx *nginx) (sideResult, error) {
	var res sideResult
	var mu sync.Mutex
	var total atomic.Int64
	cpu0 := procCPU(pid)
	if ngx != nil && pid == ngx.pid() {
		cpu0 = ngx.cpu()
	}
	start := time.Now()
	err := forEach(ctx, b.machines, b.cfg.Streams, func(ctx context.Context, m *machine) error {
		h := sha256.New()
		t := time.Now()
		_, n, err := fetch(ctx, m.http, b.cfg.RequestTimeout, url, token, h)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		d := time.Since(t)
		if n != size || hex.EncodeToString(h.Sum(nil)) != sha {
			return fmt.Errorf("%s: got %d bytes with another sha256", m.Name, n)
		}
		total.Add(n)
		mu.Lock()
		res.PerClient = append(res.PerClient, d)
		mu.Unlock()
		return nil
	})
	res.Wall = time.Since(start)
	res.Bytes = total.Load()
	res.CPU = procCPU(pid) - cpu0
	if ngx != nil && pid == ngx.pid() {
		res.CPU = ngx.cpu() - cpu0
	}
	slices.Sort(res.PerClient)
	return res, err
}

// raiseNoFile lifts the soft open-files limit to the hard one: a thousand
// BMC listeners plus the machines' connections exceed 1024.
func raiseNoFile() {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Cur < rl.Max {
		rl.Cur = rl.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
}
