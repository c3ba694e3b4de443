package inventory

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// pathTo finds the shortest sequence of allowed transitions from `from` to
// `to` in a state machine.
func pathTo[S comparable](next map[S][]S, from, to S) []S {
	prev := map[S]S{}
	seen := map[S]bool{from: true}
	queue := []S{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var path []S
			for s := to; s != from; s = prev[s] {
				path = append([]S{s}, path...)
			}
			return path
		}
		for _, n := range next[cur] {
			if !seen[n] {
				seen[n], prev[n] = true, cur
				queue = append(queue, n)
			}
		}
	}
	return nil
}

// The state machines as the lifecycle in DESIGN.md says them, written out
// by hand: the tests check the code against these lists, never against the
// code's own tables. A change to a state machine changes a line here, in
// the same review.
var (
	wantMachineTransitions = []string{
		"enrolled → commissioning", "enrolled → maintenance", "enrolled → retired",
		"commissioning → available", "commissioning → failed", "commissioning → maintenance",
		"available → provisioning", "available → commissioning", "available → deprovisioning", "available → maintenance", "available → retired",
		"provisioning → deployed", "provisioning → failed",
		"deployed → provisioning", "deployed → deprovisioning", "deployed → maintenance", "deployed → failed",
		"deprovisioning → available", "deprovisioning → failed",
		"maintenance → enrolled", "maintenance → commissioning", "maintenance → available", "maintenance → deployed", "maintenance → failed", "maintenance → retired",
		"failed → commissioning", "failed → provisioning", "failed → deprovisioning", "failed → maintenance", "failed → retired",
		// retired is final.
	}
	wantRackTransitions = []string{
		"planned → installed", "planned → decommissioned",
		"installed → commissioning", "installed → maintenance", "installed → decommissioned",
		"commissioning → active", "commissioning → installed", "commissioning → maintenance",
		"active → maintenance", "active → commissioning", "active → decommissioned",
		"maintenance → active", "maintenance → installed", "maintenance → commissioning", "maintenance → decommissioned",
		// decommissioned is final.
	}
	wantPhaseTransitions = []string{
		"planned → commissioning",
		"commissioning → live", "commissioning → planned",
		// live is final.
	}
)

// transitions turns "from → to" lines into a next-state table.
func transitions[S ~string](t *testing.T, lines []string) map[S][]S {
	t.Helper()
	next := map[S][]S{}
	for _, l := range lines {
		from, to, ok := strings.Cut(l, " → ")
		if !ok {
			t.Fatalf("transition %q is not FROM → TO", l)
		}
		next[S(from)] = append(next[S(from)], S(to))
	}
	return next
}

func sortedStrs[S ~string](in []S) []string {
	out := strs(in)
	slices.Sort(out)
	return out
}

func TestEveryMachineTransition(t *testing.T) {
	want := transitions[MachineState](t, wantMachineTransitions)
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r2", Hall: "h1", Phase: 1, Units: 64, BudgetW: 44_000}))
	i := 0
	for _, from := range MachineStates() {
		for _, to := range MachineStates() {
			i++
			rack, unit := "r1", i
			if i > 48 {
				rack, unit = "r2", i-48
			}
			name := fmt.Sprintf("m-%s-%s", from, to)
			e := machine(name, rack, unit, macN(i))
			e.Machine.BMC.Address = name
			e.Machine.PowerW = 0
			must(inv.EnrollMachine(ctx, e))
			for _, step := range pathTo(want, MachineEnrolled, from) {
				must(inv.SetMachineState(ctx, name, step, "because", "test"))
			}
			_, err := inv.SetMachineState(ctx, name, to, "because", "test")
			if slices.Contains(want[from], to) {
				if err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
				}
				continue
			}
			te := wantErr[*TransitionError](t, err, string(from), string(to))
			if got := slices.Sorted(slices.Values(te.Allowed)); !slices.Equal(got, sortedStrs(want[from])) {
				t.Errorf("%s → %s: error says allowed %v, want %v", from, to, te.Allowed, want[from])
			}
			if got := must(inv.Machine(ctx, name)); got.State != from {
				t.Errorf("%s → %s refused but state is now %s", from, to, got.State)
			}
		}
	}
	checkIndexes(t, inv.(*Store))
}

