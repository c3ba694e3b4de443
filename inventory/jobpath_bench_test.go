package inventory

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
)

// jobPathFixture is a rack of 40 machines, each commissioning with a job
// of a dozen steps, as a storm's commission phase has them. Commits skip
// fsync: the benchmarks measure the CPU of the path, not the disk.
func jobPathFixture(b *testing.B) (*Store, []*Job) {
	b.Helper()
	s := openTestStore(b, filepath.Join(b.TempDir(), "metalhall.db"), Options{NoSync: true})
	b.Cleanup(func() { s.Close() })
	must(s.CreateSite(ctx, Site{Name: "s1"}))
	must(s.CreateHall(ctx, Hall{Name: "h1", Site: "s1"}))
	must(s.CreatePhase(ctx, Phase{Hall: "h1", Number: 1, BudgetW: 1_000_000}))
	must(s.SetPhaseState(ctx, "h1", 1, PhaseCommissioning))
	must(s.CreateRack(ctx, Rack{Name: "r1", Hall: "h1", Phase: 1, Units: 48, BudgetW: 44_000}))
	var steps []JobStep
	for _, n := range []string{"bmc-check", "check-sel", "power-limit", "set-pxe", "power-cycle", "wait-agent",
		"inspect", "check-profile", "wipe", "set-disk-boot", "power-off", "done"} {
		steps = append(steps, JobStep{Name: n})
	}
	var jobs []*Job
	for i := 1; i <= 40; i++ {
		e := machine(fmt.Sprintf("r1-m%02d", i), "r1", i, macN(i))
		e.Machine.BMC.Address = fmt.Sprintf("r1-bmc-%d", i)
		e.Machine.Profile = "hgx-h100"
		must(s.EnrollMachine(ctx, e))
		jobs = append(jobs, must(s.StartJob(ctx, Job{Machine: e.Machine.Name, Kind: JobCommission, Steps: slices.Clone(steps), Actor: "bench"}, MachineCommissioning)))
	}
	return s, jobs
}

// BenchmarkJobStepCycle is what a running job's worker does with the
// store for one step: the step's mark (one update through the group
// commit), then the reads around it — the loop's read of the job, the
// step's read of its machine, the wait's read of the job.
func BenchmarkJobStepCycle(b *testing.B) {
	s, jobs := jobPathFixture(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		j := jobs[i%len(jobs)]
		if _, err := s.UpdateJobOnly(ctx, j.ID, func(j *Job) error {
			k := j.CurrentStep()
			if k == len(j.Steps) {
				for s := range j.Steps {
					j.Steps[s].State = StepPending
				}
				k = 0
			}
			j.Steps[k].State, j.Steps[k].Attempts, j.State = StepDone, j.Steps[k].Attempts+1, JobRunning
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Job(ctx, j.ID); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Machine(ctx, j.Machine); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Job(ctx, j.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJobRead is one read of a running job that has not changed
// since it was last read: a wait's look, an agent call's token check.
func BenchmarkJobRead(b *testing.B) {
	s, jobs := jobPathFixture(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := s.Job(ctx, jobs[i%len(jobs)].ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRackMachines lists a rack's 40 machines, as a commission job's
// end does to tell whether its rack is done.
func BenchmarkRackMachines(b *testing.B) {
	s, _ := jobPathFixture(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if ms, err := s.Machines(ctx, MachineFilter{Rack: "r1"}); err != nil || len(ms) != 40 {
			b.Fatal(len(ms), err)
		}
	}
}
