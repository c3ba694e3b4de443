package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/metalhall/metalhall/agent"
	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/lab/netns"
	"github.com/metalhall/metalhall/lab/redfish"
)

// Stage names, as reported.
const (
	stDHCP      = "dhcp"       // one DORA (iPXE's, the agent's or the OS's)
	stDHCPX     = "dhcp-xchg"  // one DHCP request → reply
	stScript    = "script"     // GET /boot/{mac}.ipxe
	stBootFiles = "boot-files" // GET kernel + initrd named by the script
	stCallHome  = "call-home"  // the agent's GET task (records that it called home)
	stTask      = "task"       // POST inspection (the inspection every task starts with)
	stImage     = "image"      // GET the image, every byte hashed and checked
	stDone      = "done"       // POST done
	stMetadata  = "metadata"   // the installed OS's GET /metadata/meta-data
	stE2E       = "end-to-end" // its job submitted → done (commission) or metadata fetched (provision)
	stSubmit    = "api-submit" // one API call that submits jobs: a rack commission, a machine provision
)

// machine is one simulated server: its BMC (a lab/redfish emulator on the
// service's loopback) starts and stops it; when on, it does what the
// firmware, the agent or the installed OS would do, over the client veth,
// from the address DHCP gave it.
type machine struct {
	b    *bench
	idx  int
	Name string
	MAC  net.HardwareAddr
	IP   netip.Addr
	BMC  *redfish.FleetBMC
	inv  []byte // inspection template (JSON)
	http *http.Client

	mu      sync.Mutex
	boot    string // last boot override target: "Pxe", "Hdd", ...
	cancel  context.CancelFunc
	running sync.WaitGroup
	written bool // the disk holds the image: a disk boot runs the OS

	// The phase's outcome, set by the boot runs, and when the job that
	// started it was submitted.
	phase     *phaseRun
	submitted time.Time
}

// setSubmitted records when this machine's job was asked for.
func (m *machine) setSubmitted(t time.Time) {
	m.mu.Lock()
	m.submitted = t
	m.mu.Unlock()
}

// sinceSubmitted is the end-to-end time so far.
func (m *machine) sinceSubmitted() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Since(m.submitted)
}

// phaseRun is one machine's record in one phase (commission or provision).
type phaseRun struct {
	mu      sync.Mutex
	samples map[string][]time.Duration
	err     error
	done    chan struct{} // closed when the machine finished its part
	closed  bool
	bytes   int64
	// retransmits counts DHCP requests sent again for want of an answer.
	retransmits int
	// cutOff counts commission boots the service powered off before the
	// agent's done was answered (see machine.cutOff).
	cutOff int
}

func newPhaseRun() *phaseRun {
	return &phaseRun{samples: map[string][]time.Duration{}, done: make(chan struct{})}
}

func (p *phaseRun) add(stage string, d time.Duration) {
	p.mu.Lock()
	p.samples[stage] = append(p.samples[stage], d)
	p.mu.Unlock()
}

func (p *phaseRun) finish(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.err, p.closed = err, true
	close(p.done)
}

// onPower is the BMC's power hook: off stops whatever runs, on starts a
// boot from the device the BMC was told to use. It returns at once; the
// boot runs in its own goroutine.
func (m *machine) onPower(on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	if !on {
		return nil
	}
	ctx, cancel := context.WithCancel(m.b.ctx)
	m.cancel = cancel
	target, phase := m.boot, m.phase
	m.running.Add(1)
	go func() {
		defer m.running.Done()
		m.power(ctx, target, phase)
	}()
	return nil
}

func (m *machine) onBoot(target string) {
	m.mu.Lock()
	m.boot = target
	m.mu.Unlock()
}