func TestFailedNeedsReasonAndStep(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.EnrollMachine(ctx, machine("m1", "r1", 1, macN(1))))
	must(inv.SetMachineState(ctx, "m1", MachineCommissioning, "", ""))
	wantErr[*ValidationError](t, must2(inv.SetMachineState(ctx, "m1", MachineFailed, "", "inspect")), "reason")
	wantErr[*ValidationError](t, must2(inv.SetMachineState(ctx, "m1", MachineFailed, "no DHCP", "")), "step")
	m := must(inv.SetMachineState(ctx, "m1", MachineFailed, "no DHCP request within 5m", "pxe"))
	if m.Reason == "" || m.FailedStep != "pxe" {
		t.Fatalf("failed machine: %+v", m)
	}
	// Leaving failed clears the failure.
	m = must(inv.SetMachineState(ctx, "m1", MachineCommissioning, "", ""))
	if m.Reason != "" || m.FailedStep != "" {
		t.Fatalf("recommissioned machine keeps failure: %+v", m)
	}
}

func must2[T any](_ T, err error) error { return err }

func TestMaintenanceReturnsToPreviousState(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.EnrollMachine(ctx, machine("m1", "r1", 1, macN(1))))
	for _, s := range []MachineState{MachineCommissioning, MachineAvailable} {
		must(inv.SetMachineState(ctx, "m1", s, "", ""))
	}
	m := must(inv.SetMaintenance(ctx, "m1", true, "replacing a DIMM"))
	if m.State != MachineMaintenance || m.Reason != "replacing a DIMM" {
		t.Fatalf("%+v", m)
	}
	wantErr[*ConflictError](t, must2(inv.SetMaintenance(ctx, "m1", true, "again")), "already in maintenance")
	m = must(inv.SetMaintenance(ctx, "m1", false, ""))
	if m.State != MachineAvailable || m.Reason != "" {
		t.Fatalf("after maintenance: %+v", m)
	}
	wantErr[*ConflictError](t, must2(inv.SetMaintenance(ctx, "m1", false, "")), "not in maintenance")
}

func TestEveryRackTransition(t *testing.T) {
	want := transitions[RackState](t, wantRackTransitions)
	inv := newInv(t)
	hallFixture(t, inv)
	for _, from := range RackStates() {
		for _, to := range RackStates() {
			name := fmt.Sprintf("r-%s-%s", from, to)
			must(inv.CreateRack(ctx, Rack{Name: name, Hall: "h1", Phase: 1, BudgetW: 1000}))
			for _, step := range pathTo(want, RackPlanned, from) {
				must(inv.SetRackState(ctx, name, step))
			}
			_, err := inv.SetRackState(ctx, name, to)
			if slices.Contains(want[from], to) {
				if err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
				}
				continue
			}
			te := wantErr[*TransitionError](t, err, string(from), string(to))
			if got := slices.Sorted(slices.Values(te.Allowed)); !slices.Equal(got, sortedStrs(want[from])) {
				t.Errorf("%s → %s: error says allowed %v, want %v", from, to, te.Allowed, want[from])
			}
			if got := must(inv.Rack(ctx, name)); got.State != from {
				t.Errorf("%s → %s refused but state is now %s", from, to, got.State)
			}
		}
	}
}

