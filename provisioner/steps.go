package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// Step names, as persisted and shown in `machine show`.
const (
	stepBMCCheck     = "bmc-check"
	stepSetPXE       = "set-pxe"
	stepPowerCycle   = "power-cycle"
	stepWaitAgent    = "wait-agent"
	stepInspect      = "inspect"
	stepCheckProfile = "check-profile"
	stepWriteImage   = "write-image"
	stepWipe         = "wipe"
	stepSetDiskBoot  = "set-disk-boot"
	stepBootDisk     = "boot-disk"
	stepWaitMetadata = "wait-metadata"
	stepPowerOff     = "power-off"
	stepPower        = "power"
)

// needsAgent reports whether a machine at this step should boot the agent.
func needsAgent(step string) bool {
	switch step {
	case stepSetPXE, stepPowerCycle, stepWaitAgent, stepInspect, stepWriteImage, stepWipe:
		return true
	}
	return false
}

// errNotSeen asks for the boot to be tried again from set-pxe.
var errNotSeen = errors.New("machine not seen")

// errCancelled ends a wait when the job's cancellation was asked for.
var errCancelled = errors.New("cancelled")

// stepError is a step's failure, with the reason a technician acts on.
type stepError struct{ reason string }

func (e *stepError) Error() string { return e.reason }

func failf(format string, args ...any) error { return &stepError{fmt.Sprintf(format, args...)} }

// work runs one job from its first step not done to its end, persisting
// each step's start and end. It returns early, leaving the job where it
// is, when ctx ends (the service is stopping).
func (e *Engine) work(ctx context.Context, id string) {
	log := e.log.With("job", id)
	for ctx.Err() == nil {
		j, err := e.inv.Job(ctx, id)
		if err != nil {
			log.Error("loading job", "err", err)
			return
		}
		if j.State.Finished() {
			return
		}
		if j.CancelRequested {
			e.finish(ctx, j, inventory.JobCancelled, "cancelled", j.StepName())
			return
		}
		i := j.CurrentStep()
		if i == len(j.Steps) {
			e.finish(ctx, j, inventory.JobSucceeded, "", "")
			return
		}
		step := j.Steps[i].Name
		resumed := j.Steps[i].State == inventory.StepRunning
		j, err = e.markStep(ctx, id, i, inventory.StepRunning, "")
		if err != nil {
			log.Error("persisting step start", "step", step, "err", err)
			return
		}
		// Every step's start and end is in the machine's events, so
		// `machine events` shows work in flight, not just "queued" and
		// the outcome.
		if resumed {
			e.event(ctx, j, "step.resumed", fmt.Sprintf("%s job %s: %s again after a restart (attempt %d)", j.Kind, j.ID, step, j.Steps[i].Attempts))
		} else {
			e.event(ctx, j, "step.started", fmt.Sprintf("%s job %s: %s (attempt %d)", j.Kind, j.ID, step, j.Steps[i].Attempts))
		}
		err = e.exec(ctx, j, step)
		if ctx.Err() != nil {
			return // stopping: the step is redone on resume
		}
		switch {
		case errors.Is(err, errCancelled):
			e.markStep(ctx, id, i, inventory.StepFailed, "cancelled")
			e.finish(ctx, j, inventory.JobCancelled, "cancelled", step)
			return
		case err == nil:
			done, err := e.markStep(ctx, id, i, inventory.StepDone, "")
			if err != nil {
				log.Error("persisting step end", "step", step, "err", err)
				return
			}
			s := done.Steps[i]
			e.event(ctx, done, "step.done", fmt.Sprintf("%s job %s: %s done in %s", j.Kind, j.ID, step, s.EndedAt.Sub(s.StartedAt).Round(time.Millisecond)))
		case errors.Is(err, errNotSeen) && j.Steps[i].Attempts <= e.cfg.BootRetries:
			e.event(ctx, j, "step.retry", fmt.Sprintf("%s: %v; trying PXE again (attempt %d of %d)", step, err, j.Steps[i].Attempts+1, e.cfg.BootRetries+1))
			if err := e.rewind(ctx, id, stepSetPXE); err != nil {
				log.Error("rewinding job", "err", err)
				return
			}
		default:
			reason := err.Error()
			var se *stepError
			if !errors.As(err, &se) {
				reason = fmt.Sprintf("%s: %v", step, err)
			}
			e.markStep(ctx, id, i, inventory.StepFailed, reason)
			e.event(ctx, j, "step.failed", fmt.Sprintf("%s job %s: %s failed: %s", j.Kind, j.ID, step, reason))
			e.finish(ctx, j, inventory.JobFailed, reason, step)
			return
		}
	}
}

