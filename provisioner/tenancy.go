package provisioner

import (
	"context"
	"fmt"

	"github.com/metalhall/metalhall/inventory"
)

// NotReadyError is a job refused at once because the service cannot do
// what it needs (netboot the machine), rather than failing it minutes
// later with the machine left powered on.
type NotReadyError struct{ Reason string }

func (e *NotReadyError) Error() string { return e.Reason }

// Unwrap makes it a conflict with the service's current setup.
func (e *NotReadyError) Unwrap() error { return inventory.ErrConflict }

// canStart refuses, before anything is recorded, a job that cannot work:
// one that needs the machine to netboot when the service cannot netboot.
func (e *Engine) canStart(ctx context.Context, r Request) error {
	switch r.Kind {
	case inventory.JobCommission, inventory.JobProvision, inventory.JobRelease:
		if e.cfg.NetbootReady != nil {
			// An unknown machine is not found first: "cannot netboot" would
			// send the caller after the wrong problem.
			if _, err := e.inv.Machine(ctx, r.Machine); err != nil {
				return err
			}
			if err := e.cfg.NetbootReady(ctx); err != nil {
				return &NotReadyError{Reason: fmt.Sprintf("machine %q: a %s job needs it to netboot, and this service cannot netboot now: %v", r.Machine, r.Kind, err)}
			}
		}
	}
	return nil
}

// CheckPowerOn refuses to power on (or cycle) a machine whose rack or hall
// phase is still planned: it is not installed, or its power is not live.
func CheckPowerOn(ctx context.Context, inv *inventory.Store, machine string, action inventory.PowerAction) error {
	if action == inventory.PowerOff {
		return nil
	}
	m, err := inv.Machine(ctx, machine)
	if err != nil {
		return err
	}
	rack, err := inv.Rack(ctx, m.Rack)
	if err != nil {
		return err
	}
	if rack.State == inventory.RackPlanned {
		return &inventory.ConflictError{Msg: fmt.Sprintf("machine %q: rack %q is planned: it is not installed and has no power yet; power the machine %s once the rack is installed", m.Name, rack.Name, action)}
	}
	p, err := inv.Phase(ctx, rack.Hall, rack.Phase)
	if err != nil {
		return err
	}
	if p.State == inventory.PhasePlanned {
		return &inventory.ConflictError{Msg: fmt.Sprintf("machine %q: phase %d of hall %q is planned: its power is not live yet; power the machine %s once the phase is commissioning", m.Name, p.Number, p.Hall, action)}
	}
	return nil
}

// deployment is the provision job whose keys and user data the metadata
// service may serve a machine: its current tenancy's running provision,
// or, while it is deployed, its current tenancy's newest successful one.
// Nothing during or after a release or a commissioning, nothing of an
// earlier tenancy, nothing for a machine that is not deployed.
func (e *Engine) deployment(ctx context.Context, m *inventory.Machine) *inventory.Job {
	if m.Tenancy == "" {
		return nil
	}
	if j, err := e.inv.ActiveJob(ctx, m.Name); err == nil {
		switch {
		case j.Kind == inventory.JobProvision && j.Tenancy == m.Tenancy:
			return j
		case j.Kind != inventory.JobPower:
			return nil
		}
	}
	if m.State != inventory.MachineDeployed {
		return nil
	}
	jobs, err := e.inv.MachineJobs(ctx, m.Name)
	if err != nil {
		return nil
	}
	for i := len(jobs) - 1; i >= 0; i-- {
		j := &jobs[i]
		if j.Kind != inventory.JobProvision || j.Tenancy != m.Tenancy {
			continue
		}
		if j.State == inventory.JobSucceeded {
			return j
		}
		return nil // a newer provision of this tenancy did not succeed
	}
	return nil
}