// TestEveryPhaseTransition checks each phase transition on a phase with no
// racks (racks' own conditions on going live are TestPhaseRules').
func TestEveryPhaseTransition(t *testing.T) {
	want := transitions[PhaseState](t, wantPhaseTransitions)
	inv := newInv(t)
	must(inv.CreateSite(ctx, Site{Name: "s1"}))
	must(inv.CreateHall(ctx, Hall{Name: "h1", Site: "s1"}))
	n := 0
	for _, from := range []PhaseState{PhasePlanned, PhaseCommissioning, PhaseLive} {
		for _, to := range []PhaseState{PhasePlanned, PhaseCommissioning, PhaseLive} {
			n++
			must(inv.CreatePhase(ctx, Phase{Hall: "h1", Number: n, BudgetW: 1000}))
			for _, step := range pathTo(want, PhasePlanned, from) {
				must(inv.SetPhaseState(ctx, "h1", n, step))
			}
			_, err := inv.SetPhaseState(ctx, "h1", n, to)
			if slices.Contains(want[from], to) {
				if err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
				}
				continue
			}
			te := wantErr[*TransitionError](t, err, string(from), string(to))
			if got := slices.Sorted(slices.Values(te.Allowed)); !slices.Equal(got, sortedStrs(want[from])) {
				t.Errorf("%s → %s: error says allowed %v, want %v", from, to, te.Allowed, want[from])
			}
		}
	}
}

func TestPhaseRules(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	// Phase 2 is planned: its racks can be created and installed, not commissioned.
	must(inv.CreateRack(ctx, Rack{Name: "p2a", Hall: "h1", Phase: 2, BudgetW: 40_000}))
	must(inv.SetRackState(ctx, "p2a", RackInstalled))
	wantErr[*TransitionError](t, must2(inv.SetRackState(ctx, "p2a", RackCommissioning)), "phase 2", "still planned")

	must(inv.CreateRack(ctx, Rack{Name: "p2b", Hall: "h1", Phase: 2, BudgetW: 40_000}))
	must(inv.SetPhaseState(ctx, "h1", 2, PhaseCommissioning))
	_, err := inv.SetPhaseState(ctx, "h1", 2, PhaseLive)
	wantErr[*TransitionError](t, err, "p2a (installed)", "p2b (planned)")

	for _, st := range []RackState{RackCommissioning, RackActive} {
		must(inv.SetRackState(ctx, "p2a", st))
	}
	must(inv.SetRackState(ctx, "p2b", RackDecommissioned))
	p := must(inv.SetPhaseState(ctx, "h1", 2, PhaseLive))
	if p.State != PhaseLive {
		t.Fatalf("phase %+v", p)
	}
	wantErr[*TransitionError](t, must2(inv.SetPhaseState(ctx, "h1", 2, PhasePlanned)), "live")
	wantErr[*ValidationError](t, must2(inv.SetPhaseState(ctx, "h1", 1, "done")), "not a phase state")
}

func TestPlacementRules(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	big := machine("gpu1", "r1", 10, macN(1))
	big.Machine.Height, big.Machine.PowerW = 8, 10_200
	must(inv.EnrollMachine(ctx, big))

	cases := []struct {
		name     string
		mutate   func(e *Enrollment)
		limit    string
		contains []string
	}{
		{"overlap", func(e *Enrollment) { e.Machine.Unit, e.Machine.Height = 15, 4 }, "units", []string{"overlap", "gpu1", "10-17"}},
		{"past the top", func(e *Enrollment) { e.Machine.Unit, e.Machine.Height = 46, 4 }, "units", []string{"46-49", "48 units"}},
		{"mac taken", func(e *Enrollment) { e.Machine.MACs = []string{macN(1)} }, "mac", []string{macN(1), "gpu1"}},
		{"bmc taken", func(e *Enrollment) { e.Machine.BMC.Address = big.Machine.BMC.Address }, "bmc-address", []string{"gpu1"}},
		{"rack power", func(e *Enrollment) { e.Machine.PowerW = 40_000 }, "rack-power", []string{"44 kW", "10.2 kW", "by 6.2 kW"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := machine("new", "r1", 1, macN(100+i))
			c.mutate(&e)
			pe := wantErr[*PlacementError](t, must2(inv.EnrollMachine(ctx, e)), c.contains...)
			if pe.Limit != c.limit {
				t.Errorf("limit %q, want %q", pe.Limit, c.limit)
			}
			if _, err := inv.Machine(ctx, "new"); err == nil {
				t.Error("refused machine was stored")
			}
		})
	}
	// Phase budget: 1000 kW in phase 1, 44 kW taken by r1.
	_, err := inv.CreateRack(ctx, Rack{Name: "huge", Hall: "h1", Phase: 1, BudgetW: 960_000})
	wantErr[*PlacementError](t, err, "1000 kW", "44 kW already allocated", "by 4 kW")
	checkIndexes(t, inv.(*Store))
}

