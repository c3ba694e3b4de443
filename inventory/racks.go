package inventory

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/metalhall/metalhall/inventory/kv"
)

// RackUsage is what a rack's machines take of it. It is kept in the same
// transaction as every machine write so that placement checks and the hall
// capacity report read one small record per rack instead of decoding every
// machine.
type RackUsage struct {
	Machines   int                  `json:"machines"`
	UsedUnits  int                  `json:"used_units"`
	InstalledW int64                `json:"installed_w"`
	ByState    map[MachineState]int `json:"by_state,omitempty"`
}

// CreateRack adds a rack to a phase of a hall. Racks start planned. The sum
// of the rack budgets of a phase never exceeds the phase's budget.
func (s *Store) CreateRack(ctx context.Context, r Rack) (*Rack, error) {
	if err := validateRack(&r); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	r.State, r.CreatedAt, r.UpdatedAt = RackPlanned, now, now
	err := s.update(func(tx kv.Tx) error { return createRack(tx, &r) })
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func validateRack(r *Rack) error {
	if err := checkName("name", r.Name); err != nil {
		return err
	}
	if err := checkName("hall", r.Hall); err != nil {
		return err
	}
	if r.Phase < 1 {
		return invalid("phase", "must be a phase number of the hall (1 or more)")
	}
	if r.Units == 0 {
		r.Units = 48
	}
	if r.Units < 1 || r.Units > MaxRackUnits {
		return invalid("units", "must be between 1 and %d, got %d", MaxRackUnits, r.Units)
	}
	if r.BudgetW < 0 {
		return invalid("power_kw", "must not be negative")
	}
	if r.BudgetW > MaxRackBudgetW {
		return invalid("power_kw", "must be at most %s kW for a rack, got %s kW", FormatKW(MaxRackBudgetW), FormatKW(r.BudgetW))
	}
	if len(r.Row) > 32 {
		return invalid("row", "is longer than 32 characters")
	}
	return nil
}

func createRack(tx kv.Tx, r *Rack) error {
	if exists(tx, bRacks, r.Name) {
		return &ExistsError{Kind: "rack", Name: r.Name}
	}
	if !exists(tx, bHalls, r.Hall) {
		return &NotFoundError{Kind: "hall", Name: r.Hall}
	}
	if r.Tenant != "" && !exists(tx, bTenants, r.Tenant) {
		return &NotFoundError{Kind: "tenant", Name: r.Tenant}
	}
	if err := checkPhaseBudget(tx, r, 0); err != nil {
		return err
	}
	if err := putJSON(bkt(tx, bRacks), []byte(r.Name), r); err != nil {
		return err
	}
	if err := putJSON(bkt(tx, bRackUsage), []byte(r.Name), RackUsage{}); err != nil {
		return err
	}
	return bkt(tx, bIdxPhaseR).Put(append(phaseKey(r.Hall, r.Phase), r.Name...), []byte{0})
}

// checkPhaseBudget refuses a rack budget that would take its phase over
// budget. oldW is what the rack already counts for (when it is updated).
func checkPhaseBudget(tx kv.Tx, r *Rack, oldW int64) error {
	p, err := getPhase(tx, r.Hall, r.Phase)
	if err != nil {
		return err
	}
	var allocated int64
	if err := phaseRacks(tx, r.Hall, r.Phase, func(o *Rack) error {
		if o.Name != r.Name {
			allocated += o.BudgetW
		}
		return nil
	}); err != nil {
		return err
	}
	if total := allocated + r.BudgetW; total > p.BudgetW {
		return &PlacementError{Limit: "phase-power", Msg: fmt.Sprintf(
			"rack %q: phase %d of hall %q has a budget of %s kW with %s kW already allocated to racks; %s kW more would exceed it by %s kW",
			r.Name, r.Phase, r.Hall, FormatKW(p.BudgetW), FormatKW(allocated), FormatKW(r.BudgetW), FormatKW(total-p.BudgetW))}
	}
	return nil
}

// Rack returns one rack.
func (s *Store) Rack(ctx context.Context, name string) (*Rack, error) {
	var out *Rack
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[Rack](tx, bRacks, "rack", name); return })
	return out, err
}

// RackUsage returns what a rack's machines take of it.
func (s *Store) RackUsage(ctx context.Context, name string) (*RackUsage, error) {
	var out *RackUsage
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[RackUsage](tx, bRackUsage, "rack", name); return })
	return out, err
}

// RackFilter selects racks; zero fields match everything.
type RackFilter struct {
	Hall   string
	Phase  int
	State  RackState
	Tenant string
}

// Racks lists racks by name.
func (s *Store) Racks(ctx context.Context, f RackFilter) ([]Rack, error) {
	if f.State != "" && !ValidRackState(f.State) {
		return nil, invalid("state", "%q is not a rack state (one of %v)", f.State, RackStates())
	}
	var out []Rack
	err := s.view(func(tx kv.Tx) error {
		keep := func(r *Rack) bool {
			return (f.State == "" || r.State == f.State) && (f.Tenant == "" || r.Tenant == f.Tenant) &&
				(f.Phase == 0 || r.Phase == f.Phase)
		}
		if f.Hall == "" {
			var err error
			out, err = list(tx, bRacks, keep)
			return err
		}
		if !exists(tx, bHalls, f.Hall) {
			return &NotFoundError{Kind: "hall", Name: f.Hall}
		}
		return hallRacks(tx, f.Hall, func(r *Rack) error {
			if keep(r) {
				out = append(out, *r)
			}
			return nil
		})
	})
	return out, err
}

