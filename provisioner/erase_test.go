package provisioner

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

func passedErase(disk string) wire.EraseRecord {
	now := time.Now().UTC()
	return wire.EraseRecord{Disk: disk, Model: "SAMSUNG MZQL27T6HBLA", Serial: "S6CKNA0W" + disk, SizeBytes: 1 << 40,
		Method: wire.EraseNVMeSanitizeCrypto, Level: wire.LevelPurge, Result: wire.ErasePassed, Started: now, Ended: now,
		Verification: wire.EraseVerification{Samples: 66, SampleBytes: 4096, Other: 66, Summary: "66 samples of 4096 B: 0 still hold the canary, 0 zero, 66 other data"}}
}

func TestReleaseFilesTheEraseReportAndAuditsEachDisk(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	m := must(l.inv.Machine(ctx, "m1"))
	if j.State != inventory.JobSucceeded || m.State != inventory.MachineAvailable || j.WipeMode != string(wire.WipeCertified) {
		t.Fatalf("release: job %s %q wipe %q, machine %s", j.State, j.Error, j.WipeMode, m.State)
	}
	rep := must(l.inv.EraseReport(ctx, "m1", j.ID))
	if len(rep.Disks) != 1 || rep.Disks[0].Method != wire.EraseNVMeSanitizeCrypto || !rep.Passed() {
		t.Errorf("report %+v", rep)
	}
	var audited []string
	for _, e := range must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"})) {
		if e.Action == "erase.disk" {
			audited = append(audited, e.Outcome+" "+e.Detail)
		}
	}
	if len(audited) != 1 || !strings.Contains(audited[0], "ok nvme0n1") || !strings.Contains(audited[0], "nvme-sanitize-crypto, NIST 800-88 purge") {
		t.Errorf("audit: %q", audited)
	}
}

// TestReleaseWithAFailedDiskFailsTheMachine: one disk of two failed its
// verification: the job fails naming it, the machine is failed (not
// available), and both records are on file.
func TestReleaseWithAFailedDiskFailsTheMachine(t *testing.T) {
	l := newLab(t, Config{})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, hgx(8), nil)
		bad := passedErase("nvme1n1")
		bad.Result, bad.Error = wire.EraseFailed, "verify: 3 of 66 sample blocks still hold the data written before the nvme-sanitize-crypto"
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: false, Step: wire.StepWipe, Error: "erase failed on 1 of 2 disks: nvme1n1: verify",
			Erase: []wire.EraseRecord{passedErase("nvme0n1"), bad}}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepWipe || !strings.Contains(m.Reason, "nvme1n1") {
		t.Fatalf("job %s, machine %s step %q reason %q", j.State, m.State, m.FailedStep, m.Reason)
	}
	rep := must(l.inv.EraseReport(context.Background(), "m1", j.ID))
	if len(rep.Disks) != 2 || rep.Passed() {
		t.Errorf("report %+v", rep)
	}
}

// TestReleaseDoneWithoutEraseRecordsFails: an agent that says "done"
// without a record per disk (an old boot environment, or a forged done)
// does not make the machine available.
func TestReleaseDoneWithoutEraseRecordsFails(t *testing.T) {
	l := newLab(t, Config{})
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, hgx(8), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepWipe, Detail: "wiped"}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	m := must(l.inv.Machine(context.Background(), "m1"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || !strings.Contains(m.Reason, "no erase record") {
		t.Fatalf("job %s, machine %s reason %q", j.State, m.State, m.Reason)
	}
}

func TestReleaseRefusesAnUnknownWipeMode(t *testing.T) {
	l := newLab(t, Config{})
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	_, err := l.eng.Submit(context.Background(), Request{Kind: inventory.JobRelease, Machine: "m1", WipeMode: "gentle"})
	if err == nil || !strings.Contains(err.Error(), "use certified") {
		t.Fatalf("err %v", err)
	}
	if m := must(l.inv.Machine(context.Background(), "m1")); m.State != inventory.MachineDeployed {
		t.Errorf("machine %s after a refused release", m.State)
	}
}

// TestOnlyACertifiedEraseClearsTheWayToAnotherTenant: a fast wipe leaves
// the machine available to the tenant that had it, but it may not change
// hands until a certified erase has run; a certified release clears it.
func TestOnlyACertifiedEraseClearsTheWayToAnotherTenant(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	must(l.inv.CreateTenant(ctx, inventory.Tenant{Name: "ta"}))
	must(l.inv.CreateTenant(ctx, inventory.Tenant{Name: "tb"}))
	must(l.inv.UpdateMachine(ctx, "m1", func(m *inventory.Machine) error { m.Tenant, m.NeedsErase = "ta", true; return nil }))

	j := l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1", WipeMode: string(wire.WipeFast)}).ID)
	if m := must(l.inv.Machine(ctx, "m1")); j.State != inventory.JobSucceeded || m.State != inventory.MachineAvailable || !m.NeedsErase {
		t.Fatalf("fast release: job %s %q, machine %s needs erase %v", j.State, j.Error, m.State, m.NeedsErase)
	}
	_, err := l.inv.AssignMachineTenant(ctx, "m1", "tb")
	var he *inventory.HandoverError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "certified erase") {
		t.Fatalf("handover after a fast wipe: %v", err)
	}

	j = l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	if m := must(l.inv.Machine(ctx, "m1")); j.State != inventory.JobSucceeded || m.NeedsErase {
		t.Fatalf("certified release: job %s %q, needs erase %v", j.State, j.Error, m.NeedsErase)
	}
	if _, err := l.inv.AssignMachineTenant(ctx, "m1", "tb"); err != nil {
		t.Fatalf("handover after a certified erase: %v", err)
	}
}
