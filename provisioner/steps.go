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
	stepCheckSEL     = "check-sel"
	stepPowerLimit   = "power-limit"
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

// errEnded is a job a worker waits on that was ended by the write of
// the report it waited for (the installed OS's metadata fetch, see
// metadataSeen): there is nothing left for the worker to do.
var errEnded = errors.New("ended")

// stepError is a step's failure, with the reason a technician acts on.
type stepError struct{ reason string }

func (e *stepError) Error() string { return e.reason }

func failf(format string, args ...any) error { return &stepError{fmt.Sprintf(format, args...)} }

// work runs one job from its first step not done to its end, persisting
// each step's start and end with its event. It returns early, leaving the
// job where it is, when ctx ends (the service is stopping).
func (e *Engine) work(ctx context.Context, id string) {
	log := e.log.With("job", id)
	// started is the step the previous step's end already marked running:
	// one write carries a step's end and the next one's start.
	started := -1
	// The machine's console is kept with the job: saved at every step's
	// end and when the job ends (finish), so a failure shows what the
	// machine printed.
	if j, err := e.inv.Job(ctx, id); err == nil && !j.State.Finished() {
		e.startCapture(ctx, j)
		defer e.saveConsole(ctx, id, true)
	}
	for ctx.Err() == nil {
		e.saveConsole(ctx, id, false)
		j, err := e.inv.Job(ctx, id)
		if err != nil {
			log.Error("loading job", "err", err)
			return
		}
		if j.State.Finished() {
			return
		}
		i := j.CurrentStep()
		if j.CancelRequested {
			if i < len(j.Steps) && j.Steps[i].State == inventory.StepRunning {
				e.markStep(ctx, id, i, inventory.StepFailed, "cancelled")
			}
			e.finish(ctx, j, inventory.JobCancelled, "cancelled", j.StepName())
			return
		}
		if i == len(j.Steps) {
			e.finish(ctx, j, inventory.JobSucceeded, "", "")
			return
		}
		step := j.Steps[i].Name
		if i != started {
			// Every step's start and end is in the machine's events, so
			// `machine events` shows work in flight, not just "queued"
			// and the outcome.
			if j, err = e.startStep(ctx, id, i); err != nil {
				log.Error("persisting step start", "step", step, "err", err)
				return
			}
			// A job taken over from another instance may have been
			// rewound to boot its machine again (startStep).
			i = j.CurrentStep()
			step = j.Steps[i].Name
		}
		started = -1
		err = e.exec(ctx, j, step)
		if ctx.Err() != nil {
			return // stopping: the step is redone on resume
		}
		switch {
		case errors.Is(err, errEnded):
			return
		case errors.Is(err, errCancelled):
			e.markStep(ctx, id, i, inventory.StepFailed, "cancelled")
			e.finish(ctx, j, inventory.JobCancelled, "cancelled", step)
			return
		case err == nil && i == len(j.Steps)-1:
			e.finishWith(ctx, j, inventory.JobSucceeded, "", "", i)
			return
		case err == nil:
			running, ended, err := e.endStep(ctx, j, i, step)
			if err != nil {
				log.Error("persisting step end", "step", step, "err", err)
				return
			}
			if ended {
				return
			}
			started = running
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

// startStep marks step i running, with its step.started event (or
// step.resumed, when a restart finds it running), in one write. That
// write also records which instance runs the job now (Job.Instance); a
// job found running that another instance ran was taken over from it (its
// owner died, and its claim lapsed), and one at a step that needs the
// agent is rewound to set-pxe in the same write (takeOver). The job it
// returns is at the step to run.
func (e *Engine) startStep(ctx context.Context, id string, i int) (*inventory.Job, error) {
	now := e.cfg.Now().UTC()
	me := e.instance()
	return e.inv.RecordJobUpdate(ctx, id, func(j *inventory.Job) ([]inventory.Event, error) {
		prev := j.Instance
		j.Instance = me
		if j.Steps[i].State != inventory.StepRunning {
			setStep(j, i, inventory.StepRunning, "", now)
			return []inventory.Event{stepStarted(j, i)}, nil
		}
		if prev == "" || me == "" || prev == me {
			// A restart of the instance that ran it (or of the single
			// instance): the agent keeps calling the same address, which
			// answers again, so every step simply carries on.
			setStep(j, i, inventory.StepRunning, "", now)
			after := "after a restart"
			if prev == me && me != "" {
				after = fmt.Sprintf("after instance %s restarted", me)
			}
			return []inventory.Event{jobEvent(j, "step.resumed", fmt.Sprintf("%s job %s: %s again %s (attempt %d)",
				j.Kind, j.ID, j.Steps[i].Name, after, j.Steps[i].Attempts))}, nil
		}
		if evs, ok := takeOver(j, i, prev, me, now); ok {
			return evs, nil
		}
		// A BMC step runs again, as after a restart: it is idempotent.
		setStep(j, i, inventory.StepRunning, "", now)
		return []inventory.Event{jobEvent(j, "step.resumed", fmt.Sprintf("%s job %s: %s again on instance %s, which took the job over from instance %s after %s stopped answering (attempt %d)",
			j.Kind, j.ID, j.Steps[i].Name, me, prev, prev, j.Steps[i].Attempts))}, nil
	})
}

// takeOver rewinds job j, found running step i by instance me after
// instance prev ran it, to set-pxe, when step i needs the agent: the
// agent on the machine was booted with the address of the instance that
// served its boot script — prev's, most likely — and keeps calling it, so
// it would never be heard from again. The machine is booted again, and
// its new agent calls home to an instance that answers. What the agent
// steps wait on is cleared, so nothing the old agent reported counts.
// It says false, changing nothing, for a step that does not need the
// agent.
func takeOver(j *inventory.Job, i int, prev, me string, now time.Time) ([]inventory.Event, bool) {
	at := j.Steps[i].Name
	from := stepIndex(j, stepSetPXE)
	if !needsAgent(at) || from < 0 || from > i {
		return nil, false
	}
	resetAgentSteps(j, from)
	for k := from; k <= i; k++ {
		// A new boot for a new owner: the boot retries (BootRetries) are
		// counted from here, not spent by the boot the dead owner drove.
		j.Steps[k].Attempts = 0
	}
	setStep(j, from, inventory.StepRunning, "", now)
	taken := jobEvent(j, "job.taken-over", fmt.Sprintf("%s job %s taken over from instance %s by instance %s after %s stopped answering; "+
		"it was at %s, and the machine's agent may be calling home to %s: instance %s boots the machine again (%s, %s) and runs the job on from there",
		j.Kind, j.ID, prev, me, prev, at, prev, me, stepSetPXE, stepPowerCycle))
	return []inventory.Event{taken, stepStarted(j, from)}, true
}

// stepIndex is the index of the job's step of that name, or -1.
func stepIndex(j *inventory.Job, name string) int {
	for i, s := range j.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}

// endStep marks step i done and, unless it was the last or a cancel is
// asked for, the next one running, with both events, in one write. It
// returns the step it left running (-1: none), and whether the job ended.
// A step the agent's own report already ended (endedByAgent) is not
// written again. A next step that waits for what has already happened
// (the report came before this write: a fast boot) ends in the same
// write, and when it is the job's last, so does the job.
func (e *Engine) endStep(ctx context.Context, j *inventory.Job, i int, step string) (running int, ended bool, err error) {
	id := j.ID
	if endedByAgent[step] {
		cur, err := e.inv.Job(ctx, id)
		if err != nil {
			return -1, false, err
		}
		if i < len(cur.Steps) && cur.Steps[i].State == inventory.StepDone {
			if i+1 < len(cur.Steps) && cur.Steps[i+1].State == inventory.StepRunning {
				return i + 1, false, nil
			}
			return -1, false, nil
		}
	}
	now := e.cfg.Now().UTC()
	end := func(j *inventory.Job) []inventory.Event {
		running = -1
		evs := advance(j, i, now)
		if i+1 < len(j.Steps) && j.Steps[i+1].State == inventory.StepRunning {
			running = i + 1
			if j.Steps[i+1].Name == stepWaitAgent && !j.AgentSeenAt.IsZero() {
				evs = append(evs, advance(j, i+1, now)...)
				running = -1
				if i+2 < len(j.Steps) && j.Steps[i+2].State == inventory.StepRunning {
					running = i + 2
				}
			}
		}
		return evs
	}
	if last := len(j.Steps) - 1; i+1 == last && j.Steps[last].Name == stepWaitMetadata {
		_, _, err = e.inv.RecordJob(ctx, id, func(j *inventory.Job, m *inventory.Machine) ([]inventory.Event, error) {
			evs := end(j)
			ended = false
			if running == last && !j.MetadataSeenAt.IsZero() {
				evs = append(evs, endJob(j, m, inventory.JobSucceeded, "", "", last, now)...)
				running, ended = -1, true
			}
			return evs, nil
		})
		if err == nil || !ended {
			return running, ended, err
		}
		// The job's end was refused (its machine's state may not follow):
		// end the step alone; the wait then finds the fetch, and the job's
		// end says why it cannot.
		ended = false
	}
	_, err = e.inv.RecordJobUpdate(ctx, id, func(j *inventory.Job) ([]inventory.Event, error) { return end(j), nil })
	return running, false, err
}

// endedByAgent are the steps whose wait ends with a report of the agent
// (or of the installed OS) that the engine would otherwise follow at once
// with a write of its own: the report's write ends the step and starts
// the next one (endByAgent), so one commit carries both.
var endedByAgent = map[string]bool{stepWaitAgent: true, stepInspect: true, stepWriteImage: true}

// endByAgent ends the job's running step when it is step, in the write of
// the agent's report that ends its wait, as endStep would have done just
// after it. Not while a cancel is asked for: the worker marks the step
// it stopped at.
func endByAgent(j *inventory.Job, step string, now time.Time) []inventory.Event {
	i := j.CurrentStep()
	if i == len(j.Steps) || j.Steps[i].Name != step || j.Steps[i].State != inventory.StepRunning || j.CancelRequested {
		return nil
	}
	return advance(j, i, now)
}

// advance marks step i done and, unless it was the last or a cancel is
// asked for, the next one running, and returns their events.
func advance(j *inventory.Job, i int, now time.Time) []inventory.Event {
	setStep(j, i, inventory.StepDone, "", now)
	evs := []inventory.Event{stepDone(j, i)}
	if i+1 < len(j.Steps) && !j.CancelRequested && j.Steps[i+1].State == inventory.StepPending {
		setStep(j, i+1, inventory.StepRunning, "", now)
		evs = append(evs, stepStarted(j, i+1))
	}
	return evs
}

func stepDone(j *inventory.Job, i int) inventory.Event {
	s := j.Steps[i]
	return jobEvent(j, "step.done", fmt.Sprintf("%s job %s: %s done in %s", j.Kind, j.ID, s.Name, s.EndedAt.Sub(s.StartedAt).Round(time.Millisecond)))
}

func stepStarted(j *inventory.Job, i int) inventory.Event {
	return jobEvent(j, "step.started", fmt.Sprintf("%s job %s: %s (attempt %d)", j.Kind, j.ID, j.Steps[i].Name, j.Steps[i].Attempts))
}

// markStep persists a step's state.
func (e *Engine) markStep(ctx context.Context, id string, i int, st inventory.StepState, errMsg string) (*inventory.Job, error) {
	now := e.cfg.Now().UTC()
	return e.inv.UpdateJobOnly(ctx, id, func(j *inventory.Job) error {
		setStep(j, i, st, errMsg, now)
		return nil
	})
}

// setStep moves step i to st. Starting a step counts an attempt and
// stamps its start; its deadline is measured from there.
func setStep(j *inventory.Job, i int, st inventory.StepState, errMsg string, now time.Time) {
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
}

// rewind marks every step from name on as pending again and clears what
// the agent reported, for a fresh boot.
func (e *Engine) rewind(ctx context.Context, id, name string) error {
	_, err := e.inv.UpdateJobOnly(ctx, id, func(j *inventory.Job) error {
		if from := stepIndex(j, name); from >= 0 {
			resetAgentSteps(j, from)
		}
		return nil
	})
	return err
}

// resetAgentSteps marks steps from index from on as pending again and
// clears what the agent reported (its call-home, its done, its progress):
// the agent steps wait for a new boot's agent.
func resetAgentSteps(j *inventory.Job, from int) {
	for i := from; i < len(j.Steps); i++ {
		j.Steps[i].State = inventory.StepPending
	}
	j.AgentSeenAt, j.AgentDone, j.AgentOK, j.AgentError = time.Time{}, false, false, ""
	j.Progress = inventory.JobProgress{}
}

// finish ends a job and moves its machine to where the job leaves it.
func (e *Engine) finish(ctx context.Context, j *inventory.Job, st inventory.JobState, reason, step string) {
	e.finishWith(ctx, j, st, reason, step, -1)
}

// finishWith is finish that also marks step done (when not -1) done, with
// its event, in the same write: a job's last step and its end are one
// commit.
func (e *Engine) finishWith(ctx context.Context, j *inventory.Job, st inventory.JobState, reason, step string, done int) {
	ctx = context.WithoutCancel(ctx)
	e.saveConsole(ctx, j.ID, true)
	now := e.cfg.Now().UTC()
	_, m, err := e.inv.RecordJob(ctx, j.ID, func(j *inventory.Job, m *inventory.Machine) ([]inventory.Event, error) {
		return endJob(j, m, st, reason, step, done, now), nil
	})
	if err != nil {
		e.log.Error("finishing job", "job", j.ID, "err", err)
		return
	}
	if j.Kind == inventory.JobCommission {
		e.rackCommissioned(ctx, m.Rack)
	}
}

// endJob ends a job with st and moves its machine to where the job
// leaves it, marking step done (when not -1) done first; it returns the
// events of both.
func endJob(j *inventory.Job, m *inventory.Machine, st inventory.JobState, reason, step string, done int, now time.Time) []inventory.Event {
	var evs []inventory.Event
	if done >= 0 {
		setStep(j, done, inventory.StepDone, "", now)
		evs = append(evs, stepDone(j, done))
	}
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
	switch st {
	case inventory.JobSucceeded:
		evs = append(evs, jobEvent(j, "job.succeeded", fmt.Sprintf("%s job %s done; machine is %s", j.Kind, j.ID, m.State)))
	case inventory.JobCancelled:
		evs = append(evs, jobEvent(j, "job.cancelled", fmt.Sprintf("%s job %s cancelled at step %s", j.Kind, j.ID, orDash(step))))
	default:
		evs = append(evs, jobEvent(j, "job.failed", fmt.Sprintf("%s job %s failed at %s: %s", j.Kind, j.ID, step, reason)))
	}
	return evs
}

// exec runs one step.
func (e *Engine) exec(ctx context.Context, j *inventory.Job, step string) error {
	ctx = inStep(ctx)
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
		if j.Kind == inventory.JobCommission {
			e.recordBMCFirmware(ctx, j, m)
		}
		return nil
	case stepCheckSEL:
		return e.checkSEL(ctx, j, m)
	case stepPowerLimit:
		return e.applyPowerLimit(ctx, j, m)
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
		timeout := e.cfg.InspectTimeout
		if j.Kind == inventory.JobCommission {
			timeout = e.inspectTimeout(ctx, m)
		}
		return e.wait(ctx, j, step, timeout, func(j *inventory.Job) (bool, error) {
			if j.AgentDone && !j.AgentOK {
				return false, failf("inspection failed on the machine: %s", j.AgentError)
			}
			m, err := e.inv.Machine(ctx, j.Machine)
			return err == nil && !m.InspectedAt.Before(j.AgentSeenAt), err
		}, func() error { return failf("the agent sent no inspection within %v", timeout) })
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
		return nil, fmt.Errorf("job %s is already %s: %w", id, cur.State, errEnded)
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
