package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metalhall/metalhall/inventory"
)

// The hall-wide event feed: GET /api/v1/events?after=SEQ&wait=DURATION
// answers the events after SEQ the caller may see, oldest first, and when
// there are none yet waits for the next commit that appends one (a long
// poll, woken by the store, never by a clock). The console's live pages
// follow it; so can any client.

// EventPage is one answer of the event feed.
type EventPage struct {
	Events []inventory.Event `json:"events"`
	// Next is where to continue from: pass it as after= next time. It is
	// past the last event shown, and past events the caller may not see,
	// which are looked at once, not on every call.
	Next uint64 `json:"next"`
}

const (
	// maxEventWait bounds a wait for new events.
	maxEventWait = time.Minute
	// eventScan bounds the events one answer looks at: a tenant that may
	// see few of them gets an empty page with Next moved on, at once.
	eventScan = 10_000
	// maxEventLimit bounds the events one answer carries.
	maxEventLimit = 10_000
)

// technicianEventKinds are the objects whose events a technician sees in
// the feed: what a technician manages (not tokens, tenants or the API's
// own records, which are the admin's audit trail).
var technicianEventKinds = []string{"site", "hall", "rack", "machine", "subnet", "image"}

func (s *Server) eventRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/events", action: "event.list",
			summary: "Events after a sequence number, oldest first, waiting for new ones (after=SEQ, wait=DURATION up to 1m, limit=N, subject=KIND/NAME for one object's); without after, only events from now on. A tenant sees its own tenancy's",
			roles:   everyone, reply: EventPage{}, handle: s.followEvents},
	}
}

func (s *Server) followEvents(c *call) (int, any, error) {
	q := c.r.URL.Query()
	limit := 1000
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxEventLimit {
			return 0, nil, badRequest("limit %q must be between 1 and %d", l, maxEventLimit)
		}
		limit = n
	}
	var wait time.Duration
	if w := q.Get("wait"); w != "" {
		d, err := time.ParseDuration(w)
		if err != nil || d < 0 {
			return 0, nil, &inventory.ValidationError{Field: "wait", Msg: fmt.Sprintf("%q is not a duration (e.g. 30s, at most %s)", w, maxEventWait)}
		}
		wait = min(d, maxEventWait)
	}
	// subject narrows the feed to one object (a CLI following one
	// machine): the caller wakes only for it, and reads nothing else.
	subject := q.Get("subject")
	if subject != "" {
		kind, name, ok := strings.Cut(subject, "/")
		if !ok || kind == "" || inventory.ValidateName("subject", name) != nil {
			return 0, nil, badRequest("subject %q is not KIND/NAME, e.g. machine/gpu-a01-07", subject)
		}
	}
	woken, newest := s.inv.EventsCommitted()
	after := newest // without after: from now on
	if a := q.Get("after"); a != "" {
		n, err := strconv.ParseUint(a, 10, 64)
		if err != nil {
			return 0, nil, badRequest("after %q is not an event sequence number", a)
		}
		if n > newest {
			// The store announces a commit just after it lands, so a
			// page read in between hands out a Next past the newest
			// announced: the log itself says whether the cursor is in it.
			_, reached, err := s.inv.EventsAfter(c.ctx(), inventory.EventFilter{After: n - 1, Limit: 1}, 1)
			if err != nil {
				return 0, nil, err
			}
			if reached < n {
				// A cursor from another database (one restored from a
				// backup): it would wait for events that are not coming.
				return 0, nil, badRequest("after %d is past the newest event (%d): follow again without after", n, reached)
			}
			newest = n
		}
		after = n
	}
	ctx, cancel := context.WithTimeout(c.ctx(), wait)
	defer cancel()
	defer context.AfterFunc(s.waits, cancel)() // a shutdown ends the wait
	for {
		f, machines, err := s.eventScope(c, inventory.EventFilter{After: after, Limit: limit})
		if err != nil {
			return 0, nil, err
		}
		evs, next, err := s.inv.EventsAfter(c.ctx(), f, eventScan)
		if err != nil && c.ctx().Err() != nil {
			// The caller went away: it reads nothing, and nothing failed.
			return http.StatusOK, EventPage{Events: []inventory.Event{}, Next: after}, nil
		}
		if err != nil {
			return 0, nil, err
		}
		if subject != "" {
			// EventsAfter reads the log in order, not the subject index:
			// the others are passed over here, Next moving past them.
			evs = slices.DeleteFunc(evs, func(e inventory.Event) bool { return e.Subject != subject })
		}
		if len(evs) > 0 || next < newest {
			// Something to show, or more to look at than one answer may.
			return http.StatusOK, EventPage{Events: c.viewEvents(evs, machines...), Next: next}, nil
		}
		after = next
		if ctx.Err() != nil {
			// No wait asked for (wait=0s), or it is over: not counted as
			// a wait.
			return http.StatusOK, EventPage{Events: []inventory.Event{}, Next: after}, nil
		}
		s.eventWaits.Inc()
		over := false
		select {
		case <-woken:
			woken, newest = s.inv.EventsCommitted()
		case <-ctx.Done():
			over = true
		}
		s.eventWaits.Dec()
		if over {
			// The wait is over (or the caller went away, and reads
			// nothing): nothing new, from where it was.
			return http.StatusOK, EventPage{Events: []inventory.Event{}, Next: after}, nil
		}
	}
}

// newEventWaits is the gauge of the feed's callers waiting for the next
// commit: how many live pages and followers a hall has open, and, for a
// test, the sign that a follower is parked in its long poll.
func newEventWaits(reg *prometheus.Registry) (prometheus.Gauge, error) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "metalhall_api_event_waits",
		Help: "Callers of the event feed (GET /api/v1/events) waiting for new events now."})
	return g, reg.Register(g)
}

// eventScope narrows an event filter to what the caller may see: an
// admin everything; a technician the objects it manages; a tenant its own
// requests and what happened to its machines in their current tenancy
// (never an earlier tenant's, nor staff's before the handover), with the
// machines, whose BMC addresses viewEvents takes out.
func (s *Server) eventScope(c *call, f inventory.EventFilter) (inventory.EventFilter, []inventory.Machine, error) {
	switch c.p.Role {
	case inventory.RoleAdmin:
		return f, nil, nil
	case inventory.RoleTechnician:
		f.Kinds = technicianEventKinds
		return f, nil, nil
	}
	ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Tenant: c.p.Tenant})
	if err != nil {
		return f, nil, err
	}
	f.Tenant = c.p.Tenant
	f.Tenancies = nil
	for _, m := range ms {
		if m.Tenancy != "" {
			f.Tenancies = append(f.Tenancies, m.Tenancy)
		}
	}
	return f, ms, nil
}

// StopWaits ends every wait for events, now and from now on, so that a
// graceful shutdown does not wait them out. Register it with
// http.Server.RegisterOnShutdown.
func (s *Server) StopWaits() { s.stopWaits() }
