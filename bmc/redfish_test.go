package bmc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
)

// These tests talk to lab/redfish, a real HTTP Redfish peer, through
// bmclib's unmodified gofish provider.

type rfBMC struct {
	*redfish.Server
	ep       Endpoint
	inFlight atomic.Int32
	maxIn    atomic.Int32
}

func startRedfish(t *testing.T, cfg redfish.Config) *rfBMC {
	t.Helper()
	if cfg.Username == "" {
		cfg.Username, cfg.Password = "admin", "s3cret"
	}
	b := &rfBMC{Server: redfish.NewServer(cfg)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.inFlight.Add(1)
		defer b.inFlight.Add(-1)
		for {
			m := b.maxIn.Load()
			if n <= m || b.maxIn.CompareAndSwap(m, n) {
				break
			}
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	b.ep = Endpoint{Address: "http://" + ts.Listener.Addr().String(), Protocol: Redfish, Username: cfg.Username, Password: cfg.Password}
	return b
}

func testController(t *testing.T, cfg Config) *Controller {
	t.Helper()
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	if cfg.PowerTimeout == 0 {
		cfg.PowerTimeout = 5 * time.Second
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 20 * time.Millisecond
	}
	return New(cfg)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func wantKind(t *testing.T, err error, kind ErrorKind) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *bmc.Error", err, err)
	}
	if e.Kind != kind {
		t.Fatalf("kind = %v, want %v; error: %v", e.Kind, kind, err)
	}
	return e
}

func TestRedfishPower(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)

	if st, err := c.PowerState(ctx, b.ep); err != nil || st != PowerOff {
		t.Fatalf("PowerState = %q, %v; want off", st, err)
	}
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	if !b.Power() {
		t.Fatal("emulator still off after SetPower(on)")
	}
	if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if got := b.Resets(); len(got) != 2 || got[1] != "ForceRestart" {
		t.Fatalf("resets = %v, want [On ForceRestart]", got)
	}
	if err := c.SetPower(ctx, b.ep, ActionOff); err != nil {
		t.Fatal(err)
	}
	if b.Power() {
		t.Fatal("emulator still on after SetPower(off)")
	}
	// Cycling a machine that is off powers it on.
	if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if !b.Power() {
		t.Fatal("cycle of an off machine did not power it on")
	}
	if err := c.SetPower(ctx, b.ep, ActionReset); err != nil {
		t.Fatal(err)
	}
	if r := b.Resets(); r[len(r)-1] != "PowerCycle" || !b.Power() {
		t.Fatalf("reset: resets %v, power %v", r, b.Power())
	}
	if err := c.SetPower(ctx, b.ep, ActionSoft); err != nil {
		t.Fatal(err)
	}
	if r := b.Resets(); b.Power() || r[len(r)-1] != "GracefulShutdown" {
		t.Fatalf("soft: resets %v, power %v", r, b.Power())
	}
	err := c.SetPower(ctx, b.ep, "explode")
	wantKind(t, err, KindUnsupported)
	if n := b.Sessions(); n != 0 {
		t.Fatalf("%d sessions left open: the controller must log out", n)
	}
	if n := c.locks.size(); n != 0 {
		t.Fatalf("%d per-BMC locks left", n)
	}
}

func TestRedfishCycleWaitsForOn(t *testing.T) {
	// The BMC stays off for 300 ms during a restart: SetPower must wait.
	b := startRedfish(t, redfish.Config{PowerOn: true, CycleOffTime: 300 * time.Millisecond})
	c := testController(t, Config{})
	start := time.Now()
	if err := c.SetPower(ctxT(t, 20*time.Second), b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("cycle returned after %v, before the machine came back on", d)
	}
	if !b.Power() {
		t.Fatal("off after cycle")
	}
}

