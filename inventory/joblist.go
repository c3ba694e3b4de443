package inventory

import (
	"context"

	"github.com/metalhall/metalhall/inventory/kv"
)

// JobFilter selects jobs; a zero field matches every job.
type JobFilter struct {
	Rack     string
	Machines map[string]bool // nil: any machine; empty: none
	Kind     JobKind
	States   []JobState // empty: any state
}

func (f JobFilter) keep(j *Job) bool {
	if f.Rack != "" && j.Rack != f.Rack {
		return false
	}
	if f.Machines != nil && !f.Machines[j.Machine] {
		return false
	}
	if f.Kind != "" && j.Kind != f.Kind {
		return false
	}
	if len(f.States) == 0 {
		return true
	}
	for _, s := range f.States {
		if j.State == s {
			return true
		}
	}
	return false
}

// Jobs lists the jobs f selects, oldest first: the bucket is keyed by job
// ID, which counts up.
func (s *Store) Jobs(ctx context.Context, f JobFilter) ([]Job, error) {
	var out []Job
	err := s.view(func(tx kv.Tx) (err error) {
		out, err = list(tx, bJobs, f.keep)
		return
	})
	return out, err
}

// ParseJobKind checks a job kind given by a caller.
func ParseJobKind(s string) (JobKind, error) {
	switch k := JobKind(s); k {
	case JobCommission, JobProvision, JobRelease, JobPower:
		return k, nil
	}
	return "", invalid("kind", "%q is not a job kind: use commission, provision, release or power", s)
}

// ParseJobState checks a job state given by a caller.
func ParseJobState(s string) (JobState, error) {
	switch st := JobState(s); st {
	case JobQueued, JobRunning, JobSucceeded, JobFailed, JobCancelled:
		return st, nil
	}
	return "", invalid("state", "%q is not a job state: use queued, running, succeeded, failed or cancelled (or active, all)", s)
}
