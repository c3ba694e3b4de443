package netboot

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type countingSink struct {
	mu      sync.Mutex
	batches int
	events  int
	leases  []Lease
	fail    bool
}

func (s *countingSink) WriteEvents(_ context.Context, evs []Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("disk full")
	}
	s.batches++
	s.events += len(evs)
	return nil
}

func (s *countingSink) WriteLeases(_ context.Context, ls []Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leases = append(s.leases, ls...)
	return nil
}

func TestAsyncRecorderDropsWhenFull(t *testing.T) {
	sink := &countingSink{}
	r := NewAsyncRecorder(sink, AsyncRecorderConfig{Buffer: 10, FlushInterval: time.Hour, MaxBatch: 4})
	for range 25 {
		r.Event(Event{Step: StepTFTP}) // nobody drains yet: never blocks
	}
	if st := r.Stats(); st.DroppedEvents != 15 {
		t.Fatalf("dropped %d, want 15", st.DroppedEvents)
	}
	// Leases coalesce per MAC.
	for i := range 5 {
		r.Lease(Lease{MAC: "m1", IP: netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})})
	}
	r.Lease(Lease{MAC: "m2"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	cancel()
	<-done
	if sink.events != 10 || sink.batches != 3 {
		t.Errorf("events %d in %d batches, want 10 in 3", sink.events, sink.batches)
	}
	if len(sink.leases) != 2 {
		t.Fatalf("leases %+v", sink.leases)
	}
	for _, l := range sink.leases {
		if l.MAC == "m1" && l.IP != netip.MustParseAddr("10.0.0.4") {
			t.Errorf("lease not the newest: %+v", l)
		}
	}
}

func TestAsyncRecorderConcurrent(t *testing.T) {
	sink := &countingSink{}
	r := NewAsyncRecorder(sink, AsyncRecorderConfig{Buffer: 64, FlushInterval: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				r.Event(Event{Step: StepDHCPOffer})
				r.Lease(Lease{MAC: "x"})
			}
		}()
	}
	wg.Wait()
	cancel()
	<-done
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if uint64(sink.events)+r.Stats().DroppedEvents != 8000 {
		t.Errorf("written %d + dropped %d != 8000", sink.events, r.Stats().DroppedEvents)
	}
}

// A renewal that changes only the expiry is not written again while the
// stored lease runs for more than half of the new one; any other change,
// or a stored lease in its second half, is written.
func TestAsyncRecorderWritesARenewalOnlyWhenItChangesSomething(t *testing.T) {
	sink := &countingSink{}
	r := NewAsyncRecorder(sink, AsyncRecorderConfig{FlushInterval: time.Hour})
	ctx := context.Background()
	ip := netip.MustParseAddr("10.0.0.7")
	now := time.Now()
	written := func() int {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.leases)
	}
	r.Lease(Lease{MAC: "m1", IP: ip, Hostname: "h", Expires: now.Add(time.Hour)})
	r.flushLeases(ctx)
	if written() != 1 {
		t.Fatalf("the first lease was not written: %+v", sink.leases)
	}
	// The same lease again a moment later: nothing to write.
	r.Lease(Lease{MAC: "m1", IP: ip, Hostname: "h", Expires: now.Add(time.Hour + time.Second)})
	r.flushLeases(ctx)
	if written() != 1 || r.Stats().UnchangedLeases != 1 {
		t.Fatalf("an unchanged renewal was written again: %d writes, stats %+v", written(), r.Stats())
	}
	// Another address, another hostname: written.
	r.Lease(Lease{MAC: "m1", IP: netip.MustParseAddr("10.0.0.8"), Hostname: "h", Expires: now.Add(time.Hour)})
	r.flushLeases(ctx)
	r.Lease(Lease{MAC: "m1", IP: netip.MustParseAddr("10.0.0.8"), Hostname: "h2", Expires: now.Add(time.Hour)})
	r.flushLeases(ctx)
	if written() != 3 {
		t.Fatalf("changed leases not written: %+v", sink.leases)
	}
	// A longer lease than the stored one has left twice over: the stored
	// one would lapse before the client's renewal time, so it is written.
	r.Lease(Lease{MAC: "m1", IP: netip.MustParseAddr("10.0.0.8"), Hostname: "h2", Expires: now.Add(3 * time.Hour)})
	r.flushLeases(ctx)
	if written() != 4 {
		t.Fatalf("a renewal past twice the stored lease's time left was not written: %+v", sink.leases)
	}
	// Back to an earlier address while a change is pending: the pending
	// change is replaced, not kept, or the store would end with the wrong
	// address.
	r.Lease(Lease{MAC: "m2", IP: ip, Expires: now.Add(time.Hour)})
	r.flushLeases(ctx)
	r.Lease(Lease{MAC: "m2", IP: netip.MustParseAddr("10.0.0.9"), Expires: now.Add(time.Hour)})
	r.Lease(Lease{MAC: "m2", IP: ip, Expires: now.Add(time.Hour)})
	r.flushLeases(ctx)
	sink.mu.Lock()
	last := sink.leases[len(sink.leases)-1]
	sink.mu.Unlock()
	if last.MAC != "m2" || last.IP != ip {
		t.Fatalf("the store ends with %+v for m2, want %v", last, ip)
	}
}

// A batch the sink refused is not taken as stored: the next renewal is
// written.
func TestAsyncRecorderWritesARenewalAgainAfterAFailedWrite(t *testing.T) {
	sink := &failingLeaseSink{}
	r := NewAsyncRecorder(sink, AsyncRecorderConfig{FlushInterval: time.Hour})
	ctx := context.Background()
	l := Lease{MAC: "m1", IP: netip.MustParseAddr("10.0.0.7"), Expires: time.Now().Add(time.Hour)}
	sink.fail = true
	r.Lease(l)
	r.flushLeases(ctx)
	sink.fail = false
	r.Lease(l)
	r.flushLeases(ctx)
	if sink.stored != 1 || r.Stats().UnchangedLeases != 0 {
		t.Fatalf("stored %d, stats %+v: want the renewal written after the failed batch", sink.stored, r.Stats())
	}
}

type failingLeaseSink struct {
	fail   bool
	stored int
}

func (s *failingLeaseSink) WriteEvents(context.Context, []Event) error { return nil }

func (s *failingLeaseSink) WriteLeases(_ context.Context, ls []Lease) error {
	if s.fail {
		return errors.New("disk full")
	}
	s.stored += len(ls)
	return nil
}
