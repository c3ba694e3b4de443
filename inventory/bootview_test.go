package inventory

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// viewText renders a boot view in a fixed order, for comparisons.
func viewText(v *BootView) string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var lines []string
	for k, bm := range v.byMAC {
		e := bm.entry
		sn, _ := v.subnetOf(e.IP)
		lines = append(lines, fmt.Sprintf("mac %x → %s %s ip=%v subnet=%s job=%+v", k, e.Machine, e.State, e.IP, sn.Name, e.Job))
	}
	for ip, bm := range v.byIP {
		lines = append(lines, fmt.Sprintf("ip %v → %s", ip, bm.entry.Machine))
	}
	for name, bm := range v.byName {
		if bm.entry.Machine != name {
			lines = append(lines, fmt.Sprintf("name %s → %s (wrong)", name, bm.entry.Machine))
		}
	}
	slices.Sort(lines)
	for _, sn := range v.subnets {
		lines = append(lines, fmt.Sprintf("subnet %s %v gw=%v dns=%v range=%v-%v", sn.Name, sn.Prefix, sn.Gateway, sn.DNS, sn.RangeFirst, sn.RangeLast))
	}
	for _, q := range v.queue {
		lines = append(lines, fmt.Sprintf("queue %+v", q))
	}
	return strings.Join(lines, "\n")
}

// viewFixture is a rack of machines with reservations in a subnet, some
// of them with jobs at various steps.
func viewFixture(t *testing.T, inv Inventory) {
	t.Helper()
	hallFixture(t, inv)
	must(inv.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.20.0.0/24", Gateway: "10.20.0.1", DNS: []string{"10.20.0.2"}, RangeFirst: "10.20.0.200", RangeLast: "10.20.0.250"}))
	for i := 1; i <= 6; i++ {
		e := machine(fmt.Sprintf("m%d", i), "r1", i, macN(i))
		e.Machine.BMC.Address = fmt.Sprintf("bmc-%d", i)
		e.Machine.IP = fmt.Sprintf("10.20.0.%d", 10+i)
		e.Machine.PowerW = 500
		must(inv.EnrollMachine(ctx, e))
	}
	steps := []JobStep{{Name: "bmc-check"}, {Name: "set-pxe"}, {Name: "wait-agent"}}
	for i := 1; i <= 3; i++ {
		j := must(inv.StartJob(ctx, Job{Machine: fmt.Sprintf("m%d", i), Kind: JobCommission, Steps: slices.Clone(steps)}, MachineCommissioning))
		for s := 0; s < i-1; s++ {
			must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[s].State = StepDone; return nil }))
		}
	}
	j := must(inv.ActiveJob(ctx, "m3"))
	must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.CancelRequested = true; return nil }))
	// m1's job ends; its machine moves on in the same transaction.
	j = must(inv.ActiveJob(ctx, "m1"))
	if _, _, err := inv.UpdateJob(ctx, j.ID, func(j *Job, m *Machine) error {
		j.State, m.State = JobSucceeded, MachineAvailable
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	must(inv.UpdateMachine(ctx, "m5", func(m *Machine) error { m.MACs = append(m.MACs, macN(50)); m.IP = "10.20.0.55"; return nil }))
	if err := inv.DeleteMachine(ctx, "m6"); err != nil {
		t.Fatal(err)
	}
}

func TestBootViewMatchesTheStoreAfterReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metalhall.db")
	inv := openTestStore(t, path, Options{})
	viewFixture(t, inv)
	live := viewText(inv.BootView())
	for _, want := range []string{
		"mac 525400000001 → m1 available ip=10.20.0.11 subnet=prov job={ID: Kind: Step: Cancelled:false}",
		"mac 525400000002 → m2 commissioning ip=10.20.0.12 subnet=prov job={ID:job-000002 Kind:commission Step:set-pxe Cancelled:false}",
		"mac 525400000003 → m3 commissioning ip=10.20.0.13 subnet=prov job={ID:job-000003 Kind:commission Step:wait-agent Cancelled:true}",
		"mac 525400000032 → m5 enrolled ip=10.20.0.55",
		"ip 10.20.0.55 → m5",
		"subnet prov 10.20.0.0/24 gw=10.20.0.1 dns=[10.20.0.2] range=10.20.0.200-10.20.0.250",
		"queue {ID:job-000002 Machine:m2 Rack:r1 Kind:commission}",
	} {
		if !strings.Contains(live, want) {
			t.Errorf("view lacks %q:\n%s", want, live)
		}
	}
	for _, gone := range []string{"ip 10.20.0.15 ", "m6", "job-000001"} {
		if strings.Contains(live, gone) {
			t.Errorf("view still shows %q:\n%s", gone, live)
		}
	}
	inv.Close()
	again := openTestStore(t, path, Options{})
	defer again.Close()
	if got := viewText(again.BootView()); got != live {
		t.Errorf("after reopen:\n%s\nbefore:\n%s", got, live)
	}
}

