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
// state and power, and on a machine's page its job. The stream sends one
// whenever it differs from the last one sent.
type snapshot struct {
	Machines map[string]liveMachine `json:"machines"`
	Job      *liveJob               `json:"job,omitempty"`
}

type liveMachine struct {
	State  inventory.MachineState `json:"state"`
	Power  string                 `json:"power,omitempty"`
	Tenant string                 `json:"tenant,omitempty"`
}

type liveJob struct {
	ID            string `json:"id"`
	Kind          string `json:"kind"`
	State         string `json:"state"`
	Step          string `json:"step"`
	Done          int    `json:"done"`
	Total         int    `json:"total"`
	QueuePosition int    `json:"queue_position,omitempty"`
	Error         string `json:"error,omitempty"`
}

// liveStream is a server-sent event stream for one page. It reads through
// the API with the session's token like the page did, so a stream shows
// exactly what the page may show, and ends when the session does.
func (u *UI) liveStream(w http.ResponseWriter, r *http.Request) {
	s := u.session(r)
	if s == nil {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	read, err := u.liveReader(s, q)
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
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	tick := time.NewTicker(u.cfg.LiveInterval)
	defer tick.Stop()
	var last [sha256.Size]byte
	for {
		if u.session(r) == nil { // signed out or expired
			fmt.Fprint(w, "event: signedout\ndata: {}\n\n")
			rc.Flush()
			return
		}
		snap, err := u.readLive(r.Context(), read)
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			if status(err) == http.StatusNotFound || status(err) == http.StatusUnauthorized {
				fmt.Fprint(w, "event: gone\ndata: {}\n\n")
				rc.Flush()
				return
			}
			u.log.Warn("console live stream", "query", q.Encode(), "err", err)
		} else if b, _ := json.Marshal(snap); sha256.Sum256(b) != last {
			last = sha256.Sum256(b)
			rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
		if snap != nil {
			// A big page costs more to read: follow it less often, so
			// that a wall of hall floors cannot keep the service busy.
			tick.Reset(u.cfg.LiveInterval * time.Duration(max(1, len(snap.Machines)/machinesPerInterval)))
		}
		select {
		case <-r.Context().Done():
			return
		case <-u.stop:
			return
		case <-tick.C:
		}
	}
}

// machinesPerInterval is how many machines a stream reads per
// LiveInterval: a hall of 2,000 is read every 8 intervals.
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
	case <-u.stop:
		return nil, context.Canceled
	}
	return read(ctx)
}

// liveReader picks what a stream follows: one machine, a rack, a hall, or
// the busy machines of the jobs page.
func (u *UI) liveReader(s *session, q url.Values) (func(context.Context) (*snapshot, error), error) {
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
		return u.machineReader(s, q.Get("machine")), nil
	case q.Get("rack") != "":
		return func(ctx context.Context) (*snapshot, error) { return list(ctx, url.Values{"rack": {q.Get("rack")}}) }, nil
	case q.Get("hall") != "":
		return func(ctx context.Context) (*snapshot, error) { return list(ctx, url.Values{"hall": {q.Get("hall")}}) }, nil
	case q.Get("jobs") != "":
		return func(ctx context.Context) (*snapshot, error) {
			out := &snapshot{Machines: map[string]liveMachine{}}
			for _, st := range busy {
				snap, err := list(ctx, url.Values{"state": {string(st)}})
				if err != nil {
					return nil, err
				}
				for k, v := range snap.Machines {
					out.Machines[k] = v
				}
			}
			return out, nil
		}, nil
	}
	return nil, fmt.Errorf("a live stream follows machine=NAME, rack=NAME, hall=NAME or jobs=1")
}

// machineReader follows one machine. It asks for the machine's job only
// once its events say there is one and while it is unfinished: asking a
// tenant's machine for a job it never had is a 404, which the API audits
// as a refused access, and a live page must not write the audit trail
// once a second.
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
	lj := &liveJob{ID: j.ID, Kind: string(j.Kind), State: string(j.State), Total: len(j.Steps), QueuePosition: j.QueuePosition, Error: j.Error}
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
