package ui

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// snapshot is what a live page shows that can change: each machine's
// state and power, on a machine's page its job, on the jobs page the jobs.
// The stream sends one whenever it differs from the last one sent.
type snapshot struct {
	Machines map[string]liveMachine `json:"machines"`
	Job      *liveJob               `json:"job,omitempty"`
	Jobs     map[string]liveJob     `json:"jobs,omitempty"`
}

type liveMachine struct {
	State  inventory.MachineState `json:"state"`
	Power  string                 `json:"power,omitempty"`
	Tenant string                 `json:"tenant,omitempty"`
}

type liveJob struct {
	ID            string `json:"id"`
	Machine       string `json:"machine,omitempty"`
	Kind          string `json:"kind"`
	State         string `json:"state"`
	Step          string `json:"step"`
	Done          int    `json:"done"`
	Total         int    `json:"total"`
	QueuePosition int    `json:"queue_position,omitempty"`
	Error         string `json:"error,omitempty"`
}

// follower is what one live page follows: how to read what it shows, and
// which events may change it.
type follower struct {
	read func(context.Context) (*snapshot, error)
	// touches says whether an event may change what the page shows.
	touches func(e *inventory.Event) bool
}

// liveWait is how long one wait on the API's event feed lasts; the stream
// looks at its session between two waits, so a signed-out page learns it
// within this time.
const liveWait = 25 * time.Second

