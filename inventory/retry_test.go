package inventory

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
)

// openEngineStore opens a store on e with a fixed clock, closed when the
// test ends.
func openEngineStore(t *testing.T, e kv.Engine) *Store {
	t.Helper()
	at := time.Date(2026, 11, 30, 2, 0, 0, 0, time.UTC)
	s, err := OpenEngine(e, Options{Now: func() time.Time { return at }})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openBolt(t *testing.T, name string) *boltkv.Engine {
	t.Helper()
	e, err := boltkv.Open(filepath.Join(t.TempDir(), name), boltkv.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// dumpStore is every bucket of s, its sequence and every record, as text.
func dumpStore(t *testing.T, s *Store) string {
	t.Helper()
	names := slices.Clone(append(slices.Clone(allBuckets), extraBuckets...))
	slices.SortFunc(names, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
	var out strings.Builder
	err := s.view(func(tx kv.Tx) error {
		for _, name := range names {
			b := bkt(tx, name)
			fmt.Fprintf(&out, "bucket %s seq=%d\n", name, b.Sequence())
			if err := b.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&out, "  %q = %q\n", k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// writeScenario is a representative run of writes: enrolments, a rack
// import and its re-import, a job started with its event, recorded with
// events, updated alone, finished with its machine, events appended one
// by one and in a batch, a token. It returns what each call returned.
func writeScenario(t *testing.T, s *Store) string {
	t.Helper()
	var out []string
	note := func(what string, v any, err error) {
		data, _ := json.Marshal(v)
		out = append(out, fmt.Sprintf("%s: %s err=%v", what, data, err))
	}
	hallFixture(t, s)
	must(s.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.20.0.0/24", Gateway: "10.20.0.1", RangeFirst: "10.20.0.200", RangeLast: "10.20.0.250"}))
	must(s.CreateTenant(ctx, Tenant{Name: "bank-x"}))
	e := machine("m1", "r1", 1, macN(1))
	e.Machine.IP = "10.20.0.11"
	m, err := s.EnrollMachine(ctx, e)
	note("enroll", m, err)
	m, err = s.EnrollMachine(ctx, machine("m1", "r1", 3, macN(3)))
	note("enroll again", m, err)

	must(s.AssignRackTenant(ctx, "r1", "bank-x"))
	m, err = s.EnrollMachine(ctx, machine("m2", "r1", 2, macN(2)))
	note("enroll into a tenant's rack", m, err)

	res, err := s.ImportRack(ctx, rackImport("a01", 4, 100))
	note("import", res, err)
	res, err = s.ImportRack(ctx, rackImport("a01", 4, 100))
	note("import again", res, err)

	j, err := s.StartJobRecording(ctx, Job{Machine: "m1", Kind: JobCommission, Steps: []JobStep{{Name: "bmc-check"}, {Name: "wait-agent"}}}, MachineCommissioning,
		func(j *Job) Event { return Event{Subject: "machine/" + j.Machine, Action: "job.queued", Detail: j.ID} })
	note("start job", j, err)
	busy, err := s.StartJob(ctx, Job{Machine: "m1", Kind: JobPower}, "")
	note("start a second job", busy, err)
	j2, m2, err := s.RecordJob(ctx, j.ID, func(j *Job, m *Machine) ([]Event, error) {
		j.Steps[0].State = StepDone
		return []Event{{Subject: "machine/" + m.Name, Action: "step.done"}}, nil
	})
	note("record job", []any{j2, m2}, err)
	j2, err = s.RecordJobUpdate(ctx, j.ID, func(j *Job) ([]Event, error) {
		j.Progress.Bytes = 1 << 20
		return []Event{{Subject: "machine/m1", Action: "progress"}, {Subject: "machine/m1", Action: "progress"}}, nil
	})
	note("record job update", j2, err)
	j2, m2, err = s.UpdateJob(ctx, j.ID, func(j *Job, m *Machine) error {
		j.State, m.State = JobSucceeded, MachineAvailable
		return nil
	})
	note("finish job", []any{j2, m2}, err)

	ev, err := s.AppendEvent(ctx, Event{Actor: "tok", Subject: "rack/r1", Action: "rack.show"})
	note("append event", ev, err)
	err = s.AppendEvents(ctx, []Event{{Subject: "machine/m2", Action: "dhcp"}, {Subject: "machine/a01-m01", Action: "dhcp"}})
	note("append events", nil, err)
	_, last := s.EventsCommitted()
	note("newest event", last, nil)

	hash := sha256.Sum256([]byte("secret"))
	tok, err := s.CreateToken(ctx, Token{ID: "tok-1", Role: RoleTenant, Tenant: "bank-x", Hash: hash[:]})
	note("create token", tok, err)
	tok, err = s.CreateToken(ctx, Token{ID: "tok-1", Role: RoleAdmin, Hash: hash[:]})
	note("create token again", tok, err)

	note("firmware", nil, s.RecordBMCFirmware(ctx, "m2", BMCFirmware{Components: []FirmwareComponent{{ID: "bmc", Version: "1.0"}}}))
	note("firmware unread", nil, s.RecordBMCFirmware(ctx, "m2", BMCFirmware{Error: "timeout"}))
	m, err = s.Machine(ctx, "m2")
	note("firmware kept", m.BMCFirmware, err)
	return strings.Join(out, "\n")
}

// On etcd a write's function runs again when its commit loses a conflict,
// as it may under bbolt's Batch: nothing of the first run may show in
// the outcome. The same writes on an engine that runs each of them twice
// (the first run's transaction discarded) return the same results and
// leave the same store, boot view and event feed as on plain bbolt.
func TestWritesGiveTheSameResultsWhenTheEngineRunsThemTwice(t *testing.T) {
	once := openEngineStore(t, openBolt(t, "once.db"))
	twice := openEngineStore(t, &retryEngine{Engine: openBolt(t, "twice.db")})
	wantRes, gotRes := writeScenario(t, once), writeScenario(t, twice)
	if gotRes != wantRes {
		t.Errorf("results with every write run twice:\n%s\nrun once:\n%s", gotRes, wantRes)
	}
	for _, want := range []string{`"created":["a01-m01","a01-m02","a01-m03","a01-m04"]`, `"unchanged":["a01-m01","a01-m02","a01-m03","a01-m04"]`} {
		if !strings.Contains(wantRes, want) {
			t.Errorf("the scenario's results lack %s:\n%s", want, wantRes)
		}
	}
	if got, want := dumpStore(t, twice), dumpStore(t, once); got != want {
		t.Errorf("store with every write run twice:\n%s\nrun once:\n%s", got, want)
	}
	if got, want := viewText(twice.BootView()), viewText(once.BootView()); got != want {
		t.Errorf("boot view with every write run twice:\n%s\nrun once:\n%s", got, want)
	}
	checkIndexes(t, twice)
}

// A retry reads again what another instance changed since the first run,
// and builds its result from that, not from what the first run filled in.
func TestARetryStartsFromWhatItReadsAgain(t *testing.T) {
	t.Run("enrolment into a rack that lost its tenant", func(t *testing.T) {
		e := &retryEngine{Engine: openBolt(t, "db")}
		s := openEngineStore(t, e)
		hallFixture(t, s)
		must(s.CreateTenant(ctx, Tenant{Name: "bank-x"}))
		must(s.AssignRackTenant(ctx, "r1", "bank-x"))
		e.between = func(e *boltkv.Engine) {
			err := e.Update(func(tx kv.Tx) error {
				r, err := get[Rack](tx, bRacks, "rack", "r1")
				if err != nil {
					return err
				}
				r.Tenant = ""
				return putJSON(bkt(tx, bRacks), []byte(r.Name), r)
			})
			if err != nil {
				t.Error(err)
			}
		}
		m := must(s.EnrollMachine(ctx, machine("m1", "r1", 1, macN(1))))
		if stored := must(s.Machine(ctx, "m1")); m.Tenant != "" || stored.Tenant != "" {
			t.Errorf("enrolled into a rack with no tenant any more: tenant %q, stored %q", m.Tenant, stored.Tenant)
		}
	})
	t.Run("firmware read that failed", func(t *testing.T) {
		e := &retryEngine{Engine: openBolt(t, "db")}
		s := openEngineStore(t, e)
		hallFixture(t, s)
		must(s.EnrollMachine(ctx, machine("m1", "r1", 1, macN(1))))
		if err := s.RecordBMCFirmware(ctx, "m1", BMCFirmware{Components: []FirmwareComponent{{ID: "bmc", Version: "1.0"}}}); err != nil {
			t.Fatal(err)
		}
		e.between = func(e *boltkv.Engine) {
			err := e.Update(func(tx kv.Tx) error {
				m, err := get[Machine](tx, bMachines, "machine", "m1")
				if err != nil {
					return err
				}
				m.BMCFirmware = &BMCFirmware{Components: []FirmwareComponent{{ID: "bmc", Version: "2.0"}}}
				return putJSON(bkt(tx, bMachines), []byte(m.Name), m)
			})
			if err != nil {
				t.Error(err)
			}
		}
		if err := s.RecordBMCFirmware(ctx, "m1", BMCFirmware{Error: "timeout"}); err != nil {
			t.Fatal(err)
		}
		fw := must(s.Machine(ctx, "m1")).BMCFirmware
		if fw == nil || fw.Error != "timeout" || len(fw.Components) != 1 || fw.Components[0].Version != "2.0" {
			t.Errorf("firmware %+v, want the error beside version 2.0, the last good read", fw)
		}
	})
}
