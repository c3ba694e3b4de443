package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// TestRackAndPhaseViewsShowRatedMeasuredAndBudget: rack show (staff only),
// hall capacity and phase list carry the same power figures.
func TestRackAndPhaseViewsShowRatedMeasuredAndBudget(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.inv.RecordBMCStatus(ctx, "ma", inventory.BMCStatus{Power: "on", Reachable: true, Outcome: "ok", ConsumedW: 9_100,
		ReadAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	status, data := f.do("technician", "GET", "/api/v1/racks/ra", nil)
	var rd RackDetail
	if status != http.StatusOK || json.Unmarshal(data, &rd) != nil || rd.Power == nil {
		t.Fatalf("rack show: %d %s", status, data)
	}
	if p := rd.Power; p.RatedW != 10_200 || p.MeasuredW != 9_100 || p.Measured != 1 || p.Unmeasured != 0 || p.ReadingAgeS < 60 || rd.BudgetW != 44_000 {
		t.Fatalf("rack power %+v", p)
	}
	// A tenant sees its rack, not the power of machines it may not see.
	status, data = f.do("tenant-a", "GET", "/api/v1/racks/ra", nil)
	var top map[string]json.RawMessage
	if status != http.StatusOK || json.Unmarshal(data, &top) != nil || top["power"] != nil {
		t.Fatalf("tenant rack show: %d %s", status, data)
	}
	status, data = f.do("technician", "GET", "/api/v1/halls/h1/phases", nil)
	var phases []PhaseView
	if status != http.StatusOK || json.Unmarshal(data, &phases) != nil || len(phases) != 2 {
		t.Fatalf("phase list: %d %s", status, data)
	}
	// Racks ra, rb and rempty (44 kW each); ma measured, mb of unknown power.
	if p := phases[0]; p.Number != 1 || p.AllocatedW != 132_000 || p.Power.RatedW != 20_400 || p.Power.MeasuredW != 9_100 ||
		p.Power.Measured != 1 || p.Power.Unmeasured != 1 {
		t.Fatalf("phase 1 %+v", p)
	}
	var hc inventory.HallCapacity
	status, data = f.do("technician", "GET", "/api/v1/halls/h1/capacity", nil)
	if status != http.StatusOK || json.Unmarshal(data, &hc) != nil || hc.Phases[0].Power != phases[0].Power {
		t.Fatalf("hall capacity: %d %s", status, data)
	}
}

// TestForcePowerIsForStaff: the force_power query value of job routes.
func TestForcePowerIsForStaff(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("tenant-a", "POST", "/api/v1/machines/ma/release?force_power=true", ReleaseRequest{WipeMode: "fast"})
	if status != http.StatusForbidden || !strings.Contains(string(data), "only staff may force") {
		t.Fatalf("tenant force_power: %d %s", status, data)
	}
	status, data = f.do("technician", "POST", "/api/v1/machines/ma/commission?force_power=maybe", nil)
	if status != http.StatusBadRequest || !strings.Contains(string(data), "force_power") {
		t.Fatalf("bad force_power: %d %s", status, data)
	}
	if j, err := f.inv.ActiveJob(context.Background(), "ma"); err == nil {
		t.Fatalf("a refused request started job %s", j.ID)
	}
}