// power is one power-on: network boot or disk boot.
func (m *machine) power(ctx context.Context, target string, ph *phaseRun) {
	if ph == nil {
		return // powered outside a measured phase (never in this bench)
	}
	// Bounded: never more simulated machines busy than the bench allows.
	select {
	case m.b.active <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-m.b.active }()
	var err error
	switch strings.ToLower(target) {
	case "pxe":
		err = m.netboot(ctx, ph)
	default:
		m.mu.Lock()
		written := m.written
		m.mu.Unlock()
		if !written {
			return // an empty disk: nothing boots, the machine idles
		}
		err = m.diskBoot(ctx, ph)
	}
	if err != nil && ctx.Err() == nil {
		ph.finish(fmt.Errorf("%s: %w", m.Name, err))
	}
}

// netboot: iPXE's DHCP, its script, the kernel and initrd it names, then
// the agent: its own DHCP, call home, task, inspection, image, done.
func (m *machine) netboot(ctx context.Context, ph *phaseRun) error {
	res, err := m.dhcp(ctx, kindIPXE, ph)
	if err != nil {
		return fmt.Errorf("iPXE DHCP: %w", err)
	}
	if !strings.HasPrefix(res.BootFile, m.b.provURL+"/boot/") {
		return fmt.Errorf("iPXE DHCP: boot file %q is not a script URL on the provisioning listener %s", res.BootFile, m.b.provURL)
	}
	t := time.Now()
	script, _, err := m.get(ctx, res.BootFile, "", nil)
	if err != nil {
		return fmt.Errorf("boot script: %w", err)
	}
	ph.add(stScript, time.Since(t))
	kernel, initrds, cmdline, err := parseScript(script)
	if err != nil {
		return fmt.Errorf("boot script: %w", err)
	}
	t = time.Now()
	for _, u := range append([]string{kernel}, initrds...) {
		if _, _, err := m.get(ctx, u, "", io.Discard); err != nil {
			return fmt.Errorf("boot file: %w", err)
		}
	}
	ph.add(stBootFiles, time.Since(t))
	p := agent.ParseCmdline(cmdline)
	if p.URL == "" || p.Token == "" {
		return fmt.Errorf("boot script: no metalhall.url or metalhall.token on the kernel command line %q", cmdline)
	}
	return m.agent(ctx, ph, p)
}

// agent runs the agent's part, over its wire protocol (agent/wire).
func (m *machine) agent(ctx context.Context, ph *phaseRun, p agent.Params) error {
	if _, err := m.dhcp(ctx, kindAgent, ph); err != nil {
		return fmt.Errorf("agent DHCP: %w", err)
	}
	c := &agent.Client{BaseURL: p.URL, Token: p.Token, HTTP: m.http}
	t := time.Now()
	task, err := c.Task(ctx)
	if err != nil {
		return fmt.Errorf("call home: %w", err)
	}
	ph.add(stCallHome, time.Since(t))

	var inv wire.Inventory
	if err := json.Unmarshal(m.inv, &inv); err != nil {
		return err
	}
	inv.JobID, inv.Collected = task.JobID, time.Now().UTC()
	inv.System.Serial = fmt.Sprintf("STORM%05d", m.idx+1)
	inv.NICs[0].MAC = m.MAC.String()
	t = time.Now()
	if err := c.Inspection(ctx, inv); err != nil {
		if task.Kind == wire.KindInspect && ctx.Err() != nil {
			return m.cutOff(ph)
		}
		return fmt.Errorf("inspection: %w", err)
	}
	ph.add(stTask, time.Since(t))

	done := wire.Done{JobID: task.JobID, OK: true, Step: wire.StepInspect, Detail: "storm: inspected"}
	switch task.Kind {
	case wire.KindInspect:
	case wire.KindProvision:
		if task.Image == nil {
			return errors.New("provision task without an image")
		}
		disk, err := agent.SelectTarget(inv.Disks, task.TargetDisk)
		if err != nil {
			return err
		}
		n, err := m.stream(ctx, ph, c, task)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		done.Step, done.Detail = wire.StepVerify, fmt.Sprintf("storm: %d bytes to %s, sha256 verified", n, disk.Name)
		// The disk holds the image from here, before done is answered:
		// the service may take done and reboot the machine into its disk
		// before this agent reads the answer, and a disk boot that found
		// the disk empty then would idle, the job waiting for a metadata
		// fetch that never comes.
		m.mu.Lock()
		m.written = true
		m.mu.Unlock()
	default:
		return fmt.Errorf("task kind %q is not part of the storm", task.Kind)
	}
	t = time.Now()
	// A provision's done is what the service waits for before it reboots
	// the machine into its disk, possibly before the answer is read: that
	// report must not die with the reboot. A commission's is not awaited
	// (see cutOff): a power-off ends it as it ends the real agent.
	dctx := context.WithoutCancel(ctx)
	if task.Kind == wire.KindInspect {
		dctx = ctx
	}
	dctx, cancel := context.WithTimeout(dctx, m.b.cfg.RequestTimeout)
	defer cancel()
	if err := c.Done(dctx, done); err != nil {
		if task.Kind == wire.KindInspect && ctx.Err() != nil {
			return m.cutOff(ph)
		}
		return fmt.Errorf("done: %w", err)
	}
	ph.add(stDone, time.Since(t))
	if task.Kind == wire.KindProvision {
		return nil // After none: the agent idles until the BMC reboots it into the OS
	}
	// After poweroff: the machine switches itself off, as the agent does.
	m.BMC.SetPower(false)
	ph.add(stE2E, m.sinceSubmitted())
	ph.finish(nil)
	return nil
}

