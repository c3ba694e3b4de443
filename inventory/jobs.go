package inventory

import (
	"context"
	"errors"
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
	// Through the group commit: jobs asked for together (a rack's
	// commission, provisions side by side) share their commits.
	u := &jobUpdate{done: make(chan struct{}), txfn: func(tx kv.Tx, vc *viewChanges) error {
		if id := bkt(tx, bActiveJob).Get([]byte(j.Machine)); id != nil {
			busy, err := s.getJob(tx, string(id))
			if err != nil {
				return err
			}
			return &BusyError{Machine: j.Machine, Job: busy}
		}
		m, err := s.getMachine(tx, j.Machine)
		if err != nil {
			return err
		}
		if j.Image != "" && !exists(tx, bImages, j.Image) {
			return &NotFoundError{Kind: "image", Name: j.Image}
		}
		var ev Event
		if queued != nil {
			// Checked before anything is written: a refusal here, like
			// the machine's below, must leave the shared transaction as
			// it found it.
			ev = queued(&j)
			if err := checkEvent(&ev, s.now); err != nil {
				return err
			}
		}
		now := s.now().UTC()
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
		seq, err := bkt(tx, bJobs).NextSequence()
		if err != nil {
			return err
		}
		j.ID = fmt.Sprintf("job-%06d", seq)
		if err := s.putJobRecord(tx, &j); err != nil {
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
	}}
	s.queueJobUpdate(u, true)
	if u.err != nil {
		return nil, u.err
	}
	return out, nil
}

// Job returns one job.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	var out *Job
	err := s.view(func(tx kv.Tx) (err error) { out, err = s.getJob(tx, id); return })
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
		out, err = s.getJob(tx, string(id))
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
			j, err := s.getJob(tx, string(id))
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
//
// Like RecordJobUpdate, it shares write transactions with the job updates
// that arrive while another commits (group commit): an agent's inspection
// or done, or a job's end, costs the single writer no commit of its own
// when other jobs are writing too. fn runs exactly once.
func (s *Store) RecordJob(ctx context.Context, id string, fn func(*Job, *Machine) ([]Event, error)) (*Job, *Machine, error) {
	u := &jobUpdate{id: id, mfn: fn, done: make(chan struct{})}
	s.queueJobUpdate(u, true)
	return u.out, u.outM, u.err
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
	s.queueJobUpdate(u, true)
	return u.out, u.err
}

// JobWriteBehind is how long an update given to UpdateJobBehind may wait
// for another job write to carry it before it is committed on its own.
const JobWriteBehind = time.Second

// UpdateJobBehind applies fn to a job without waiting for it to be
// stored: the update joins the next group commit of job updates (see
// RecordJobUpdate), and is committed on its own after JobWriteBehind when
// no other write comes first. Updates of one job are stored in the order
// they were made, whichever call commits them. For what may be lost in a
// crash and is said again soon anyway: an agent's progress report, which
// the agent sends again every few seconds and which no resume reads. fn
// runs exactly once, later, in the committing transaction; an update fn
// refuses, or whose job has ended meanwhile, is dropped.
func (s *Store) UpdateJobBehind(id string, fn func(*Job) error) {
	u := &jobUpdate{id: id, fn: func(j *Job) ([]Event, error) { return nil, fn(j) }, done: make(chan struct{}), behindSince: time.Now()}
	s.queueJobUpdate(u, false)
}

// writeBehind queues fn for the next group commit without waiting for
// it, as UpdateJobBehind queues a job's update: fn runs later, in the
// committing transaction, and must refuse (NotFoundError...) before it
// writes; a refusal drops it alone.
func (s *Store) writeBehind(fn func(tx kv.Tx, vc *viewChanges) error) {
	s.queueJobUpdate(&jobUpdate{txfn: fn, done: make(chan struct{}), behindSince: time.Now()}, false)
}

// batchBehind is batch written behind (writeBehind).
func (s *Store) batchBehind(fn func(tx kv.Tx) error) {
	s.writeBehind(func(tx kv.Tx, _ *viewChanges) error { return fn(tx) })
}

// flushBehind commits the queue once its oldest update nobody waits for
// has waited JobWriteBehind; until then it looks again when that will be.
func (s *Store) flushBehind() {
	s.jobQ.mu.Lock()
	var oldest time.Time
	for _, u := range s.jobQ.pending {
		if !u.behindSince.IsZero() {
			oldest = u.behindSince // the queue is in arrival order
			break
		}
	}
	if oldest.IsZero() {
		s.jobQ.armed = false // another commit took them
		s.jobQ.mu.Unlock()
		return
	}
	if wait := JobWriteBehind - time.Since(oldest); wait > 0 {
		time.AfterFunc(wait, s.flushBehind)
		s.jobQ.mu.Unlock()
		return
	}
	s.jobQ.armed = false
	s.jobQ.mu.Unlock()
	s.FlushJobUpdates()
}

// FlushJobUpdates commits the job updates still queued (UpdateJobBehind)
// now, and returns once they are stored.
func (s *Store) FlushJobUpdates() {
	s.jobQ.commit.Lock()
	s.commitQueued()
	s.jobQ.commit.Unlock()
}

// queueJobUpdate queues u for the next group commit. With wait, it
// commits the queue itself unless a committer took u meanwhile, and
// returns once u is stored or refused; without, it makes sure a flush
// will come and returns at once.
func (s *Store) queueJobUpdate(u *jobUpdate, wait bool) {
	s.countWrite()
	s.jobQ.mu.Lock()
	s.jobQ.pending = append(s.jobQ.pending, u)
	arm := !wait && !s.jobQ.armed
	if arm {
		s.jobQ.armed = true
	}
	s.jobQ.mu.Unlock()
	if arm {
		time.AfterFunc(JobWriteBehind, s.flushBehind)
	}
	if !wait {
		return
	}
	s.jobQ.commit.Lock()
	select {
	case <-u.done: // an earlier committer took it
	default:
		if u.txfn == nil && s.jobQ.sharing() {
			// Writers are busy side by side (the last commit carried
			// several that waited): wait a moment for their next ones
			// to come, and commit them together. A lone writer never
			// waits, nor does a write that is not a running job's
			// (a job's submission, an event, a token's use: an API
			// request waits for those).
			time.Sleep(JobCommitWindow)
		}
		s.commitQueued()
	}
	s.jobQ.commit.Unlock()
	<-u.done
}

// JobCommitWindow is how long a group commit of a running job's update
// waits for company before it commits, while writers are busy side by
// side (the last commit carried more than one update somebody waited
// for). A step's end costs its job that much; in a hall of running jobs
// it saves the single writer most of its commits.
const JobCommitWindow = 3 * time.Millisecond

// sharing reports whether the last commit carried more than one update
// that its writer waited for.
func (q *jobQueue) sharing() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.shared
}

