package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// TestEraseReportShowsATenantOnlyItsOwnTenancy: ma was erased while
// tenant tb had it, then again under ta, its tenant now. Staff see both
// reports with the tenant; ta sees its own only; tb, which no longer has
// ma, gets the 404 of a machine that does not exist.
func TestEraseReportShowsATenantOnlyItsOwnTenancy(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	file := func(tenant string, result wire.EraseResult) string {
		must(f.inv.AssignMachineTenant(ctx, "ma", tenant))
		j := must(f.srv.prov.Submit(ctx, provisioner.Request{Kind: inventory.JobPower, Machine: "ma", PowerAction: "on"}))
		must(f.inv.RecordErase(ctx, inventory.EraseReport{Job: j.ID, Disks: []wire.EraseRecord{{Disk: "nvme0n1", Serial: "S1",
			Method: wire.EraseNVMeFormatUserData, Level: wire.LevelPurge, Result: result}}}))
		if _, _, err := f.inv.UpdateJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) error { j.State = inventory.JobSucceeded; return nil }); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	jobB := file("tb", wire.EraseFailed)
	jobA := file("ta", wire.ErasePassed)

	var staff EraseReport
	status, data := f.do("technician", "GET", "/api/v1/machines/ma/erase-report", nil)
	if status != 200 || json.Unmarshal(data, &staff) != nil || len(staff.Reports) != 2 {
		t.Fatalf("technician: %d %s", status, data)
	}
	if r := staff.Reports[0]; r.Job != jobB || r.Tenant != "tb" || r.Passed || r.Disks[0].Result != wire.EraseFailed {
		t.Errorf("first report %+v", r)
	}
	var own EraseReport
	status, data = f.do("tenant-a", "GET", "/api/v1/machines/ma/erase-report", nil)
	if status != 200 || json.Unmarshal(data, &own) != nil || len(own.Reports) != 1 {
		t.Fatalf("tenant-a: %d %s", status, data)
	}
	if r := own.Reports[0]; r.Job != jobA || !r.Passed || r.Disks[0].Method != wire.EraseNVMeFormatUserData || r.Disks[0].Level != wire.LevelPurge {
		t.Errorf("tenant-a's report %+v", r)
	}
	if strings.Contains(string(data), `"tb"`) || strings.Contains(string(data), jobB) {
		t.Errorf("tenant-a sees the other tenancy: %s", data)
	}
	if status, _ := f.do("tenant-b", "GET", "/api/v1/machines/ma/erase-report", nil); status != 404 {
		t.Errorf("tenant-b on ma: %d", status)
	}
	if status, _ := f.do("technician", "GET", "/api/v1/machines/nosuch/erase-report", nil); status != 404 {
		t.Errorf("unknown machine: %d", status)
	}
}