// markStep persists a step's state. Starting a step counts an attempt and
// stamps its start; its deadline is measured from there.
func (e *Engine) markStep(ctx context.Context, id string, i int, st inventory.StepState, errMsg string) (*inventory.Job, error) {
	now := e.cfg.Now().UTC()
	j, err := e.inv.UpdateJobOnly(ctx, id, func(j *inventory.Job) error {
		s := &j.Steps[i]
		switch st {
		case inventory.StepRunning:
			if s.State != inventory.StepRunning {
				s.Attempts++
				s.StartedAt = now
			}
			j.State = inventory.JobRunning
		case inventory.StepDone, inventory.StepFailed:
			s.EndedAt, s.Error = now, errMsg
		}
		s.State = st
		return nil
	})
	return j, err
}

// rewind marks every step from name on as pending again and clears what
// the agent reported, for a fresh boot.
func (e *Engine) rewind(ctx context.Context, id, name string) error {
	_, err := e.inv.UpdateJobOnly(ctx, id, func(j *inventory.Job) error {
		from := -1
		for i, s := range j.Steps {
			if s.Name == name {
				from = i
			}
			if from >= 0 && s.State != inventory.StepPending {
				j.Steps[i].State = inventory.StepPending
			}
		}
		j.AgentSeenAt, j.AgentDone, j.AgentOK, j.AgentError = time.Time{}, false, false, ""
		return nil
	})
	return err
}

// finish ends a job and moves its machine to where the job leaves it.
func (e *Engine) finish(ctx context.Context, j *inventory.Job, st inventory.JobState, reason, step string) {
	ctx = context.WithoutCancel(ctx)
	_, m, err := e.inv.UpdateJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) error {
		j.State, j.Error = st, reason
		switch {
		case st == inventory.JobSucceeded:
			switch j.Kind {
			case inventory.JobCommission:
				m.State = inventory.MachineAvailable
			case inventory.JobProvision:
				m.State = inventory.MachineDeployed
			case inventory.JobRelease:
				m.State, m.Image = inventory.MachineAvailable, ""
				// Only a certified erase clears the way to another tenant: a
				// fast or full wipe leaves the machine reusable by the same
				// tenant, not handed over.
				if j.WipeMode == string(wire.WipeCertified) {
					m.NeedsErase = false
				}
			}
		case j.Kind != inventory.JobPower:
			m.State, m.Reason, m.FailedStep = inventory.MachineFailed, reason, step
		}
		return nil
	})
	if err != nil {
		e.log.Error("finishing job", "job", j.ID, "err", err)
		return
	}
	switch st {
	case inventory.JobSucceeded:
		e.event(ctx, j, "job.succeeded", fmt.Sprintf("%s job %s done; machine is %s", j.Kind, j.ID, m.State))
	case inventory.JobCancelled:
		e.event(ctx, j, "job.cancelled", fmt.Sprintf("%s job %s cancelled at step %s", j.Kind, j.ID, orDash(step)))
	default:
		e.event(ctx, j, "job.failed", fmt.Sprintf("%s job %s failed at %s: %s", j.Kind, j.ID, step, reason))
	}
	if j.Kind == inventory.JobCommission {
		e.rackCommissioned(ctx, m.Rack)
	}
}

// exec runs one step.
func (e *Engine) exec(ctx context.Context, j *inventory.Job, step string) error {
	m, err := e.inv.Machine(ctx, j.Machine)
	if err != nil {
		return err
	}
	if addsPower(j, step) {
		action := inventory.PowerCycle
		if step == stepPower {
			action = j.PowerAction
		}
		return e.energise(ctx, j, step, func(m *inventory.Machine) error { return e.bmc.SetPower(ctx, m, action) })
	}
	switch step {
	case stepBMCCheck:
		if _, err := e.bmc.PowerState(ctx, m); err != nil {
			return failf("BMC check: %v", err)
		}
		return nil
	case stepSetPXE:
		return bmcStep(e.bmc.SetBootDevice(ctx, m, inventory.BootPXE, false))
	case stepSetDiskBoot:
		return bmcStep(e.bmc.SetBootDevice(ctx, m, inventory.BootDisk, true))
	case stepPowerOff:
		return bmcStep(e.bmc.SetPower(ctx, m, inventory.PowerOff))
	case stepPower:
		return bmcStep(e.bmc.SetPower(ctx, m, j.PowerAction)) // off: powering on goes through energise above
	case stepWaitAgent:
		return e.wait(ctx, j, step, e.cfg.BootTimeout, func(j *inventory.Job) (bool, error) {
			return !j.AgentSeenAt.IsZero(), nil
		}, func() error {
			return fmt.Errorf("%w: no call-home from the agent on %s (MACs %v) within %v after the power cycle — check the provisioning network (DHCP/PXE) and the machine's boot order",
				errNotSeen, m.Name, m.MACs, e.cfg.BootTimeout)
		})
	case stepInspect:
		return e.wait(ctx, j, step, e.cfg.InspectTimeout, func(j *inventory.Job) (bool, error) {
			if j.AgentDone && !j.AgentOK {
				return false, failf("inspection failed on the machine: %s", j.AgentError)
			}
			m, err := e.inv.Machine(ctx, j.Machine)
			return err == nil && !m.InspectedAt.Before(j.AgentSeenAt), err
		}, func() error { return failf("the agent sent no inspection within %v", e.cfg.InspectTimeout) })
	case stepCheckProfile:
		return e.checkProfile(ctx, j, m)
	case stepWriteImage:
		return e.waitAgentDone(ctx, j, step)
	case stepWipe:
		if err := e.waitAgentDone(ctx, j, step); err != nil {
			return err
		}
		return e.checkErase(ctx, j)
	case stepWaitMetadata:
		return e.wait(ctx, j, step, e.cfg.MetadataTimeout, func(j *inventory.Job) (bool, error) {
			return !j.MetadataSeenAt.IsZero(), nil
		}, func() error {
			return failf("the installed OS on %s did not fetch its metadata within %v of booting from disk — check the image boots on this hardware (serial console)", m.Name, e.cfg.MetadataTimeout)
		})
	}
	return fmt.Errorf("unknown step %q", step)
}

