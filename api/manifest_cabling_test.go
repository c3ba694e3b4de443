package api

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

const cablingManifest = manifestYAML + `    cabling:
      - {nic: ens3f0, switch: leaf-03, port: Ethernet12}
      - {nic: "0000:17:00.1", switch: leaf-04, port: Ethernet12}
`

// A manifest's cable schedule lands on the machine; a wrong cable is
// refused pointing at its own line, and nothing changes; a corrected plan
// re-imported replaces the stored one.
func TestManifestCablingPlan(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ name, manifest, want string }{
		{"no switch", strings.Replace(cablingManifest, "switch: leaf-04, ", "", 1), "manifest line 16, machine 1 \"gpu-rnew-01\": cabling[1]: switch: is required"},
		{"port twice", strings.Replace(cablingManifest, "leaf-04", "leaf-03", 1), "manifest line 16, machine 1 \"gpu-rnew-01\": cabling[1]: port: leaf-03 Ethernet12 is planned for two NICs"},
		{"unknown key", strings.Replace(cablingManifest, "port: Ethernet12}", "prot: Ethernet12}", 1), "prot"},
	} {
		status, data := f.do("technician", "POST", "/api/v1/racks/import", c.manifest)
		var e Error
		json.Unmarshal(data, &e)
		if status != 400 || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %q, want 400 with %q", c.name, status, e.Message, c.want)
		}
	}
	if _, err := f.inv.Rack(context.Background(), "rnew"); err == nil {
		t.Fatal("a refused manifest left its rack behind")
	}

	if status, data := f.do("technician", "POST", "/api/v1/racks/import", cablingManifest); status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	m := must(f.inv.Machine(context.Background(), "gpu-rnew-01"))
	want := []inventory.PlannedCable{{NIC: "ens3f0", Switch: "leaf-03", Port: "Ethernet12"}, {NIC: "0000:17:00.1", Switch: "leaf-04", Port: "Ethernet12"}}
	if !slices.Equal(m.Cabling, want) {
		t.Fatalf("stored plan %+v, want %+v", m.Cabling, want)
	}
	status, data := f.do("technician", "POST", "/api/v1/racks/import", strings.Replace(cablingManifest, "leaf-04", "leaf-05", 1))
	var res inventory.ImportResult
	json.Unmarshal(data, &res)
	if status != 200 || !slices.Equal(res.CablingUpdated, []string{"gpu-rnew-01"}) {
		t.Fatalf("corrected plan: %d %s", status, data)
	}
	if m := must(f.inv.Machine(context.Background(), "gpu-rnew-01")); m.Cabling[1].Switch != "leaf-05" {
		t.Fatalf("plan after re-import: %+v", m.Cabling)
	}
}

// A cable schedule in NetBox's cable CSV (the columns `rack cabling
// --csv` writes, either end first) sets the plans of the machines it
// names; a bad line is refused by its number and changes nothing.
func TestCableScheduleSetsTheRacksPlans(t *testing.T) {
	f := newFixture(t)
	if status, data := f.do("technician", "POST", "/api/v1/racks/import", manifestYAML); status != 200 {
		t.Fatalf("%d %s", status, data)
	}
	const header = "side_a_device,side_a_type,side_a_name,side_b_device,side_b_type,side_b_name,status\n"
	for _, c := range []struct{ name, csv, want string }{
		{"no machine", header + "gpu-rnew-01,dcim.interface,ens3f0,leaf-01,dcim.interface,Ethernet1,connected\nsw-9,dcim.interface,x,leaf-01,dcim.interface,Ethernet2,planned\n",
			`cable schedule line 3: neither "sw-9" nor "leaf-01" is a machine of rack "rnew"`},
		{"front port", header + "gpu-rnew-01,dcim.frontport,ens3f0,leaf-01,dcim.interface,Ethernet1,connected\n", "line 2, column side_a_type"},
		{"bad cable", header + "gpu-rnew-01,dcim.interface,ens3f0,leaf-01,dcim.interface,Ethernet1,connected\ngpu-rnew-01,dcim.interface,ens3f1,leaf-02,dcim.interface,,connected\n",
			`cable schedule line 3, machine "gpu-rnew-01": port: is required`},
		{"missing column", "side_a_device,side_a_name,side_b_device\nx,y,z\n", `missing column "side_b_name"`},
	} {
		status, data := f.do("technician", "PUT", "/api/v1/racks/rnew/cabling", c.csv)
		var e Error
		json.Unmarshal(data, &e)
		if status != 400 || !strings.Contains(e.Message, c.want) {
			t.Errorf("%s: %d %q, want 400 with %q", c.name, status, e.Message, c.want)
		}
	}
	if m := must(f.inv.Machine(context.Background(), "gpu-rnew-01")); len(m.Cabling) != 0 {
		t.Fatalf("refused schedules left a plan: %+v", m.Cabling)
	}
	// The switch may be either end.
	csv := header + "gpu-rnew-01,dcim.interface,ens3f0,leaf-01,dcim.interface,Ethernet1,connected\nleaf-02,dcim.interface,Ethernet1,gpu-rnew-01,dcim.interface,0000:17:00.1,planned\n"
	status, data := f.do("technician", "PUT", "/api/v1/racks/rnew/cabling", csv)
	var res CablingPlanResult
	json.Unmarshal(data, &res)
	if status != 200 || res.Cables != 2 || !slices.Equal(res.Updated, []string{"gpu-rnew-01"}) {
		t.Fatalf("%d %s", status, data)
	}
	want := []inventory.PlannedCable{{NIC: "ens3f0", Switch: "leaf-01", Port: "Ethernet1"}, {NIC: "0000:17:00.1", Switch: "leaf-02", Port: "Ethernet1"}}
	if m := must(f.inv.Machine(context.Background(), "gpu-rnew-01")); !slices.Equal(m.Cabling, want) {
		t.Errorf("plan %+v, want %+v", m.Cabling, want)
	}
	status, data = f.do("technician", "PUT", "/api/v1/racks/rnew/cabling", csv)
	if json.Unmarshal(data, &res); status != 200 || res.Updated == nil || len(res.Updated) != 0 {
		t.Errorf("the same schedule again: %d %s", status, data)
	}
}
