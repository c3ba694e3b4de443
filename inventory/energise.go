package inventory

import (
	"context"
	"fmt"
)

// RackReader is what EnergisationCheck reads: a machine, its rack and the
// rack's machines.
type RackReader interface {
	Machine(ctx context.Context, name string) (*Machine, error)
	Rack(ctx context.Context, name string) (*Rack, error)
	Machines(ctx context.Context, f MachineFilter) ([]Machine, error)
}

// EnergisationCheck says whether powering machine name on would take its
// rack past its power budget, judged by what the rack draws now: the
// measured draw of each machine whose BMC reports one (the power sync's
// last reading), the rated power of each machine that is on but not
// measured, plus the rated power of the machine about to be powered on.
// Racks of 40-130 kW are commissioned phase by phase against budgets the
// hall's feeds can carry; nothing else stops a technician energising one
// rack too many. It returns a *PlacementError (Limit "rack-power-measured")
// naming the figures and the excess, or nil. A rack without a budget is
// never refused. It reads through any backend.
func EnergisationCheck(ctx context.Context, s RackReader, name string) error {
	m, err := s.Machine(ctx, name)
	if err != nil {
		return err
	}
	r, err := s.Rack(ctx, m.Rack)
	if err != nil {
		return err
	}
	if r.BudgetW <= 0 {
		return nil
	}
	ms, err := s.Machines(ctx, MachineFilter{Rack: r.Name})
	if err != nil {
		return err
	}
	var drawW int64
	for i := range ms {
		o := &ms[i]
		if o.Name == m.Name {
			continue // counted at its rating below
		}
		switch {
		case o.BMCStatus.ConsumedW > 0:
			drawW += o.BMCStatus.ConsumedW
		case o.BMCStatus.Power == "on":
			drawW += o.PowerW
		}
	}
	if total := drawW + m.PowerW; total > r.BudgetW {
		return &PlacementError{Limit: "rack-power-measured", Msg: fmt.Sprintf(
			"machine %q: powering it on (rated %s kW) with rack %s drawing %s kW would take the rack to %s kW, past its %s kW budget by %s kW",
			m.Name, FormatKW(m.PowerW), r.Name, FormatKW(drawW), FormatKW(total), FormatKW(r.BudgetW), FormatKW(total-r.BudgetW))}
	}
	return nil
}