// liveStream is a server-sent event stream for one page. It follows the
// API's event feed (GET /api/v1/events, a long poll woken by the store's
// commits) with the session's token and reads the page again, through the
// API like the page did, only when an event may have changed it: a page
// costs nothing while nothing happens to what it shows, and shows exactly
// what the page may show.
func (u *UI) liveStream(w http.ResponseWriter, r *http.Request) {
	s := u.session(r)
	if s == nil {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	fl, err := u.liveReader(s, q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	select {
	case u.live <- struct{}{}:
		defer func() { <-u.live }()
	default:
		http.Error(w, "too many live pages are open: this page will not update by itself, reload it later", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(u.stopped, cancel)() // StopLive ends the stream, and its wait in the API
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	send := func(event, data string) bool {
		rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The feed's position before the first read: whatever commits after
	// the read is in the feed after it.
	var page api.EventPage
	if err := u.get(ctx, s, "/api/v1/events", nil, &page); err != nil {
		u.endLive(ctx, send, q, err)
		return
	}
	var (
		cursor   = page.Next
		dirty    = true
		size     int // machines and jobs the page shows
		last     [sha256.Size]byte
		lastRead time.Time
	)
	for {
		if u.session(r) == nil { // signed out or expired
			send("signedout", "{}")
			return
		}
		if dirty {
			// A big page costs more to read: read it at most once per its
			// interval, so a wall of busy hall floors cannot keep the
			// service busy.
			if !u.pause(ctx, time.Until(lastRead.Add(u.readGap(size)))) {
				return
			}
			snap, err := u.readLive(ctx, fl.read)
			lastRead = time.Now()
			switch {
			case err != nil && (ctx.Err() != nil || status(err) == http.StatusNotFound || status(err) == http.StatusUnauthorized):
				u.endLive(ctx, send, q, err)
				return
			case err != nil:
				u.log.Warn("console live stream", "query", q.Encode(), "err", err)
			default:
				// Only the snapshot's hash is kept: a page open for hours
				// holds no copy of what it shows.
				dirty, size = false, len(snap.Machines)+len(snap.Jobs)
				if b, _ := json.Marshal(snap); sha256.Sum256(b) != last {
					last = sha256.Sum256(b)
					if !send("", string(b)) {
						return
					}
				}
			}
		}
		err := u.get(ctx, s, "/api/v1/events", url.Values{"after": {strconv.FormatUint(cursor, 10)}, "wait": {liveWait.String()}}, &page)
		if err != nil {
			if ctx.Err() != nil || status(err) == http.StatusUnauthorized {
				u.endLive(ctx, send, q, err)
				return
			}
			// The feed failed (a restored database, a store error): read
			// the page again, from where the feed is now.
			u.log.Warn("console live stream: following events", "query", q.Encode(), "err", err)
			if !u.pause(ctx, u.cfg.LiveInterval) {
				return
			}
			if err := u.get(ctx, s, "/api/v1/events", nil, &page); err != nil {
				u.endLive(ctx, send, q, err)
				return
			}
			cursor, dirty = page.Next, true
			continue
		}
		if ctx.Err() != nil { // the page went away, or the service stops
			return
		}
		cursor = page.Next
		for i := range page.Events {
			dirty = dirty || fl.touches(&page.Events[i])
		}
	}
}

// endLive tells the page why its stream ends, where it can say.
func (u *UI) endLive(ctx context.Context, send func(event, data string) bool, q url.Values, err error) {
	switch {
	case ctx.Err() != nil:
	case status(err) == http.StatusUnauthorized:
		send("signedout", "{}")
	case status(err) == http.StatusNotFound:
		send("gone", "{}")
	default:
		u.log.Warn("console live stream", "query", q.Encode(), "err", err)
		send("gone", "{}")
	}
}

// pause waits d, or less when ctx ends first (then false).
func (u *UI) pause(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// readGap is the least time between two reads of a page: LiveInterval per
// machinesPerInterval machines it shows.
func (u *UI) readGap(shown int) time.Duration {
	return u.cfg.LiveInterval * time.Duration(max(1, shown/machinesPerInterval))
}

// machinesPerInterval is how many machines a stream reads per
// LiveInterval: a busy hall of 2,000 is read at most every 8 intervals.
const machinesPerInterval = 250

// readLive takes one of the few read slots all streams share: the
// snapshots in flight at once, and so their memory and CPU, are bounded
// however many pages are open.
func (u *UI) readLive(ctx context.Context, read func(context.Context) (*snapshot, error)) (*snapshot, error) {
	select {
	case u.reads <- struct{}{}:
		defer func() { <-u.reads }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return read(ctx)
}

// aboutMachine is the machine an event is about, or "".
func aboutMachine(e *inventory.Event) string {
	name, _ := strings.CutPrefix(e.Subject, "machine/")
	if name == e.Subject {
		return ""
	}
	return name
}

// movesMachines says whether an event may add a machine to a rack or take
// one away: one the page did not show may belong on it now.
func movesMachines(e *inventory.Event) bool {
	switch e.Action {
	case "machine.enroll", "machine.update", "machine.delete", "rack.import", "tenant.assign", "tenant.unassign":
		return true
	}
	return false
}

// liveReader picks what a stream follows: one machine, a rack, a hall, or
// the jobs.
func (u *UI) liveReader(s *session, q url.Values) (*follower, error) {
	list := func(ctx context.Context, f url.Values) (*snapshot, error) {
		var ms []api.Machine
		if err := u.get(ctx, s, "/api/v1/machines", f, &ms); err != nil {
			return nil, err
		}
		snap := &snapshot{Machines: make(map[string]liveMachine, len(ms))}
		for _, m := range ms {
			snap.Machines[m.Name] = liveMachine{State: m.State, Power: m.BMCStatus.Power, Tenant: m.Tenant}
		}
		return snap, nil
	}
	switch {
	case q.Get("machine") != "":
		name := q.Get("machine")
		return &follower{read: u.machineReader(s, name), touches: func(e *inventory.Event) bool {
			return aboutMachine(e) == name
		}}, nil
	case q.Get("rack") != "":
		rack := q.Get("rack")
		var shown map[string]bool // the machines of the last read; nil before it
		return &follower{
			read: func(ctx context.Context) (*snapshot, error) {
				snap, err := list(ctx, url.Values{"rack": {rack}})
				if err == nil {
					shown = make(map[string]bool, len(snap.Machines))
					for name := range snap.Machines {
						shown[name] = true
					}
				}
				return snap, err
			},
			touches: func(e *inventory.Event) bool {
				return shown == nil || e.Subject == "rack/"+rack || movesMachines(e) || shown[aboutMachine(e)]
			}}, nil
	case q.Get("hall") != "":
		hall := q.Get("hall")
		// A hall's machines are too many to look each event up against
		// cheaply for every open floor: any machine's or rack's event
		// counts, and readGap bounds what that costs.
		return &follower{
			read: func(ctx context.Context) (*snapshot, error) { return list(ctx, url.Values{"hall": {hall}}) },
			touches: func(e *inventory.Event) bool {
				return aboutMachine(e) != "" || strings.HasPrefix(e.Subject, "rack/")
			}}, nil
	case q.Get("jobs") != "":
		return &follower{read: u.jobsReader(s), touches: func(e *inventory.Event) bool {
			return aboutMachine(e) != "" && (strings.HasPrefix(e.Action, "job.") || strings.HasPrefix(e.Action, "step.") ||
				strings.HasSuffix(e.Action, ".commission") || strings.HasSuffix(e.Action, ".cancel"))
		}}, nil
	}
	return nil, fmt.Errorf("a live stream follows machine=NAME, rack=NAME, hall=NAME or jobs=1")
}

// jobsReader reads the jobs queued and running, as the jobs page shows
// them.
func (u *UI) jobsReader(s *session) func(context.Context) (*snapshot, error) {
	return func(ctx context.Context) (*snapshot, error) {
		var jobs []api.Job
		if err := u.get(ctx, s, "/api/v1/jobs", nil, &jobs); err != nil {
			return nil, err
		}
		snap := &snapshot{Machines: map[string]liveMachine{}, Jobs: make(map[string]liveJob, len(jobs))}
		for i := range jobs {
			snap.Jobs[jobs[i].ID] = *jobView(&jobs[i])
		}
		return snap, nil
	}
}

// machineReader follows one machine. It asks for the machine's job only
// once its events say there is one and while it is unfinished: asking a
// tenant's machine for a job it never had is a 404, which the API audits
// as a refused access, and a live page must not write the audit trail on
// every event.
func (u *UI) machineReader(s *session, name string) func(context.Context) (*snapshot, error) {
	base := "/api/v1/machines/" + url.PathEscape(name)
	var (
		after uint64
		job   *liveJob
	)
	return func(ctx context.Context) (*snapshot, error) {
		var m api.Machine
		if err := u.get(ctx, s, base, nil, &m); err != nil {
			return nil, err
		}
		q := url.Values{}
		if after > 0 {
			q.Set("after", strconv.FormatUint(after, 10))
		}
		var evs []inventory.Event
		if err := u.get(ctx, s, base+"/events", q, &evs); err != nil {
			return nil, err
		}
		jobNews := false
		for _, e := range evs {
			after = max(after, e.Seq)
			jobNews = jobNews || isJobEvent(e)
		}
		if jobNews || (job != nil && (job.State == string(inventory.JobQueued) || job.State == string(inventory.JobRunning))) {
			var j api.Job
			if err := u.get(ctx, s, base+"/job", nil, &j); err == nil {
				job = jobView(&j)
			} else if status(err) != http.StatusNotFound {
				return nil, err
			}
		}
		return &snapshot{Machines: map[string]liveMachine{m.Name: {State: m.State, Power: m.BMCStatus.Power, Tenant: m.Tenant}}, Job: job}, nil
	}
}

// isJobEvent says whether an event is the provisioner's about a job.
func isJobEvent(e inventory.Event) bool {
	return e.Actor == "provisioner" && (strings.HasPrefix(e.Action, "job.") || strings.HasPrefix(e.Action, "step."))
}

func jobView(j *api.Job) *liveJob {
	lj := &liveJob{ID: j.ID, Machine: j.Machine, Kind: string(j.Kind), State: string(j.State), Total: len(j.Steps), QueuePosition: j.QueuePosition, Error: j.Error}
	for _, st := range j.Steps {
		if st.State == inventory.StepDone {
			lj.Done++
		}
		if st.State == inventory.StepRunning || st.State == inventory.StepFailed {
			lj.Step = st.Name
		}
	}
	return lj
}