func bmcStep(err error) error {
	if err != nil {
		return failf("%v", err)
	}
	return nil
}

// waitAgentDone waits for the agent's done report, failing when it reports
// an error or falls silent for longer than the stall timeout.
func (e *Engine) waitAgentDone(ctx context.Context, j *inventory.Job, step string) error {
	for {
		changed := e.inv.BootView().JobChanged(j.ID)
		cur, err := e.current(ctx, j.ID)
		if err != nil {
			return err
		}
		if cur.AgentDone {
			if !cur.AgentOK {
				return failf("%s failed: %s", step, cur.AgentError)
			}
			return nil
		}
		last := latest(cur.Progress.At, cur.AgentSeenAt, e.started)
		if e.cfg.Now().Sub(last) > e.cfg.StallTimeout {
			return failf("%s stalled: no word from the agent for %v (last: %s at %d of %d bytes)",
				step, e.cfg.StallTimeout, orDash(cur.Progress.Step), cur.Progress.Bytes, cur.Progress.Total)
		}
		if err := e.nap(ctx, changed); err != nil {
			return err
		}
	}
}

// wait looks at the job each time it (or its machine) changes, until done
// says so or the step's deadline passes. The deadline runs from the
// step's persisted start, or from the engine's start when it was down
// meanwhile, so a restart neither loses nor shortens a wait.
func (e *Engine) wait(ctx context.Context, j *inventory.Job, step string, timeout time.Duration,
	done func(*inventory.Job) (bool, error), expired func() error) error {
	start := latest(j.Steps[j.CurrentStep()].StartedAt, e.started)
	for {
		changed := e.inv.BootView().JobChanged(j.ID)
		cur, err := e.current(ctx, j.ID)
		if err != nil {
			return err
		}
		ok, err := done(cur)
		if err != nil || ok {
			return err
		}
		if e.cfg.Now().Sub(start) > timeout {
			return expired()
		}
		if err := e.nap(ctx, changed); err != nil {
			return err
		}
	}
}

// current reads a job a worker waits on; errCancelled when its
// cancellation was asked for.
func (e *Engine) current(ctx context.Context, id string) (*inventory.Job, error) {
	cur, err := e.inv.Job(ctx, id)
	switch {
	case err != nil:
		return nil, err
	case cur.CancelRequested:
		return nil, errCancelled
	case cur.State.Finished():
		return nil, fmt.Errorf("job %s is already %s", id, cur.State)
	}
	return cur, nil
}

// nap waits for the job to change (changed is closed after the commit
// that changes it), or for the poll interval, the slow fallback that
// also lets deadlines be noticed.
func (e *Engine) nap(ctx context.Context, changed <-chan struct{}) error {
	t := time.NewTimer(e.cfg.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changed:
	case <-t.C:
	}
	return nil
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// rackCommissioned moves a commissioning rack to active once every machine
// in it is available (or retired).
func (e *Engine) rackCommissioned(ctx context.Context, rack string) {
	r, err := e.inv.Rack(ctx, rack)
	if err != nil || r.State != inventory.RackCommissioning {
		return
	}
	ms, err := e.inv.Machines(ctx, inventory.MachineFilter{Rack: rack})
	if err != nil {
		return
	}
	for _, m := range ms {
		if m.State != inventory.MachineAvailable && m.State != inventory.MachineRetired {
			return
		}
	}
	if _, err := e.inv.SetRackState(ctx, rack, inventory.RackActive); err == nil {
		e.inv.AppendEvent(ctx, inventory.Event{Actor: "provisioner", Subject: "rack/" + rack, Action: "rack.active",
			Outcome: "ok", Detail: fmt.Sprintf("all %d machines commissioned", len(ms))})
	}
}
