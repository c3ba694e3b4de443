package inventory

import (
	"net"
	"slices"
	"testing"
	"time"
)

func TestDeletesAreRefusedWhileSomethingDependsAndNameIt(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	hallFixture(t, inv)
	must(inv.CreateRack(ctx, Rack{Name: "r2", Hall: "h1", Phase: 1, Units: 48, BudgetW: 10_000}))
	must(inv.CreateTenant(ctx, Tenant{Name: "bank-x"}))
	must(inv.AssignRackTenant(ctx, "r2", "bank-x"))

	wantErr[*ConflictError](t, s.DeleteSite(ctx, "s1"), "site s1 still has 1 hall: h1", "delete them or move them")
	wantErr[*ConflictError](t, s.DeleteHall(ctx, "h1"), "hall h1 still has 2 racks: r1, r2; delete them first")
	wantErr[*ConflictError](t, s.DeletePhase(ctx, "h1", 1), "phase 1 of hall h1 still has 2 racks: r1, r2")
	wantErr[*ConflictError](t, s.DeleteTenant(ctx, "bank-x"), "tenant bank-x still has 1 rack: r2", "unassign them first")
	wantErr[*NotFoundError](t, s.DeleteSite(ctx, "nowhere"))
	wantErr[*NotFoundError](t, s.DeletePhase(ctx, "h1", 9))

	// Refused: nothing changed.
	if _, err := inv.Site(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := inv.Phases(ctx, "h1"); len(ps) != 2 {
		t.Fatalf("phases after refused deletes: %v", ps)
	}

	// An empty phase goes; the rest go once what they hold is gone.
	if err := s.DeletePhase(ctx, "h1", 2); err != nil {
		t.Fatal(err)
	}
	must(inv.UnassignRackTenant(ctx, "r2", "bank-x"))
	must(inv.CreateToken(ctx, Token{ID: "tok1", Role: RoleTenant, Tenant: "bank-x", Hash: make([]byte, 32)}))
	wantErr[*ConflictError](t, s.DeleteTenant(ctx, "bank-x"), "1 live token: tok1", "revoke them first")
	must(inv.RevokeToken(ctx, "tok1"))
	if err := s.DeleteTenant(ctx, "bank-x"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"r1", "r2"} {
		if err := inv.DeleteRack(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	wantErr[*ConflictError](t, s.DeleteHall(ctx, "h1"), "hall h1 still has 1 phase: 1")
	for _, err := range []error{s.DeletePhase(ctx, "h1", 1), s.DeleteHall(ctx, "h1"), s.DeleteSite(ctx, "s1")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if sites, _ := inv.Sites(ctx); len(sites) != 0 {
		t.Fatalf("sites left: %v", sites)
	}
}

func TestARefusalListsTenNamesAndCountsTheRest(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	hallFixture(t, inv)
	for i := 2; i <= 12; i++ {
		must(inv.CreateRack(ctx, Rack{Name: "r" + string(rune('a'+i)), Hall: "h1", Phase: 1, Units: 48, BudgetW: 1000}))
	}
	wantErr[*ConflictError](t, s.DeleteHall(ctx, "h1"), "still has 12 racks:", "and 2 more; delete them first")
}

func TestHallMovesOnlyToASiteThatExists(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	hallFixture(t, inv)
	wantErr[*NotFoundError](t, second(s.EditHall(ctx, "h1", "s2")), `site "s2"`)
	must(inv.CreateSite(ctx, Site{Name: "s2"}))
	if h := must(s.EditHall(ctx, "h1", "s2")); h.Site != "s2" {
		t.Fatalf("hall after move: %+v", h)
	}
	if h := must(inv.Hall(ctx, "h1")); h.Site != "s2" {
		t.Fatalf("stored hall: %+v", h)
	}
	if err := s.DeleteSite(ctx, "s1"); err != nil {
		t.Fatalf("s1 holds no hall now: %v", err)
	}
}

func TestDescriptionsChangeAndTooLongOnesChangeNothing(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	must(inv.CreateSite(ctx, Site{Name: "s1", Description: "old"}))
	must(inv.CreateTenant(ctx, Tenant{Name: "bank-x"}))
	long := string(make([]byte, 2000))
	wantErr[*ValidationError](t, second(s.EditSite(ctx, "s1", long)), "description")
	wantErr[*ValidationError](t, second(s.EditTenant(ctx, "bank-x", long)), "description")
	if got := must(inv.Site(ctx, "s1")); got.Description != "old" {
		t.Fatalf("refused edit changed the site: %+v", got)
	}
	must(s.EditSite(ctx, "s1", "Riyadh campus"))
	must(s.EditTenant(ctx, "bank-x", "Bank X, ops@bank-x.example"))
	if got := must(inv.Tenant(ctx, "bank-x")); got.Description != "Bank X, ops@bank-x.example" {
		t.Fatalf("tenant: %+v", got)
	}
	wantErr[*NotFoundError](t, second(s.EditTenant(ctx, "nobody", "x")))
}

func second[T any](_ T, err error) error { return err }

func ptr[T any](v T) *T { return &v }

func TestSubnetEditsKeepReservationsAndLeasesAndReachTheBootViewAtOnce(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	hallFixture(t, inv)
	must(inv.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.1.0.0/24", Gateway: "10.1.0.1", RangeFirst: "10.1.0.200", RangeLast: "10.1.0.250"}))
	e := machine("m1", "r1", 1, macN(1))
	e.Machine.IP = "10.1.0.10"
	must(inv.EnrollMachine(ctx, e))
	if err := s.PutLeases(ctx, []Lease{
		{MAC: macN(100), IP: "10.1.0.240", Expires: time.Now().Add(time.Hour)},
		{MAC: macN(101), IP: "10.1.0.249", Expires: time.Now().Add(-time.Hour)}, // expired: holds nothing
	}); err != nil {
		t.Fatal(err)
	}
	before := must(inv.Subnets(ctx))

	refusals := []struct {
		edit SubnetEdit
		want []string
	}{
		{SubnetEdit{RangeFirst: ptr("10.1.0.5"), RangeLast: ptr("10.1.0.50")}, []string{"take in 1 address reserved for m1 (10.1.0.10)"}},
		{SubnetEdit{RangeFirst: ptr("10.1.0.200"), RangeLast: ptr("10.1.0.220")}, []string{"1 address leased", "10.1.0.240 (" + macN(100) + ")", "after they expire"}},
		{SubnetEdit{RangeFirst: ptr(""), RangeLast: ptr("")}, []string{"10.1.0.240"}},
		{SubnetEdit{Gateway: ptr("10.1.0.10")}, []string{"gateway 10.1.0.10 is reserved for machine m1"}},
	}
	for _, r := range refusals {
		wantErr[*ConflictError](t, second(s.EditSubnet(ctx, "prov", r.edit)), r.want...)
	}
	for _, bad := range []SubnetEdit{
		{Gateway: ptr("10.2.0.1")},
		{RangeFirst: ptr("10.1.0.250"), RangeLast: ptr("10.1.0.200")},
		{RangeFirst: ptr("10.1.0.200")},
		{DNS: []string{"dns.example"}},
		{},
	} {
		wantErr[*ValidationError](t, second(s.EditSubnet(ctx, "prov", bad)))
	}
	if after := must(inv.Subnets(ctx)); !slices.EqualFunc(before, after, func(a, b Subnet) bool {
		return a.Gateway == b.Gateway && a.RangeFirst == b.RangeFirst && a.RangeLast == b.RangeLast && slices.Equal(a.DNS, b.DNS)
	}) {
		t.Fatalf("refused edits changed the subnet: %+v", after)
	}

	gen := inv.BootView().SubnetGeneration()
	sn := must(s.EditSubnet(ctx, "prov", SubnetEdit{RangeFirst: ptr("10.1.0.230"), RangeLast: ptr("10.1.0.245"), Gateway: ptr("10.1.0.254"), DNS: []string{"10.1.0.53"}}))
	if sn.RangeFirst != "10.1.0.230" || sn.Gateway != "10.1.0.254" {
		t.Fatalf("edited subnet: %+v", sn)
	}
	subs, gen2 := inv.BootView().Subnets()
	if gen2 == gen || len(subs) != 1 || subs[0].RangeFirst.String() != "10.1.0.230" || subs[0].Gateway.String() != "10.1.0.254" || len(subs[0].DNS) != 1 {
		t.Fatalf("boot view after the edit (generation %d → %d): %+v", gen, gen2, subs)
	}
	be, ok := inv.BootView().Lookup(macBytes(t, macN(1)))
	if !ok || be.Subnet.Gateway.String() != "10.1.0.254" {
		t.Fatalf("m1's reservation still answers the old gateway: %+v", be)
	}

	wantErr[*ConflictError](t, s.DeleteSubnet(ctx, "prov"), "subnet prov still has 1 machine with a reserved address: m1 (10.1.0.10)")
	if err := inv.DeleteMachine(ctx, "m1"); err != nil {
		t.Fatal(err)
	}
	wantErr[*ConflictError](t, s.DeleteSubnet(ctx, "prov"), "1 unexpired lease: 10.1.0.240", "wait until they expire")
	// An hour on, the lease has expired and the subnet goes, from the view too.
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if err := s.DeleteSubnet(ctx, "prov"); err != nil {
		t.Fatal(err)
	}
	if subs, _ := inv.BootView().Subnets(); len(subs) != 0 {
		t.Fatalf("boot view still serves a deleted subnet: %+v", subs)
	}
}

func macBytes(t *testing.T, s string) []byte {
	t.Helper()
	hw, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return hw
}
