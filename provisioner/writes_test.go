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
// event — except that the agent's call-home and done end the steps that
// wait for them in their own commit (wait-agent, write-image), the
// installed OS's metadata fetch ends the last step and the job in its
// own, and the agent's progress reports are written behind, with its
// done. Before the split it took 36 commits for the same job; 15 before
// those merges, 11 now.
func TestProvisionWritesOncePerStepAndAgentCall(t *testing.T) {
	l := newLab(t, Config{})
	l.pace = true
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	cbefore, fbefore := l.inv.WriteTransactions(), flushes(l.inv)
	if j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1", Actor: "tech"}).ID); j.State != inventory.JobSucceeded {
		t.Fatalf("commission: %s %s", j.State, j.Error)
	}
	// A commission: queue, first step, four BMC steps' ends (bmc-check's
	// carries the BMC firmware and its event, written behind), call-home
	// (ending wait-agent), inspection (ending inspect), two more steps'
	// ends, the job's end and the agent's done. The done runs beside the
	// worker and may share its commits, so this is a ceiling (14 before
	// the firmware and the steps' events were written behind). A flush of
	// what was written behind by its timer (a step that took longer than
	// JobWriteBehind on a busy machine) is not counted against it.
	if got := l.inv.WriteTransactions() - cbefore - (flushes(l.inv) - fbefore); got > 12 {
		t.Errorf("a commission took %d write transactions, want at most 12", got)
	}
	evsBefore := len(must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"})))
	before, fbefore := l.inv.WriteTransactions(), flushes(l.inv)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("provision: %s %s", j.State, j.Error)
	}
	// Less the write-behind timer's flushes, as above.
	writes := l.inv.WriteTransactions() - before - (flushes(l.inv) - fbefore)
	// goodAgent calls task, inspection, one progress and done, of which
	// task, inspection and done commit (the progress rides with done); the
	// installed OS fetches its metadata once, which ends the last step and
	// the job. The steps cost one commit to start the first and one per
	// end but the last (with the next one's start), less the two the
	// agent's calls end.
	const agentCommits, metadata, endedByAgent = 3, 1, 2
	if want := uint64(1 + 1 + (len(j.Steps) - 1 - endedByAgent) + agentCommits + metadata); writes != want {
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

// flushes counts the commits made by the write-behind timer.
func flushes(inv *inventory.Store) uint64 {
	var n uint64
	for _, c := range inv.WriteCauses() {
		if c.Op == "flushBehind" {
			n += c.Commits
		}
	}
	return n
}
