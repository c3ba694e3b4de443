package provisioner

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/redfish"
)

// healthBMC is the engine tests' fake BMC with an event log and a power
// cap.
type healthBMC struct {
	*fakeBMC
	mu       sync.Mutex
	sel      map[string][]bmc.Event
	selErr   error
	limitErr error
	limits   map[string]int
}

func (b *healthBMC) EventLog(ctx context.Context, m *inventory.Machine) ([]bmc.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sel[m.Name], b.selErr
}

func (b *healthBMC) SetPowerLimit(ctx context.Context, m *inventory.Machine, watts int) (bmc.PowerLimit, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limitErr != nil {
		return bmc.PowerLimit{}, b.limitErr
	}
	b.limits[m.Name] = watts
	return bmc.PowerLimit{Watts: float64(watts), Via: "PowerControl"}, nil
}

// SetPowerLimit makes the engine tests' plain fake BMC a PowerLimiter
// whose call can be paused ("power limit"), like its other calls.
func (b *fakeBMC) SetPowerLimit(ctx context.Context, m *inventory.Machine, watts int) (bmc.PowerLimit, error) {
	if err := b.hit(ctx, "power limit"); err != nil {
		return bmc.PowerLimit{}, err
	}
	if err := b.enter(m, "power limit"); err != nil {
		return bmc.PowerLimit{}, err
	}
	return bmc.PowerLimit{Watts: float64(watts), Via: "PowerControl"}, nil
}

// limitedProfile is the lab's profile with a power cap.
func limitedProfile() *Profile {
	return &Profile{GPUModel: "H100 SXM5", GPUCount: 8, CPUSockets: 2, MinMemoryGiB: 1024, OSDisk: "nvme0n1", PowerLimitW: 9000}
}

// newHealthLab is a lab whose engine drives a healthBMC.
func newHealthLab(t *testing.T, profile *Profile) (*lab, *healthBMC) {
	t.Helper()
	cfg := Config{}
	if profile != nil {
		cfg.Profiles = profiles{"hgx-h100": profile}
	}
	l := newLab(t, cfg)
	l.stop()
	hb := &healthBMC{fakeBMC: l.bmc, sel: map[string][]bmc.Event{}, limits: map[string]int{}}
	cfg = l.eng.cfg
	l.eng = must(New(l.inv, hb, cfg))
	srv := httptest.NewServer(l.eng.AgentHandler())
	t.Cleanup(srv.Close)
	l.srv = srv
	l.start()
	return l, hb
}

func TestCriticalSELEntryFailsCommissioningWithItsText(t *testing.T) {
	l, hb := newHealthLab(t, nil)
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	hb.sel["m1"] = []bmc.Event{
		{ID: "1", Time: "2026-11-29T10:00:00Z", Message: "BMC started", Severity: bmc.SeverityOK},
		{ID: "2", Time: "2026-11-29T10:05:00Z", Message: "Fan 3 speed low", Severity: bmc.SeverityWarning},
		{ID: "3", Time: "2026-11-29T10:07:00Z", Message: "Uncorrectable ECC error on DIMM A3", Severity: bmc.SeverityCritical, Reason: "Redfish Severity Critical"},
	}
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepCheckSEL {
		t.Fatalf("job %s (%s), machine %s at %q", j.State, stepNames(j), m.State, m.FailedStep)
	}
	for _, want := range []string{"1 critical entry", "#3", "Uncorrectable ECC error on DIMM A3", "clear the BMC's event log"} {
		if !strings.Contains(m.Reason, want) {
			t.Fatalf("reason %q lacks %q", m.Reason, want)
		}
	}
	if strings.Contains(m.Reason, "Fan 3") || l.bmc.count("m1", "boot pxe") != 0 {
		t.Fatalf("reason %q quotes a warning, or the machine was booted: %v", m.Reason, l.bmc.calls)
	}

	// The technician fixes the DIMM and clears the log: commissioning passes.
	hb.mu.Lock()
	hb.sel["m1"] = []bmc.Event{{ID: "4", Message: "Log cleared", Severity: bmc.SeverityOK}}
	hb.mu.Unlock()
	j = l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("after the clear: job %s (%s) %s", j.State, stepNames(j), j.Error)
	}
}

