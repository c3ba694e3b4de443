package inventory

import (
	"slices"
	"strings"
	"testing"
)

func TestCablingPlanIsCanonicalised(t *testing.T) {
	plan := []PlannedCable{
		{NIC: " ens3f0 ", Switch: "leaf-03", Port: "Ethernet12"},
		{NIC: "0000:17:00.1", Switch: "leaf-03", Port: "Ethernet13"},
		{NIC: "0000:9A:00.0", Switch: "leaf-04", Port: "Ethernet12"},
		{NIC: "0C-42-A1-12-34-56", Switch: "0c:42:a1:00:00:00", Port: "swp1 to gpu-a01-01"},
	}
	if err := ValidateCabling(plan); err != nil {
		t.Fatal(err)
	}
	var nics []string
	for _, c := range plan {
		nics = append(nics, c.NIC)
	}
	if want := []string{"ens3f0", "0000:17:00.1", "0000:9a:00.0", "0c:42:a1:12:34:56"}; !slices.Equal(nics, want) {
		t.Errorf("NICs = %q, want %q", nics, want)
	}
}

func TestBadCablingPlanNamesTheCableAndWhatIsWrong(t *testing.T) {
	ok := PlannedCable{NIC: "ens3f0", Switch: "leaf-03", Port: "Ethernet12"}
	for name, tc := range map[string]struct {
		bad   PlannedCable
		words []string
	}{
		"no NIC":            {PlannedCable{Switch: "leaf-03", Port: "Ethernet13"}, []string{"cabling[1]", "nic", "is required"}},
		"no switch":         {PlannedCable{NIC: "ens3f1", Port: "Ethernet13"}, []string{"cabling[1]", "switch", "is required"}},
		"no port":           {PlannedCable{NIC: "ens3f1", Switch: "leaf-03"}, []string{"cabling[1]", "port", "is required"}},
		"bad MAC":           {PlannedCable{NIC: "0c:42:a1:12:34:zz", Switch: "leaf-03", Port: "Ethernet13"}, []string{"cabling[1]", "looks like a MAC"}},
		"not a NIC":         {PlannedCable{NIC: "ens3f0/port one", Switch: "leaf-03", Port: "Ethernet13"}, []string{"cabling[1]", "is not an interface name"}},
		"NIC twice":         {PlannedCable{NIC: "ens3f0", Switch: "leaf-04", Port: "Ethernet12"}, []string{"cabling[1]", "ens3f0 is planned twice", "cabling[0]"}},
		"switch port twice": {PlannedCable{NIC: "ens3f1", Switch: "LEAF-03", Port: "Ethernet12"}, []string{"cabling[1]", "LEAF-03 Ethernet12 is planned for two NICs"}},
		"control bytes":     {PlannedCable{NIC: "ens3f1", Switch: "leaf\x00", Port: "Ethernet12"}, []string{"cabling[1]", "switch", "printable"}},
	} {
		t.Run(name, func(t *testing.T) {
			err := ValidateCabling([]PlannedCable{ok, tc.bad})
			ce := wantErr[*CableError](t, err, tc.words...)
			if ce.Index != 1 {
				t.Errorf("index %d, want 1", ce.Index)
			}
			wantErr[*ValidationError](t, err)
		})
	}
}

// The cable schedule is a plan: re-importing the manifest with a
// corrected plan replaces it and changes nothing else, and one switch
// port planned for two machines of a rack is refused before anything is
// written.
func TestReimportReplacesTheCablingPlan(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	in := rackImport("a01", 2, 0)
	in.Machines[0].Machine.Cabling = []PlannedCable{{NIC: "ens3f0", Switch: "leaf-03", Port: "Ethernet12"}}
	must(inv.ImportRack(ctx, in))
	before := must(inv.Machine(ctx, "a01-m01"))

	fixed := rackImport("a01", 2, 0)
	fixed.Machines[0].Machine.Cabling = []PlannedCable{{NIC: "ens3f0", Switch: "leaf-03", Port: "Ethernet13"}}
	res := must(inv.ImportRack(ctx, fixed))
	if !slices.Equal(res.CablingUpdated, []string{"a01-m01"}) || len(res.Unchanged) != 2 || len(res.Created) != 0 {
		t.Fatalf("re-import: %+v", res)
	}
	after := must(inv.Machine(ctx, "a01-m01"))
	if len(after.Cabling) != 1 || after.Cabling[0].Port != "Ethernet13" {
		t.Fatalf("plan after re-import: %+v", after.Cabling)
	}
	if after.Tenancy != before.Tenancy || after.State != before.State || !slices.Equal(after.MACs, before.MACs) {
		t.Errorf("re-import changed more than the plan: %+v -> %+v", before, after)
	}
	// The same manifest again changes nothing.
	if res := must(inv.ImportRack(ctx, fixed)); len(res.CablingUpdated) != 0 {
		t.Errorf("identical re-import updated %v", res.CablingUpdated)
	}

	clash := rackImport("a02", 2, 100)
	clash.Machines[0].Machine.Cabling = []PlannedCable{{NIC: "ens3f0", Switch: "leaf-09", Port: "Ethernet1"}}
	clash.Machines[1].Machine.Cabling = []PlannedCable{{NIC: "ens3f1", Switch: "leaf-09", Port: "Ethernet1"}}
	wantErr[*CableError](t, must2(inv.ImportRack(ctx, clash)), "machines[1]", "a02-m02", "leaf-09 Ethernet1 is also planned for machine \"a02-m01\"")
	wantErr[*NotFoundError](t, must2(inv.Rack(ctx, "a02")))
	checkIndexes(t, inv.(*Store))
}

