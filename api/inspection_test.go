package api

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// TestMachineRepliesCarryTheInspectionAsBefore: the store keeps a
// machine's inspection apart from its record, and every reply that showed
// it still does, as it came (indented as the whole reply is): show (staff and the machine's tenant), list,
// rack detail, and the replies to maintenance and to a change; a machine
// never inspected shows none.
func TestMachineRepliesCarryTheInspectionAsBefore(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	report := []byte(`{"system":{"bios_version":"2.1"},"gpus":[{"model":"H100 SXM5","count":8}]}`)
	must(f.inv.RecordInspection(ctx, "ma", report))
	must(f.inv.AssignMachineTenant(ctx, "ma", "ta"))
	check := func(what string, ms []Machine) {
		t.Helper()
		for _, m := range ms {
			switch m.Name {
			case "ma":
				var got bytes.Buffer
				if json.Compact(&got, m.Inspection) != nil || !bytes.Equal(got.Bytes(), report) || m.InspectedAt.IsZero() {
					t.Errorf("%s: ma's inspection %s at %v, want the report as it came", what, m.Inspection, m.InspectedAt)
				}
			default:
				if m.Inspection != nil {
					t.Errorf("%s: %s, never inspected, shows %s", what, m.Name, m.Inspection)
				}
			}
		}
	}
	one := func(who, method, path string, body any) []Machine {
		t.Helper()
		status, data := f.do(who, method, path, body)
		var m Machine
		if status != 200 || json.Unmarshal(data, &m) != nil {
			t.Fatalf("%s %s %s: %d %s", who, method, path, status, data)
		}
		return []Machine{m}
	}
	check("show", one("technician", "GET", "/api/v1/machines/ma", nil))
	check("tenant's show", one("tenant-a", "GET", "/api/v1/machines/ma", nil))
	check("show of another", one("technician", "GET", "/api/v1/machines/mb", nil))

	var list []Machine
	if status, data := f.do("technician", "GET", "/api/v1/machines", nil); status != 200 || json.Unmarshal(data, &list) != nil || len(list) != 2 {
		t.Fatalf("list: %d %s", status, data)
	}
	check("list", list)
	var rd RackDetail
	if status, data := f.do("technician", "GET", "/api/v1/racks/ra", nil); status != 200 || json.Unmarshal(data, &rd) != nil || len(rd.Machines) != 1 {
		t.Fatalf("rack detail: %d %s", status, data)
	}
	check("rack detail", rd.Machines)
	must(f.inv.UnassignMachineTenant(ctx, "ma", "ta"))
	check("maintenance reply", one("technician", "POST", "/api/v1/machines/ma/maintenance", MaintenanceRequest{On: true, Reason: "fan"}))
	check("change reply", one("technician", "PATCH", "/api/v1/machines/ma", map[string]any{"power_w": 10_000}))
	if got, _, err := f.inv.Inspection(ctx, "ma"); err != nil || !bytes.Equal(got, report) {
		t.Errorf("after the changes the store has %s (%v)", got, err)
	}
}