func TestUnreadableSELDoesNotBlockButUnreachableBMCFails(t *testing.T) {
	l, hb := newHealthLab(t, nil)
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	hb.selErr = &bmc.Error{Kind: bmc.KindUnsupported, Address: "bmc-m1", Protocol: bmc.Redfish, Op: "event-log", Err: bmc.ErrIPMIToolMissing}
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("unsupported SEL: job %s (%s) %s", j.State, stepNames(j), j.Error)
	}
	evs := must(l.inv.Events(context.Background(), inventory.EventFilter{Subject: "machine/m1"}))
	found := false
	for _, e := range evs {
		found = found || e.Action == "sel.unchecked"
	}
	if !found {
		t.Fatal("no sel.unchecked event")
	}

	l.machine("m2", "r0", 3, inventory.MachineEnrolled)
	hb.mu.Lock()
	hb.selErr = &bmc.Error{Kind: bmc.KindUnreachable, Address: "bmc-m2", Protocol: bmc.Redfish, Op: "event-log"}
	hb.mu.Unlock()
	l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m2"}).ID)
	m := must(l.inv.Machine(context.Background(), "m2"))
	if m.FailedStep != stepCheckSEL || !strings.Contains(m.Reason, "unreachable") {
		t.Fatalf("machine %s at %q: %q", m.State, m.FailedStep, m.Reason)
	}
}

func TestProfilePowerLimitIsAppliedAndRecorded(t *testing.T) {
	l, hb := newHealthLab(t, limitedProfile())
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || hb.limits["m1"] != 9000 || m.PowerLimit == nil ||
		m.PowerLimit.State != "applied" || m.PowerLimit.LimitW != 9000 || m.PowerLimit.Via != "PowerControl" {
		t.Fatalf("job %s (%s), limits %v, record %+v", j.State, stepNames(j), hb.limits, m.PowerLimit)
	}

	// A BMC without a power cap: recorded, and the machine still provisions.
	hb.mu.Lock()
	hb.limitErr = &bmc.Error{Kind: bmc.KindUnsupported, Address: "bmc-m1", Protocol: bmc.IPMI, Op: "power-limit", Err: errorString("DCMI power limit not offered by this BMC")}
	hb.mu.Unlock()
	j = l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	m = must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || j.Steps[0].Name != stepPowerLimit || m.PowerLimit.State != "unsupported" ||
		!strings.Contains(m.PowerLimit.Detail, "not offered by this BMC") {
		t.Fatalf("job %s (%s), record %+v", j.State, stepNames(j), m.PowerLimit)
	}

	// A BMC that accepts and reports another limit fails the job.
	l.machine("m2", "r0", 3, inventory.MachineEnrolled)
	hb.mu.Lock()
	hb.limitErr = &bmc.Error{Kind: bmc.KindProtocol, Address: "bmc-m2", Protocol: bmc.Redfish, Op: "power-limit", Err: errorString("BMC accepted a power limit of 9000 W but reports 6000 W")}
	hb.mu.Unlock()
	l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m2"}).ID)
	m = must(l.inv.Machine(ctx, "m2"))
	if m.State != inventory.MachineFailed || m.FailedStep != stepPowerLimit || !strings.Contains(m.Reason, "reports 6000 W") {
		t.Fatalf("machine %s at %q: %q", m.State, m.FailedStep, m.Reason)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestCriticalSELEntryThroughTheRealBMCPeer: the engine's check through
// the real adapter and bmc.Controller against the Redfish emulator, whose
// SEL holds a Critical entry.
func TestCriticalSELEntryThroughTheRealBMCPeer(t *testing.T) {
	ctx := context.Background()
	l := newLab(t, Config{})
	l.stop()
	emu := redfish.NewServer(redfish.Config{Username: "root", Password: "pw"})
	emu.AddSEL("Critical", "CPU 1 internal error (IERR)")
	ts := httptest.NewServer(emu)
	t.Cleanup(ts.Close)
	sealer := must(seal.New([]byte("0123456789abcdef0123456789abcdef")))
	must(l.inv.EnrollMachine(ctx, inventory.Enrollment{
		Machine: inventory.Machine{Name: "rf1", Rack: "r1", Unit: 1, MACs: []string{"52:54:00:00:09:01"}, PowerW: 10_000,
			BMC: inventory.BMC{Address: ts.URL, Protocol: inventory.ProtocolRedfish, Username: "root"}},
		SealedPassword: must(sealer.Seal([]byte("pw"), []byte("bmc/rf1"))),
	}))
	a := &Machines{Inv: l.inv, Sealer: sealer, Ctl: bmc.New(bmc.Config{OpTimeout: 10 * time.Second})}
	l.eng = must(New(l.inv, a, l.eng.cfg))
	l.start()
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "rf1"}).ID)
	m := must(l.inv.Machine(ctx, "rf1"))
	if j.State != inventory.JobFailed || m.FailedStep != stepCheckSEL || !strings.Contains(m.Reason, "CPU 1 internal error (IERR)") {
		t.Fatalf("job %s (%s), machine %s at %q: %q", j.State, stepNames(j), m.State, m.FailedStep, m.Reason)
	}
	if m.BMCStatus.Outcome != bmc.OutcomeOK {
		t.Fatalf("BMC outcome %q", m.BMCStatus.Outcome)
	}
}

