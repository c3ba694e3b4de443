package provisioner

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/lab/redfish"
)

// TestBMCStatusKeepsWhatTheSyncMeasured: a power sync's draw and sensors
// are stored with its outcome, and a sync that reads the same again is
// not written; a later command records its own outcome and keeps them
// (commands measure neither), at once when asked for directly and
// written behind for the step's end to carry inside a job's step, and is
// not written when it says nothing the record does not.
func TestBMCStatusKeepsWhatTheSyncMeasured(t *testing.T) {
	ctx := context.Background()
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreateRack(ctx, inventory.Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 44_000}))
	sealer := must(seal.New([]byte("0123456789abcdef0123456789abcdef")))
	emu := httptest.NewServer(redfish.NewServer(redfish.Config{Username: "root", Password: "pw"}))
	t.Cleanup(emu.Close)
	must(inv.EnrollMachine(ctx, inventory.Enrollment{
		Machine: inventory.Machine{Name: "m1", Rack: "r", Unit: 1, MACs: []string{"52:54:00:00:00:01"}, PowerW: 10_000,
			BMC: inventory.BMC{Address: emu.URL, Protocol: inventory.ProtocolRedfish, Username: "root"}},
		SealedPassword: must(sealer.Seal([]byte("pw"), []byte("bmc/m1"))),
	}))
	a := &Machines{Inv: inv, Sealer: sealer, Ctl: bmc.New(bmc.Config{OpTimeout: 10 * time.Second})}

	synced := bmc.StatusOf(bmc.PowerOn, nil, time.Now())
	synced.ConsumedWatts, synced.WattsMeasured = 9_812.4, true
	synced.Sensors = bmc.Sensors{
		Temperatures: []bmc.Temperature{{Name: "Inlet Temp", Celsius: 27, Inlet: true, Health: "OK"}},
		Fans:         []bmc.Fan{{Name: "Fan 0", Reading: 9000, Health: "OK"}, {Name: "Fan 1", Reading: 0, Health: "Critical"}},
		PSUs:         []bmc.PSU{{Name: "PSU 0", State: "Enabled", Health: "OK"}, {Name: "PSU 1", State: "Absent"}},
	}
	if err := a.RecordBMCStatus(ctx, "m1", synced); err != nil {
		t.Fatal(err)
	}
	m := must(inv.Machine(ctx, "m1"))
	want := inventory.SensorSummary{InletC: 27, HasInlet: true, Fans: 2, FansOK: 1, PSUs: 2, PSUsOK: 1}
	if s := m.BMCStatus.Sensors; s == nil || *s != want || m.BMCStatus.ConsumedW != 9812 || m.BMCStatus.Outcome != "ok" {
		t.Fatalf("after the sync: %+v (sensors %+v)", m.BMCStatus, m.BMCStatus.Sensors)
	}
	// The next round reads the same: nothing is written, until the
	// reading grows StatusRefresh old.
	before := inv.WriteTransactions()
	again := synced
	again.ReadAt = synced.ReadAt.Add(time.Minute)
	if err := a.RecordBMCStatus(ctx, "m1", again); err != nil {
		t.Fatal(err)
	}
	if got := inv.WriteTransactions() - before; got != 0 {
		t.Errorf("a sync reading what the record says took %d write transactions, want none", got)
	}
	again.ReadAt = synced.ReadAt.Add(StatusRefresh)
	if err := a.RecordBMCStatus(ctx, "m1", again); err != nil {
		t.Fatal(err)
	}
	if m = must(inv.Machine(ctx, "m1")); !m.BMCStatus.ReadAt.Equal(again.ReadAt.UTC()) {
		t.Errorf("a sync %v after the recorded reading: read at %v, want %v", StatusRefresh, m.BMCStatus.ReadAt, again.ReadAt.UTC())
	}
	again.ConsumedWatts = 5_000
	again.ReadAt = again.ReadAt.Add(time.Minute)
	if err := a.RecordBMCStatus(ctx, "m1", again); err != nil {
		t.Fatal(err)
	}
	if m = must(inv.Machine(ctx, "m1")); m.BMCStatus.ConsumedW != 5000 {
		t.Errorf("a sync reading a new draw: %d W recorded, want 5000", m.BMCStatus.ConsumedW)
	}
	synced = again
	if err := a.RecordBMCStatus(ctx, "m1", synced); err != nil {
		t.Fatal(err)
	}
	m = must(inv.Machine(ctx, "m1"))

	// A command reads the (emulated, off) machine: its outcome and power
	// are recorded, the sync's readings kept.
	if st, err := a.PowerState(ctx, m); err != nil || st != "off" {
		t.Fatalf("power state %q %v", st, err)
	}
	m = must(inv.Machine(ctx, "m1"))
	if s := m.BMCStatus.Sensors; s == nil || *s != want || m.BMCStatus.ConsumedW != 5000 || m.BMCStatus.Outcome != "ok" || m.BMCStatus.Power != "off" {
		t.Fatalf("after a command: %+v", m.BMCStatus)
	}

	// A command that learns nothing new (set the boot device: the power
	// it keeps, an ok outcome) leaves the record, and the store, alone; one
	// that does (power on) is written.
	before = inv.WriteTransactions()
	if err := a.SetBootDevice(ctx, m, inventory.BootPXE, false); err != nil {
		t.Fatal(err)
	}
	if got := inv.WriteTransactions() - before; got != 0 {
		t.Errorf("a command confirming the recorded status took %d write transactions, want none", got)
	}
	// Inside a job's step, the power-on's status waits for the next
	// commit (the step's end), which carries it.
	if err := a.SetPower(inStep(ctx), m, inventory.PowerOn); err != nil {
		t.Fatal(err)
	}
	inv.FlushJobUpdates() // what the step's end would carry
	if m = must(inv.Machine(ctx, "m1")); m.BMCStatus.Power != "on" || m.BMCStatus.ConsumedW != 5000 {
		t.Errorf("after a power-on: %+v, want on with the sync's draw kept", m.BMCStatus)
	}
}