// hallRacks calls fn for every rack of a hall, phase by phase.
func hallRacks(tx kv.Tx, hall string, fn func(*Rack) error) error {
	prefix := append([]byte(hall), 0)
	racks := bkt(tx, bRacks)
	c := bkt(tx, bIdxPhaseR).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		name := k[len(prefix)+4:]
		var r Rack
		if err := getJSON(racks, name, &r); err != nil {
			return fmt.Errorf("hall index points at rack %q: %w", name, err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

// SetRackState moves a rack through its lifecycle. A rack of a planned
// phase cannot be commissioned.
func (s *Store) SetRackState(ctx context.Context, name string, to RackState) (*Rack, error) {
	var out *Rack
	err := s.update(func(tx kv.Tx) error {
		r, err := get[Rack](tx, bRacks, "rack", name)
		if err != nil {
			return err
		}
		if err := rackTransition(r, to); err != nil {
			return err
		}
		if to == RackCommissioning || to == RackActive {
			p, err := getPhase(tx, r.Hall, r.Phase)
			if err != nil {
				return err
			}
			if p.State == PhasePlanned {
				return &TransitionError{Kind: "rack", Name: name, From: string(r.State), To: string(to),
					Reason: fmt.Sprintf("phase %d of hall %q is still planned; move the phase to commissioning first", r.Phase, r.Hall)}
			}
		}
		if to == RackDecommissioned {
			u, err := get[RackUsage](tx, bRackUsage, "rack", name)
			if err != nil {
				return err
			}
			if live := u.Machines - u.ByState[MachineRetired]; live > 0 {
				return &TransitionError{Kind: "rack", Name: name, From: string(r.State), To: string(to),
					Reason: fmt.Sprintf("it still holds %d machines that are not retired", live)}
			}
		}
		r.State, r.UpdatedAt = to, s.now().UTC()
		out = r
		return putJSON(bkt(tx, bRacks), []byte(name), r)
	})
	return out, err
}

// AssignRackTenant gives a rack, and every machine in it, to a tenant
// ("" takes it back).
func (s *Store) AssignRackTenant(ctx context.Context, name, tenant string) (*Rack, error) {
	return s.assignRackTenant(name, tenant, nil)
}

// UnassignRackTenant takes a rack back from tenant, in one transaction
// with the check that tenant holds it: a concurrent reassignment to
// another tenant is never undone.
func (s *Store) UnassignRackTenant(ctx context.Context, name, tenant string) (*Rack, error) {
	return s.assignRackTenant(name, "", func(current string) error {
		if current != tenant {
			return &ConflictError{Msg: fmt.Sprintf("rack %q is not assigned to tenant %q", name, tenant)}
		}
		return nil
	})
}

// assignRackTenant gives a rack and its machines to tenant; check, when
// set, first vets the rack's current tenant inside the transaction.
func (s *Store) assignRackTenant(name, tenant string, check func(current string) error) (*Rack, error) {
	var out *Rack
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		r, err := get[Rack](tx, bRacks, "rack", name)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(r.Tenant); err != nil {
				return err
			}
		}
		if tenant != "" && !exists(tx, bTenants, tenant) {
			return &NotFoundError{Kind: "tenant", Name: tenant}
		}
		r.Tenant, r.UpdatedAt = tenant, s.now().UTC()
		if err := putJSON(bkt(tx, bRacks), []byte(name), r); err != nil {
			return err
		}
		out = r
		// Every machine must be ready to change hands, as for a machine
		// assignment; the refusal names all that are not.
		var refused []string
		if err := s.rackMachines(tx, name, func(m *Machine) error {
			if err := checkHandover(tx, m, tenant); err != nil {
				refused = append(refused, err.Error())
			}
			return nil
		}); err != nil {
			return err
		}
		if len(refused) > 0 {
			return &ConflictError{Msg: fmt.Sprintf("rack %q cannot change tenant: %s", name, strings.Join(refused, "; "))}
		}
		return s.rackMachines(tx, name, func(m *Machine) error {
			if m.Tenant == tenant {
				return nil
			}
			old := *m
			m.Tenant = tenant
			return s.putMachine(tx, &old, m, vc)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteRack removes an empty rack.
func (s *Store) DeleteRack(ctx context.Context, name string) error {
	return s.update(func(tx kv.Tx) error {
		r, err := get[Rack](tx, bRacks, "rack", name)
		if err != nil {
			return err
		}
		u, err := get[RackUsage](tx, bRackUsage, "rack", name)
		if err != nil {
			return err
		}
		if u.Machines > 0 {
			return &ConflictError{Msg: fmt.Sprintf("rack %q still holds %d machines: remove them first", name, u.Machines)}
		}
		if err := bkt(tx, bIdxPhaseR).Delete(append(phaseKey(r.Hall, r.Phase), r.Name...)); err != nil {
			return err
		}
		if err := bkt(tx, bRackUsage).Delete([]byte(name)); err != nil {
			return err
		}
		return bkt(tx, bRacks).Delete([]byte(name))
	})
}

// rackMachines calls fn for every machine of a rack, in name order.
func (s *Store) rackMachines(tx kv.Tx, rack string, fn func(*Machine) error) error {
	prefix := append([]byte(rack), 0)
	machines := bkt(tx, bMachines)
	// Collect names first: fn may write machines, and writing while a
	// cursor walks the same bucket's index can skip keys.
	var names [][]byte
	c := bkt(tx, bIdxRackM).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		names = append(names, append([]byte(nil), k[len(prefix):]...))
	}
	for _, n := range names {
		data := machines.Get(n)
		if data == nil {
			return fmt.Errorf("rack index points at machine %q: %w", n, ErrNotFound)
		}
		m, err := s.machines.decode(string(n), data)
		if err != nil {
			return fmt.Errorf("rack index points at machine %q: %w", n, err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}
