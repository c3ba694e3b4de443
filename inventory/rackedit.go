package inventory

import (
	"context"
	"fmt"

	"github.com/metalhall/metalhall/inventory/kv"
)

// RackEdit changes what was entered for a rack; a nil field is kept.
type RackEdit struct {
	Units   *int
	BudgetW *int64
	Row     *string
}

// EditRack corrects a rack's units, power budget or row in one
// transaction. Fewer units must still hold every machine; a budget must
// cover what its machines draw and fit its phase's budget.
func (s *Store) EditRack(ctx context.Context, name string, e RackEdit) (*Rack, error) {
	if e.Units == nil && e.BudgetW == nil && e.Row == nil {
		return nil, invalid("rack", "names nothing to change: give units, a power budget or a row")
	}
	var out *Rack
	err := s.update(func(tx kv.Tx) error {
		old, err := get[Rack](tx, bRacks, "rack", name)
		if err != nil {
			return err
		}
		r := *old
		if e.Units != nil {
			r.Units = *e.Units
			if r.Units == 0 {
				return invalid("units", "must be between 1 and %d, got 0", MaxRackUnits)
			}
		}
		if e.BudgetW != nil {
			r.BudgetW = *e.BudgetW
		}
		if e.Row != nil {
			r.Row = *e.Row
		}
		if err := validateRack(&r); err != nil {
			return err
		}
		if r.Units < old.Units {
			if err := s.rackMachines(tx, name, func(m *Machine) error {
				if top := m.Unit + m.Height - 1; top > r.Units {
					return &PlacementError{Limit: "units", Msg: fmt.Sprintf(
						"rack %q: machine %q occupies U%d-U%d, above the %d units asked for: move or delete it first", name, m.Name, m.Unit, top, r.Units)}
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if r.BudgetW != old.BudgetW {
			u, err := get[RackUsage](tx, bRackUsage, "rack", name)
			if err != nil {
				return err
			}
			if u.InstalledW > r.BudgetW {
				return &PlacementError{Limit: "rack-power", Msg: fmt.Sprintf(
					"rack %q: its machines draw %s kW; a budget of %s kW is %s kW short: lower their power_w or move machines first",
					name, FormatKW(u.InstalledW), FormatKW(r.BudgetW), FormatKW(u.InstalledW-r.BudgetW))}
			}
			if err := checkPhaseBudget(tx, &r, old.BudgetW); err != nil {
				return err
			}
		}
		r.UpdatedAt = s.now().UTC()
		out = &r
		return putJSON(bkt(tx, bRacks), []byte(name), &r)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// PhaseEdit changes a phase's power budget or target date; a nil field is
// kept. An empty target date removes it.
type PhaseEdit struct {
	BudgetW    *int64
	TargetDate *string
}

// EditPhase corrects a phase's budget or target date in one transaction.
// A budget must cover what is already allocated to the phase's racks.
func (s *Store) EditPhase(ctx context.Context, hall string, number int, e PhaseEdit) (*Phase, error) {
	if e.BudgetW == nil && e.TargetDate == nil {
		return nil, invalid("phase", "names nothing to change: give a power budget or a target date")
	}
	if e.BudgetW != nil {
		if *e.BudgetW <= 0 {
			return nil, invalid("power_kw", "must be greater than 0")
		}
		if *e.BudgetW > MaxPhaseBudgetW {
			return nil, invalid("power_kw", "must be at most %s kW for a phase, got %s kW", FormatKW(MaxPhaseBudgetW), FormatKW(*e.BudgetW))
		}
	}
	if e.TargetDate != nil {
		if err := checkDate("target_date", *e.TargetDate); err != nil {
			return nil, err
		}
	}
	var out *Phase
	err := s.update(func(tx kv.Tx) error {
		p, err := getPhase(tx, hall, number)
		if err != nil {
			return err
		}
		if e.BudgetW != nil {
			var allocated int64
			if err := phaseRacks(tx, hall, number, func(r *Rack) error { allocated += r.BudgetW; return nil }); err != nil {
				return err
			}
			if allocated > *e.BudgetW {
				return &PlacementError{Limit: "phase-power", Msg: fmt.Sprintf(
					"phase %d of hall %q: %s kW is allocated to its racks; a budget of %s kW is %s kW short: lower rack budgets first",
					number, hall, FormatKW(allocated), FormatKW(*e.BudgetW), FormatKW(allocated-*e.BudgetW))}
			}
			p.BudgetW = *e.BudgetW
		}
		if e.TargetDate != nil {
			p.TargetDate = *e.TargetDate
		}
		out = p
		return putJSON(bkt(tx, bPhases), phaseKey(hall, number), p)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
