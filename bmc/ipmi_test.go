package bmc

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
)

// These tests talk to a real IPMI BMC: OpenIPMI's ipmi_sim on loopback,
// through bmclib's ipmitool provider and the real ipmitool binary.

func startSim(t *testing.T, cfg ipmisim.Config) (*ipmisim.Sim, Endpoint) {
	t.Helper()
	if cfg.User == "" {
		cfg.User, cfg.Password = "metal", "hall-pw"
	}
	s := ipmisim.ForTest(t, cfg)
	return s, Endpoint{Address: s.Addr(), Protocol: IPMI, Username: cfg.User, Password: cfg.Password}
}

func TestIPMIPower(t *testing.T) {
	s, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{PollInterval: 100 * time.Millisecond})
	ctx := ctxT(t, 60*time.Second)

	if st, err := c.PowerState(ctx, ep); err != nil || st != PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", st, err)
	}
	if err := c.SetPower(ctx, ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	if on, _ := s.Power(); !on {
		t.Fatalf("simulator power off after SetPower(on); chassis log:\n%s", s.ChassisLog())
	}
	before := s.ChassisLog()
	if err := c.SetPower(ctx, ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	cycled := strings.TrimPrefix(s.ChassisLog(), before)
	if !strings.Contains(cycled, "power 0\npower 1\n") {
		t.Fatalf("cycle did not go off then on; chassis log since:\n%s", cycled)
	}
	if on, _ := s.Power(); !on {
		t.Fatal("simulator off after cycle")
	}
	if err := c.SetPower(ctx, ep, ActionOff); err != nil {
		t.Fatal(err)
	}
	if on, _ := s.Power(); on {
		t.Fatal("simulator on after SetPower(off)")
	}
	// A cycle of a machine that is off powers it on.
	if err := c.SetPower(ctx, ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if on, _ := s.Power(); !on {
		t.Fatal("cycle of an off machine did not power it on")
	}
	if err := c.SetPower(ctx, ep, ActionReset); err != nil {
		t.Fatal(err)
	}
	// ipmi_sim passes a soft-off on to the (absent) operating system, so
	// the machine stays on: SetPower must say so with a timeout.
	short := testController(t, Config{PollInterval: 100 * time.Millisecond, PowerTimeout: time.Second})
	e := wantKind(t, short.SetPower(ctx, ep, ActionSoft), KindTimeout)
	if !strings.Contains(e.Error(), "power did not reach off") {
		t.Fatalf("soft-off timeout does not say what did not happen: %v", e)
	}
	if on, _ := s.Power(); !on {
		t.Fatal("simulator off after an unanswered soft-off")
	}
}

func TestIPMIBoot(t *testing.T) {
	s, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)
	if err := c.SetBootDevice(ctx, ep, BootOptions{Device: BootPXE}); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.Boot(); b != "pxe" {
		t.Fatalf("simulator boot = %q, want pxe", b)
	}
	bo, err := c.BootOverride(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if bo.Device != BootPXE || bo.Persistent {
		t.Fatalf("BootOverride = %+v", bo)
	}
	if err := c.SetBootDevice(ctx, ep, BootOptions{Device: BootDisk, Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if bo, err := c.BootOverride(ctx, ep); err != nil || bo.Device != BootDisk {
		t.Fatalf("BootOverride = %+v, %v; want disk", bo, err)
	}
}

func TestIPMIWrongCredentials(t *testing.T) {
	_, ep := startSim(t, ipmisim.Config{})
	ctx := ctxT(t, 60*time.Second)
	for _, tc := range []struct{ name, user, pass string }{
		{"password", ep.Username, "Hunter2-not-it"},
		{"user", "nobody", "Hunter2-not-it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The controller logs one line per failed attempt: that is
			// how the test counts them, not by the clock.
			var logs attemptLog
			c := testController(t, Config{Retries: 3, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			bad := ep
			bad.Username, bad.Password = tc.user, tc.pass
			_, err := c.PowerState(ctx, bad)
			e := wantKind(t, err, KindAuth)
			if want := "BMC " + ep.Address + ": wrong credentials (IPMI)"; !strings.HasPrefix(e.Error(), want) {
				t.Fatalf("error = %q, want prefix %q", e.Error(), want)
			}
			if strings.Contains(e.Error(), tc.pass) {
				t.Fatalf("error leaks the password: %v", e)
			}
			// Not retried: wrong credentials stay wrong, and a retry
			// could lock the account on a real BMC.
			if got := logs.attempts(t); len(got) != 1 || got[0].Retry {
				t.Fatalf("failed attempts logged: %+v; want exactly one, not retried", got)
			}
		})
	}
}

// attemptLog collects the controller's JSON log lines.
type attemptLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *attemptLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

type attemptLine struct {
	Msg     string `json:"msg"`
	Attempt int    `json:"attempt"`
	Retry   bool   `json:"retry"`
	Kind    string `json:"kind"`
}

// attempts are the "bmc operation failed" lines, one per failed attempt.
func (l *attemptLog) attempts(t *testing.T) []attemptLine {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []attemptLine
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var a attemptLine
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if a.Msg == "bmc operation failed" {
			out = append(out, a)
		}
	}
	return out
}

func TestIPMIDeadPort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ipmitool against a dead port")
	}
	if err := CheckIPMITool(); err != nil {
		t.Skip(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	// The RMCP ping finds the port dead at once; ipmitool alone would wait
	// ~25 s per cipher suite and be cut by the 10 s OpTimeout, a timeout.
	// So "unreachable" is the proof the ping decided, with no clock.
	c := testController(t, Config{OpTimeout: 10 * time.Second, Retries: -1})
	_, err = c.PowerState(ctxT(t, 60*time.Second), Endpoint{Address: addr, Protocol: IPMI, Username: "u", Password: "p"})
	wantKind(t, err, KindUnreachable)
}

func TestIPMIHungBMCDoesNotBlockOthers(t *testing.T) {
	slow, slowEP := startSim(t, ipmisim.Config{})
	_, fastEP := startSim(t, ipmisim.Config{PowerOn: true})
	if err := slow.Suspend(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Resume() })
	// A generous OpTimeout, so that the healthy BMC's answer never races
	// the clock on a loaded machine: the stopped BMC then ends as a timeout
	// or, once the RMCP ping's 3 s are up, as unreachable.
	c := testController(t, Config{MaxConcurrent: 2, OpTimeout: 10 * time.Second, Retries: -1})
	ctx := ctxT(t, 60*time.Second)
	slowDone := make(chan error, 1)
	go func() {
		_, err := c.PowerState(ctx, slowEP)
		slowDone <- err
	}()
	// The hung BMC's operation holds its lock and one of the two slots.
	waitUntil(t, "the hung BMC's operation inside its attempt", func() bool {
		return c.locks.users(slowEP.lockKey()) == 1 && len(c.sem) == 1
	})
	if st, err := c.PowerState(ctx, fastEP); err != nil || st != PowerOn {
		t.Fatalf("healthy BMC: %q, %v", st, err)
	}
	// The healthy BMC answered while the hung one's operation still waited.
	select {
	case err := <-slowDone:
		t.Fatalf("the hung BMC's operation ended (%v) before the healthy BMC answered", err)
	default:
	}
	var e *Error
	if err := <-slowDone; !errors.As(err, &e) || (e.Kind != KindTimeout && e.Kind != KindUnreachable) {
		t.Fatalf("hung BMC: %v, want a timeout or unreachable", err)
	}
}

func TestIPMIInventoryAndEvents(t *testing.T) {
	_, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)
	inv, err := c.Inventory(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if inv.BMCFirmware == "" {
		t.Fatalf("inventory = %+v", inv)
	}
	if _, err := c.EventLog(ctx, ep); err != nil {
		t.Fatal(err)
	}
}

func TestIPMIConcurrent(t *testing.T) {
	const n = 4
	var eps []Endpoint
	var sims []*ipmisim.Sim
	for range n {
		s, ep := startSim(t, ipmisim.Config{})
		sims, eps = append(sims, s), append(eps, ep)
	}
	c := testController(t, Config{PollInterval: 100 * time.Millisecond})
	ctx := ctxT(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for _, ep := range eps {
		// Three operations per BMC at once: serialised per BMC.
		for _, op := range []func() error{
			func() error { return c.SetBootDevice(ctx, ep, BootOptions{Device: BootPXE}) },
			func() error { return c.SetPower(ctx, ep, ActionCycle) },
			func() error { _, err := c.PowerState(ctx, ep); return err },
		} {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- op() }()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range sims {
		on, _ := s.Power()
		b, _ := s.Boot()
		if !on || b != "pxe" {
			t.Fatalf("sim %d: power %v boot %q", i, on, b)
		}
	}
}

func TestIPMIToolMissing(t *testing.T) {
	c := New(Config{IPMIToolPath: "/nonexistent/ipmitool"})
	if err := c.CheckIPMITool(); !errors.Is(err, ErrIPMIToolMissing) {
		t.Fatalf("CheckIPMITool = %v", err)
	}
	_, err := c.PowerState(t.Context(), Endpoint{Address: "127.0.0.1", Protocol: IPMI, Username: "u", Password: "p"})
	e := wantKind(t, err, KindUnsupported)
	if !strings.Contains(e.Error(), "ipmitool not found on PATH: install the Debian package ipmitool") {
		t.Fatalf("error = %v", e)
	}
}