// commitQueued commits every queued update; the caller holds
// jobQ.commit.
func (s *Store) commitQueued() {
	s.jobQ.mu.Lock()
	batch := s.jobQ.pending
	s.jobQ.pending = nil
	waited := 0
	for _, u := range batch {
		if u.behindSince.IsZero() {
			waited++
		}
	}
	s.jobQ.shared = waited > 1
	s.jobQ.mu.Unlock()
	if len(batch) > 0 {
		s.commitJobUpdates(batch)
	}
}

// jobQueue is the group commit of job updates.
type jobQueue struct {
	commit  sync.Mutex // one committer at a time
	mu      sync.Mutex // guards pending and armed
	pending []*jobUpdate
	armed   bool // a flushBehind is scheduled
	// shared is set when the last commit carried more than one update
	// its writer waited for: writers are busy side by side, and the next
	// committer waits JobCommitWindow for company.
	shared bool
}

// jobUpdate is one queued change of a job: fn changes the job alone, mfn
// the job and its machine; or, for Store.batch, txfn any records.
type jobUpdate struct {
	id   string
	fn   func(*Job) ([]Event, error)
	mfn  func(*Job, *Machine) ([]Event, error)
	txfn func(kv.Tx, *viewChanges) error
	// behindSince is when an update nobody waits for was queued
	// (UpdateJobBehind); zero for the others.
	behindSince time.Time

	out  *Job
	outM *Machine
	err  error
	done chan struct{}
}