func TestBadInputChangesNothing(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	bad := []struct {
		field string
		mut   func(*Enrollment)
	}{
		{"name", func(e *Enrollment) { e.Machine.Name = "../etc" }},
		{"mac", func(e *Enrollment) { e.Machine.MACs = []string{"52:54:00:zz:00:01"} }},
		{"mac", func(e *Enrollment) { e.Machine.MACs = nil }},
		{"mac", func(e *Enrollment) { e.Machine.MACs = []string{macN(1), macN(1)} }},
		{"unit", func(e *Enrollment) { e.Machine.Unit = 0 }},
		{"height", func(e *Enrollment) { e.Machine.Height = 40 }},
		{"bmc_protocol", func(e *Enrollment) { e.Machine.BMC.Protocol = "telnet" }},
		{"bmc_address", func(e *Enrollment) { e.Machine.BMC.Address = "" }},
		{"bmc_user", func(e *Enrollment) { e.Machine.BMC.Username = "" }},
		{"power_w", func(e *Enrollment) { e.Machine.PowerW = -1 }},
		{"ip", func(e *Enrollment) { e.Machine.IP = "10.0.0.300" }},
		{"ip", func(e *Enrollment) { e.Machine.IP = "10.9.9.9" }}, // in no subnet
		{"bmc_address", func(e *Enrollment) { e.Machine.BMC.Address = "ftp://10.1.7.7" }},
		{"bmc_auth", func(e *Enrollment) {
			e.Machine.BMC.Protocol, e.Machine.BMC.Address, e.Machine.BMC.Auth = ProtocolRedfish, "h:8000", "digest"
		}},
		{"bmc_system", func(e *Enrollment) { e.Machine.BMC.System = "System_0" }}, // an IPMI BMC
		{"bmc_boot_mode", func(e *Enrollment) { e.Machine.BMC.BootMode = "csm" }},
	}
	for _, b := range bad {
		e := machine("m1", "r1", 1, macN(1))
		b.mut(&e)
		wantErr[*ValidationError](t, must2(inv.EnrollMachine(ctx, e)), b.field)
	}
	if ms := must(inv.Machines(ctx, MachineFilter{})); len(ms) != 0 {
		t.Fatalf("bad input stored %d machines", len(ms))
	}
	if _, ok := inv.LookupMAC(macKey(macN(1))); ok {
		t.Fatal("bad input left a MAC in the in-memory index")
	}
}

func TestReservations(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.10.0.0/24", Gateway: "10.10.0.1", RangeFirst: "10.10.0.200", RangeLast: "10.10.0.250"}))
	wantErr[*ConflictError](t, must2(inv.CreateSubnet(ctx, Subnet{Name: "other", CIDR: "10.10.0.128/25", Gateway: "10.10.0.129"})), "overlaps")
	wantErr[*ValidationError](t, must2(inv.CreateSubnet(ctx, Subnet{Name: "x", CIDR: "10.11.0.5/24", Gateway: "10.11.0.1"})), "host bits")
	wantErr[*ValidationError](t, must2(inv.CreateSubnet(ctx, Subnet{Name: "x", CIDR: "10.11.0.0/24", Gateway: "10.12.0.1"})), "outside")

	for ip, why := range map[string]string{"10.10.0.1": "gateway", "10.10.0.210": "dynamic range", "10.10.0.255": "broadcast"} {
		e := machine("m1", "r1", 1, macN(1))
		e.Machine.IP = ip
		wantErr[*ValidationError](t, must2(inv.EnrollMachine(ctx, e)), why)
	}
	e := machine("m1", "r1", 1, macN(1))
	e.Machine.IP = "10.10.0.11"
	must(inv.EnrollMachine(ctx, e))
	e2 := machine("m2", "r1", 2, macN(2))
	e2.Machine.IP = "10.10.0.11"
	wantErr[*PlacementError](t, must2(inv.EnrollMachine(ctx, e2)), "already reserved for machine \"m1\"")
	if got, ok := inv.LookupMAC(macKey(macN(1))); !ok || got.IP != "10.10.0.11" {
		t.Fatalf("LookupMAC: %+v", got)
	}
	if m := must(inv.MachineByIP(ctx, "10.10.0.11")); m.Name != "m1" {
		t.Fatal(m.Name)
	}
}

