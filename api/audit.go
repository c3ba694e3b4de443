package api

import (
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// maxAuditPage bounds one page of the audit trail.
const maxAuditPage = 10000

// auditFilter reads the audit route's query. Without after, a page is the
// newest limit events (before=SEQ: those before SEQ, paging back); with
// after=SEQ it is the oldest limit events after SEQ, and the next page is
// after its last event's seq. Sequence numbers only grow, so forward
// pages neither skip nor repeat an event while others are written.
func auditFilter(q url.Values) (inventory.EventFilter, error) {
	f := inventory.EventFilter{Action: q.Get("action"), Outcome: q.Get("outcome"), Tenant: q.Get("tenant")}
	if actors := q["actor"]; len(actors) == 1 {
		f.Actor = actors[0]
	} else {
		f.Actors = actors
	}
	if since := q.Get("since"); since != "" {
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return f, badRequest("since %q is not an RFC 3339 time such as 2026-11-24T09:00:00Z", since)
		}
		f.Since = t
	}
	switch o := f.Outcome; o {
	case "", "ok", "refused", "failed":
	default:
		return f, badRequest("outcome %q is not ok, refused or failed", o)
	}
	if a := f.Action; a != "" && (strings.ContainsAny(a, " /") || len(a) > 64) {
		return f, badRequest("action %q is not an action such as machine.update or a prefix such as machine.", a)
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxAuditPage {
			return f, badRequest("limit %q must be between 1 and %d", l, maxAuditPage)
		}
		f.Limit = n
	}
	for _, p := range []struct {
		key string
		dst *uint64
	}{{"after", &f.After}, {"before", &f.Before}} {
		if v := q.Get(p.key); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return f, badRequest("%s %q is not an event sequence number (the seq of an event already read)", p.key, v)
			}
			*p.dst = n
		}
	}
	if q.Has("after") && q.Has("before") {
		return f, badRequest("give after (page forward) or before (page back), not both")
	}
	f.Oldest = q.Has("after")
	return f, nil
}
