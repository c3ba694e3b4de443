package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

func TestEventSubjectsWithControlCharactersAreRefused(t *testing.T) {
	inv := openTestStore(t, filepath.Join(t.TempDir(), "db"), Options{NoSync: true})
	defer inv.Close()
	ctx := context.Background()
	for _, subject := range []string{"machine/ma1\x00x", "machine/\x1b[2J", string(make([]byte, MaxSubjectLen+1))} {
		if _, err := inv.AppendEvent(ctx, Event{Subject: subject, Action: "a"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("subject %q: %v, want invalid", subject, err)
		}
		if err := inv.AppendEvents(ctx, []Event{{Subject: subject, Action: "a"}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("batch subject %q: %v, want invalid", subject, err)
		}
	}
}

// A database written before subjects were checked holds index entries
// that a NUL in a subject made; opening it repairs the index.
func TestEventIndexIsRepairedOnOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	inv := openTestStore(t, path, Options{NoSync: true})
	ctx := context.Background()
	if _, err := inv.AppendEvent(ctx, Event{Subject: "machine/ma1", Action: "boot"}); err != nil {
		t.Fatal(err)
	}
	// What the old code wrote for /api/v1/machines/ma1%00x/events.
	err := inv.update(func(tx kv.Tx) error {
		b := bkt(tx, bEvents)
		seq, _ := b.NextSequence()
		bad := Event{Seq: seq, Subject: "machine/ma1\x00x", Action: "machine.events"}
		if err := putJSON(b, u64(seq), bad); err != nil {
			return err
		}
		if err := bkt(tx, bIdxSubject).Put(subjectKey(bad.Subject, seq), []byte{0}); err != nil {
			return err
		}
		return bkt(tx, bMeta).Delete(keyEventIndexChecked)
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reads skip the bad entry even before the repair.
	if evs, err := inv.Events(ctx, EventFilter{Subject: "machine/ma1"}); err != nil || len(evs) != 1 {
		t.Fatalf("events with a bad index entry: %v %v", evs, err)
	}
	inv.Close()

	inv = openTestStore(t, path, Options{NoSync: true})
	defer inv.Close()
	evs, err := inv.Events(ctx, EventFilter{Subject: "machine/ma1"})
	if err != nil || len(evs) != 1 || evs[0].Action != "boot" {
		t.Fatalf("events after the repair: %v %v", evs, err)
	}
	inv.view(func(tx kv.Tx) error {
		n := 0
		bkt(tx, bIdxSubject).ForEach(func(_, _ []byte) error { n++; return nil })
		if n != 1 {
			t.Errorf("%d index entries after the repair, want 1", n)
		}
		return nil
	})
}

func TestEveryChangeOfTenantOpensANewTenancy(t *testing.T) {
	inv := openTestStore(t, filepath.Join(t.TempDir(), "db"), Options{NoSync: true})
	defer inv.Close()
	ctx := context.Background()
	mustDo := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(inv.CreateSite(ctx, Site{Name: "s"}))
	mustDo(inv.CreateHall(ctx, Hall{Name: "h", Site: "s"}))
	mustDo(inv.CreatePhase(ctx, Phase{Hall: "h", Number: 1, BudgetW: 100_000}))
	mustDo(inv.CreateRack(ctx, Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 20_000}))
	mustDo(inv.CreateTenant(ctx, Tenant{Name: "ta"}))
	mustDo(inv.CreateTenant(ctx, Tenant{Name: "tb"}))
	mustDo(inv.EnrollMachine(ctx, Enrollment{Machine: Machine{Name: "m", Rack: "r", Unit: 1, MACs: []string{"52:54:00:00:00:01"},
		BMC: BMC{Address: "10.0.0.1", Protocol: ProtocolIPMI, Username: "u"}}}))
	seen := map[string]bool{}
	tenancy := func() string {
		m, err := inv.Machine(ctx, "m")
		if err != nil {
			t.Fatal(err)
		}
		if m.Tenancy == "" || seen[m.Tenancy] {
			t.Fatalf("tenancy %q after a change of tenant (seen %v)", m.Tenancy, seen)
		}
		seen[m.Tenancy] = true
		return m.Tenancy
	}
	t0 := tenancy()
	e0, _ := inv.AppendEvent(ctx, Event{Subject: "machine/m", Action: "boot"})
	mustDo(inv.AssignMachineTenant(ctx, "m", "ta"))
	t1 := tenancy()
	e1, _ := inv.AppendEvent(ctx, Event{Subject: "machine/m", Action: "boot"})
	mustDo(inv.AssignMachineTenant(ctx, "m", ""))
	tenancy()
	mustDo(inv.AssignRackTenant(ctx, "r", "tb"))
	tenancy()
	if e0.Tenancy != t0 || e1.Tenancy != t1 {
		t.Errorf("events stamped %q and %q, want %q and %q", e0.Tenancy, e1.Tenancy, t0, t1)
	}
	evs, err := inv.Events(ctx, EventFilter{Subject: "machine/m", Tenancy: t1})
	if err != nil || len(evs) != 1 || evs[0].Seq != e1.Seq {
		t.Errorf("events of tenancy %s: %v %v", t1, evs, err)
	}
}

// A database from before tenancies: its machines get one at open, and a
// deployed machine keeps its deployment (the metadata of its installed OS).
func TestMachinesFromBeforeTenanciesGetOneAndKeepTheirDeployment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	inv := openTestStore(t, path, Options{NoSync: true})
	ctx := context.Background()
	mustDo := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustDo(inv.CreateSite(ctx, Site{Name: "s"}))
	mustDo(inv.CreateHall(ctx, Hall{Name: "h", Site: "s"}))
	mustDo(inv.CreatePhase(ctx, Phase{Hall: "h", Number: 1, BudgetW: 100_000}))
	mustDo(inv.CreateRack(ctx, Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 20_000}))
	for i, name := range []string{"dep", "idle"} {
		mustDo(inv.EnrollMachine(ctx, Enrollment{Machine: Machine{Name: name, Rack: "r", Unit: 1 + i, MACs: []string{fmt.Sprintf("52:54:00:00:00:0%d", i+1)},
			BMC: BMC{Address: fmt.Sprintf("10.0.0.%d", i+1), Protocol: ProtocolIPMI, Username: "u"}}}))
		for _, st := range []MachineState{MachineCommissioning, MachineAvailable} {
			mustDo(inv.SetMachineState(ctx, name, st, "", ""))
		}
		j, err := inv.StartJob(ctx, Job{Machine: name, Kind: JobProvision, Steps: []JobStep{{Name: "write-image"}}}, MachineProvisioning)
		if err != nil {
			t.Fatal(err)
		}
		end := MachineDeployed
		if name == "idle" {
			end = MachineFailed
		}
		mustDo2 := func(_, _ any, err error) { mustDo(nil, err) }
		mustDo2(inv.UpdateJob(ctx, j.ID, func(j *Job, m *Machine) error {
			j.State, m.State, m.Reason, m.FailedStep = JobSucceeded, end, "x", "y"
			return nil
		}))
	}
	// Strip what the old code did not write.
	err := inv.update(func(tx kv.Tx) error {
		for _, b := range [][]byte{bMachines, bJobs} {
			// Collect, then write: ForEach's function must not change
			// the bucket it walks.
			recs := map[string]map[string]any{}
			if err := bkt(tx, b).ForEach(func(k, v []byte) error {
				var rec map[string]any
				json.Unmarshal(v, &rec)
				delete(rec, "tenancy")
				recs[string(k)] = rec
				return nil
			}); err != nil {
				return err
			}
			for k, rec := range recs {
				if err := putJSON(bkt(tx, b), []byte(k), rec); err != nil {
					return err
				}
			}
		}
		for _, k := range []string{"dep", "idle"} {
			bkt(tx, bIdxTenancy).Delete([]byte(k))
		}
		return bkt(tx, bMeta).Delete(keyTenancies)
	})
	if err != nil {
		t.Fatal(err)
	}
	inv.Close()

	inv = openTestStore(t, path, Options{NoSync: true})
	defer inv.Close()
	for _, name := range []string{"dep", "idle"} {
		m, err := inv.Machine(ctx, name)
		if err != nil || m.Tenancy == "" {
			t.Fatalf("%s after the upgrade: %+v %v", name, m, err)
		}
		jobs, _ := inv.MachineJobs(ctx, name)
		if want := map[string]string{"dep": m.Tenancy, "idle": ""}[name]; len(jobs) != 1 || jobs[0].Tenancy != want {
			t.Errorf("%s's provision job has tenancy %q, want %q", name, jobs[0].Tenancy, want)
		}
		e, _ := inv.AppendEvent(ctx, Event{Subject: "machine/" + name, Action: "boot"})
		if e.Tenancy != m.Tenancy {
			t.Errorf("%s: new events stamped %q, want %q", name, e.Tenancy, m.Tenancy)
		}
	}
}

