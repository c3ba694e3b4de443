package inventory

import "slices"

// machineNext is the machine state machine (DESIGN.md): each state and the
// states that may follow it. Anything not listed is refused.
var machineNext = map[MachineState][]MachineState{
	MachineEnrolled:       {MachineCommissioning, MachineMaintenance, MachineRetired},
	MachineCommissioning:  {MachineAvailable, MachineFailed, MachineMaintenance},
	MachineAvailable:      {MachineProvisioning, MachineCommissioning, MachineDeprovisioning, MachineMaintenance, MachineRetired},
	MachineProvisioning:   {MachineDeployed, MachineFailed},
	MachineDeployed:       {MachineProvisioning, MachineDeprovisioning, MachineMaintenance, MachineFailed},
	MachineDeprovisioning: {MachineAvailable, MachineFailed},
	MachineMaintenance:    {MachineEnrolled, MachineCommissioning, MachineAvailable, MachineDeployed, MachineFailed, MachineRetired},
	MachineFailed:         {MachineCommissioning, MachineProvisioning, MachineDeprovisioning, MachineMaintenance, MachineRetired},
	MachineRetired:        nil,
}

// rackNext is the rack state machine.
var rackNext = map[RackState][]RackState{
	RackPlanned:        {RackInstalled, RackDecommissioned},
	RackInstalled:      {RackCommissioning, RackMaintenance, RackDecommissioned},
	RackCommissioning:  {RackActive, RackInstalled, RackMaintenance},
	RackActive:         {RackMaintenance, RackCommissioning, RackDecommissioned},
	RackMaintenance:    {RackActive, RackInstalled, RackCommissioning, RackDecommissioned},
	RackDecommissioned: nil,
}

// phaseNext is the phase state machine: a hall phase is planned, then
// commissioned, then live.
var phaseNext = map[PhaseState][]PhaseState{
	PhasePlanned:       {PhaseCommissioning},
	PhaseCommissioning: {PhaseLive, PhasePlanned},
	PhaseLive:          nil,
}

// MachineStates lists every machine state, in lifecycle order.
func MachineStates() []MachineState {
	return []MachineState{MachineEnrolled, MachineCommissioning, MachineAvailable, MachineProvisioning,
		MachineDeployed, MachineDeprovisioning, MachineMaintenance, MachineFailed, MachineRetired}
}

// RackStates lists every rack state, in lifecycle order.
func RackStates() []RackState {
	return []RackState{RackPlanned, RackInstalled, RackCommissioning, RackActive, RackMaintenance, RackDecommissioned}
}

// ValidMachineState reports whether s names a machine state.
func ValidMachineState(s MachineState) bool { _, ok := machineNext[s]; return ok }

// ValidRackState reports whether s names a rack state.
func ValidRackState(s RackState) bool { _, ok := rackNext[s]; return ok }

// MachineCanGo reports whether the state machine allows from → to.
func MachineCanGo(from, to MachineState) bool { return slices.Contains(machineNext[from], to) }

// Commissionable says whether commissioning a whole rack takes in a
// machine in state s: the state machine allows s → commissioning, and the
// machine has not been set aside (maintenance is a technician's decision
// that a rack-wide action does not override; commission it on its own).
func Commissionable(s MachineState) bool {
	return s != MachineMaintenance && MachineCanGo(s, MachineCommissioning)
}

// RackCanGo reports whether the state machine allows from → to.
func RackCanGo(from, to RackState) bool { return slices.Contains(rackNext[from], to) }

func machineTransition(m *Machine, to MachineState) error {
	if !ValidMachineState(to) {
		return invalid("state", "%q is not a machine state (one of %v)", to, MachineStates())
	}
	if !MachineCanGo(m.State, to) {
		return &TransitionError{Kind: "machine", Name: m.Name, From: string(m.State), To: string(to), Allowed: strs(machineNext[m.State])}
	}
	return nil
}

func rackTransition(r *Rack, to RackState) error {
	if !ValidRackState(to) {
		return invalid("state", "%q is not a rack state (one of %v)", to, RackStates())
	}
	if !RackCanGo(r.State, to) {
		return &TransitionError{Kind: "rack", Name: r.Name, From: string(r.State), To: string(to), Allowed: strs(rackNext[r.State])}
	}
	return nil
}

func strs[S ~string](in []S) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}