// recordedSink signals each status the sync records.
type recordedSink struct {
	*Machines
	recorded chan string
}

func (s recordedSink) RecordBMCStatus(ctx context.Context, machine string, st bmc.Status) error {
	err := s.Machines.RecordBMCStatus(ctx, machine, st)
	s.recorded <- machine
	return err
}

// TestIPMISensorsReachTheMachineRecord: one power sync round against
// ipmi_sim stores its sensors on the machine (what `machine show` and the
// metrics read), and that it offers no power reading.
func TestIPMISensorsReachTheMachineRecord(t *testing.T) {
	sim := ipmisim.ForTest(t, ipmisim.Config{User: "admin", Password: "ipmi-pw", Emu: "sensor_set_bit 0x20 0 5 1 1 0"})
	ctx := context.Background()
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreateRack(ctx, inventory.Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 44_000}))
	sealer := must(seal.New([]byte("0123456789abcdef0123456789abcdef")))
	must(inv.EnrollMachine(ctx, inventory.Enrollment{
		Machine: inventory.Machine{Name: "ipmi-1", Rack: "r", Unit: 1, MACs: []string{"52:54:00:00:00:01"}, PowerW: 10_000,
			BMC: inventory.BMC{Address: sim.Addr(), Protocol: inventory.ProtocolIPMI, Username: "admin"}},
		SealedPassword: must(sealer.Seal([]byte("ipmi-pw"), []byte("bmc/ipmi-1"))),
	}))
	a := &Machines{Inv: inv, Sealer: sealer, Ctl: bmc.New(bmc.Config{OpTimeout: 30 * time.Second})}
	sink := recordedSink{a, make(chan string, 1)}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { a.Ctl.SyncPower(sctx, sink, time.Hour); close(done) }()
	<-sink.recorded
	cancel()
	<-done
	m := must(inv.Machine(ctx, "ipmi-1"))
	want := inventory.SensorSummary{InletC: 24, HasInlet: true, Fans: 2, FansOK: 2, PSUs: 2, PSUsOK: 1, WattsNotOffered: true}
	if s := m.BMCStatus.Sensors; s == nil || *s != want || m.BMCStatus.Outcome != bmc.OutcomeOK || m.BMCStatus.ConsumedW != 0 {
		t.Fatalf("BMC status %+v, sensors %+v", m.BMCStatus, m.BMCStatus.Sensors)
	}
}