// TestUnassignChecksTheTenantInItsTransaction: taking a machine or rack
// back from a tenant that no longer holds it is refused and changes
// nothing, so a reassignment made meanwhile is never undone.
func TestUnassignChecksTheTenantInItsTransaction(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "db"), Options{NoSync: true})
	defer s.Close()
	hallFixture(t, s)
	must(s.EnrollMachine(ctx, machine("m1", "r1", 1, "52:54:00:00:00:01")))
	for _, tn := range []string{"ta", "tb"} {
		if _, err := s.CreateTenant(ctx, Tenant{Name: tn}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AssignMachineTenant(ctx, "m1", "tb"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnassignMachineTenant(ctx, "m1", "ta"); !errors.Is(err, ErrConflict) {
		t.Fatalf("unassign from a tenant that does not hold it: %v", err)
	}
	if m, _ := s.Machine(ctx, "m1"); m.Tenant != "tb" {
		t.Fatalf("the refused unassign changed the machine: tenant %q", m.Tenant)
	}
	if _, err := s.UnassignMachineTenant(ctx, "m1", "tb"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AssignRackTenant(ctx, "r1", "tb"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnassignRackTenant(ctx, "r1", "ta"); !errors.Is(err, ErrConflict) {
		t.Fatalf("unassign a rack from a tenant that does not hold it: %v", err)
	}
	if r, _ := s.Rack(ctx, "r1"); r.Tenant != "tb" {
		t.Fatalf("the refused unassign changed the rack: tenant %q", r.Tenant)
	}
}