// commitJobUpdates stores a batch of job updates in one transaction, in
// the order they arrived. An update whose job is missing or finished, or
// that its fn or the machine's rules refuse, is left out; the others
// commit.
func (s *Store) commitJobUpdates(batch []*jobUpdate) {
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		for _, u := range batch {
			u.out, u.outM, u.err = nil, nil, nil
			m, err := s.applyJobUpdate(tx, vc, u)
			if err != nil {
				if !refusal(err) {
					return err // it may have written part: nothing commits
				}
				if fe, ok := err.(*fnError); ok {
					err = fe.err
				}
				u.err = err
				continue
			}
			u.outM = m
		}
		return nil
	})
	for _, u := range batch {
		if err != nil {
			u.out, u.outM, u.err = nil, nil, err
		}
		close(u.done)
	}
}

// applyJobUpdate runs one update inside the batch's transaction. A
// refusal (see refusal) comes before it writes anything: the job is
// loaded, fn run and the events checked first, and the machine's rules
// (state machine, placement, fields) are checked by storeMachine before
// it writes.
func (s *Store) applyJobUpdate(tx kv.Tx, vc *viewChanges, u *jobUpdate) (*Machine, error) {
	if u.txfn != nil {
		return nil, u.txfn(tx, vc)
	}
	j, err := s.getActiveJob(tx, u.id)
	if err != nil {
		return nil, err
	}
	var evs []Event
	var old, m *Machine
	if u.mfn != nil {
		if old, err = s.getMachine(tx, j.Machine); err != nil {
			return nil, err
		}
		m = cloneMachine(old)
		evs, err = u.mfn(j, m)
	} else {
		evs, err = u.fn(j)
	}
	if err != nil {
		return nil, &fnError{err}
	}
	for i := range evs {
		if err := checkEvent(&evs[i], s.now); err != nil {
			return nil, err
		}
	}
	if m != nil && !reflect.DeepEqual(old, m) {
		if m, err = s.storeMachine(tx, old, m, vc); err != nil {
			return nil, err
		}
	}
	if err := s.putJob(tx, j, vc); err != nil {
		return nil, err
	}
	if err := s.putEvents(tx, vc, evs); err != nil {
		return nil, err
	}
	u.out = j
	return m, nil
}

// fnError is an update's own refusal, returned to its caller as it was.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }
func (e *fnError) Unwrap() error { return e.err }

// refusal reports whether an update's error is a refusal made before it
// wrote anything (its fn's own, a missing or finished job or record, the
// rules of the machine or of an event), as opposed to a storage failure,
// after which the transaction cannot commit. Only the typed refusals
// count: a sentinel such as ErrNotFound wrapped by a write path that has
// already written (a rack's missing usage record) is a failure.
func refusal(err error) bool {
	var (
		fe *fnError
		nf *NotFoundError
		ve *ValidationError
		te *TransitionError
		pe *PlacementError
		ce *ConflictError
		be *BusyError
		ee *ExistsError
	)
	return errors.As(err, &fe) || errors.As(err, &nf) || errors.As(err, &ve) || errors.As(err, &te) ||
		errors.As(err, &pe) || errors.As(err, &ce) || errors.As(err, &be) || errors.As(err, &ee)
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
func (s *Store) getActiveJob(tx kv.Tx, id string) (*Job, error) {
	j, err := s.getJob(tx, id)
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
	return s.putJobRecord(tx, j)
}

// putJobRecord stores a job's record, and remembers it decoded while it
// runs (its worker reads it next); a finished one, read seldom, is
// forgotten, so the memo holds about the jobs that run.
func (s *Store) putJobRecord(tx kv.Tx, j *Job) error {
	data, err := putJSONData(bkt(tx, bJobs), []byte(j.ID), j)
	if err != nil {
		return err
	}
	if j.State.Finished() {
		s.jobs.forget(j.ID)
	} else {
		s.jobs.remember(j.ID, data, j)
	}
	return nil
}