func TestPlannedCableMatchesWhatLLDPSays(t *testing.T) {
	c := PlannedCable{NIC: "0000:17:00.0", Switch: "leaf-03", Port: "Ethernet12"}
	if !c.IsNIC("ens3f0", "0000:17:00.0", "0c:42:a1:12:34:56") || c.IsNIC("ens3f0", "0000:17:00.1", "") {
		t.Error("NIC by PCI address")
	}
	if m := (PlannedCable{NIC: "0c:42:a1:12:34:56"}); !m.IsNIC("x", "", "0C:42:A1:12:34:56") {
		t.Error("NIC by MAC")
	}
	if !c.IsSwitch("LEAF-03", "0c:42:a1:00:00:00") || c.IsSwitch("leaf-07", "0c:42:a1:00:00:00") {
		t.Error("switch by system name")
	}
	if ch := (PlannedCable{Switch: "0c:42:a1:00:00:00"}); !ch.IsSwitch("", "0C:42:A1:00:00:00") {
		t.Error("switch by chassis ID")
	}
	if !c.IsPort("Ethernet12", "") || !c.IsPort("0c:42:a1:00:00:0c", "Ethernet12") || c.IsPort("Ethernet1", "Ethernet13") {
		t.Error("port by ID or description")
	}
}

// A cable schedule imported on its own replaces the named machines'
// plans and leaves the others; a machine of another rack, a bad cable or
// a switch port another machine of the rack keeps changes nothing.
func TestSetCablingPlansIsAllOrNothing(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	in := rackImport("a01", 3, 0)
	in.Machines[2].Machine.Cabling = []PlannedCable{{NIC: "ens3f0", Switch: "leaf-01", Port: "Ethernet3"}}
	must(inv.ImportRack(ctx, in))
	must(inv.ImportRack(ctx, rackImport("a02", 1, 100)))

	plans := map[string][]PlannedCable{
		"a01-m01": {{NIC: " ens3f0 ", Switch: "leaf-01", Port: "Ethernet1"}, {NIC: "0000:17:00.1", Switch: "leaf-02", Port: "Ethernet1"}},
		"a01-m02": {{NIC: "ens3f0", Switch: "leaf-01", Port: "Ethernet2"}},
	}
	for name, bad := range map[string]struct {
		plans map[string][]PlannedCable
		err   []string
	}{
		"other rack":   {map[string][]PlannedCable{"a02-m01": plans["a01-m02"]}, []string{`machine "a02-m01"`, `is in rack "a02", not "a01"`}},
		"taken port":   {map[string][]PlannedCable{"a01-m01": {{NIC: "ens3f0", Switch: "leaf-01", Port: "Ethernet3"}}}, []string{`machine "a01-m03"`, `leaf-01 Ethernet3 is also planned for machine "a01-m01"`}},
		"bad cable":    {map[string][]PlannedCable{"a01-m01": {{NIC: "ens3f0", Switch: "leaf-01"}}}, []string{`machine "a01-m01"`, "cabling[0]: port: is required"}},
		"unknown rack": {nil, []string{`rack "zz" not found`}},
	} {
		rack := "a01"
		if bad.plans == nil {
			rack = "zz"
		}
		_, err := inv.SetCablingPlans(ctx, rack, bad.plans)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		for _, w := range bad.err {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want %q", name, err, w)
			}
		}
	}
	if m := must(inv.Machine(ctx, "a01-m01")); len(m.Cabling) != 0 {
		t.Fatalf("refused plans changed a01-m01: %+v", m.Cabling)
	}

	changed := must(inv.SetCablingPlans(ctx, "a01", plans))
	if !slices.Equal(changed, []string{"a01-m01", "a01-m02"}) {
		t.Errorf("changed %v", changed)
	}
	if m := must(inv.Machine(ctx, "a01-m01")); len(m.Cabling) != 2 || m.Cabling[0].NIC != "ens3f0" {
		t.Errorf("a01-m01 plan %+v", m.Cabling)
	}
	if m := must(inv.Machine(ctx, "a01-m03")); len(m.Cabling) != 1 {
		t.Errorf("a01-m03 lost its plan: %+v", m.Cabling)
	}
	if changed := must(inv.SetCablingPlans(ctx, "a01", plans)); len(changed) != 0 {
		t.Errorf("the same plans again changed %v", changed)
	}
	checkIndexes(t, inv.(*Store))
}
