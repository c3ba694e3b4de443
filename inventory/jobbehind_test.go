package inventory

import (
	"path/filepath"
	"testing"
)

// TestJobUpdatesWrittenBehindAreStoredInOrderByTheNextWriteOrClose: an
// update nobody waits for (an agent's progress) is stored, before the
// updates made after it, by whichever commit comes next; and Close stores
// what is still queued, so a clean stop loses none.
func TestJobUpdatesWrittenBehindAreStoredInOrderByTheNextWriteOrClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metalhall.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hallFixture(t, s)
	must(s.EnrollMachine(ctx, machine("m1", "r1", 1, "02:00:00:00:00:01")))
	j := must(s.StartJob(ctx, Job{Machine: "m1", Kind: JobCommission, Steps: []JobStep{{Name: "inspect"}}}, MachineCommissioning))

	s.UpdateJobBehind(j.ID, func(j *Job) error { j.Progress.Bytes = 1; return nil })
	got := must(s.UpdateJobOnly(ctx, j.ID, func(j *Job) error {
		if j.Progress.Bytes != 1 {
			t.Errorf("the waited update saw %d bytes: the earlier update written behind was not applied first", j.Progress.Bytes)
		}
		j.Progress.Bytes *= 10
		return nil
	}))
	if got.Progress.Bytes != 10 {
		t.Errorf("after both updates: %d bytes, want 10", got.Progress.Bytes)
	}

	s.UpdateJobBehind(j.ID, func(j *Job) error { j.Progress.Bytes = 20; return nil })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := must(s.Job(ctx, j.ID)); got.Progress.Bytes != 20 {
		t.Errorf("after Close and Open: %d bytes, want the update queued before Close (20)", got.Progress.Bytes)
	}
}