func TestRedfishBoot(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if got := b.Boot(); got != (redfish.BootOverride{Target: "Pxe", Enabled: "Once", Mode: "UEFI"}) {
		t.Fatalf("emulator boot = %+v", got)
	}
	bo, err := c.BootOverride(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if bo.Device != BootPXE || bo.Persistent || !bo.UEFI {
		t.Fatalf("BootOverride = %+v", bo)
	}
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootDisk, Persistent: true}); err != nil {
		t.Fatal(err)
	}
	if got := b.Boot(); got != (redfish.BootOverride{Target: "Hdd", Enabled: "Continuous", Mode: "Legacy"}) {
		t.Fatalf("emulator boot = %+v", got)
	}
	err = c.SetBootDevice(ctx, b.ep, BootOptions{Device: "floppy"})
	wantKind(t, err, KindUnsupported)
}

func TestRedfishBootRevert(t *testing.T) {
	for _, tc := range []struct {
		name   string
		revert time.Duration
		delay  time.Duration
	}{
		{"ignored", 0, 0},
		{"reverted-later", 50 * time.Millisecond, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startRedfish(t, redfish.Config{})
			b.SetRevertBoot(tc.revert)
			c := testController(t, Config{BootVerifyDelay: tc.delay})
			err := c.SetBootDevice(ctxT(t, 30*time.Second), b.ep, BootOptions{Device: BootPXE, UEFI: true})
			e := wantKind(t, err, KindProtocol)
			if !strings.Contains(e.Error(), "reverted the override") {
				t.Fatalf("error does not say the override was reverted: %v", e)
			}
		})
	}
}

func TestRedfishWrongPassword(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	c := testController(t, Config{Retries: 3})
	ep := b.ep
	ep.Password = "Hunter2-not-it"
	_, err := c.PowerState(ctxT(t, 30*time.Second), ep)
	e := wantKind(t, err, KindAuth)
	want := "BMC " + ep.Address + ": wrong credentials (Redfish)"
	if !strings.HasPrefix(e.Error(), want) {
		t.Fatalf("error = %q, want prefix %q", e.Error(), want)
	}
	if strings.Contains(e.Error(), ep.Password) {
		t.Fatalf("error leaks the password: %v", e)
	}
	// No retries for wrong credentials: our read of the service root
	// (does it offer sessions?), gofish's, and one login.
	if n := b.Requests(); n > 3 {
		t.Fatalf("%d requests: wrong credentials were retried", n)
	}
}

func TestRedfishUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := testController(t, Config{Retries: 1})
	_, err = c.PowerState(ctxT(t, 30*time.Second), Endpoint{Address: "http://" + addr, Protocol: Redfish, Username: "a", Password: "b"})
	wantKind(t, err, KindUnreachable)
}

func TestRedfish5xxRetried(t *testing.T) {
	b := startRedfish(t, redfish.Config{})
	b.SetRefuse(true)
	c := testController(t, Config{Retries: 2})
	_, err := c.PowerState(ctxT(t, 30*time.Second), b.ep)
	wantKind(t, err, KindProtocol)
	if n := b.Requests(); n != 3 {
		t.Fatalf("%d requests, want 3 (1 + 2 retries of the service root)", n)
	}
	// A BMC that recovers between attempts succeeds.
	b2 := startRedfish(t, redfish.Config{PowerOn: true})
	b2.SetRefuse(true)
	time.AfterFunc(30*time.Millisecond, func() { b2.SetRefuse(false) })
	c2 := testController(t, Config{Retries: 5, Backoff: 50 * time.Millisecond})
	if st, err := c2.PowerState(ctxT(t, 30*time.Second), b2.ep); err != nil || st != PowerOn {
		t.Fatalf("PowerState after recovery = %q, %v", st, err)
	}
}

