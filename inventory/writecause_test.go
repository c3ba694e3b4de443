package inventory

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// TestWriteCausesNameTheCallerAndWhoCommitted: a direct write counts one
// write and one commit for its method and caller; an update written
// behind counts a write for its caller and no commit, and the commit that
// carries it counts for the writer that made it; the commits by site add
// up to the store's write transactions.
func TestWriteCausesNameTheCallerAndWhoCommitted(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{NoSync: true})
	defer s.Close()
	opened := s.WriteTransactions()
	hallFixture(t, s)
	must(s.EnrollMachine(ctx, machine("m1", "r1", 1, "02:00:00:00:00:01")))
	j := must(s.StartJob(ctx, Job{Machine: "m1", Kind: JobCommission, Steps: []JobStep{{Name: "inspect"}}}, MachineCommissioning))

	before := s.WriteTransactions()
	causesBefore := byOp(s.WriteCauses())
	s.UpdateJobBehind(j.ID, func(j *Job) error { j.Progress.Bytes = 1; return nil })
	must(s.UpdateJobOnly(ctx, j.ID, func(j *Job) error { return nil }))
	after := byOp(s.WriteCauses())

	const me = "inventory.TestWriteCausesNameTheCallerAndWhoCommitted"
	behind, only := after["UpdateJobBehind"], after["UpdateJobOnly"]
	if behind.Caller != me || only.Caller != me {
		t.Errorf("callers %q and %q, want %q", behind.Caller, only.Caller, me)
	}
	if d := behind.Writes - causesBefore["UpdateJobBehind"].Writes; d != 1 || behind.Commits != 0 {
		t.Errorf("the update written behind: %d writes, %d commits; want 1 and 0", d, behind.Commits)
	}
	if d := only.Commits - causesBefore["UpdateJobOnly"].Commits; d != 1 {
		t.Errorf("the waited update committed %d times, want once (carrying the one behind)", d)
	}
	if d := only.Writes - causesBefore["UpdateJobOnly"].Writes; d != 1 {
		t.Errorf("the waited update counted %d writes, want 1", d)
	}
	if got := s.WriteTransactions() - before; got != 1 {
		t.Errorf("%d write transactions, want 1", got)
	}
	// Open's own (schema, migrations) are not counted by site.
	var commits uint64
	for _, c := range s.WriteCauses() {
		commits += c.Commits
		if strings.Contains(c.Caller, "github.com/") || c.Op == "" {
			t.Errorf("site %+v: the op or the caller is not named", c)
		}
	}
	if commits != s.WriteTransactions()-opened {
		t.Errorf("commits by site add up to %d, the store counted %d write transactions after Open", commits, s.WriteTransactions()-opened)
	}
}

func byOp(cs []WriteCause) map[string]WriteCause {
	out := map[string]WriteCause{}
	for _, c := range cs {
		out[c.Op] = c
	}
	return out
}

// TestGroupCommitWaitsForCompanyOnlyAfterSharing: the next committer
// waits for company (JobCommitWindow) after a commit that carried more
// than one waited-for update, and not after one that carried a single
// one, with or without updates written behind: a lone writer (one job,
// a quiet hall) never waits.
func TestGroupCommitWaitsForCompanyOnlyAfterSharing(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{NoSync: true})
	defer s.Close()
	nop := func(kv.Tx, *viewChanges) error { return nil }
	commit := func(waited, behind int) {
		s.jobQ.commit.Lock()
		defer s.jobQ.commit.Unlock()
		s.jobQ.mu.Lock()
		for range waited {
			s.jobQ.pending = append(s.jobQ.pending, &jobUpdate{txfn: nop, done: make(chan struct{})})
		}
		for range behind {
			s.jobQ.pending = append(s.jobQ.pending, &jobUpdate{txfn: nop, done: make(chan struct{}), behindSince: time.Now()})
		}
		s.jobQ.mu.Unlock()
		s.commitQueued()
	}
	if s.jobQ.sharing() {
		t.Fatal("a new store waits for company")
	}
	commit(1, 3)
	if s.jobQ.sharing() {
		t.Error("after a commit of one waited-for update and three behind: waits for company, want not")
	}
	commit(2, 0)
	if !s.jobQ.sharing() {
		t.Error("after a commit of two waited-for updates: does not wait for company, want it to")
	}
	commit(1, 0)
	if s.jobQ.sharing() {
		t.Error("after a lone update again: waits for company, want not")
	}
}
