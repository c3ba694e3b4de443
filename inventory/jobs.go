package inventory

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

var (
	bJobs      = []byte("jobs")       // id → Job
	bActiveJob = []byte("idx_active") // machine → id of its unfinished job
)

func init() { extraBuckets = append(extraBuckets, bJobs, bActiveJob) }

// JobKind is what a job does to a machine.
type JobKind string

const (
	JobCommission JobKind = "commission"
	JobProvision  JobKind = "provision" // also the reimage of a deployed machine
	JobRelease    JobKind = "release"   // wipe, then available
	JobPower      JobKind = "power"
)

// JobState is where a job stands.
type JobState string

const (
	JobQueued    JobState = "queued"
	JobRunning   JobState = "running"
	JobSucceeded JobState = "succeeded"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Finished reports whether the job will not run again.
func (s JobState) Finished() bool {
	return s == JobSucceeded || s == JobFailed || s == JobCancelled
}

// StepState is where one step of a job stands.
type StepState string

const (
	StepPending StepState = "pending"
	StepRunning StepState = "running"
	StepDone    StepState = "done"
	StepFailed  StepState = "failed"
)

// JobStep is one persisted step of a job: its start, end, outcome and
// error are written before the next step begins.
type JobStep struct {
	Name      string    `json:"name"`
	State     StepState `json:"state"`
	Attempts  int       `json:"attempts,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	Error     string    `json:"error,omitempty"`
	Detail    string    `json:"detail,omitempty"`
}

// JobProgress is the agent's last progress report.
type JobProgress struct {
	Step  string    `json:"step,omitempty"`
	Bytes int64     `json:"bytes,omitempty"`
	Total int64     `json:"total,omitempty"`
	Rate  int64     `json:"rate,omitempty"`
	At    time.Time `json:"at,omitzero"`
}

// Job is durable work on one machine.
type Job struct {
	ID        string       `json:"id"`
	Machine   string       `json:"machine"`
	Rack      string       `json:"rack"`
	Kind      JobKind      `json:"kind"`
	State     JobState     `json:"state"`
	Steps     []JobStep    `json:"steps"`
	FromState MachineState `json:"from_state"` // the machine's state before the job
	Actor     string       `json:"actor,omitempty"`
	// ActorRole is the role of the token that asked for the job: a tenant
	// may cancel only jobs a tenant token asked for.
	ActorRole Role `json:"actor_role,omitempty"`
	// Tenancy is the machine's tenancy when the job was asked for (see
	// Machine.Tenancy): the job, its keys and user data belong to it.
	Tenancy string `json:"tenancy,omitempty"`

	Image       string      `json:"image,omitempty"`
	SSHKeys     []string    `json:"ssh_keys,omitempty"`
	UserData    string      `json:"user_data,omitempty"`
	WipeMode    string      `json:"wipe_mode,omitempty"`
	PowerAction PowerAction `json:"power_action,omitempty"`
	// ForcePower takes the job's power-ons past the energisation
	// interlock (staff asked for it).
	ForcePower bool `json:"force_power,omitempty"`
	// Sealed holds SSHKeys and UserData sealed (they are then empty).
	Sealed []byte `json:"sealed,omitempty"`

	// What the machine has told us while the job ran.
	AgentSeenAt    time.Time   `json:"agent_seen_at,omitzero"`
	AgentDone      bool        `json:"agent_done,omitempty"`
	AgentOK        bool        `json:"agent_ok,omitempty"`
	AgentError     string      `json:"agent_error,omitempty"`
	Progress       JobProgress `json:"progress,omitzero"`
	MetadataSeenAt time.Time   `json:"metadata_seen_at,omitzero"`

	// Instance is the ID of the instance that last started one of the
	// job's steps, when instances share the jobs (empty on a single
	// instance): the instance that resumes the job tells from it whether
	// it restarted or took the job over from another.
	Instance string `json:"instance,omitempty"`

	CancelRequested bool      `json:"cancel_requested,omitempty"`
	Error           string    `json:"error,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`
}

// CurrentStep is the index of the first step not done, or len(Steps).
func (j *Job) CurrentStep() int {
	for i, s := range j.Steps {
		if s.State != StepDone {
			return i
		}
	}
	return len(j.Steps)
}

// StepName is the name of the current step ("" when all are done).
func (j *Job) StepName() string {
	if i := j.CurrentStep(); i < len(j.Steps) {
		return j.Steps[i].Name
	}
	return ""
}

// BusyError is a second job asked for a machine that has one running.
type BusyError struct {
	Machine string
	Job     *Job
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("machine %q already has %s job %s (%s, step %s): wait for it, or cancel it",
		e.Machine, e.Job.Kind, e.Job.ID, e.Job.State, orNone(e.Job.StepName()))
}
func (e *BusyError) Unwrap() error { return ErrConflict }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// StartJob records a new job and moves its machine to machineTo (when not
// empty) in one transaction. A machine has at most one unfinished job.
func (s *Store) StartJob(ctx context.Context, j Job, machineTo MachineState) (*Job, error) {
	return s.StartJobRecording(ctx, j, machineTo, nil)
}

// StartJobRecording is StartJob with the event that says the job is
// queued, made from the stored job (its ID is chosen here) and stored in
// the same transaction. queued may be nil.
func (s *Store) StartJobRecording(ctx context.Context, j Job, machineTo MachineState, queued func(*Job) Event) (*Job, error) {
	var out *Job
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		if id := bkt(tx, bActiveJob).Get([]byte(j.Machine)); id != nil {
			busy, err := get[Job](tx, bJobs, "job", string(id))
			if err != nil {
				return err
			}
			return &BusyError{Machine: j.Machine, Job: busy}
		}
		m, err := get[Machine](tx, bMachines, "machine", j.Machine)
		if err != nil {
			return err
		}
		if j.Image != "" && !exists(tx, bImages, j.Image) {
			return &NotFoundError{Kind: "image", Name: j.Image}
		}
		seq, err := bkt(tx, bJobs).NextSequence()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		j.ID = fmt.Sprintf("job-%06d", seq)
		j.Rack, j.State, j.FromState, j.CreatedAt, j.UpdatedAt = m.Rack, JobQueued, m.State, now, now
		j.Tenancy = m.Tenancy
		for i := range j.Steps {
			j.Steps[i].State = StepPending
		}
		if (machineTo != "" && machineTo != m.State) || (j.Kind == JobProvision && !m.NeedsErase) {
			next := cloneMachine(m)
			if machineTo != "" {
				next.State = machineTo
			}
			if j.Kind == JobProvision {
				next.Image, next.NeedsErase = j.Image, true
			}
			if _, err := s.storeMachine(tx, m, next, vc); err != nil {
				return err
			}
		}
		if err := putJSON(bkt(tx, bJobs), []byte(j.ID), j); err != nil {
			return err
		}
		out = &j
		vc.jobs = append(vc.jobs, out)
		if queued != nil {
			if err := s.putEvents(tx, vc, []Event{queued(out)}); err != nil {
				return err
			}
		}
		return bkt(tx, bActiveJob).Put([]byte(j.Machine), []byte(j.ID))
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Job returns one job.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	var out *Job
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[Job](tx, bJobs, "job", id); return })
	return out, err
}

