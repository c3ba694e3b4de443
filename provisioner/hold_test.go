package provisioner

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// TestHeldStoreRunsNoJobUntilResumed stops the engine inside a provision
// job, puts the store on hold (as a restore does), and starts a new engine
// on it: the job stays paused and no BMC call is made, new jobs are
// refused, until Resume; then the job runs to its end.
func TestHeldStoreRunsNoJobUntilResumed(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	l.machine("m2", "r0", 3, inventory.MachineAvailable)
	p := newPause(1)
	l.bmc.pauses["power cycle"] = p
	id := l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID
	select {
	case <-p.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("never reached the power cycle")
	}
	l.stop()
	if err := l.inv.SetHold(ctx, inventory.Hold{Reason: "restored from a backup"}); err != nil {
		t.Fatal(err)
	}
	close(p.released)
	l.bmc.mu.Lock()
	before := len(l.bmc.calls)
	l.bmc.mu.Unlock()

	l.eng = must(New(l.inv, l.bmc, l.eng.cfg))
	l.srv.Config.Handler = l.eng.AgentHandler()
	l.start()
	// The barrier: the scheduler has looked at the queue twice and left
	// it alone.
	for i := 0; l.eng.heldRounds.Load() < 2; i++ {
		if i > 2000 {
			t.Fatal("the scheduler never ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := l.eng.Submit(ctx, Request{Kind: inventory.JobPower, Machine: "m2", PowerAction: inventory.PowerOn})
	var held *inventory.HeldError
	if !errors.As(err, &held) {
		t.Fatalf("a job submitted on hold: %v", err)
	}
	l.bmc.mu.Lock()
	after := len(l.bmc.calls)
	l.bmc.mu.Unlock()
	if after != before {
		t.Fatalf("BMC calls on hold: %v", l.bmc.calls[before:])
	}
	if j := must(l.inv.Job(ctx, id)); j.State.Finished() || j.StepName() != stepPowerCycle {
		t.Fatalf("paused job moved: %s at %s", j.State, j.StepName())
	}
	m1 := must(l.inv.Machine(ctx, "m1"))
	if b, err := l.eng.Boot(ctx, netboot.Client{MAC: must(net.ParseMAC(m1.MACs[0])), Arch: netboot.ArchEFIx64}); err != nil || b.Kind != netboot.BootNone {
		t.Fatalf("a paused job's machine boots %v (%v): no agent token while on hold", b.Kind, err)
	}

	h, paused, err := l.eng.Resume(ctx, "tok-admin")
	if err != nil || h.Reason != "restored from a backup" || len(paused) != 1 || paused[0].ID != id {
		t.Fatalf("resume: %+v %v %v", h, paused, err)
	}
	if j := l.waitJob(id); j.State != inventory.JobSucceeded {
		t.Fatalf("after resume: %s (%s) %s", j.State, stepNames(j), j.Error)
	}
	evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"}))
	found := false
	for _, e := range evs {
		found = found || (e.Action == "job.resumed" && e.Actor == "tok-admin")
	}
	if !found {
		t.Error("no job.resumed event names who resumed")
	}
	if _, _, err := l.eng.Resume(ctx, "tok-admin"); !errors.Is(err, inventory.ErrConflict) {
		t.Fatalf("a second resume: %v", err)
	}
}

func TestHeldStoreRefusesEveryBMCCall(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	l.stop()
	if err := l.inv.SetHold(ctx, inventory.Hold{Reason: "restored from a backup"}); err != nil {
		t.Fatal(err)
	}
	a := &Machines{Inv: l.inv} // no sealer nor controller: nothing may get that far
	m := must(l.inv.Machine(ctx, "m1"))
	var held *inventory.HeldError
	if _, err := a.PowerState(ctx, m); !errors.As(err, &held) {
		t.Fatalf("power state on hold: %v", err)
	}
	if err := a.SetPower(ctx, m, inventory.PowerOn); !errors.As(err, &held) {
		t.Fatalf("power on on hold: %v", err)
	}
	if err := a.SetBootDevice(ctx, m, inventory.BootPXE, false); !errors.As(err, &held) {
		t.Fatalf("boot device on hold: %v", err)
	}
	if tg, err := a.BMCTargets(ctx); err != nil || len(tg) != 0 {
		t.Fatalf("power sync targets on hold: %v %v", tg, err)
	}
}
