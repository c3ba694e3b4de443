package inventory

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// AppendEvent adds an event to the log and returns it with its sequence
// number. Concurrent appends share transactions (bbolt Batch), which is
// what keeps a busy API's audit trail cheap.
func (s *Store) AppendEvent(ctx context.Context, e Event) (Event, error) {
	if err := checkEvent(&e, s.now); err != nil {
		return Event{}, err
	}
	var out Event
	err := s.batch(func(tx kv.Tx) error {
		// Batch may run this function twice: compute everything afresh.
		ev, err := putEvent(tx, e)
		out = ev
		return err
	})
	if err == nil {
		s.eventsAppended(out.Seq)
	}
	return out, err
}

// AppendEventBehind is AppendEvent written behind (see UpdateJobBehind):
// for an event of a job's step, which the step's end, written next,
// carries in its commit. It refuses an event that cannot be stored at
// once; a crash before the commit loses it, and the step, run again,
// says it again.
func (s *Store) AppendEventBehind(e Event) error {
	if err := checkEvent(&e, s.now); err != nil {
		return err
	}
	s.writeBehind(func(tx kv.Tx, vc *viewChanges) error { return s.putEvents(tx, vc, []Event{e}) })
	return nil
}

// checkEvent refuses an event that cannot be stored and stamps its time.
func checkEvent(e *Event, now func() time.Time) error {
	if e.Subject == "" || e.Action == "" {
		return invalid("event", "subject and action are required")
	}
	if err := CheckSubject(e.Subject); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = now().UTC()
	}
	return nil
}

// putEvent stores a checked event under the next sequence number, stamped
// with its subject's tenancy, and indexes it by subject.
func putEvent(tx kv.Tx, ev Event) (Event, error) {
	b := bkt(tx, bEvents)
	seq, err := b.NextSequence()
	if err != nil {
		return Event{}, err
	}
	ev.Seq = seq
	stampTenancy(tx, &ev)
	if err := putJSON(b, u64(seq), ev); err != nil {
		return Event{}, err
	}
	if err := bkt(tx, bIdxSubject).Put(subjectKey(ev.Subject, seq), []byte{0}); err != nil {
		return Event{}, err
	}
	return ev, nil
}

func subjectKey(subject string, seq uint64) []byte {
	k := append(append([]byte(subject), 0), make([]byte, 8)...)
	binary.BigEndian.PutUint64(k[len(k)-8:], seq)
	return k
}

// EventFilter selects events; zero fields match everything.
type EventFilter struct {
	Subject string    // exact, e.g. "machine/gpu-a01-07"
	Actor   string    // token ID
	Tenant  string    // only events about this tenant's objects
	Tenancy string    // only events of this tenancy (Machine.Tenancy)
	Since   time.Time // at or after
	After   uint64    // sequence numbers greater than this (for --follow)
	Limit   int       // newest Limit events; 0 means 1000

	// Tenancies widens Tenant: events of these tenancies are kept too
	// (a tenant's audit view: its requests, and all on its machines).
	Tenancies []string

	// Kinds keeps only events about objects of these kinds: the part of
	// the subject before the slash ("machine", "rack").
	Kinds []string
	// Actors narrows to events by any of these token IDs.
	Actors []string
	// Action is an action ("machine.update"), or a prefix of actions
	// ending in "." ("machine.").
	Action  string
	Outcome string // ok, refused, failed
	// Before keeps sequence numbers less than this (paging back).
	Before uint64
	// Oldest keeps the oldest Limit events after After instead of the
	// newest: paging forward. Sequence numbers only grow, so a page read
	// this way never changes under concurrent writes, and the next page
	// starts after its last event.
	Oldest bool
}

// match reports whether e passes every field of f but the subject (matched
// through the index) and the sequence bounds.
func (f *EventFilter) match(e *Event) bool {
	if len(f.Kinds) > 0 {
		kind, _, _ := strings.Cut(e.Subject, "/")
		if !slices.Contains(f.Kinds, kind) {
			return false
		}
	}
	return (f.Actor == "" || e.Actor == f.Actor) && (len(f.Actors) == 0 || slices.Contains(f.Actors, e.Actor)) &&
		(f.Tenant == "" || e.Tenant == f.Tenant || (e.Tenancy != "" && slices.Contains(f.Tenancies, e.Tenancy))) &&
		(f.Tenancy == "" || e.Tenancy == f.Tenancy) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since)) &&
		(f.Action == "" || e.Action == f.Action || strings.HasSuffix(f.Action, ".") && strings.HasPrefix(e.Action, f.Action)) &&
		(f.Outcome == "" || e.Outcome == f.Outcome)
}

// Events returns events in order of sequence.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	before := f.Before
	if before == 0 {
		before = math.MaxUint64
	}
	var out []Event
	// keep reports whether e is kept and whether the walk goes on.
	keep := func(e *Event) (more bool) {
		if f.Oldest && e.Seq >= before || !f.Oldest && e.Seq <= f.After {
			return false
		}
		if e.Seq > f.After && e.Seq < before && f.match(e) {
			out = append(out, *e)
		}
		return len(out) < f.Limit
	}
	err := s.view(func(tx kv.Tx) error {
		events := bkt(tx, bEvents)
		if f.Subject != "" {
			prefix := append([]byte(f.Subject), 0)
			c := bkt(tx, bIdxSubject).Cursor()
			var k []byte
			step := c.Prev
			if f.Oldest {
				k, _ = c.Seek(append(bytes.Clone(prefix), u64(f.After+1)...))
				step = c.Next
			} else {
				// Walk newest first so Limit keeps the most recent, then reverse.
				k, _ = c.Seek(append(bytes.Clone(prefix), u64(before)...))
				if k == nil {
					k, _ = c.Last()
				} else {
					k, _ = c.Prev()
				}
			}
			for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = step() {
				if len(k) != len(prefix)+8 {
					continue // another subject that starts with this one and a NUL
				}
				var e Event
				if err := getJSON(events, k[len(prefix):], &e); err != nil {
					return fmt.Errorf("event index: %w", err)
				}
				if !keep(&e) {
					break
				}
			}
			return nil
		}
		c := events.Cursor()
		var k, v []byte
		step := c.Prev
		if f.Oldest {
			k, v = c.Seek(u64(f.After + 1))
			step = c.Next
		} else {
			k, _ = c.Seek(u64(before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil; k, v = step() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			if !keep(&e) {
				break
			}
		}
		return nil
	})
	if !f.Oldest {
		slices.Reverse(out)
	}
	return out, err
}