func TestSubnetCreatedLaterIsInTheViewAtOnce(t *testing.T) {
	inv := newInv(t)
	v := inv.BootView()
	_, gen := v.Subnets()
	must(inv.CreateSubnet(ctx, Subnet{Name: "late", CIDR: "10.30.0.0/24", Gateway: "10.30.0.1", RangeFirst: "10.30.0.100", RangeLast: "10.30.0.110"}))
	subs, gen2 := v.Subnets()
	if gen2 == gen || len(subs) != 1 || subs[0].RangeFirst.String() != "10.30.0.100" {
		t.Fatalf("subnets %+v, generation %d → %d", subs, gen, gen2)
	}
	// A refused subnet changes nothing.
	if _, err := inv.CreateSubnet(ctx, Subnet{Name: "overlap", CIDR: "10.30.0.0/25", Gateway: "10.30.0.1"}); err == nil {
		t.Fatal("overlapping subnet accepted")
	}
	if subs, gen3 := v.Subnets(); gen3 != gen2 || len(subs) != 1 {
		t.Fatalf("after a refused subnet: %+v, generation %d", subs, gen3)
	}
}

// rawMachine is a machine's stored record, byte for byte.
func rawMachine(t *testing.T, s *Store, name string) []byte {
	t.Helper()
	var out []byte
	if err := s.view(func(tx kv.Tx) error { out = bytes.Clone(tx.Bucket(bMachines).Get([]byte(name))); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// committed is the number of write transactions so far.
func committed(t *testing.T, s *Store) int {
	t.Helper()
	return int(s.WriteTransactions())
}

func TestJobProgressDoesNotRewriteTheMachine(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	s, ok := inv.(*Store)
	if !ok {
		t.Skip("counts bbolt transactions")
	}
	must(s.RecordInspection(ctx, "m2", []byte(`{"gpus": 8}`)))
	j := must(inv.ActiveJob(ctx, "m2"))
	before, tx0 := rawMachine(t, s, "m2"), committed(t, s)
	const reports = 10
	for i := range reports {
		must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Progress = JobProgress{Bytes: int64(i) << 20, Total: 10 << 20}; return nil }))
	}
	// A job update through UpdateJob that leaves the machine alone does not
	// write it either.
	if _, _, err := inv.UpdateJob(ctx, j.ID, func(j *Job, m *Machine) error { j.Steps[1].State = StepRunning; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, s) - tx0; got != reports+1 {
		t.Errorf("%d job updates took %d write transactions", reports+1, got)
	}
	if after := rawMachine(t, s, "m2"); !bytes.Equal(before, after) {
		t.Errorf("job updates rewrote the machine:\n%s\n%s", before, after)
	}
	if got := must(inv.Job(ctx, j.ID)); got.Progress.Bytes != (reports-1)<<20 || got.Steps[1].State != StepRunning {
		t.Errorf("job not updated: %+v", got)
	}
	checkIndexes(t, s)
}

func TestJobChangeWakesItsWaitersAfterCommit(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	v := inv.BootView()
	j := must(inv.ActiveJob(ctx, "m2"))
	changed := v.JobChanged(j.ID)
	other := v.JobChanged(must(inv.ActiveJob(ctx, "m3")).ID)
	// A refused update commits nothing and wakes nobody.
	if _, err := inv.UpdateJobOnly(ctx, j.ID, func(*Job) error { return invalid("x", "refused") }); err == nil {
		t.Fatal("refusal lost")
	}
	select {
	case <-changed:
		t.Fatal("woken by a refused update")
	default:
	}
	must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[1].State = StepDone; return nil }))
	select {
	case <-changed:
	default:
		t.Fatal("not woken by the job's commit")
	}
	if e, _ := v.Lookup(macKey(macN(2))); e.Job.Step != "wait-agent" {
		t.Errorf("view after the step change: %+v", e.Job)
	}
	// The machine's inspection (a machine write) wakes its job's waiters.
	changed = v.JobChanged(j.ID)
	must(inv.RecordInspection(ctx, "m2", []byte(`{}`)))
	select {
	case <-changed:
	default:
		t.Fatal("not woken by the machine's commit")
	}
	select {
	case <-other:
		t.Fatal("another job's waiter woken")
	default:
	}
}

