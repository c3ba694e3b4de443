package provisioner

import (
	"context"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// TestProvisionWritesOncePerStepAndAgentCall is the write budget of a
// provision (issue 11): one commit to queue the job with its event, one to
// start the first step, one per step end (carrying the next step's start
// and both events; the last one carries the job's end and the machine's
// new state), and one per agent call and metadata fetch, each with its
// event. Before the split it took 36 commits for the same job.
func TestProvisionWritesOncePerStepAndAgentCall(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	if j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1", Actor: "tech"}).ID); j.State != inventory.JobSucceeded {
		t.Fatalf("commission: %s %s", j.State, j.Error)
	}
	evsBefore := len(must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"})))
	before := l.inv.WriteTransactions()
	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("provision: %s %s", j.State, j.Error)
	}
	writes := l.inv.WriteTransactions() - before
	// goodAgent calls task, inspection, one progress and done; the
	// installed OS fetches its metadata once.
	const agentCalls, metadata = 4, 1
	if want := uint64(2 + len(j.Steps) + agentCalls + metadata); writes != want {
		t.Errorf("a provision of %d steps took %d write transactions, want %d", len(j.Steps), writes, want)
	}
	// Nothing was saved by leaving events out: queued, each step's start
	// and end, the agent's task, inspection and done, the metadata fetch
	// and the job's end.
	evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"}))[evsBefore:]
	if want := 1 + 2*len(j.Steps) + 3 + 1 + 1; len(evs) != want {
		var got []string
		for _, e := range evs {
			got = append(got, e.Action)
		}
		t.Errorf("%d events %v, want %d", len(evs), got, want)
	}
}
