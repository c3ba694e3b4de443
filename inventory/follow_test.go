package inventory

import (
	"slices"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

// loadedViewText is the boot view a fresh load of s's committed state
// shows.
func loadedViewText(t *testing.T, s *Store) string {
	t.Helper()
	var vc viewChanges
	if err := s.view(func(tx kv.Tx) error { return loadView(tx, &vc) }); err != nil {
		t.Fatal(err)
	}
	fresh := newBootView()
	fresh.apply(&vc)
	return viewText(fresh)
}

// closed reports whether ch is closed, without waiting.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// On a Follower engine the views change from its change stream, not
// from the store's own writes: while the stream holds a commit back, the
// write has committed but the views do not show it; once the stream
// hands it out they do, as a fresh load would.
func TestViewsFollowTheChangeStreamNotTheirOwnWrites(t *testing.T) {
	fe := &followEngine{Engine: openBolt(t, "db")}
	s := openEngineStore(t, fe)
	viewFixture(t, s)
	if got, want := viewText(s.BootView()), loadedViewText(t, s); got != want {
		t.Fatalf("view fed by the stream:\n%s\nloaded:\n%s", got, want)
	}
	v := s.BootView()
	j2 := must(s.ActiveJob(ctx, "m2"))
	queue, subnets := v.Queue(), must(s.Subnets(ctx))
	woken, last := s.EventsCommitted()
	jobWoken := v.JobChanged(j2.ID)

	fe.hold()
	e := machine("m7", "r1", 20, macN(7))
	e.Machine.IP = "10.20.0.17"
	must(s.EnrollMachine(ctx, e))
	must(s.StartJob(ctx, Job{Machine: "m4", Kind: JobCommission, Steps: []JobStep{{Name: "bmc-check"}}}, MachineCommissioning))
	must(s.UpdateJobOnly(ctx, j2.ID, func(j *Job) error { j.Steps[1].State = StepDone; return nil }))
	must(s.CreateSubnet(ctx, Subnet{Name: "late", CIDR: "10.30.0.0/24", Gateway: "10.30.0.1"}))
	ev := must(s.AppendEvent(ctx, Event{Subject: "machine/m7", Action: "test"}))
	if err := s.SetHold(ctx, Hold{Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.LookupMAC(macKey(macN(7))); ok {
		t.Error("a held-back enrolment shows in LookupMAC: the write applied its own change")
	}
	if got := v.Queue(); !slices.Equal(got, queue) {
		t.Errorf("a held-back job shows in the queue: %+v", got)
	}
	if subs, _ := v.Subnets(); len(subs) != len(subnets) {
		t.Errorf("a held-back subnet shows: %+v", subs)
	}
	if closed(woken) || closed(jobWoken) {
		t.Error("a held-back commit woke the event feed or a job's waiters")
	}
	if s.Hold() != nil {
		t.Error("a held-back hold shows")
	}

	fe.release()
	if e, ok := s.LookupMAC(macKey(macN(7))); !ok || e.Machine != "m7" || e.IP != "10.20.0.17" {
		t.Errorf("after the stream: LookupMAC = %+v %v", e, ok)
	}
	if !closed(woken) || !closed(jobWoken) {
		t.Error("the stream's commits did not wake the event feed and the job's waiters")
	}
	if _, now := s.EventsCommitted(); now != ev.Seq || now <= last {
		t.Errorf("newest event %d, want %d", now, ev.Seq)
	}
	if h := s.Hold(); h == nil || h.Reason != "test" {
		t.Errorf("hold after the stream: %+v", h)
	}
	if got, want := viewText(v), loadedViewText(t, s); got != want {
		t.Errorf("view fed by the stream:\n%s\nloaded:\n%s", got, want)
	}
	if must(s.LiftHold(ctx)) == nil || s.Hold() != nil {
		t.Error("the lifted hold still shows")
	}
}

// Two instances on one Follower engine (one etcd cluster): what one
// writes, the other's boot view, MAC lookup, job queue, event feed and
// hold show, from the shared stream.
func TestTwoInstancesOnOneFollowerSeeEachOthersWrites(t *testing.T) {
	fe := &followEngine{Engine: openBolt(t, "db")}
	t.Cleanup(func() { fe.Engine.Close() })
	a := openEngineStore(t, sharedEngine{fe})
	b := openEngineStore(t, sharedEngine{fe})
	hallFixture(t, a)

	must(a.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.20.0.0/24", Gateway: "10.20.0.1", RangeFirst: "10.20.0.200", RangeLast: "10.20.0.250"}))
	if subs, _ := b.BootView().Subnets(); len(subs) != 1 || subs[0].Name != "prov" {
		t.Fatalf("B's subnets after A created one: %+v", subs)
	}

	e := machine("m1", "r1", 1, macN(1))
	e.Machine.IP = "10.20.0.11"
	must(a.EnrollMachine(ctx, e))
	mac := macKey(macN(1))
	if got, ok := b.LookupMAC(mac); !ok || got.Machine != "m1" || got.IP != "10.20.0.11" {
		t.Fatalf("B's LookupMAC after A enrolled m1: %+v %v", got, ok)
	}
	if got, ok := b.BootView().Lookup(mac); !ok || got.State != MachineEnrolled || got.Subnet.Name != "prov" {
		t.Fatalf("B's boot view after A enrolled m1: %+v %v", got, ok)
	}

	woken, last := b.EventsCommitted()
	ev := must(a.AppendEvent(ctx, Event{Actor: "tok", Subject: "machine/m1", Action: "test"}))
	if !closed(woken) {
		t.Fatal("B's event feed did not wake for A's event")
	}
	if _, now := b.EventsCommitted(); now != ev.Seq || now <= last {
		t.Errorf("B's newest event %d, want A's %d", now, ev.Seq)
	}

	j := must(a.StartJob(ctx, Job{Machine: "m1", Kind: JobCommission, Steps: []JobStep{{Name: "bmc-check"}, {Name: "wait-agent"}}}, MachineCommissioning))
	if got, _ := b.BootView().Lookup(mac); got.State != MachineCommissioning || got.Job.ID != j.ID || got.Job.Step != "bmc-check" {
		t.Fatalf("B's boot view after A started %s: %+v", j.ID, got)
	}
	if q := b.BootView().Queue(); len(q) != 1 || q[0].ID != j.ID {
		t.Fatalf("B's queue after A started %s: %+v", j.ID, q)
	}
	changed := b.BootView().JobChanged(j.ID)
	must(a.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[0].State = StepDone; return nil }))
	if !closed(changed) {
		t.Fatal("B's job waiters did not wake for A's job update")
	}
	if got, _ := b.BootView().Lookup(mac); got.Job.Step != "wait-agent" {
		t.Errorf("B's boot view after A's step: %+v", got.Job)
	}
	// B writes too: A sees it.
	if _, _, err := b.UpdateJob(ctx, j.ID, func(j *Job, m *Machine) error {
		j.State, m.State = JobSucceeded, MachineAvailable
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.BootView().Lookup(mac); got.State != MachineAvailable || got.Job.ID != "" {
		t.Errorf("A's boot view after B finished the job: %+v", got)
	}
	if q := a.BootView().Queue(); len(q) != 0 {
		t.Errorf("A's queue after B finished the job: %+v", q)
	}

	if err := a.SetHold(ctx, Hold{Reason: "restored"}); err != nil {
		t.Fatal(err)
	}
	if b.CheckHold() == nil {
		t.Error("B is not on hold after A set one")
	}
	must(b.LiftHold(ctx))
	if a.Hold() != nil {
		t.Error("A is still on hold after B lifted it")
	}

	if err := a.DeleteMachine(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	if got, ok := b.LookupMAC(mac); ok {
		t.Errorf("B still finds the machine A deleted: %+v", got)
	}
	for _, s := range []*Store{a, b} {
		if got, want := viewText(s.BootView()), loadedViewText(t, s); got != want {
			t.Errorf("view fed by the stream:\n%s\nloaded:\n%s", got, want)
		}
	}
}

// A Follower that starts its stream over loads the whole state again:
// the boot view becomes what is committed, whatever the stream missed,
// and every job's waiters wake to look again.
func TestAReloadReplacesTheWholeView(t *testing.T) {
	fe := &followEngine{Engine: openBolt(t, "db")}
	s := openEngineStore(t, fe)
	viewFixture(t, s)
	j2 := must(s.ActiveJob(ctx, "m2"))
	waiting := s.BootView().JobChanged(j2.ID)
	// Missed by the stream: m1 deleted, m2's job finished.
	err := fe.Engine.Update(func(tx kv.Tx) error {
		m, err := get[Machine](tx, bMachines, "machine", "m1")
		if err != nil {
			return err
		}
		for _, mac := range m.MACs {
			if err := bkt(tx, bIdxMAC).Delete(macKey(mac)); err != nil {
				return err
			}
		}
		if err := bkt(tx, bMachines).Delete([]byte("m1")); err != nil {
			return err
		}
		j, err := get[Job](tx, bJobs, "job", j2.ID)
		if err != nil {
			return err
		}
		j.State = JobCancelled
		if err := putJSON(bkt(tx, bJobs), []byte(j.ID), j); err != nil {
			return err
		}
		return bkt(tx, bActiveJob).Delete([]byte(j.Machine))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.view(s.load); err != nil {
		t.Fatal(err)
	}
	if got, want := viewText(s.BootView()), loadedViewText(t, s); got != want {
		t.Errorf("after a reload:\n%s\ncommitted:\n%s", got, want)
	}
	if _, ok := s.LookupMAC(macKey(macN(1))); ok {
		t.Error("a reload kept a machine that is gone")
	}
	if !closed(waiting) {
		t.Error("a reload did not wake the job's waiters")
	}
}
