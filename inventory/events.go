package inventory

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// AppendEvent adds an event to the log and returns it with its sequence
// number. Concurrent appends share transactions (bbolt Batch), which is
// what keeps a busy API's audit trail cheap.
func (s *Store) AppendEvent(ctx context.Context, e Event) (Event, error) {
	if e.Subject == "" || e.Action == "" {
		return Event{}, invalid("event", "subject and action are required")
	}
	if err := CheckSubject(e.Subject); err != nil {
		return Event{}, err
	}
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	var out Event
	err := s.batch(func(tx *bolt.Tx) error {
		// Batch may run this function twice: compute everything afresh.
		var err error
		out, err = putEvent(tx, e)
		return err
	})
	return out, err
}

// putEvent appends an event inside a write transaction, for a change and
// its event that must commit together.
func putEvent(tx *bolt.Tx, ev Event) (Event, error) {
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
}

// Events returns events in order of sequence.
func (s *Store) Events(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	var out []Event
	keep := func(e *Event) bool {
		return (f.Actor == "" || e.Actor == f.Actor) && (f.Tenant == "" || e.Tenant == f.Tenant || (e.Tenancy != "" && slices.Contains(f.Tenancies, e.Tenancy))) &&
			(f.Tenancy == "" || e.Tenancy == f.Tenancy) &&
			(f.Since.IsZero() || !e.Time.Before(f.Since)) && e.Seq > f.After
	}
	err := s.view(func(tx *bolt.Tx) error {
		events := bkt(tx, bEvents)
		// Walk newest first so Limit keeps the most recent, then reverse.
		if f.Subject != "" {
			prefix := append([]byte(f.Subject), 0)
			c := bkt(tx, bIdxSubject).Cursor()
			k, _ := c.Seek(append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
			if k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
			for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < f.Limit; k, _ = c.Prev() {
				if len(k) != len(prefix)+8 {
					continue // another subject that starts with this one and a NUL
				}
				var e Event
				if err := getJSON(events, k[len(prefix):], &e); err != nil {
					return fmt.Errorf("event index: %w", err)
				}
				if e.Seq <= f.After {
					break
				}
				if keep(&e) {
					out = append(out, e)
				}
			}
		} else {
			c := events.Cursor()
			for k, v := c.Last(); k != nil && len(out) < f.Limit; k, v = c.Prev() {
				var e Event
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("event %x: %w", k, err)
				}
				if e.Seq <= f.After {
					break
				}
				if keep(&e) {
					out = append(out, e)
				}
			}
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}
