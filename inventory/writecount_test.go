package inventory

import (
	"path/filepath"
	"sync"
	"testing"
)

// TestWriteTransactionsCountEachWriteOnce: one Update-based write adds
// one; concurrent batched writes add at least one and at most one each
// (bbolt shares a transaction among them); reads add nothing.
func TestWriteTransactionsCountEachWriteOnce(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{})
	defer s.Close()
	before := s.WriteTransactions()
	if _, err := s.CreateSite(ctx, Site{Name: "s1"}); err != nil {
		t.Fatal(err)
	}
	if got := s.WriteTransactions() - before; got != 1 {
		t.Fatalf("creating a site counted %d write transactions, want 1", got)
	}
	before = s.WriteTransactions()
	if _, err := s.Sites(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.WriteTransactions() - before; got != 0 {
		t.Fatalf("listing sites counted %d write transactions, want 0", got)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.AppendEvent(ctx, Event{Subject: "site/s1", Action: "test"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := s.WriteTransactions() - before; got < 1 || got > n {
		t.Fatalf("%d batched appends counted %d write transactions, want 1..%d", n, got, n)
	}
}

// TestEventsCarriedByAJobUpdateAreOneCommitAndWakeTheFeed: a job update
// with its events is one write transaction; the events are stored, and
// the event feed's followers wake on that commit as on AppendEvent's.
func TestEventsCarriedByAJobUpdateAreOneCommitAndWakeTheFeed(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{NoSync: true})
	defer s.Close()
	viewFixture(t, s)
	j := must(s.ActiveJob(ctx, "m2"))
	woken, last := s.EventsCommitted()
	before := s.WriteTransactions()
	_, err := s.RecordJobUpdate(ctx, j.ID, func(j *Job) ([]Event, error) {
		j.Steps[1].State = StepDone
		return []Event{{Subject: "machine/m2", Action: "step.done"}, {Subject: "machine/m2", Action: "step.started"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.WriteTransactions() - before; got != 1 {
		t.Errorf("a job update with two events took %d write transactions, want 1", got)
	}
	select {
	case <-woken:
	default:
		t.Fatal("the event feed did not wake on the job update's commit")
	}
	if _, now := s.EventsCommitted(); now != last+2 {
		t.Errorf("newest event %d, want %d", now, last+2)
	}
	evs := must(s.Events(ctx, EventFilter{Subject: "machine/m2"}))
	if n := len(evs); n < 2 || evs[n-2].Action != "step.done" || evs[n-1].Action != "step.started" {
		t.Errorf("events of m2: %+v", evs)
	}
	// A refused update stores neither the job nor its events.
	_, err = s.RecordJobUpdate(ctx, j.ID, func(j *Job) ([]Event, error) {
		return []Event{{Subject: "machine/m2", Action: "never"}}, invalid("x", "refused")
	})
	if err == nil {
		t.Fatal("refused update succeeded")
	}
	if evs2 := must(s.Events(ctx, EventFilter{Subject: "machine/m2"})); len(evs2) != len(evs) {
		t.Errorf("a refused update left events: %d, want %d", len(evs2), len(evs))
	}
}