// A wait for a job is not a writer of the view: registering one while
// the view is being read goes through (it used to take the view's write
// lock, and every DHCP lookup queued behind each wait's registration).
func TestWaitingForAJobDoesNotLockTheViewsReaders(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	v := inv.BootView()
	j := must(inv.ActiveJob(ctx, "m2"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range v.Queued() { // holds the view's read lock
			v.JobChanged(j.ID)
			break
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a deadlock, not a slow machine
		t.Fatal("JobChanged waited for the view's readers")
	}
	changed := v.JobChanged(j.ID)
	must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[1].State = StepDone; return nil }))
	select {
	case <-changed:
	default:
		t.Fatal("not woken by the job's commit")
	}
}

func TestConcurrentJobUpdatesAndLookups(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	v := inv.BootView()
	j := must(inv.ActiveJob(ctx, "m2"))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := macKey(macN(2 + w%2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if e, ok := v.Lookup(key); !ok || e.Subnet.Name != "prov" {
					t.Errorf("lookup: %+v %v", e, ok)
					return
				}
				v.Queue()
				v.Owner(netip.MustParseAddr(fmt.Sprintf("10.20.0.%d", 12+w%2)))
			}
		}()
	}
	var writers sync.WaitGroup
	for w := range 3 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 20 {
				must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error {
					j.Progress.Bytes = int64(w*1000 + i)
					j.Steps[1].State = []StepState{StepPending, StepRunning}[i%2]
					return nil
				}))
			}
		}()
	}
	writers.Wait()
	must(inv.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[1].State = StepDone; return nil }))
	close(stop)
	wg.Wait()
	// After the last commit the view shows the last state, whatever order
	// the writers' changes were applied in.
	if e, _ := v.Lookup(macKey(macN(2))); e.Job.Step != "wait-agent" {
		t.Errorf("view: %+v", e.Job)
	}
	fresh := newBootView()
	var vc viewChanges
	s := inv.(*Store)
	if err := s.view(func(tx kv.Tx) error { return loadView(tx, &vc) }); err != nil {
		t.Fatal(err)
	}
	fresh.apply(&vc)
	if got, want := viewText(v), viewText(fresh); got != want {
		t.Errorf("view:\n%s\nstore:\n%s", got, want)
	}
}

// Job-only updates that arrive while another commits share the next
// transaction; one that is refused fails alone.
func TestJobUpdatesShareTransactions(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	s, ok := inv.(*Store)
	if !ok {
		t.Skip("holds the store's group commit")
	}
	j2, j3 := must(inv.ActiveJob(ctx, "m2")), must(inv.ActiveJob(ctx, "m3"))
	tx0 := committed(t, s)
	s.jobQ.commit.Lock() // a commit under way
	const n = 8
	errs := make(chan error, n+1)
	for i := range n {
		go func() {
			id := []string{j2.ID, j3.ID}[i%2]
			_, err := inv.UpdateJobOnly(ctx, id, func(j *Job) error { j.Progress.Bytes += 1; return nil })
			errs <- err
		}()
	}
	go func() {
		_, err := inv.UpdateJobOnly(ctx, j2.ID, func(*Job) error { return invalid("progress", "refused") })
		errs <- err
	}()
	for { // a barrier: every update has queued
		s.jobQ.mu.Lock()
		queued := len(s.jobQ.pending)
		s.jobQ.mu.Unlock()
		if queued == n+1 {
			break
		}
		runtime.Gosched()
	}
	s.jobQ.commit.Unlock()
	refused := 0
	for range n + 1 {
		if err := <-errs; err != nil {
			refused++
			wantErr[*ValidationError](t, err, "refused")
		}
	}
	if refused != 1 {
		t.Errorf("%d updates refused, want 1", refused)
	}
	if got := committed(t, s) - tx0; got != 1 {
		t.Errorf("%d queued updates took %d transactions, want 1", n+1, got)
	}
	for _, id := range []string{j2.ID, j3.ID} {
		if j := must(inv.Job(ctx, id)); j.Progress.Bytes != n/2 {
			t.Errorf("job %s progress %d, want %d", id, j.Progress.Bytes, n/2)
		}
	}
}

func TestBootViewLookupAllocatesNothing(t *testing.T) {
	inv := newInv(t)
	viewFixture(t, inv)
	v, key := inv.BootView(), macKey(macN(2))
	allocs := testing.AllocsPerRun(1000, func() {
		if e, ok := v.Lookup(key); !ok || e.Subnet.Name != "prov" || e.Job.ID == "" {
			t.Fatal("lookup failed")
		}
	})
	if allocs != 0 {
		t.Fatalf("BootView.Lookup allocates %v times", allocs)
	}
}
