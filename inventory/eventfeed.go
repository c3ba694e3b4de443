package inventory

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/metalhall/metalhall/inventory/kv"
)

// eventFeed wakes the followers of the whole event log after each commit
// that appends to it. There is one channel, closed and replaced on every
// such commit and shared by every follower: a follower costs no goroutine
// and no registration, only its own wait, so one that goes away leaves
// nothing behind.
type eventFeed struct {
	mu   sync.Mutex
	last uint64        // the newest committed event's sequence number
	ch   chan struct{} // closed by the next commit that appends
}

func newEventFeed(last uint64) *eventFeed {
	return &eventFeed{last: last, ch: make(chan struct{})}
}

// committed is called after a commit that appended events up to seq.
func (f *eventFeed) committed(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = max(f.last, seq)
	close(f.ch)
	f.ch = make(chan struct{})
}

func (f *eventFeed) next() (<-chan struct{}, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ch, f.last
}

// EventsCommitted returns a channel closed after the next commit that
// appends an event, and the sequence number of the newest event committed
// so far. Take it before reading the events, then wait on it: an event
// committed between the read and the wait still wakes the waiter.
func (s *Store) EventsCommitted() (<-chan struct{}, uint64) { return s.events.next() }

// EventsAfter returns, oldest first, at most f.Limit (0: 1000) of the
// events with sequence numbers above f.After that f selects, looking at
// no more than scan events (0: 10,000). next is the sequence number of the
// last event looked at (f.After when there was none): the point a
// follower continues from, so events it may not see are passed over once,
// not on every call. f.Subject and f.Since are not used here.
func (s *Store) EventsAfter(ctx context.Context, f EventFilter, scan int) (out []Event, next uint64, err error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	if scan <= 0 {
		scan = 10_000
	}
	next = f.After
	err = s.view(func(tx kv.Tx) error {
		c := bkt(tx, bEvents).Cursor()
		looked := 0
		for k, v := c.Seek(u64(f.After + 1)); k != nil && looked < scan && len(out) < f.Limit; k, v = c.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			looked++
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			next = binary.BigEndian.Uint64(k)
			if f.match(&e) {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, next, err
}
