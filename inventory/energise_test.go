package inventory

import (
	"fmt"
	"testing"
	"time"
)

// powerRack makes rack r20 (20 kW) in hall h1 with machines p0..p2 rated
// 8, 6 and 6 kW.
func powerRack(t *testing.T) Inventory {
	t.Helper()
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r20", Hall: "h1", Phase: 1, Units: 48, BudgetW: 20_000}))
	for i, w := range []int64{8_000, 6_000, 6_000} {
		e := machine(fmt.Sprintf("p%d", i), "r20", i+1, macN(300+i))
		e.Machine.PowerW = w
		must(inv.EnrollMachine(ctx, e))
	}
	return inv
}

func recordPower(t *testing.T, inv Inventory, name string, st BMCStatus, at time.Time) {
	t.Helper()
	st.Reachable, st.Outcome, st.ReadAt = true, "ok", at
	if err := inv.RecordBMCStatus(ctx, name, st); err != nil {
		t.Fatal(err)
	}
}

func TestRackPowerCountsRatedMeasuredUnreadAndOff(t *testing.T) {
	inv := powerRack(t)
	old := time.Now().Add(-90 * time.Second)
	recordPower(t, inv, "p0", BMCStatus{Power: "on", ConsumedW: 7_400}, old)
	recordPower(t, inv, "p1", BMCStatus{Power: "on"}, time.Now())
	// p2 was measured, then powered off by a command that kept the reading:
	// it draws nothing now.
	recordPower(t, inv, "p2", BMCStatus{Power: "off", ConsumedW: 5_900}, time.Now())
	d := must(inv.RackPower(ctx, "r20"))
	if d.RatedW != 20_000 || d.MeasuredW != 7_400 || d.DrawW != 13_400 || d.Measured != 1 || d.Unmeasured != 1 || d.Off != 1 {
		t.Fatalf("rack power %+v", d)
	}
	if !d.OldestReadingAt.Equal(old.UTC()) || d.ReadingAgeS < 90 {
		t.Fatalf("reading at %v age %ds, want %v and at least 90s", d.OldestReadingAt, d.ReadingAgeS, old)
	}
	hc := must(inv.HallCapacity(ctx, "h1"))
	p := hc.Phases[0].Power
	if p.RatedW != 20_000 || p.MeasuredW != 7_400 || p.DrawW != 13_400 || p.Measured != 1 || p.Unmeasured != 1 || p.Off != 1 || hc.Phases[0].InstalledW != 20_000 {
		t.Fatalf("phase power %+v", p)
	}
	all := must(inv.RackPowers(ctx))
	if all["r20"].MeasuredW != 7_400 || all["r1"].RatedW != 0 {
		t.Fatalf("rack powers %+v", all)
	}
	if _, err := inv.RackPower(ctx, "nope"); err == nil {
		t.Fatal("unknown rack: no error")
	}
}

func TestEnergisationCheckIgnoresOffMachinesAndMachinesAlreadyOn(t *testing.T) {
	inv := powerRack(t)
	// p0 measured at 9.5 kW, then powered off: its stale reading does not
	// count, so p1 (6 kW) fits the 20 kW budget beside p2's 6 kW.
	recordPower(t, inv, "p2", BMCStatus{Power: "on", ConsumedW: 6_000}, time.Now())
	recordPower(t, inv, "p0", BMCStatus{Power: "off", ConsumedW: 9_500}, time.Now())
	if err := EnergisationCheck(ctx, inv, "p1"); err != nil {
		t.Fatal(err)
	}
	recordPower(t, inv, "p0", BMCStatus{Power: "on", ConsumedW: 9_500}, time.Now())
	wantErr[*PlacementError](t, EnergisationCheck(ctx, inv, "p1"), "rack r20 would draw 21.5 kW of its 20 kW budget", "over by 1.5 kW")
	// A machine already on adds nothing: cycling it is not refused.
	recordPower(t, inv, "p1", BMCStatus{Power: "on", ConsumedW: 11_000}, time.Now())
	if err := EnergisationCheck(ctx, inv, "p1"); err != nil {
		t.Fatalf("machine already on: %v", err)
	}
}

func TestPowerAlertOncePerCrossingWithHysteresis(t *testing.T) {
	inv := powerRack(t)
	alerts := func(w int64) []PowerAlertChange {
		t.Helper()
		recordPower(t, inv, "p0", BMCStatus{Power: "on", ConsumedW: w}, time.Now())
		out, err := inv.CheckRackPowerAlerts(ctx, 0.9)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	steps := []struct {
		w    int64
		want string // "", "over" or "normal"
	}{
		{17_000, ""},       // 85 %
		{18_000, "over"},   // 90 %: crosses
		{19_500, ""},       // still over: no second alert
		{17_500, ""},       // 87.5 %: under the share, inside the hysteresis
		{18_500, ""},       // over again, but never cleared
		{16_900, "normal"}, // 84.5 %: below 90 - 5
		{16_000, ""},
		{18_200, "over"}, // a second crossing is a second alert
	}
	for _, s := range steps {
		got := alerts(s.w)
		switch {
		case s.want == "" && len(got) != 0:
			t.Fatalf("at %d W: %+v, want no change", s.w, got)
		case s.want != "" && (len(got) != 1 || got[0].Rack != "r20" || got[0].Over != (s.want == "over") || got[0].MeasuredW != s.w):
			t.Fatalf("at %d W: %+v, want one %s", s.w, got, s.want)
		}
	}
	r := must(inv.Rack(ctx, "r20"))
	if !r.PowerAlert {
		t.Fatal("rack not marked over")
	}
	evs := must(inv.Events(ctx, EventFilter{Subject: "rack/r20"}))
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action)
	}
	if fmt.Sprint(actions) != "[rack.power.over rack.power.normal rack.power.over]" {
		t.Fatalf("rack events %v", actions)
	}
	if want := "rack r20 draws 18.2 kW measured, 91% of its 20 kW budget"; len(evs) != 3 || evs[2].Detail[:len(want)] != want {
		t.Fatalf("event detail %q", evs[2].Detail)
	}
}

func TestPowerAlertShareOutOfRangeIsRefused(t *testing.T) {
	inv := powerRack(t)
	for _, share := range []float64{0, -0.5, 1.2} {
		wantErr[*ValidationError](t, func() error { _, err := inv.CheckRackPowerAlerts(ctx, share); return err }(), "share")
	}
}