// cutOff ends a commission boot that the service powered off after the
// agent sent its inspection: a commission's inspect step ends when the
// inspection is recorded and its power-off step follows at once, without
// waiting for the agent's done, so the real agent is switched off as this
// one is, mid-request. The machine's part is over; whether the job
// succeeded is the service's to say (the phase waits for every machine
// to be available).
func (m *machine) cutOff(ph *phaseRun) error {
	ph.add(stE2E, m.sinceSubmitted())
	ph.mu.Lock()
	ph.cutOff++
	ph.mu.Unlock()
	ph.finish(nil)
	return nil
}

// stream reads the image as the agent does (token to the service only),
// hashes every byte, checks size and sha256, and reports progress every
// ProgressEvery and at the end.
func (m *machine) stream(ctx context.Context, ph *phaseRun, c *agent.Client, task wire.Task) (int64, error) {
	spec := task.Image
	if spec.Format != string(imagefmt.Raw) {
		return 0, fmt.Errorf("image format %q: the storm streams raw images", spec.Format)
	}
	url := spec.URL
	if !strings.HasPrefix(url, "http") {
		url = strings.TrimRight(c.BaseURL, "/") + "/" + strings.TrimLeft(url, "/")
	}
	var sent sync.Mutex
	var done int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(m.b.cfg.ProgressEvery)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tk.C:
				sent.Lock()
				n := done
				sent.Unlock()
				c.Progress(ctx, wire.Progress{JobID: task.JobID, Step: wire.StepWrite, Bytes: n, Total: spec.UncompressedSize})
			}
		}
	}()
	t := time.Now()
	h := sha256.New()
	w := progressWriter{w: h, n: func(k int) { sent.Lock(); done += int64(k); sent.Unlock() }}
	_, n, err := m.get(ctx, url, c.Token, w)
	close(stop)
	wg.Wait()
	if err != nil {
		return n, err
	}
	el := time.Since(t)
	if n != spec.UncompressedSize {
		return n, fmt.Errorf("got %d bytes, want %d", n, spec.UncompressedSize)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != spec.SHA256 {
		return n, fmt.Errorf("sha256 %s, want %s", got, spec.SHA256)
	}
	ph.add(stImage, el)
	m.b.imageSpan(t, t.Add(el), n)
	ph.mu.Lock()
	ph.bytes += n
	ph.mu.Unlock()
	// The real agent ends each phase with a report: the write's last
	// (agent.WriteImage's ticker finishes), then the read-back's.
	rate := int64(float64(n) / max(el.Seconds(), 1e-6))
	for _, st := range []string{wire.StepWrite, wire.StepVerify} {
		if err := c.Progress(ctx, wire.Progress{JobID: task.JobID, Step: st, Bytes: n, Total: n, Rate: rate}); err != nil {
			return n, fmt.Errorf("progress (%s): %w", st, err)
		}
	}
	return n, nil
}