// ActiveJob returns the unfinished job of a machine, or a NotFoundError.
func (s *Store) ActiveJob(ctx context.Context, machine string) (*Job, error) {
	var out *Job
	err := s.view(func(tx kv.Tx) error {
		id := bkt(tx, bActiveJob).Get([]byte(machine))
		if id == nil {
			return &NotFoundError{Kind: "active job of machine", Name: machine}
		}
		var err error
		out, err = get[Job](tx, bJobs, "job", string(id))
		return err
	})
	return out, err
}

// ActiveJobs lists every unfinished job, oldest first (the order they were
// asked for, which is the order the scheduler runs them in).
func (s *Store) ActiveJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := s.view(func(tx kv.Tx) error {
		return bkt(tx, bActiveJob).ForEach(func(_, id []byte) error {
			j, err := get[Job](tx, bJobs, "job", string(id))
			if err != nil {
				return err
			}
			out = append(out, *j)
			return nil
		})
	})
	sortJobs(out)
	return out, err
}

// MachineJobs lists a machine's jobs, newest last.
func (s *Store) MachineJobs(ctx context.Context, machine string) ([]Job, error) {
	var out []Job
	err := s.view(func(tx kv.Tx) (err error) {
		out, err = list(tx, bJobs, func(j *Job) bool { return j.Machine == machine })
		return
	})
	return out, err
}

func sortJobs(js []Job) {
	for i := 1; i < len(js); i++ {
		for k := i; k > 0 && js[k].ID < js[k-1].ID; k-- {
			js[k], js[k-1] = js[k-1], js[k]
		}
	}
}

// UpdateJob applies fn to a job and its machine and stores both in one
// transaction; the machine's change goes through its state machine. The
// machine is written only when fn changed it. When the job ends, it is no
// longer the machine's active job.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(*Job, *Machine) error) (*Job, *Machine, error) {
	return s.RecordJob(ctx, id, func(j *Job, m *Machine) ([]Event, error) { return nil, fn(j, m) })
}

// RecordJob is UpdateJob for a change that comes with events of its own
// (an agent's done, a job's end): fn returns them, and they are stored in
// the same transaction, or not at all.
func (s *Store) RecordJob(ctx context.Context, id string, fn func(*Job, *Machine) ([]Event, error)) (*Job, *Machine, error) {
	var outJ *Job
	var outM *Machine
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		j, err := getActiveJob(tx, id)
		if err != nil {
			return err
		}
		old, err := get[Machine](tx, bMachines, "machine", j.Machine)
		if err != nil {
			return err
		}
		m := cloneMachine(old)
		evs, err := fn(j, m)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(old, m) {
			if m, err = s.storeMachine(tx, old, m, vc); err != nil {
				return err
			}
		}
		outJ, outM = j, m
		if err := s.putJob(tx, j, vc); err != nil {
			return err
		}
		return s.putEvents(tx, vc, evs)
	})
	if err != nil {
		return nil, nil, err
	}
	return outJ, outM, nil
}

