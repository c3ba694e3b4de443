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
