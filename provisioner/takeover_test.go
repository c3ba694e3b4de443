package provisioner

import (
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// TestATakeoverBootsAgainOnlyFromAStepThatNeedsTheAgent walks every step
// of every kind of job: taken over while running a step that needs the
// agent, the job goes back to set-pxe with the agent's reports cleared and
// the boot's attempts counted afresh; at any other step nothing changes
// (startStep then runs that step again).
func TestATakeoverBootsAgainOnlyFromAStepThatNeedsTheAgent(t *testing.T) {
	now := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	for _, kind := range []inventory.JobKind{inventory.JobCommission, inventory.JobProvision, inventory.JobRelease, inventory.JobPower} {
		steps, _ := plan(kind)
		for i, at := range steps {
			j := &inventory.Job{ID: "j1", Machine: "m1", Kind: kind, State: inventory.JobRunning, Instance: "a",
				AgentSeenAt: now.Add(-time.Minute), AgentDone: true, AgentOK: true, Progress: inventory.JobProgress{Bytes: 1 << 20, At: now}}
			for k, name := range steps {
				s := inventory.JobStep{Name: name, State: inventory.StepDone, Attempts: 2}
				if k == i {
					s.State = inventory.StepRunning
				} else if k > i {
					s.State, s.Attempts = inventory.StepPending, 0
				}
				j.Steps = append(j.Steps, s)
			}
			evs, ok := takeOver(j, i, "a", "b", now)
			if ok != needsAgent(at) {
				t.Errorf("%s job taken over at %s: rewound %v", kind, at, ok)
				continue
			}
			if !ok {
				if j.Steps[i].State != inventory.StepRunning || j.Steps[i].Attempts != 2 || j.AgentSeenAt.IsZero() {
					t.Errorf("%s job taken over at %s: changed without a rewind: %+v", kind, at, j)
				}
				continue
			}
			if j.StepName() != stepSetPXE || j.Steps[j.CurrentStep()].State != inventory.StepRunning || j.Steps[j.CurrentStep()].Attempts != 1 {
				t.Errorf("%s job taken over at %s: now at %s (%s)", kind, at, j.StepName(), stepNames(j))
			}
			for k := j.CurrentStep() + 1; k < len(j.Steps); k++ {
				if s := j.Steps[k]; s.State != inventory.StepPending || s.Attempts != 0 {
					t.Errorf("%s job taken over at %s: step %s %s after %d attempts, want pending, none", kind, at, s.Name, s.State, s.Attempts)
				}
			}
			if !j.AgentSeenAt.IsZero() || j.AgentDone || j.AgentOK || j.Progress != (inventory.JobProgress{}) {
				t.Errorf("%s job taken over at %s: the old agent's reports kept: %+v", kind, at, j)
			}
			if len(evs) != 2 || evs[0].Action != "job.taken-over" || evs[1].Action != "step.started" ||
				!strings.Contains(evs[0].Detail, "taken over from instance a by instance b after a stopped answering; it was at "+at) {
				t.Errorf("%s job taken over at %s: events %+v", kind, at, evs)
			}
		}
	}
}
