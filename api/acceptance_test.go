package api

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// TestRackAcceptanceListsEachMachineAndTheFixList: a failed report puts
// its findings on the rack's fix list with the unit and machine; the
// machine's history keeps every report; tenants see none of it.
func TestRackAcceptanceListsEachMachineAndTheFixList(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	file := func(passed bool) string {
		j := must(f.srv.prov.Submit(ctx, provisioner.Request{Kind: inventory.JobPower, Machine: "ma", PowerAction: "on"}))
		c := inventory.Check{Name: "pcie", Required: true, Result: inventory.CheckPassed, Summary: "28 of 28 links at their maximum speed and width"}
		if !passed {
			c.Result, c.Summary = inventory.CheckFailed, "27 of 28 links at their maximum speed and width"
			c.Findings = []inventory.Finding{{Subject: "GPU 0000:9a:00.0", Problem: "at PCIe Gen4 x8, expected Gen5 x16", Fix: "reseat"}}
		}
		must(f.inv.RecordAcceptance(ctx, inventory.AcceptanceReport{Job: j.ID, Profile: "hgx-h100", Checks: []inventory.Check{c}}))
		if _, _, err := f.inv.UpdateJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) error { j.State = inventory.JobSucceeded; return nil }); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	file(true)
	failed := file(false)

	var ra RackAcceptance
	status, data := f.do("technician", "GET", "/api/v1/racks/ra/acceptance", nil)
	if status != 200 || json.Unmarshal(data, &ra) != nil {
		t.Fatalf("technician: %d %s", status, data)
	}
	want := []string{"U1 ma: GPU 0000:9a:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat"}
	if !reflect.DeepEqual(ra.FixList, want) || ra.Failed != 1 || ra.Passed != 0 || len(ra.Machines) != 1 ||
		ra.Machines[0].Result != "failed" || ra.Machines[0].Job != failed {
		t.Errorf("rack acceptance = %+v", ra)
	}
	var ma MachineAcceptance
	status, data = f.do("technician", "GET", "/api/v1/machines/ma/acceptance", nil)
	if status != 200 || json.Unmarshal(data, &ma) != nil || len(ma.Reports) != 2 || !ma.Reports[0].Passed || ma.Reports[1].Passed {
		t.Fatalf("machine acceptance: %d %s", status, data)
	}
	var rb RackAcceptance
	status, data = f.do("admin", "GET", "/api/v1/racks/rb/acceptance", nil)
	if status != 200 || json.Unmarshal(data, &rb) != nil || rb.NotRun != 1 || rb.Machines[0].Result != "none" || len(rb.FixList) != 0 {
		t.Errorf("rack without reports: %d %s", status, data)
	}
	if status, _ := f.do("tenant-a", "GET", "/api/v1/racks/ra/acceptance", nil); status != 403 && status != 404 {
		t.Errorf("tenant on rack acceptance: %d", status)
	}
	if status, _ := f.do("technician", "GET", "/api/v1/racks/nosuch/acceptance", nil); status != 404 {
		t.Errorf("unknown rack: %d", status)
	}
}

// TestRackFirmwareNamesTheMachinesThatDrift: two machines in one rack,
// one on an older BIOS and HCA firmware; the drift lines name it.
func TestRackFirmwareNamesTheMachinesThatDrift(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	must(f.inv.EnrollMachine(ctx, inventory.Enrollment{Machine: inventory.Machine{Name: "ma2", Rack: "ra", Unit: 17,
		MACs: []string{"52:54:00:00:00:17"}, PowerW: 10_200,
		BMC: inventory.BMC{Address: "10.0.0.17", Protocol: inventory.ProtocolIPMI, Username: "admin"}}}))
	inspect := func(m, bios, ib string) {
		inv := wire.Inventory{System: wire.System{BIOSVersion: bios}, Hardware: &wire.Hardware{
			NVMe:    []wire.NVMeHealth{{Disk: "nvme0n1", Firmware: "GDC7302Q"}},
			IBPorts: []wire.IBPort{{Device: "mlx5_0", Port: 1, Firmware: ib}, {Device: "mlx5_1", Port: 1, Firmware: ib}}}}
		must(f.inv.RecordInspection(ctx, m, must(json.Marshal(inv))))
	}
	inspect("ma", "2.1", "28.39.1002")
	inspect("ma2", "2.0", "28.37.1014")
	mustOK(t, f.inv.RecordBMCFirmware(ctx, "ma", inventory.BMCFirmware{Components: []inventory.FirmwareComponent{{ID: "BMC", Version: "3.1"}, {ID: "CPLD_0", Version: "1.0.3"}}}))
	mustOK(t, f.inv.RecordBMCFirmware(ctx, "ma2", inventory.BMCFirmware{Components: []inventory.FirmwareComponent{{ID: "BMC", Version: "3.1"}, {ID: "CPLD_0", Version: "1.0.1"}}}))
	var rf RackFirmware
	status, data := f.do("technician", "GET", "/api/v1/racks/ra/firmware", nil)
	if status != 200 || json.Unmarshal(data, &rf) != nil {
		t.Fatalf("%d %s", status, data)
	}
	want := []string{"BIOS: 2.0 on U17 ma2; 2.1 on U1 ma", "InfiniBand: 28.37.1014 on U17 ma2; 28.39.1002 on U1 ma",
		"BMC CPLD_0: 1.0.1 on U17 ma2; 1.0.3 on U1 ma"}
	if !reflect.DeepEqual(rf.Drift, want) {
		t.Errorf("drift = %q, want %q", rf.Drift, want)
	}
	if len(rf.Machines) != 2 || rf.Machines[0].Machine != "ma2" || rf.Machines[0].BIOS != "2.0" ||
		!reflect.DeepEqual(rf.Machines[0].InfiniBand, []string{"28.37.1014"}) || !reflect.DeepEqual(rf.Machines[1].NVMe, []string{"GDC7302Q"}) ||
		!reflect.DeepEqual(rf.Machines[0].BMCReported, []BMCFirmwareVersion{{Component: "BMC", Version: "3.1"}, {Component: "CPLD_0", Version: "1.0.1"}}) {
		t.Errorf("machines = %+v", rf.Machines)
	}
}