// UpdateJobOnly applies fn to a job and stores it, without reading or
// writing its machine: progress reports, the agent's call-home and step
// marks change the job alone, and must not rewrite (and re-index) the
// machine record with its inspection each time. A job that fn finishes
// is no longer its machine's active job; to move the machine too, use
// UpdateJob.
//
// Concurrent calls share write transactions (group commit): while one
// transaction commits, the updates that arrive meanwhile queue, and the
// next transaction takes them all. A lone update waits for nothing. fn
// runs exactly once; its error fails only its own update.
func (s *Store) UpdateJobOnly(ctx context.Context, id string, fn func(*Job) error) (*Job, error) {
	return s.RecordJobUpdate(ctx, id, func(j *Job) ([]Event, error) { return nil, fn(j) })
}

// RecordJobUpdate is UpdateJobOnly for a change that comes with events of
// its own, such as one step's end and the next one's start: fn returns
// them, and they are stored in the job's transaction, or not at all. One
// commit instead of three is what keeps a hall of running jobs cheap.
func (s *Store) RecordJobUpdate(ctx context.Context, id string, fn func(*Job) ([]Event, error)) (*Job, error) {
	u := &jobUpdate{id: id, fn: fn, done: make(chan struct{})}
	s.jobQ.mu.Lock()
	s.jobQ.pending = append(s.jobQ.pending, u)
	s.jobQ.mu.Unlock()

	s.jobQ.commit.Lock()
	select {
	case <-u.done: // an earlier committer took it
	default:
		s.jobQ.mu.Lock()
		batch := s.jobQ.pending
		s.jobQ.pending = nil
		s.jobQ.mu.Unlock()
		s.commitJobUpdates(batch)
	}
	s.jobQ.commit.Unlock()
	<-u.done
	return u.out, u.err
}

// jobQueue is the group commit of UpdateJobOnly.
type jobQueue struct {
	commit  sync.Mutex // one committer at a time
	mu      sync.Mutex // guards pending
	pending []*jobUpdate
}

type jobUpdate struct {
	id   string
	fn   func(*Job) ([]Event, error)
	out  *Job
	err  error
	done chan struct{}
}

// commitJobUpdates stores a batch of job updates in one transaction, in
// the order they arrived. An update whose job is missing or finished, or
// whose fn refuses, is left out; the others commit.
func (s *Store) commitJobUpdates(batch []*jobUpdate) {
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		for _, u := range batch {
			u.out, u.err = nil, nil
			j, err := getActiveJob(tx, u.id)
			var evs []Event
			if err == nil {
				evs, err = u.fn(j)
			}
			for i := range evs {
				if err == nil {
					err = checkEvent(&evs[i], s.now)
				}
			}
			if err != nil {
				u.err = err
				continue
			}
			if err := s.putJob(tx, j, vc); err != nil {
				return err
			}
			if err := s.putEvents(tx, vc, evs); err != nil {
				return err
			}
			u.out = j
		}
		return nil
	})
	for _, u := range batch {
		if err != nil {
			u.out, u.err = nil, err
		}
		close(u.done)
	}
}

// putEvents checks and stores events inside a write transaction; the
// event feed hears of them after the commit (Store.write).
func (s *Store) putEvents(tx kv.Tx, vc *viewChanges, evs []Event) error {
	for _, ev := range evs {
		if err := checkEvent(&ev, s.now); err != nil {
			return err
		}
		stored, err := putEvent(tx, ev)
		if err != nil {
			return err
		}
		vc.lastEvent = stored.Seq
	}
	return nil
}

// getActiveJob loads a job that has not finished.
func getActiveJob(tx kv.Tx, id string) (*Job, error) {
	j, err := get[Job](tx, bJobs, "job", id)
	if err != nil {
		return nil, err
	}
	if j.State.Finished() {
		return nil, &ConflictError{Msg: fmt.Sprintf("job %s is already %s", id, j.State)}
	}
	return j, nil
}

// putJob stamps and stores a changed job, and takes a finished one off
// its machine.
func (s *Store) putJob(tx kv.Tx, j *Job, vc *viewChanges) error {
	j.UpdatedAt = s.now().UTC()
	if j.State.Finished() {
		if j.FinishedAt.IsZero() {
			j.FinishedAt = j.UpdatedAt
		}
		if err := bkt(tx, bActiveJob).Delete([]byte(j.Machine)); err != nil {
			return err
		}
	}
	vc.jobs = append(vc.jobs, j)
	return putJSON(bkt(tx, bJobs), []byte(j.ID), j)
}
