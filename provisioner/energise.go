package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// The energisation interlock for the engine's own power-ons. A rack
// commission of 16 machines in a rack whose budget carries 12 at once must
// not energise all 16: the rule is inventory.EnergisationCheck, the same
// one an API power-on passes, checked again right before the BMC is told.
//
// A refused step waits rather than fails: in phased commissioning the
// machines that fit commission, power off at their end, and the rest
// follow as the rack's draw falls, with no machine marked failed for
// being early. The wait is bounded (Config.EnergiseWait); past it the step
// fails with the refusal as its reason. A power job (an explicit power-on
// that was allowed when asked for) is not retried: it fails at once, since
// a power-on that happens by itself half an hour later would surprise
// whoever asked for it. Staff force a job past the interlock with its
// ForcePower option.

// Backoff between checks of a waiting step: the draw falls when another
// machine of the rack powers off (seen at once, its state is recorded by
// the command) or when the power sync reads lower figures.
const (
	energiseFirstBackoff = 2 * time.Second
	energiseMaxBackoff   = time.Minute
)

// addsPower says whether a step may power a machine on: those that power
// on or cycle it (a cycle of a machine that is off powers it on).
func addsPower(j *inventory.Job, step string) bool {
	switch step {
	case stepPowerCycle, stepBootDisk:
		return true
	case stepPower:
		return j.PowerAction == inventory.PowerOn || j.PowerAction == inventory.PowerCycle
	}
	return false
}

// rackGate serialises the check-and-reserve of one rack's power-ons, so
// that two jobs cannot both pass the check on the same headroom: a job
// that passes reserves its machine's rating (pendingW) until the BMC call
// has ended and its outcome is recorded on the machine, which the next
// check reads. The gate is not held across the BMC call: a hung BMC holds
// up its own machine, not its rack.
func (e *Engine) rackGate(ctx context.Context, rack string) (release func(), err error) {
	e.mu.Lock()
	g, ok := e.gates[rack]
	if !ok {
		g = make(chan struct{}, 1)
		e.gates[rack] = g
	}
	e.mu.Unlock()
	select {
	case g <- struct{}{}:
		return func() { <-g }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pendingW sums the ratings reserved in a rack by power-ons under way.
func (e *Engine) pendingW(rack string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var w int64
	for _, v := range e.pending[rack] {
		w += v
	}
	return w
}

// reserve notes a power-on under way; the returned func ends it.
func (e *Engine) reserve(rack, machine string, w int64) (done func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pending[rack] == nil {
		e.pending[rack] = map[string]int64{}
	}
	e.pending[rack][machine] = w
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.pending[rack], machine)
		if len(e.pending[rack]) == 0 {
			delete(e.pending, rack)
		}
	}
}

// energise runs a step that powers a machine on, once the interlock
// allows it.
func (e *Engine) energise(ctx context.Context, j *inventory.Job, step string, power func(*inventory.Machine) error) error {
	backoff := min(energiseFirstBackoff, e.cfg.PollInterval)
	// The bound runs from the step's persisted start (or the engine's, when
	// it was down meanwhile), as other waits' deadlines do.
	start := latest(j.Steps[j.CurrentStep()].StartedAt, e.started)
	var waitingSince time.Time
	for {
		release, err := e.rackGate(ctx, j.Rack)
		if err != nil {
			return err
		}
		m, err := e.inv.Machine(ctx, j.Machine)
		if err != nil {
			release()
			return err
		}
		if j.ForcePower {
			err = nil
		} else {
			err = inventory.EnergisationCheckPending(ctx, e.inv, m.Name, e.pendingW(j.Rack))
		}
		if err == nil {
			done := e.reserve(j.Rack, m.Name, m.PowerW)
			release()
			err = power(m)
			done()
			if err == nil && !waitingSince.IsZero() {
				e.event(ctx, j, "step.energised", fmt.Sprintf("%s job %s: %s: the rack's budget allows the power-on now, after %s",
					j.Kind, j.ID, step, e.cfg.Now().Sub(waitingSince).Round(time.Second)))
			}
			return bmcStep(err)
		}
		release()
		var pe *inventory.PlacementError
		if !errors.As(err, &pe) {
			return err
		}
		if j.Kind == inventory.JobPower {
			return failf("%v: the power-on was refused by the energisation interlock (staff may force it)", err)
		}
		now := e.cfg.Now()
		if waitingSince.IsZero() {
			waitingSince = now
			e.event(ctx, j, "step.waiting", fmt.Sprintf("%s job %s: %s waits for the rack's power budget (up to %s): %v",
				j.Kind, j.ID, step, e.cfg.EnergiseWait, err))
		}
		if now.Sub(start) >= e.cfg.EnergiseWait {
			return failf("%v: waited %s for the rack's draw to fall; power another machine of the rack off, raise the rack's budget, or ask again with the power interlock forced (staff)",
				err, e.cfg.EnergiseWait)
		}
		// Wait for the backoff, or for the job to change (a cancel).
		changed := e.inv.BootView().JobChanged(j.ID)
		if _, err := e.current(ctx, j.ID); err != nil {
			return err
		}
		t := time.NewTimer(max(time.Millisecond, min(backoff, e.cfg.EnergiseWait-now.Sub(start))))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, energiseMaxBackoff)
	}
}
