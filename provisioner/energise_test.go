package provisioner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// tightRack makes rack r9 (30 kW) with m1, m2 and m3 rated 10 kW each; m1
// and m2 are on, measured at 12 and 11 kW (more than their ratings, as a
// GPU server under burn-in draws), so powering m3 on would take the rack
// to 33 kW.
func tightRack(l *lab) {
	ctx := context.Background()
	must(l.inv.CreateRack(ctx, inventory.Rack{Name: "r9", Hall: "h", Phase: 1, BudgetW: 30_000}))
	l.machine("m1", "r9", 1, inventory.MachineAvailable)
	l.machine("m2", "r9", 2, inventory.MachineAvailable)
	l.machine("m3", "r9", 3, inventory.MachineEnrolled)
	l.setDraw("m1", "on", 12_000)
	l.setDraw("m2", "on", 11_000)
}

func (l *lab) setDraw(name, power string, w int64) {
	l.t.Helper()
	if err := l.inv.RecordBMCStatus(context.Background(), name, inventory.BMCStatus{Power: power, Reachable: true, Outcome: "ok",
		ConsumedW: w, ReadAt: time.Now().UTC()}); err != nil {
		l.t.Fatal(err)
	}
}

// waitEvent waits until the machine has an event with action and returns it.
func (l *lab) waitEvent(machine, action string) inventory.Event {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range must(l.inv.Events(context.Background(), inventory.EventFilter{Subject: "machine/" + machine})) {
			if e.Action == action {
				return e
			}
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("no %s event for %s", action, machine)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCommissionWaitsForTheRackBudgetThenPowersOn(t *testing.T) {
	l := newLab(t, Config{})
	tightRack(l)
	j := l.submit(Request{Kind: inventory.JobCommission, Machine: "m3"})
	ev := l.waitEvent("m3", "step.waiting")
	if !strings.Contains(ev.Detail, "power-cycle waits for the rack's power budget") ||
		!strings.Contains(ev.Detail, "rack r9 would draw 33 kW of its 30 kW budget (over by 3 kW)") {
		t.Fatalf("waiting event %q", ev.Detail)
	}
	if n := l.bmc.count("m3", "power cycle"); n != 0 {
		t.Fatalf("m3 power-cycled %d times while the rack had no room", n)
	}
	// m1 powers off: its 12 kW goes, and m3 fits (11 + 10 of 30).
	l.setDraw("m1", "off", 12_000)
	done := l.waitJob(j.ID)
	if done.State != inventory.JobSucceeded {
		t.Fatalf("job %s: %s (%s)", done.State, done.Error, stepNames(done))
	}
	if n := l.bmc.count("m3", "power cycle"); n != 1 {
		t.Fatalf("m3 power cycles %d, want 1", n)
	}
	l.waitEvent("m3", "step.energised")
}

func TestCommissionPastTheWaitFailsWithTheRefusal(t *testing.T) {
	l := newLab(t, Config{EnergiseWait: 50 * time.Millisecond})
	tightRack(l)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m3"}).ID)
	m := must(l.inv.Machine(context.Background(), "m3"))
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepPowerCycle ||
		!strings.Contains(m.Reason, "rack r9 would draw 33 kW of its 30 kW budget") || !strings.Contains(m.Reason, "waited 50ms") {
		t.Fatalf("job %s, machine %s at %q: %q", j.State, m.State, m.FailedStep, m.Reason)
	}
	if n := l.bmc.count("m3", "power cycle"); n != 0 {
		t.Fatalf("m3 power-cycled %d times", n)
	}
}

func TestForcedCommissionPowersOnPastTheBudget(t *testing.T) {
	l := newLab(t, Config{})
	tightRack(l)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m3", ForcePower: true}).ID)
	if j.State != inventory.JobSucceeded || !j.ForcePower {
		t.Fatalf("job %s force %v: %s", j.State, j.ForcePower, j.Error)
	}
	for _, e := range must(l.inv.Events(context.Background(), inventory.EventFilter{Subject: "machine/m3"})) {
		if e.Action == "step.waiting" {
			t.Fatalf("a forced job waited: %q", e.Detail)
		}
	}
}

// A power job was allowed when it was asked for; if the rack filled up
// while it was queued it fails at once rather than power on later.
func TestPowerJobRefusedByTheInterlockFailsAtOnce(t *testing.T) {
	l := newLab(t, Config{})
	tightRack(l)
	l.machine("m4", "r0", 4, inventory.MachineAvailable) // another rack: plenty of room
	j := l.waitJob(l.submit(Request{Kind: inventory.JobPower, Machine: "m3", PowerAction: inventory.PowerOn}).ID)
	if j.State != inventory.JobFailed || !strings.Contains(j.Error, "rack r9 would draw 33 kW") || !strings.Contains(j.Error, "energisation interlock") {
		t.Fatalf("job %s: %q", j.State, j.Error)
	}
	if n := l.bmc.count("m3", "power on"); n != 0 {
		t.Fatalf("m3 powered on %d times", n)
	}
	// Powering off is never refused, and a machine in a rack with room
	// powers on.
	for _, r := range []Request{{Kind: inventory.JobPower, Machine: "m3", PowerAction: inventory.PowerOff},
		{Kind: inventory.JobPower, Machine: "m4", PowerAction: inventory.PowerOn}} {
		if j := l.waitJob(l.submit(r).ID); j.State != inventory.JobSucceeded {
			t.Fatalf("%s %s: %s %q", r.Machine, r.PowerAction, j.State, j.Error)
		}
	}
}

// Two machines whose power-ons fit the rack only one at a time: while the
// first is inside its BMC power call (not yet recorded on), its rating is
// reserved, and the second waits instead of taking the same headroom.
func TestConcurrentPowerOnsDoNotShareHeadroom(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	must(l.inv.CreateRack(ctx, inventory.Rack{Name: "r9", Hall: "h", Phase: 1, BudgetW: 30_000}))
	l.machine("m1", "r9", 1, inventory.MachineAvailable)
	l.machine("m2", "r9", 2, inventory.MachineEnrolled)
	l.machine("m3", "r9", 3, inventory.MachineEnrolled)
	l.setDraw("m1", "on", 12_000) // 12 + 10 fits 30; 12 + 10 + 10 does not
	p := newPause(1)
	l.bmc.mu.Lock()
	l.bmc.pauses["power cycle"] = p
	l.bmc.mu.Unlock()
	j2 := l.submit(Request{Kind: inventory.JobCommission, Machine: "m2"})
	j3 := l.submit(Request{Kind: inventory.JobCommission, Machine: "m3"})
	<-p.reached
	// One of them is inside its power call; the other must wait.
	deadline := time.Now().Add(10 * time.Second)
	var waiting inventory.Event
	for waiting.Action == "" {
		for _, n := range []string{"m2", "m3"} {
			for _, e := range must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/" + n})) {
				if e.Action == "step.waiting" {
					waiting = e
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("neither job waited while the other's power-on was under way")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(waiting.Detail, "power-ons under way add 10 kW") || !strings.Contains(waiting.Detail, "would draw 32 kW of its 30 kW budget") {
		t.Fatalf("waiting event %q", waiting.Detail)
	}
	close(p.released)
	for _, id := range []string{j2.ID, j3.ID} {
		if j := l.waitJob(id); j.State != inventory.JobSucceeded {
			t.Fatalf("job %s: %s %q", id, j.State, j.Error)
		}
	}
}