func TestIndexesFollowUpdatesAndDeletes(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r2", Hall: "h1", Phase: 1, BudgetW: 44_000}))
	enrollN(t, inv, "r1", 6)
	// Move a machine to another rack, change its MACs and BMC.
	must(inv.UpdateMachine(ctx, "r1-m03", func(m *Machine) error {
		m.Rack, m.Unit = "r2", 7
		m.MACs = []string{macN(300), macN(301)}
		m.BMC.Address = "moved-bmc"
		return nil
	}))
	if _, ok := inv.LookupMAC(macKey(macN(3))); ok {
		t.Error("old MAC still in the in-memory index")
	}
	if m := must(inv.MachineByMAC(ctx, macN(301))); m.Name != "r1-m03" || m.Rack != "r2" {
		t.Errorf("by new MAC: %+v", m)
	}
	wantErr[*NotFoundError](t, must2(inv.MachineByMAC(ctx, macN(3))))
	must(inv.SetMachineState(ctx, "r1-m04", MachineCommissioning, "", ""))
	if err := inv.DeleteMachine(ctx, "r1-m04"); err == nil {
		t.Error("deleting a commissioning machine was allowed")
	}
	if err := inv.DeleteMachine(ctx, "r1-m05"); err != nil {
		t.Fatal(err)
	}
	if err := inv.DeleteRack(ctx, "r1"); err == nil {
		t.Error("deleting a rack with machines was allowed")
	}
	u := must(inv.RackUsage(ctx, "r1"))
	if u.Machines != 4 || u.InstalledW != 4000 || u.ByState[MachineCommissioning] != 1 {
		t.Errorf("r1 usage %+v", u)
	}
	// The freed units and MAC can be reused.
	must(inv.EnrollMachine(ctx, machine("again", "r1", 5, macN(5))))
	checkIndexes(t, inv.(*Store))
}