func TestDriftLineCountsTheMajorityAndNamesTheRest(t *testing.T) {
	got := driftLine("BIOS", map[string][]string{"2.1": {"U1 a", "U3 b", "U5 c"}, "2.0": {"U17 d"}})
	if want := "BIOS: 2.1 on 3 machines; 2.0 on U17 d"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := driftLine("BIOS", map[string][]string{"2.1": {"U1 a", "U3 b"}}); got != "" {
		t.Errorf("no drift gave %q", got)
	}
}

func TestRackCablingListsObservedCables(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inv := wire.Inventory{Hardware: &wire.Hardware{LLDP: []wire.LLDPPort{
		{Interface: "eno1", PCIAddress: "0000:c1:00.0", MAC: "3c:ec:ef:8a:2b:10", Carrier: true,
			Neighbor: &wire.LLDPNeighbor{ChassisID: "0c:42:a1:00:00:00", PortID: "Ethernet12", SystemName: "leaf-03"}},
		{Interface: "eno2", MAC: "3c:ec:ef:8a:2b:11", Carrier: true},
		{Interface: "eno3", MAC: "3c:ec:ef:8a:2b:12"}}}}
	must(f.inv.RecordInspection(ctx, "ma", must(json.Marshal(inv))))
	var rc RackCabling
	status, data := f.do("technician", "GET", "/api/v1/racks/ra/cabling", nil)
	if status != 200 || json.Unmarshal(data, &rc) != nil || len(rc.Ports) != 3 {
		t.Fatalf("%d %s", status, data)
	}
	want := Cable{Machine: "ma", Unit: 1, Interface: "eno1", PCIAddress: "0000:c1:00.0", MAC: "3c:ec:ef:8a:2b:10", Status: "connected",
		Switch: "leaf-03", SwitchChassisID: "0c:42:a1:00:00:00", SwitchPort: "Ethernet12"}
	if rc.Ports[0] != want || rc.Ports[1].Status != "silent" || rc.Ports[2].Status != "no-link" {
		t.Errorf("ports = %+v", rc.Ports)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A tenant sees its machine's BMC-reported firmware, but not the BMC's
// address quoted in a failed read's error.
func TestTenantSeesBMCFirmwareWithoutTheBMCsAddress(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	mustOK(t, f.inv.RecordBMCFirmware(ctx, "ma", inventory.BMCFirmware{Components: []inventory.FirmwareComponent{{ID: "BMC", Version: "3.1"}}}))
	mustOK(t, f.inv.RecordBMCFirmware(ctx, "ma", inventory.BMCFirmware{Error: "BMC 10.0.0.1 did not answer"}))
	for who, want := range map[string]string{"technician": "BMC 10.0.0.1 did not answer", "tenant-a": "BMC (BMC) did not answer"} {
		status, data := f.do(who, "GET", "/api/v1/machines/ma", nil)
		var m Machine
		if status != 200 || json.Unmarshal(data, &m) != nil {
			t.Fatalf("%s: %d %s", who, status, data)
		}
		if m.BMCFirmware == nil || m.BMCFirmware.Error != want || len(m.BMCFirmware.Components) != 1 || m.BMCFirmware.Components[0].Version != "3.1" {
			t.Errorf("%s sees %+v, want error %q and the last good components", who, m.BMCFirmware, want)
		}
	}
}
