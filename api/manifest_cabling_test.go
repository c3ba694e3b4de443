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
