package api

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// TestBoundedInput: inputs sized to cost the service memory or CPU, or to
// overflow its arithmetic, are refused with a message naming the limit,
// and change nothing.
func TestBoundedInput(t *testing.T) {
	f := newFixture(t)
	before := len(must(f.inv.Machines(context.Background(), inventory.MachineFilter{})))

	// YAML alias amplification: one machine, with its BMC password, aliased
	// 1,500 times (each alias would be decoded, and its password sealed).
	var b strings.Builder
	b.WriteString("rack: {name: ralias, hall: h1, phase: 1, units: 48, power_kw: 44}\n")
	b.WriteString("machines:\n")
	b.WriteString("  - &m {name: gpu-alias, unit: 1, macs: [\"52:54:00:ab:00:01\"], power_w: 100,\n")
	b.WriteString("      bmc: {address: 10.9.9.9, protocol: ipmi, user: admin, password: " + strings.Repeat("p", 200) + "}}\n")
	for range 1500 {
		b.WriteString("  - *m\n")
	}
	status, data := f.do("admin", "POST", "/api/v1/racks/import", b.String())
	if status != 400 || !strings.Contains(string(data), "alias") {
		t.Errorf("aliased manifest: %d %s", status, data)
	}
	// An alias of a plain value too: no YAML anchors at all.
	aliased := strings.Replace(manifestYAML, "name: rnew", "name: &n rnew", 1)
	aliased = strings.Replace(aliased, "hall: h1", "hall: *n", 1)
	if status, data := f.do("admin", "POST", "/api/v1/racks/import", aliased); status != 400 || !strings.Contains(string(data), "line 2") {
		t.Errorf("manifest with an alias: %d %s", status, data)
	}

	// More machines than a rack has units.
	b.Reset()
	b.WriteString("rack: {name: rmany, hall: h1, phase: 1, units: 64, power_kw: 44}\nmachines:\n")
	for i := 1; i <= 65; i++ {
		fmt.Fprintf(&b, "  - {name: gm%02d, unit: %d, macs: [\"52:54:00:ac:00:%02x\"], power_w: 100, bmc: {address: 10.8.1.%d, protocol: ipmi, user: admin, password: pw}}\n", i, i, i, i)
	}
	if status, data := f.do("admin", "POST", "/api/v1/racks/import", b.String()); status != 400 || !strings.Contains(string(data), "64") {
		t.Errorf("65-machine manifest: %d %s", status, data)
	}

	// A BMC password no BMC has: refused before it is sealed.
	long := strings.Repeat("p", 4096)
	enroll := MachineEnroll{Name: "m9", Rack: "rempty", Unit: 5, MACs: []string{"52:54:00:00:09:09"}, BMCAddress: "10.0.9.9",
		BMCProtocol: "redfish", BMCUser: "root", BMCPassword: long, PowerW: 1000}
	if status, data := f.do("admin", "POST", "/api/v1/machines", enroll); status != 400 || !strings.Contains(string(data), "bmc_password") {
		t.Errorf("4 KiB password: %d %s", status, data)
	}
	if status, data := f.do("admin", "POST", "/api/v1/racks/import", strings.Replace(manifestYAML, "hunter2", long, 1)); status != 400 || !strings.Contains(string(data), "bmc_password") {
		t.Errorf("4 KiB password in a manifest: %d %s", status, data)
	}

	// Budgets whose watts overflow int64.
	for _, c := range []struct{ path, body string }{
		{"/api/v1/racks", `{"name":"rhuge","hall":"h1","phase":1,"power_kw":9223372036854774}`},
		{"/api/v1/racks", `{"name":"rhuge","hall":"h1","phase":1,"power_kw":1e300}`},
		{"/api/v1/halls/h1/phases", `{"number":7,"power_kw":9223372036854774}`},
	} {
		if status, data := f.do("admin", "POST", c.path, c.body); status != 400 || !strings.Contains(string(data), "power_kw") {
			t.Errorf("POST %s %s: %d %s", c.path, c.body, status, data)
		}
	}
	if status, data := f.do("admin", "POST", "/api/v1/racks/import", strings.Replace(manifestYAML, "power_kw: 44", "power_kw: 9223372036854774", 1)); status != 400 || !strings.Contains(string(data), "power_kw") {
		t.Errorf("manifest with an overflowing budget: %d %s", status, data)
	}

	if after := len(must(f.inv.Machines(context.Background(), inventory.MachineFilter{}))); after != before {
		t.Fatalf("refused input changed the machines: %d → %d", before, after)
	}
	for _, r := range []string{"ralias", "rmany", "rnew", "rhuge"} {
		if _, err := f.inv.Rack(context.Background(), r); err == nil {
			t.Errorf("refused input stored rack %s", r)
		}
	}
}
