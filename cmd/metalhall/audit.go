package main

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

// parseSince reads --since as people write it: a duration back from now
// ("90m", "1h", "2d"), a date ("2026-11-24", local midnight) or an RFC 3339
// time. The service takes RFC 3339.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.ParseInLocation("2006-01-02", s, time.Local); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--since %q: give a duration back from now (90m, 1h, 2d), a date (2026-11-24) or an RFC 3339 time (2026-11-24T09:00:00Z)", s)
}

// auditQuery is what `audit list` asks for and keeps.
type auditQuery struct {
	since                   time.Time
	actor                   string // a token ID or label
	action, outcome, tenant string
	limit                   int
	after, before           string // sequence numbers, as given
}

// auditEvents reads one page of the audit trail for q. An --actor that is
// no token ID is taken as a label, matching every token with it; the
// service's filters take IDs. labels maps token IDs to labels for the
// ACTOR column.
func auditEvents(ctx context.Context, cl *api.Client, q auditQuery) (events []inventory.Event, labels map[string]string, err error) {
	// The token list is admin-only, as the audit trail is; without it the
	// ACTOR column shows IDs and labels cannot be matched.
	tokens, tokErr := api.Call(ctx, cl, api.Ops.TokenList(), api.NoBody{})
	labels = map[string]string{}
	for _, t := range tokens {
		if t.Label != "" {
			labels[t.ID] = t.Label
		}
	}
	v := url.Values{}
	if q.actor != "" {
		actors := []string{q.actor}
		if tokErr == nil && !slices.ContainsFunc(tokens, func(t api.Token) bool { return t.ID == q.actor }) {
			actors = nil
			for _, t := range tokens {
				if t.Label == q.actor {
					actors = append(actors, t.ID)
				}
			}
			if len(actors) == 0 {
				return nil, nil, &api.APIError{Status: 404, Code: "not_found", Message: fmt.Sprintf("no token has the ID or label %q (metalhall token list)", q.actor)}
			}
		}
		v["actor"] = actors
	}
	if !q.since.IsZero() {
		v.Set("since", q.since.UTC().Format(time.RFC3339))
	}
	setQ(v, "action", q.action)
	setQ(v, "outcome", q.outcome)
	setQ(v, "tenant", q.tenant)
	setQ(v, "after", q.after)
	setQ(v, "before", q.before)
	if q.limit > 0 {
		v.Set("limit", strconv.Itoa(q.limit))
	}
	events, err = api.Call(ctx, cl, api.Ops.AuditList().Query(v), api.NoBody{})
	if err != nil {
		return nil, nil, err
	}
	return events, labels, nil
}

// auditNextPage says, for a full page, where the next one starts: after
// its last event when paging forward, before its first otherwise.
func auditNextPage(q auditQuery, page []inventory.Event) string {
	limit := cmp.Or(q.limit, 1000)
	if len(page) < limit {
		return ""
	}
	if q.after != "" {
		return fmt.Sprintf("more events follow: --after %d", page[len(page)-1].Seq)
	}
	return fmt.Sprintf("older events: --before %d", page[0].Seq)
}
