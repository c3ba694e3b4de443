package provisioner

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// labFirmware is what every fake BMC of the engine's tests lists.
var labFirmware = []inventory.FirmwareComponent{
	{ID: "BMC", Name: "BMC Firmware", Version: "U50 v2.10 (04/10/2024)"},
	{ID: "BIOS", Name: "BIOS", Version: "2.1.7"},
	{ID: "CPLD_0", Name: "CPLD", Version: "1.0.1"},
	{ID: "CPLD_1", Name: "CPLD", Version: "1.0.3"},
}

// FirmwareInventory makes the tests' fake BMC a BMCFirmwareReader. It is
// not one of the calls the fake records (tests count those).
func (b *fakeBMC) FirmwareInventory(ctx context.Context, m *inventory.Machine) ([]inventory.FirmwareComponent, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.fail[m.Name+" firmware"]; err != nil {
		return nil, err
	}
	return append([]inventory.FirmwareComponent(nil), labFirmware...), nil
}

func TestBMCFirmwareBelowBaselineNamesTheComponent(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  firmware: {bmc: {BMC: \"2.10\", CPLD: \"1.0.3\", PSU: \"3.2\"}}\n")
	inv := agentInventory(t, "hgx-h100")
	r := AcceptMachine(p, inv, &inventory.Machine{BMCFirmware: &inventory.BMCFirmware{Components: labFirmware}})
	want := []string{
		"BMC-reported CPLD_0 firmware 1.0.1 below baseline 1.0.3 — update the CPLD_0 firmware to 1.0.3 or later",
		"BMC firmware PSU not in the BMC's firmware inventory (it lists BMC, BIOS, CPLD_0, CPLD_1) — name the component as the BMC does in the profile's firmware.bmc",
	}
	if r.Passed || !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list:\n%s", strings.Join(r.Failures(), "\n"))
	}
	// Without an inventory the baseline cannot be judged: not a pass.
	r = AcceptMachine(p, inv, &inventory.Machine{BMCFirmware: &inventory.BMCFirmware{Error: "BMC timed out"}})
	if r.Passed || len(r.Failures()) != 1 || !strings.Contains(r.Failures()[0], "could not be read: BMC timed out") {
		t.Errorf("unread inventory: %q", r.Failures())
	}
	if r := Accept(p, inv); r.Passed {
		t.Errorf("no BMC inventory at all passed: %+v", r.Checks)
	}
}

func TestComponentBaselinesCoverNumberedComponents(t *testing.T) {
	for _, c := range []struct {
		key  string
		comp inventory.FirmwareComponent
		want bool
	}{
		{"CPLD", inventory.FirmwareComponent{ID: "CPLD_0"}, true},
		{"cpld", inventory.FirmwareComponent{ID: "X", Name: "CPLD 1"}, true},
		{"BMC", inventory.FirmwareComponent{ID: "BMC"}, true},
		{"BMC", inventory.FirmwareComponent{ID: "BMCX"}, false},
		{"HGX_FW_GPU", inventory.FirmwareComponent{ID: "HGX_FW_GPU_SXM_1"}, true},
		{"PSU", inventory.FirmwareComponent{ID: "CPLD"}, false},
	} {
		if got := componentMatches(c.key, c.comp); got != c.want {
			t.Errorf("%q matches %+v = %v", c.key, c.comp, got)
		}
	}
}

// Commissioning reads the BMC's firmware at the BMC check, keeps it on
// the machine, and judges the profile's baselines against it; a BMC that
// cannot list its firmware does not stop the commissioning, but the
// baseline it leaves unknown fails.
func TestCommissionReadsAndJudgesTheBMCsFirmware(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  firmware: {bmc: {CPLD: \"1.0.3\"}}\n")
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": p}})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, agentInventory(t, "hgx-h100"), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.machine("m2", "r0", 3, inventory.MachineEnrolled)
	l.bmc.mu.Lock()
	l.bmc.fail["m2 firmware"] = errors.New("HTTP 500")
	l.bmc.mu.Unlock()
	for _, name := range []string{"m1", "m2"} {
		j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: name}).ID)
		if j.State != inventory.JobFailed {
			t.Errorf("%s: job %s, want failed on the CPLD baseline", name, j.State)
		}
	}
	m1 := must(l.inv.Machine(context.Background(), "m1"))
	if m1.BMCFirmware == nil || !reflect.DeepEqual(m1.BMCFirmware.Components, labFirmware) || m1.BMCFirmware.ReadAt.IsZero() {
		t.Errorf("m1 firmware %+v", m1.BMCFirmware)
	}
	if !strings.Contains(m1.Reason, "BMC-reported CPLD_0 firmware 1.0.1 below baseline 1.0.3") {
		t.Errorf("m1 reason %q", m1.Reason)
	}
	m2 := must(l.inv.Machine(context.Background(), "m2"))
	if m2.BMCFirmware == nil || m2.BMCFirmware.Error != "HTTP 500" || !strings.Contains(m2.Reason, "could not be read: HTTP 500") {
		t.Errorf("m2 firmware %+v, reason %q", m2.BMCFirmware, m2.Reason)
	}
}