func TestRedfishHangTimesOutWithoutBlockingOthers(t *testing.T) {
	slow := startRedfish(t, redfish.Config{})
	slow.SetHang(true)
	t.Cleanup(func() { slow.SetHang(false) })
	fast := startRedfish(t, redfish.Config{PowerOn: true})
	// MaxConcurrent 2 and two operations queued on the hung BMC: the
	// second waits on the BMC's lock, not on a global slot, so the healthy
	// BMC still gets the other slot at once.
	c := testController(t, Config{MaxConcurrent: 2, OpTimeout: 5 * time.Second, Retries: -1})
	ctx := ctxT(t, 60*time.Second)

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.PowerState(ctx, slow.ep)
			errs <- err
		}()
	}
	// Both are in: one inside the hung BMC, one waiting for its lock.
	waitUntil(t, "one request inside the hung BMC and another waiting for it", func() bool {
		return slow.inFlight.Load() == 1 && c.locks.users(slow.ep.lockKey()) == 2
	})
	if st, err := c.PowerState(ctx, fast.ep); err != nil || st != PowerOn {
		t.Fatalf("healthy BMC: %q, %v", st, err)
	}
	// The healthy BMC answered while both were still stuck on the hung one.
	select {
	case err := <-errs:
		t.Fatalf("an operation on the hung BMC ended (%v) before the healthy BMC answered", err)
	default:
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		wantKind(t, err, KindTimeout)
	}
}

func TestRedfishInventoryAndEvents(t *testing.T) {
	b := startRedfish(t, redfish.Config{GPUs: 8, MACs: []string{"52:54:00:AA:BB:01", "52:54:00:aa:bb:02"},
		Vendor: "Supermicro", Model: "SYS-821GE", Serial: "S123", FirmwareVersion: "01.02.03"})
	c := testController(t, Config{})
	ctx := ctxT(t, 30*time.Second)
	inv, err := c.Inventory(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Vendor != "Supermicro" || inv.Model != "SYS-821GE" || inv.Serial != "S123" || inv.BMCFirmware != "01.02.03" {
		t.Fatalf("inventory identity = %+v", inv)
	}
	if len(inv.GPUs) != 8 || inv.GPUs[0].Vendor != "NVIDIA" {
		t.Fatalf("GPUs = %+v", inv.GPUs)
	}
	if len(inv.NICs) != 2 || inv.NICs[0].MAC != "52:54:00:aa:bb:01" {
		t.Fatalf("NICs = %+v", inv.NICs)
	}
	if len(inv.Disks) != 1 || inv.Disks[0].CapacityBytes == 0 {
		t.Fatalf("Disks = %+v", inv.Disks)
	}
	if err := c.SetPower(ctx, b.ep, ActionOn); err != nil {
		t.Fatal(err)
	}
	evs, err := c.EventLog(ctx, b.ep)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		found = found || strings.Contains(ev.Message, "Reset On")
	}
	if len(evs) < 2 || !found {
		t.Fatalf("events = %+v", evs)
	}
	if n := b.Sessions(); n != 0 {
		t.Fatalf("%d sessions left open", n)
	}
}

func TestRedfishConcurrentFleet(t *testing.T) {
	const n = 40
	baseline := runtime.NumGoroutine()
	f, err := redfish.StartFleet("127.0.0.1", n, 0, func(int) redfish.Config {
		return redfish.Config{Username: "u", Password: "p", Latency: 5 * time.Millisecond}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	// One BMC gets several operations at once: they must not overlap.
	one := startRedfish(t, redfish.Config{Latency: 5 * time.Millisecond})

	c := testController(t, Config{MaxConcurrent: 16})
	ctx := ctxT(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, n+8)
	for _, b := range f.BMCs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep := Endpoint{Address: "http://" + b.Addr, Protocol: Redfish, Username: "u", Password: "p"}
			if err := c.SetBootDevice(ctx, ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
				errs <- err
				return
			}
			errs <- c.SetPower(ctx, ep, ActionCycle)
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.PowerState(ctx, one.ep)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, b := range f.BMCs {
		if !b.Power() || b.LastBoot() != "Pxe" {
			t.Fatalf("BMC %d: power %v booted %q", i, b.Power(), b.LastBoot())
		}
	}
	if m := one.maxIn.Load(); m != 1 {
		t.Fatalf("%d requests in flight at once on one BMC: operations were not serialised", m)
	}
	if s := c.locks.size(); s != 0 {
		t.Fatalf("%d per-BMC locks left after all operations", s)
	}
	// No connection (and its goroutines) outlives its operation.
	f.Close()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > baseline+10 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before the fleet: leak?\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
