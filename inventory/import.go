package inventory

import (
	"context"
	"fmt"
	"slices"

	"github.com/metalhall/metalhall/inventory/kv"
)

// RackImport is a rack and the machines racked in it, as a technician's
// manifest describes them.
type RackImport struct {
	Rack     Rack
	Machines []Enrollment
}

// ImportResult says what an import changed.
type ImportResult struct {
	Rack        string   `json:"rack"`
	RackCreated bool     `json:"rack_created"`
	Created     []string `json:"created"`
	Unchanged   []string `json:"unchanged"`
	// CablingUpdated are the existing machines whose cabling plan the
	// import replaced (they are in Unchanged too: nothing else changed).
	CablingUpdated []string `json:"cabling_updated,omitempty"`
}

// ValidateMachine checks the fields a caller sets on a machine, without
// touching the store, and brings MACs to canonical form. Import front ends
// call it per entry to point at the line that is wrong.
func ValidateMachine(m *Machine) error { return normaliseMachine(m) }

// ValidateRack checks the fields of a rack without touching the store.
func ValidateRack(r *Rack) error { return validateRack(r) }

// ImportRack creates the rack (unless an identical one exists) and enrolls
// its machines in one transaction: all of it lands, or none. Re-importing
// the same manifest changes nothing but the sealed BMC passwords; an entry
// that differs from what is stored is refused, naming the field.
func (s *Store) ImportRack(ctx context.Context, in RackImport) (*ImportResult, error) {
	r := in.Rack
	if err := validateRack(&r); err != nil {
		return nil, fmt.Errorf("rack: %w", err)
	}
	machines := make([]Enrollment, len(in.Machines))
	for i, e := range in.Machines {
		e.Machine.MACs = slices.Clone(e.Machine.MACs)
		e.Machine.Cabling = slices.Clone(e.Machine.Cabling)
		if e.Machine.Rack == "" {
			e.Machine.Rack = r.Name
		}
		if e.Machine.Rack != r.Name {
			return nil, &EntryError{i, e.Machine.Name, invalid("rack", "is %q but the manifest is for rack %q", e.Machine.Rack, r.Name)}
		}
		if err := normaliseMachine(&e.Machine); err != nil {
			return nil, &EntryError{i, e.Machine.Name, err}
		}
		machines[i] = e
	}
	if i, err := rackCablingClash(machines); err != nil {
		return nil, &EntryError{i, machines[i].Machine.Name, err}
	}
	now := s.now().UTC()
	var res *ImportResult
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		// A retry starts from the manifest, not from the last run.
		r := r
		res = &ImportResult{Rack: r.Name}
		if old, err := get[Rack](tx, bRacks, "rack", r.Name); err == nil {
			if f := rackDiff(old, &r); f != "" {
				return &ConflictError{Msg: fmt.Sprintf("rack %q already exists with a different %s: fix the manifest or change the rack first", r.Name, f)}
			}
		} else {
			r.State, r.CreatedAt, r.UpdatedAt = RackPlanned, now, now
			if err := createRack(tx, &r); err != nil {
				return fmt.Errorf("rack: %w", err)
			}
			res.RackCreated = true
		}
		for i, e := range machines {
			m := e.Machine
			if old, err := get[Machine](tx, bMachines, "machine", m.Name); err == nil {
				if f := machineDiff(old, &m); f != "" {
					return &EntryError{i, m.Name, &ConflictError{Msg: fmt.Sprintf(
						"machine %q already exists with a different %s", m.Name, f)}}
				}
				if !slices.Equal(old.Cabling, m.Cabling) {
					// The cable schedule is a plan, not the machine's
					// identity: a re-import is how it is corrected.
					upd := *old
					upd.Cabling, upd.UpdatedAt = m.Cabling, now
					if err := s.putMachine(tx, old, &upd, vc); err != nil {
						return &EntryError{i, m.Name, err}
					}
					res.CablingUpdated = append(res.CablingUpdated, m.Name)
				}
				if len(e.SealedPassword) > 0 && old.BMC.SecretRef != "" {
					if err := bkt(tx, bSecrets).Put([]byte(old.BMC.SecretRef), e.SealedPassword); err != nil {
						return err
					}
				}
				res.Unchanged = append(res.Unchanged, m.Name)
				continue
			}
			m.State, m.CreatedAt, m.UpdatedAt = MachineEnrolled, now, now
			if err := s.enroll(tx, &m, e.SealedPassword, vc); err != nil {
				return &EntryError{i, m.Name, err}
			}
			res.Created = append(res.Created, m.Name)
		}
		// Everything is written, nothing committed: where a crash test
		// kills the service (cmd/metalhall TestServiceKilledDuringImport).
		s.gate("import-commit")
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// EntryError says which entry of an import was refused.
type EntryError struct {
	Index int // 0-based position in RackImport.Machines
	Name  string
	Err   error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("machines[%d] %q: %v", e.Index, e.Name, e.Err)
}
func (e *EntryError) Unwrap() error { return e.Err }

func rackDiff(a, b *Rack) string {
	switch {
	case a.Hall != b.Hall:
		return "hall"
	case a.Phase != b.Phase:
		return "phase"
	case a.Row != b.Row:
		return "row"
	case a.Units != b.Units:
		return "units"
	case a.BudgetW != b.BudgetW:
		return "power budget"
	}
	return ""
}

func machineDiff(a, b *Machine) string {
	switch {
	case a.Rack != b.Rack:
		return "rack"
	case a.Unit != b.Unit:
		return fmt.Sprintf("unit (stored %d, manifest %d)", a.Unit, b.Unit)
	case a.Height != b.Height:
		return fmt.Sprintf("height (stored %d, manifest %d)", a.Height, b.Height)
	case !slices.Equal(a.MACs, b.MACs):
		return "MAC list"
	case a.BMC.Key() != b.BMC.Key():
		return "BMC address"
	case a.BMC.Protocol != b.BMC.Protocol:
		return "BMC protocol"
	case a.BMC.Username != b.BMC.Username:
		return "BMC user"
	case a.BMC.System != b.BMC.System:
		return "BMC system"
	case a.BMC.Auth != b.BMC.Auth:
		return "BMC auth mode"
	case a.BMC.BootMode != b.BMC.BootMode:
		return "BMC boot mode"
	case a.PowerW != b.PowerW:
		return "rated power"
	case a.Profile != b.Profile:
		return "profile"
	case a.IP != b.IP:
		return "reserved IP"
	}
	return ""
}
