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
	s, err := Open(filepath.Join(t.TempDir(), "metalhall.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
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
