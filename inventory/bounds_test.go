package inventory

import (
	"math"
	"strings"
	"testing"
)

// TestHugeNumbersAreRefused: numbers far beyond any real site are refused
// with the limit named, before any sum over them can overflow. Before the
// bounds, a rack of 9,223,372,036,854,774 kW went into a 100 kW phase (the
// phase's allocation wrapped negative) and three machines at a unit near
// 2^63 shared one overflowed unit.
func TestHugeNumbersAreRefused(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv) // phase 2 of h1 has 100 kW

	if _, err := KWToW("power_kw", 9_223_372_036_854_774); err == nil {
		t.Error("KWToW accepted 9,223,372,036,854,774 kW")
	}
	for _, kw := range []float64{math.Inf(1), math.NaN(), -1, 1e300} {
		if _, err := KWToW("power_kw", kw); err == nil {
			t.Errorf("KWToW accepted %v kW", kw)
		}
	}
	if w, err := KWToW("power_kw", 130.5); err != nil || w != 130_500 {
		t.Errorf("KWToW(130.5) = %d, %v", w, err)
	}

	// The rack budget as KWToW would have computed it for 9.2e15 kW.
	_, err := inv.CreateRack(ctx, Rack{Name: "huge", Hall: "h1", Phase: 2, BudgetW: 9_223_372_036_854_774_000})
	wantErr[*ValidationError](t, err, "power_kw", "at most")
	_, err = inv.CreateRack(ctx, Rack{Name: "huge", Hall: "h1", Phase: 2, BudgetW: math.MaxInt64})
	wantErr[*ValidationError](t, err, "power_kw")
	wantErr[*ValidationError](t, must2(inv.CreatePhase(ctx, Phase{Hall: "h1", Number: 9, BudgetW: math.MaxInt64})), "power_kw", "at most")
	_, err = inv.ImportRack(ctx, RackImport{Rack: Rack{Name: "huge", Hall: "h1", Phase: 2, BudgetW: math.MaxInt64 - 100_000}})
	wantErr[*ValidationError](t, err, "power_kw")
	if _, err := inv.Rack(ctx, "huge"); err == nil {
		t.Fatal("a rack with an overflowing budget was stored")
	}

	// Units near 2^63: unit+height wraps past the top-of-rack check.
	for i, unit := range []int{math.MaxInt64, math.MaxInt64 - 1, 1<<63 - 1<<16, 65} {
		e := machine("far"+strings.Repeat("x", i), "r1", unit, macN(900+i))
		e.Machine.Height = 2
		wantErr[*ValidationError](t, must2(inv.EnrollMachine(ctx, e)), "unit", "64")
	}
	if ms := must(inv.Machines(ctx, MachineFilter{Rack: "r1"})); len(ms) != 0 {
		t.Fatalf("machines at impossible units were stored: %v", ms)
	}

	// A maintenance reason is a sentence, not a megabyte.
	e := machine("mreason", "r1", 30, macN(990))
	must(inv.EnrollMachine(ctx, e))
	wantErr[*ValidationError](t, must2(inv.SetMaintenance(ctx, "mreason", true, strings.Repeat("r", 2000))), "reason")
	if m := must(inv.Machine(ctx, "mreason")); m.State != MachineEnrolled {
		t.Fatalf("refused maintenance changed the machine: %s", m.State)
	}
	if err := inv.DeleteMachine(ctx, "mreason"); err != nil {
		t.Fatal(err)
	}

	// Names and BMC fields longer than any real one.
	long := strings.Repeat("a", 300)
	for field, mut := range map[string]func(*Enrollment){
		"bmc_user":    func(e *Enrollment) { e.Machine.BMC.Username = long },
		"bmc_address": func(e *Enrollment) { e.Machine.BMC.Address = long + ".example" },
		"name":        func(e *Enrollment) { e.Machine.Name = long },
	} {
		e := machine("m1", "r1", 1, macN(1))
		mut(&e)
		wantErr[*ValidationError](t, must2(inv.EnrollMachine(ctx, e)), field)
	}
}