// checkIndexes recomputes every index and the rack usage from the machine
// records and compares them with what is stored.
func checkIndexes(t *testing.T, s *Store) {
	t.Helper()
	err := s.view(func(tx kv.Tx) error {
		ms, err := list[Machine](tx, bMachines, nil)
		if err != nil {
			return err
		}
		wantMAC, wantBMC, wantRack := map[string]string{}, map[string]string{}, map[string]string{}
		usage := map[string]*RackUsage{}
		for _, m := range ms {
			for _, mac := range m.MACs {
				wantMAC[string(macKey(mac))] = m.Name
			}
			wantBMC[m.BMC.Key()] = m.Name
			wantRack[string(rackMachineKey(m.Rack, m.Name))] = fmt.Sprint(m.Unit, "/", m.Height)
			u := usage[m.Rack]
			if u == nil {
				u = &RackUsage{ByState: map[MachineState]int{}}
				usage[m.Rack] = u
			}
			u.Machines++
			u.UsedUnits += m.Height
			u.InstalledW += m.PowerW
			u.ByState[m.State]++
		}
		compare := func(name string, b []byte, want map[string]string, val func([]byte) string) {
			got := map[string]string{}
			tx.Bucket(b).ForEach(func(k, v []byte) error { got[string(k)] = val(v); return nil })
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s index:\n got %v\nwant %v", name, got, want)
			}
		}
		str := func(v []byte) string { return string(v) }
		compare("mac", bIdxMAC, wantMAC, str)
		compare("bmc", bIdxBMC, wantBMC, str)
		compare("rack", bIdxRackM, wantRack, func(v []byte) string {
			return fmt.Sprint(binary.BigEndian.Uint16(v), "/", binary.BigEndian.Uint16(v[2:]))
		})
		s.boot.mu.RLock()
		if len(s.boot.byMAC) != len(wantMAC) {
			t.Errorf("in-memory MAC index has %d entries, want %d", len(s.boot.byMAC), len(wantMAC))
		}
		for k, name := range wantMAC {
			if bm := s.boot.byMAC[[6]byte([]byte(k))]; bm == nil || bm.entry.Machine != name {
				t.Errorf("in-memory MAC index: %x → %v, want %q", k, bm, name)
			}
		}
		s.boot.mu.RUnlock()
		return tx.Bucket(bRackUsage).ForEach(func(k, v []byte) error {
			var got RackUsage
			getJSON(tx.Bucket(bRackUsage), k, &got)
			want := usage[string(k)]
			if want == nil {
				want = &RackUsage{}
			}
			if got.Machines != want.Machines || got.UsedUnits != want.UsedUnits || got.InstalledW != want.InstalledW ||
				fmt.Sprint(got.ByState) != fmt.Sprint(nonZero(want.ByState)) {
				t.Errorf("rack %s usage %+v, want %+v", k, got, want)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func nonZero(m map[MachineState]int) map[MachineState]int {
	if len(m) == 0 {
		return nil
	}
	return m
}

func TestCapacity(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r2", Hall: "h1", Phase: 1, BudgetW: 130_000}))
	must(inv.CreateRack(ctx, Rack{Name: "p2", Hall: "h1", Phase: 2, BudgetW: 40_000}))
	enrollN(t, inv, "r1", 4)
	must(inv.SetMachineState(ctx, "r1-m01", MachineCommissioning, "", ""))
	c := must(inv.HallCapacity(ctx, "h1"))
	if len(c.Phases) != 2 {
		t.Fatalf("%+v", c)
	}
	p1, p2 := c.Phases[0], c.Phases[1]
	if p1.BudgetW != 1_000_000 || p1.AllocatedW != 174_000 || p1.InstalledW != 4000 ||
		p1.Racks[RackPlanned] != 2 || p1.Machines[MachineEnrolled] != 3 || p1.Machines[MachineCommissioning] != 1 {
		t.Errorf("phase 1: %+v", p1)
	}
	if p2.AllocatedW != 40_000 || p2.InstalledW != 0 || p2.State != PhasePlanned {
		t.Errorf("phase 2: %+v", p2)
	}
	wantErr[*NotFoundError](t, must2(inv.HallCapacity(ctx, "nope")), "hall \"nope\"")
}

func TestConcurrentWriters(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	const workers, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*2)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				n := w*each + i + 1
				e := machine(fmt.Sprintf("m%02d", n), "r1", n, macN(n))
				e.Machine.BMC.Address = fmt.Sprintf("bmc-%d", n)
				if _, err := inv.EnrollMachine(ctx, e); err != nil {
					errs <- err
				}
				if _, err := inv.AppendEvent(ctx, Event{Actor: "w", Subject: fmt.Sprintf("machine/m%02d", n), Action: "enroll"}); err != nil {
					errs <- err
				}
				// Every worker also races for the same units: exactly one wins.
				c := machine(fmt.Sprintf("race-%d-%d", w, i), "r1", 45, macN(1000+n))
				c.Machine.BMC.Address = fmt.Sprintf("race-%d", n)
				inv.EnrollMachine(ctx, c)
				inv.LookupMAC(macKey(macN(n)))
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ms := must(inv.Machines(ctx, MachineFilter{Rack: "r1"}))
	if len(ms) != workers*each+1 {
		t.Fatalf("%d machines, want %d (one winner at U45)", len(ms), workers*each+1)
	}
	ev := must(inv.Events(ctx, EventFilter{}))
	if len(ev) != workers*each {
		t.Fatalf("%d events", len(ev))
	}
	seen := map[uint64]bool{}
	for _, e := range ev {
		if seen[e.Seq] {
			t.Fatalf("duplicate sequence %d", e.Seq)
		}
		seen[e.Seq] = true
	}
	checkIndexes(t, inv.(*Store))
}

func TestLookupMACAllocatesNothing(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	enrollN(t, inv, "r1", 3)
	key := macKey(macN(2))
	allocs := testing.AllocsPerRun(1000, func() {
		if _, ok := inv.LookupMAC(key); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Fatalf("LookupMAC allocates %v times", allocs)
	}
}

func TestOneBMCWhateverTheSpellingOfItsAddress(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	first := machine("m1", "r1", 1, macN(1))
	first.Machine.BMC = BMC{Address: "http://bmc-7.lab:8000/", Protocol: ProtocolRedfish, Username: "admin"}
	stored := must(inv.EnrollMachine(ctx, first))
	if stored.BMC.Address != "http://bmc-7.lab:8000" {
		t.Errorf("stored address %q, want the trailing slash gone", stored.BMC.Address)
	}
	for i, addr := range []string{"bmc-7.lab:8000", "http://bmc-7.lab:8000", "HTTP://BMC-7.lab:8000/", "http://bmc-7.lab:8000/"} {
		e := machine(fmt.Sprintf("m%d", i+2), "r1", i+2, macN(i+2))
		e.Machine.BMC = BMC{Address: addr, Protocol: ProtocolRedfish, Username: "admin"}
		pe := wantErr[*PlacementError](t, must2(inv.EnrollMachine(ctx, e)), "m1")
		if pe.Limit != "bmc-address" {
			t.Errorf("%s: limit %q, want bmc-address", addr, pe.Limit)
		}
	}
	// An upper-case scheme is accepted, stored in lower case; another
	// port is another BMC.
	e := machine("m9", "r1", 9, macN(9))
	e.Machine.BMC = BMC{Address: "HTTP://bmc-7.lab:8001", Protocol: ProtocolRedfish, Username: "admin", System: "System_0", Auth: "basic"}
	if got := must(inv.EnrollMachine(ctx, e)); got.BMC.Address != "http://bmc-7.lab:8001" || got.BMC.System != "System_0" || got.BMC.Auth != "basic" {
		t.Errorf("stored BMC %+v", got.BMC)
	}
}

func TestEnergisationJudgedByMeasuredDraw(t *testing.T) {
	// Placement keeps the ratings within the budget (8 + 12 = 20 kW); a
	// machine drawing more than its rating (burn-in, a wrong rating) is
	// what the interlock catches.
	inv := newInv(t)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r20", Hall: "h1", Phase: 1, Units: 48, BudgetW: 20_000}))
	for i, w := range []int64{8_000, 12_000} {
		e := machine(fmt.Sprintf("p%d", i), "r20", i+1, macN(200+i))
		e.Machine.PowerW = w
		must(inv.EnrollMachine(ctx, e))
	}
	record := func(st BMCStatus) {
		t.Helper()
		st.Reachable, st.Outcome, st.ReadAt = true, "ok", time.Now()
		if err := inv.RecordBMCStatus(ctx, "p0", st); err != nil {
			t.Fatal(err)
		}
	}
	// p0 on, not measured: counted at its rating, 8 + 12 fits.
	record(BMCStatus{Power: "on"})
	if err := EnergisationCheck(ctx, inv, "p1"); err != nil {
		t.Fatal(err)
	}
	// p0 measured at 9.5 kW: 9.5 + 12 does not.
	record(BMCStatus{Power: "on", ConsumedW: 9_500})
	pe := wantErr[*PlacementError](t, EnergisationCheck(ctx, inv, "p1"), "p1", "9.5 kW", "21.5 kW", "20 kW", "by 1.5 kW")
	if pe.Limit != "rack-power-measured" {
		t.Fatalf("limit %q", pe.Limit)
	}
	// p0 measured at 7 kW: fits.
	record(BMCStatus{Power: "on", ConsumedW: 7_000})
	if err := EnergisationCheck(ctx, inv, "p1"); err != nil {
		t.Fatal(err)
	}
}
