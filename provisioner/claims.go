package provisioner

import (
	"context"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// JobClaims is how instances sharing one inventory agree on who runs which
// job: a job runs on the one instance that claimed it. Package cluster
// implements it over etcd leases. A nil JobClaims (Config.Claims) means a
// single instance that owns every job, at no cost.
type JobClaims interface {
	// ID names this instance among the others. It is recorded on the jobs
	// it runs (Job.Instance), so that the instance that resumes a job
	// knows whether it took the job over from another one.
	ID() string
	// Claim takes the job for this instance: true when this instance owns
	// it now (also when it already did), false when another one does.
	Claim(ctx context.Context, jobID string) (bool, error)
	// Release gives up a finished job's claim.
	Release(ctx context.Context, jobID string) error
	// Orphaned receives when some job's owner went (or may have): jobs
	// skipped as another's are worth a new claim.
	Orphaned() <-chan struct{}
	// Lost is closed when the claims made so far are lost; another
	// instance may take their jobs, so every one of them stops at once.
	// Called again, it gives the channel of the next claims.
	Lost() <-chan struct{}
}

// claimTimeout bounds one claim or release: the store behind the claims
// answers in milliseconds when it answers at all.
const claimTimeout = 5 * time.Second

// claim asks the claims for each picked job, starts those this instance
// won, and hands the others' slots back. It says how many another
// instance holds. At the first error it hands back the rest unasked: the
// claims' store is away, and the scheduling loop must not wait on it job
// after job.
func (e *Engine) claim(ctx context.Context, picked []inventory.QueuedJob) (refused int, err error) {
	for i, j := range picked {
		cctx, cancel := context.WithTimeout(ctx, claimTimeout)
		ok, err := e.cfg.Claims.Claim(cctx, j.ID)
		cancel()
		switch {
		case err != nil:
			e.mu.Lock()
			for _, j := range picked[i:] {
				e.unreserve(j)
			}
			e.mu.Unlock()
			return refused, err
		case ok:
			e.start(ctx, j)
		default:
			refused++
			e.mu.Lock()
			e.unreserve(j)
			// Another instance runs it: not asked again until an owner
			// goes (Orphaned) or the periodic fresh look.
			e.foreign[j.ID] = true
			e.mu.Unlock()
		}
	}
	return refused, nil
}

// released gives up the claim of a job that ended. A job that did not end
// (this instance is stopping, or lost its claims) keeps it: the claim goes
// with the instance's session, and with it the job to another instance.
func (e *Engine) released(ctx context.Context, id string) {
	if e.cfg.Claims == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	defer cancel()
	j, err := e.inv.Job(ctx, id)
	if err != nil || !j.State.Finished() {
		return
	}
	if err := e.cfg.Claims.Release(ctx, id); err != nil {
		e.log.Warn("releasing a finished job's claim (it goes with this instance's session)", "job", id, "err", err)
	}
}

// instance is this instance's ID among those sharing the jobs; "" for a
// single instance, which never takes a job over.
func (e *Engine) instance() string {
	if e.cfg.Claims == nil {
		return ""
	}
	return e.cfg.Claims.ID()
}

// lost is the channel that closes when the current claims are lost; nil
// (never) without claims.
func (e *Engine) lost() <-chan struct{} {
	if e.cfg.Claims == nil {
		return nil
	}
	return e.cfg.Claims.Lost()
}

// orphaned is the claims' orphan notice; nil (never) without claims.
func (e *Engine) orphaned() <-chan struct{} {
	if e.cfg.Claims == nil {
		return nil
	}
	return e.cfg.Claims.Orphaned()
}

// forgetForeign makes the next round ask again about jobs another
// instance held.
func (e *Engine) forgetForeign() {
	e.mu.Lock()
	clear(e.foreign)
	e.mu.Unlock()
}
