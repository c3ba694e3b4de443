package redfish

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stmcginnis/gofish"
	rf "github.com/stmcginnis/gofish/redfish"
)

func start(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Username == "" {
		cfg.Username, cfg.Password = "admin", "pw"
	}
	s := NewServer(cfg)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL
}

func connect(t *testing.T, url, user, pass string, basic bool) (*gofish.APIClient, error) {
	t.Helper()
	return gofish.Connect(gofish.ClientConfig{Endpoint: url, Username: user, Password: pass, BasicAuth: basic,
		HTTPClient: &http.Client{Timeout: 5 * time.Second}})
}

// TestGofishClient drives the emulator with gofish itself, independent of
// bmclib: sessions, system, boot override, reset, manager.
func TestGofishClient(t *testing.T) {
	s, url := start(t, Config{GPUs: 2, MACs: []string{"52:54:00:00:00:01"}})
	c, err := connect(t, url, "admin", "pw", false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Sessions() != 1 {
		t.Fatalf("sessions = %d after login", s.Sessions())
	}
	systems, err := c.Service.Systems()
	if err != nil || len(systems) != 1 {
		t.Fatalf("systems: %v, %v", systems, err)
	}
	sys := systems[0]
	if sys.PowerState != rf.OffPowerState || len(sys.SupportedResetTypes) == 0 {
		t.Fatalf("system: power %q reset types %v", sys.PowerState, sys.SupportedResetTypes)
	}
	if err := sys.SetBoot(rf.Boot{BootSourceOverrideTarget: rf.PxeBootSourceOverrideTarget, BootSourceOverrideEnabled: rf.OnceBootSourceOverrideEnabled}); err != nil {
		t.Fatal(err)
	}
	if b := s.Boot(); b.Target != "Pxe" || b.Enabled != "Once" {
		t.Fatalf("boot = %+v", b)
	}
	for _, rt := range []rf.ResetType{rf.OnResetType, rf.ForceRestartResetType, rf.PowerCycleResetType, rf.GracefulShutdownResetType} {
		if err := sys.Reset(rt); err != nil {
			t.Fatalf("%s: %v", rt, err)
		}
	}
	if s.Power() {
		t.Fatal("on after GracefulShutdown")
	}
	if err := sys.Reset(rf.ForceRestartResetType); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("ForceRestart of an off system: %v, want 409", err)
	}
	ms, err := c.Service.Managers()
	if err != nil || len(ms) != 1 || ms[0].FirmwareVersion == "" {
		t.Fatalf("managers: %v, %v", ms, err)
	}
	procs, err := sys.Processors()
	if err != nil || len(procs) != 3 {
		t.Fatalf("processors: %d, %v", len(procs), err)
	}
	c.Logout()
	if s.Sessions() != 0 {
		t.Fatalf("sessions = %d after logout", s.Sessions())
	}
}

func TestAuth(t *testing.T) {
	_, url := start(t, Config{})
	if _, err := connect(t, url, "admin", "nope", false); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("session login with a wrong password: %v", err)
	}
	c, err := connect(t, url, "admin", "pw", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Service.Systems(); err != nil {
		t.Fatal("basic auth:", err)
	}
	c2, _ := connect(t, url, "admin", "nope", true)
	if _, err := c2.Service.Systems(); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("basic auth with a wrong password: %v", err)
	}
	// Anonymous access to anything but the root and the login is refused.
	resp, err := http.Get(url + "/redfish/v1/Systems/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("anonymous GET: %d", resp.StatusCode)
	}
}

func TestPatchValidation(t *testing.T) {
	_, url := start(t, Config{})
	req, _ := http.NewRequest(http.MethodPatch, url+"/redfish/v1/Systems/1", bytes.NewBufferString(`{"Boot":{"BootSourceOverrideTarget":"Floppy"}}`))
	req.SetBasicAuth("admin", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("bad boot target: %d, want 400", resp.StatusCode)
	}
}

func TestFaults(t *testing.T) {
	s, url := start(t, Config{Latency: 50 * time.Millisecond})
	st := time.Now()
	if _, err := connect(t, url, "admin", "pw", false); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(st); d < 100*time.Millisecond {
		t.Fatalf("two requests took %v with 50ms latency each", d)
	}
	s.SetLatency(0)
	s.SetRefuse(true)
	if _, err := connect(t, url, "admin", "pw", false); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("refuse: %v", err)
	}
	s.SetRefuse(false)
	s.SetHang(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/redfish/v1/", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("request to a hung BMC returned")
	}
	s.SetHang(false)
	if _, err := connect(t, url, "admin", "pw", false); err != nil {
		t.Fatal("after unhang:", err)
	}
}

func TestHooks(t *testing.T) {
	var power []bool
	var boots []string
	_, url := start(t, Config{Hooks: Hooks{
		OnPower: func(on bool) error { power = append(power, on); return nil },
		OnBoot:  func(tg string) { boots = append(boots, tg) },
	}})
	c, err := connect(t, url, "admin", "pw", true)
	if err != nil {
		t.Fatal(err)
	}
	sys, _ := c.Service.Systems()
	_ = sys[0].SetBoot(rf.Boot{BootSourceOverrideTarget: rf.PxeBootSourceOverrideTarget})
	_ = sys[0].Reset(rf.OnResetType)
	_ = sys[0].Reset(rf.ForceRestartResetType)
	if len(boots) != 1 || boots[0] != "Pxe" || len(power) != 3 || !power[0] || power[1] || !power[2] {
		t.Fatalf("hooks saw boot %v power %v", boots, power)
	}
}

func TestRunFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out syncWriter
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"-n", "3", "-base-port", "0"}, &out, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(out.String(), "\n") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("Run printed %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	line := strings.Fields(strings.Split(out.String(), "\n")[0])
	if len(line) < 3 || !strings.HasPrefix(line[2], "http://127.0.0.1:") {
		t.Fatalf("line %q", line)
	}
	if _, err := connect(t, line[2], "admin", "admin", false); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestBMCsAsShipped checks the modes that reproduce real BMCs, with gofish
// itself: no SessionService, a host and a GPU baseboard, once-as-continuous.
func TestBMCsAsShipped(t *testing.T) {
	s, url := start(t, Config{NoSessions: true, Baseboard: true, OnceAsContinuous: true})
	if _, err := connect(t, url, "admin", "pw", false); err == nil {
		t.Fatal("a session login worked against a BMC without sessions")
	}
	c, err := connect(t, url, "admin", "pw", true)
	if err != nil {
		t.Fatal(err)
	}
	systems, err := c.Service.Systems()
	if err != nil || len(systems) != 2 {
		t.Fatalf("systems: %d, %v", len(systems), err)
	}
	byID := map[string]*rf.ComputerSystem{}
	for _, sys := range systems {
		byID[sys.ID] = sys
	}
	host, board := byID["System_0"], byID["HGX_Baseboard_0"]
	if host == nil || board == nil {
		t.Fatalf("systems %v", byID)
	}
	if len(host.SupportedResetTypes) == 0 || host.Boot.BootSourceOverrideTarget == "" {
		t.Fatalf("host: reset %v boot %+v", host.SupportedResetTypes, host.Boot)
	}
	if len(board.SupportedResetTypes) != 0 || board.Boot.BootSourceOverrideTarget != "" {
		t.Fatalf("baseboard can be driven: reset %v boot %+v", board.SupportedResetTypes, board.Boot)
	}
	if err := host.SetBoot(rf.Boot{BootSourceOverrideTarget: rf.PxeBootSourceOverrideTarget, BootSourceOverrideEnabled: rf.OnceBootSourceOverrideEnabled}); err != nil {
		t.Fatal(err)
	}
	if b := s.Boot(); b.Target != "Pxe" || b.Enabled != "Continuous" {
		t.Fatalf("boot = %+v, want Pxe kept Continuous", b)
	}
	if err := host.Reset(rf.OnResetType); err != nil {
		t.Fatal(err)
	}
	if b := s.Boot(); b.Target != "Pxe" || s.LastBoot() != "Pxe" {
		t.Fatalf("continuous override gone after a boot: %+v (booted %q)", b, s.LastBoot())
	}
	chassis, err := c.Service.Chassis()
	if err != nil || len(chassis) != 1 {
		t.Fatalf("chassis %v %v", chassis, err)
	}
	pw, err := chassis[0].Power()
	if err != nil || len(pw.PowerControl) != 1 || pw.PowerControl[0].PowerConsumedWatts != 1000 || len(pw.PowerSupplies) != 2 {
		t.Fatalf("power %+v %v", pw, err)
	}
	th, err := chassis[0].Thermal()
	if err != nil || len(th.Temperatures) != 1 || th.Temperatures[0].ReadingCelsius != 24 || len(th.Fans) != 4 {
		t.Fatalf("thermal %+v %v", th, err)
	}
}

func TestOnceOverrideIsUsedByTheNextPowerOn(t *testing.T) {
	s, url := start(t, Config{})
	c, err := connect(t, url, "admin", "pw", false)
	if err != nil {
		t.Fatal(err)
	}
	systems, err := c.Service.Systems()
	if err != nil {
		t.Fatal(err)
	}
	if err := systems[0].SetBoot(rf.Boot{BootSourceOverrideTarget: rf.PxeBootSourceOverrideTarget, BootSourceOverrideEnabled: rf.OnceBootSourceOverrideEnabled}); err != nil {
		t.Fatal(err)
	}
	if err := systems[0].Reset(rf.OnResetType); err != nil {
		t.Fatal(err)
	}
	if b := s.Boot(); b.Target != "None" || b.Enabled != "Disabled" || s.LastBoot() != "Pxe" {
		t.Fatalf("after the boot: %+v, booted %q", b, s.LastBoot())
	}
}

func TestFleetCountsConnectionsAndIdleGaps(t *testing.T) {
	f, err := StartFleet("127.0.0.1", 2, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	get := func(c *http.Client, addr string) {
		t.Helper()
		resp, err := c.Get("http://" + addr + "/redfish/v1/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Three requests on one kept-alive connection to the first BMC, one
	// to the second.
	keep := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(keep.CloseIdleConnections)
	for range 3 {
		get(keep, f.BMCs[0].Addr)
	}
	get(keep, f.BMCs[1].Addr)

	st := f.Stats()
	if st.Connections != 2 || st.Requests != 4 {
		t.Fatalf("stats = %+v, want 2 connections and 4 requests", st)
	}
	var gaps int64
	for _, n := range st.Gaps {
		gaps += n
	}
	if gaps != 2 {
		t.Fatalf("%d idle gaps counted, want 2 (a BMC's first request has none): %v", gaps, st.Gaps)
	}
	if d := f.Stats().Sub(st); d != (FleetStats{}) {
		t.Fatalf("Sub of two snapshots with nothing between = %+v", d)
	}
}
