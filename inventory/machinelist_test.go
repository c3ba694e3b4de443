package inventory

import (
	"reflect"
	"testing"
)

// TestMachinesWithoutInspectionLeaveOnlyTheReportOut: a status reader's
// list (metrics, the power sync) is every machine as the full list has
// it, the hardware report aside, whatever the filter.
func TestMachinesWithoutInspectionLeaveOnlyTheReportOut(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.EnrollMachine(ctx, machine("m1", "r1", 1, "02:00:00:00:00:01")))
	must(inv.EnrollMachine(ctx, machine("m2", "r1", 2, "02:00:00:00:00:02")))
	must(inv.RecordInspection(ctx, "m2", []byte(`{"gpus": [{"model": "H100", "count": 8}]}`)))
	if err := inv.RecordBMCStatus(ctx, "m2", BMCStatus{Power: "on", Reachable: true, Outcome: "ok", ConsumedW: 9000}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []MachineFilter{{}, {Rack: "r1"}, {Hall: "h1"}, {State: MachineEnrolled}} {
		full := must(inv.Machines(ctx, f))
		f.WithoutInspection = true
		lean := must(inv.Machines(ctx, f))
		if len(full) != 2 || len(lean) != len(full) {
			t.Fatalf("%+v: %d machines, and %d without inspection; want 2 and 2", f, len(full), len(lean))
		}
		if len(full[1].Inspection) == 0 {
			t.Fatalf("%+v: the full list lost m2's inspection", f)
		}
		for i := range full {
			full[i].Inspection = nil
		}
		if !reflect.DeepEqual(full, lean) {
			t.Errorf("%+v: without inspection\n%+v\nwant the full list less the report\n%+v", f, lean, full)
		}
	}
}