type progressWriter struct {
	w io.Writer
	n func(int)
}

func (p progressWriter) Write(b []byte) (int, error) {
	k, err := p.w.Write(b)
	p.n(k)
	return k, err
}

// diskBoot is the installed OS: DHCP, then its metadata, from its address.
func (m *machine) diskBoot(ctx context.Context, ph *phaseRun) error {
	if _, err := m.dhcp(ctx, kindOS, ph); err != nil {
		return fmt.Errorf("OS DHCP: %w", err)
	}
	t := time.Now()
	body, _, err := m.get(ctx, m.b.provURL+"/metadata/meta-data", "", nil)
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if !bytes.Contains(body, []byte("instance-id: "+m.Name)) {
		return fmt.Errorf("metadata is not this machine's: %q", body)
	}
	ph.add(stMetadata, time.Since(t))
	ph.add(stE2E, m.sinceSubmitted())
	ph.finish(nil)
	return nil
}

func (m *machine) dhcp(ctx context.Context, kind dhcpKind, ph *phaseRun) (dhcpResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	res, err := m.b.dhcp.dora(ctx, m.MAC, kind)
	for _, x := range res.Exchanges {
		ph.add(stDHCPX, x)
	}
	ph.mu.Lock()
	ph.retransmits += res.Retransmit
	ph.mu.Unlock()
	if err != nil {
		return res, err
	}
	ph.add(stDHCP, res.DORA)
	if res.Lease != m.IP {
		return res, fmt.Errorf("DHCP gave %s, the reservation is %s", res.Lease, m.IP)
	}
	return res, nil
}

// get fetches url from the machine's address. With w nil the body is
// returned (up to 1 MiB); otherwise it is copied to w and only its length
// is returned.
func (m *machine) get(ctx context.Context, url, token string, w io.Writer) ([]byte, int64, error) {
	return fetch(ctx, m.http, m.b.cfg.RequestTimeout, url, token, w)
}

func fetch(ctx context.Context, hc *http.Client, timeout time.Duration, url, token string, w io.Writer) ([]byte, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, 0, fmt.Errorf("GET %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if w == nil {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return b, int64(len(b)), err
	}
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(w, resp.Body, buf)
	return nil, n, err
}

// parseScript reads the kernel and initrd URLs and the kernel command
// line from a metalhall iPXE script, as iPXE would.
func parseScript(script []byte) (kernel string, initrds []string, cmdline string, err error) {
	sc := bufio.NewScanner(bytes.NewReader(script))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "kernel":
			kernel, cmdline = f[1], strings.Join(f[2:], " ")
			cmdline = strings.TrimSpace(strings.SplitN(cmdline, "||", 2)[0])
		case "initrd":
			initrds = append(initrds, f[1])
		}
	}
	if kernel == "" || len(initrds) == 0 {
		return "", nil, "", fmt.Errorf("no kernel or initrd line in %q", script)
	}
	return kernel, initrds, cmdline, nil
}

// httpClientFrom is a machine's HTTP client: every connection opened in
// ns from src, as a real machine's requests come from its own address.
func httpClientFrom(ns *netns.Namespace, src netip.Addr, keepAlive bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := ns.Run(func() (err error) {
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
		DisableCompression:    true,
		DisableKeepAlives:     !keepAlive,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
	}}
}
