package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/lab/netns"
	mhservice "github.com/metalhall/metalhall/service"
)

// service is the real `metalhall serve`, in the service namespace.
type service struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	logPath string
	args    []string
	data    string
}

func startServe(ctx context.Context, ns *netns.Namespace, bin, data, logPath, extra string) (*service, error) {
	// The admin listener on a non-loopback address serves TLS with a
	// certificate the service makes at first start; machines use the
	// provisioning listener (plain HTTP, --advertise-address:8281).
	args := []string{"serve", "--data-dir", data,
		"--listen", fmt.Sprintf("%s:%d", serverAddr, servePort),
		"--netboot-interface", srvLink, "--dhcp-mode", "reservation",
		"--advertise-address", serverAddr.String(), "--log-level", "warn"}
	args = append(args, strings.Fields(extra)...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// Not tied to ctx: the bench stops it itself (SIGTERM, then SIGKILL),
	// after reading its counters. `ip netns exec` execs metalhall, so the
	// PID is the service's own.
	cmd := ns.Command(context.Background(), bin, args...)
	if n := niceness(); n > 0 {
		// The machines run niced (probe.go says why); the service does not.
		cmd = ns.Command(context.Background(), "nice", append([]string{"-n", strconv.Itoa(-n), bin}, args...)...)
	}
	// The Go runtime's settings for the service alone (the simulated
	// machines keep theirs): for comparing GC and scheduler settings.
	for _, v := range []string{"GOGC", "GOMAXPROCS"} {
		if val := os.Getenv("STORM_SERVE_" + v); val != "" {
			if cmd.Env == nil {
				cmd.Env = os.Environ()
			}
			cmd.Env = append(cmd.Env, v+"="+val)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the bench, which stops it in order
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start metalhall serve: %w", err)
	}
	s := &service{cmd: cmd, exited: make(chan struct{}), logPath: logPath, args: args, data: data}
	go func() { cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		// The admin token is written first, the TLS fingerprint when the
		// listeners are bound: both are there once it is ready to serve.
		_, errTok := os.Stat(filepath.Join(data, "admin.token"))
		_, errFP := os.Stat(filepath.Join(data, mhservice.FingerprintFile))
		if errTok == nil && errFP == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("metalhall serve exited at start: %s", tail(logPath, 20))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-deadline.C:
			s.stop()
			return nil, fmt.Errorf("metalhall serve wrote no admin token and TLS fingerprint within 60 s: %s", tail(logPath, 20))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *service) pid() int { return s.cmd.Process.Pid }

func (s *service) stop() { stopProcess(s.cmd, s.exited, syscall.SIGTERM, 40*time.Second) }

// stopProcess asks a process to stop with sig, kills it after grace, and
// waits until it has exited (exited is closed by the goroutine that waits
// for it).
func stopProcess(cmd *exec.Cmd, exited <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	select {
	case <-exited:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(grace):
		cmd.Process.Kill()
		<-exited
	}
}

func (s *service) cpu() float64 { return procCPU(s.pid()) }
func (s *service) hwm() int64   { return procStatusKiB(s.pid(), "VmHWM:") }

// procCPU is the user+system CPU time of a process, in seconds.
func procCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func procStatusKiB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// techn is the technician: the API, from the driver's address on the
// provisioning link.
type techn struct {
	api   *api.Client
	pin   api.TLSOptions // the admin listener's certificate, pinned as the CLI does
	racks int
}

func technician(ctx context.Context, svc *service, cli *netns.Namespace, baseURL, data string) (*techn, error) {
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return nil, err
	}
	c := api.NewClient(baseURL, strings.TrimSpace(string(tok)))
	hc := httpClientFrom(cli, driverAddr, true)
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 16
	hc.Timeout = 5 * time.Minute
	c.HTTP = hc
	fp, err := os.ReadFile(filepath.Join(data, mhservice.FingerprintFile))
	if err != nil {
		return nil, err
	}
	pin := api.TLSOptions{Fingerprint: strings.TrimSpace(string(fp))}
	if err := c.UseTLS(pin); err != nil {
		return nil, fmt.Errorf("pinning the admin listener's certificate: %w", err)
	}
	for i := 0; ; i++ {
		var h api.Health
		err := c.Do(ctx, "GET", "/healthz", nil, &h)
		if err == nil {
			break
		}
		select {
		case <-svc.exited:
			return nil, fmt.Errorf("metalhall serve exited: %s", tail(svc.logPath, 20))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if i > 600 {
			return nil, fmt.Errorf("metalhall serve does not answer on %s: %w", baseURL, err)
		}
	}
	return &techn{api: c, pin: pin}, nil
}

// onboard: a hall, a phase, the provisioning subnet, a manifest per rack.
func (t *techn) onboard(ctx context.Context, b *bench) error {
	n, per := b.cfg.N, b.cfg.PerRack
	t.racks = (n + per - 1) / per
	rackKW := float64(per)*10.2 + 5
	steps := []struct {
		path string
		in   any
	}{
		{"/api/v1/sites", api.SiteCreate{Name: "storm-site"}},
		{"/api/v1/halls", api.HallCreate{Name: "storm-hall", Site: "storm-site"}},
		{"/api/v1/halls/storm-hall/phases", api.PhaseCreate{Number: 1, PowerKW: float64(t.racks)*rackKW + 100, TargetDate: "2027-03-01"}},
		{"/api/v1/halls/storm-hall/phases/1/state", api.StateChange{To: "commissioning"}},
		{"/api/v1/subnets", api.SubnetCreate{Name: "prov", CIDR: netip.PrefixFrom(serverAddr, linkPrefix).Masked().String(), Gateway: serverAddr.String()}},
	}
	for _, s := range steps {
		if err := t.api.Do(ctx, "POST", s.path, s.in, nil); err != nil {
			return fmt.Errorf("POST %s: %w", s.path, err)
		}
	}
	for r := range t.racks {
		var y strings.Builder
		fmt.Fprintf(&y, "rack:\n  name: %s\n  hall: storm-hall\n  phase: 1\n  row: S\n  units: 48\n  power_kw: %g\nmachines:\n", rackName(r), rackKW)
		for i := r * per; i < min(n, (r+1)*per); i++ {
			m := b.machines[i]
			fmt.Fprintf(&y, "  - name: %s\n    unit: %d\n    height: 5\n    macs: [%q]\n", m.Name, 1+(i%per)*5, m.MAC.String())
			fmt.Fprintf(&y, "    bmc: {address: %q, protocol: redfish, user: %q, password: %q}\n", "http://"+m.BMC.Addr, bmcUser, bmcPass)
			fmt.Fprintf(&y, "    power_w: 10200\n    ip: %s\n    profile: %s\n", m.IP, profile)
		}
		if err := t.api.DoRaw(ctx, "POST", "/api/v1/racks/import", "application/yaml", strings.NewReader(y.String()), nil); err != nil {
			return fmt.Errorf("rack import %s: %w", rackName(r), err)
		}
		if err := t.api.Do(ctx, "POST", "/api/v1/racks/"+rackName(r)+"/state", api.StateChange{To: "installed"}, nil); err != nil {
			return fmt.Errorf("rack %s installed: %w", rackName(r), err)
		}
	}
	// The DHCP probe's machine (probe.go): enrolled with a reservation, in
	// a rack of its own that is never commissioned, never powered.
	y := fmt.Sprintf("rack:\n  name: probe\n  hall: storm-hall\n  phase: 1\n  row: P\n  units: 48\n  power_kw: 11\nmachines:\n"+
		"  - name: storm-probe\n    unit: 1\n    height: 1\n    macs: [%q]\n    bmc: {address: %q, protocol: redfish, user: %q, password: %q}\n    power_w: 500\n    ip: %s\n",
		probeMAC.String(), "http://"+b.probeBMC.Addr, bmcUser, bmcPass, probeAddr)
	if err := t.api.DoRaw(ctx, "POST", "/api/v1/racks/import", "application/yaml", strings.NewReader(y), nil); err != nil {
		return fmt.Errorf("rack import probe: %w", err)
	}
	return nil
}

// metrics reads the service's /metrics.
func (t *techn) metrics(ctx context.Context) (map[string]float64, error) {
	rc, err := t.api.Stream(ctx, "GET", "/metrics")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[k] = f
		}
	}
	return out, sc.Err()
}

var errNoCounter = errors.New("metalhall_store_write_transactions_total is not on /metrics")

func (t *techn) writeTxns(ctx context.Context) (uint64, map[writeSite]writeCount, error) {
	m, err := t.metrics(ctx)
	if err != nil {
		return 0, nil, err
	}
	v, ok := m["metalhall_store_write_transactions_total"]
	if !ok {
		return 0, nil, errNoCounter
	}
	return uint64(v), writeCauses(m), nil
}

// writeSite is a call site of the store's writes, as
// metalhall_store_writes_total labels it.
type writeSite struct{ Op, Caller string }

type writeCount struct{ Writes, Commits float64 }

// writeCauses reads the store's writes and commits by call site from a
// scrape.
func writeCauses(m map[string]float64) map[writeSite]writeCount {
	out := map[writeSite]writeCount{}
	for k, v := range m {
		name, labels, ok := strings.Cut(k, "{")
		if !ok || (name != "metalhall_store_writes_total" && name != "metalhall_store_write_commits_total") {
			continue
		}
		var site writeSite
		for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "op":
				site.Op = v
			case "caller":
				site.Caller = v
			}
		}
		c := out[site]
		if name == "metalhall_store_writes_total" {
			c.Writes = v
		} else {
			c.Commits = v
		}
		out[site] = c
	}
	return out
}

// states counts machines by lifecycle state (the metalhall_machines gauge).
func (t *techn) states(ctx context.Context) (map[string]int, error) {
	m, err := t.metrics(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for k, v := range m {
		if st, ok := strings.CutPrefix(k, `metalhall_machines{state="`); ok {
			out[strings.TrimSuffix(st, `"}`)] = int(v)
		}
	}
	return out, nil
}

// failed names the failed machines with their reasons, "" when none.
func (t *techn) failed(ctx context.Context) (string, error) {
	st, err := t.states(ctx)
	if err != nil || st["failed"] == 0 {
		return "", err
	}
	var ms []api.Machine
	if err := t.api.Do(ctx, "GET", "/api/v1/machines?state=failed", nil, &ms); err != nil {
		return "", err
	}
	var b strings.Builder
	for i, m := range ms {
		if i == 10 {
			fmt.Fprintf(&b, "; and %d more", len(ms)-10)
			break
		}
		fmt.Fprintf(&b, "%s%s at %s: %s", map[bool]string{true: "; "}[i > 0], m.Name, m.FailedStep, m.Reason)
	}
	return b.String(), nil
}
