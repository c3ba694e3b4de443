package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/lab/redfish"
)

// rackInCommissioningHall describes site s1, hall h1 with phase 1 (100 kW)
// commissioning, and rack r1 with the given budget.
func rackInCommissioningHall(r cliRunner, rackKW string) {
	r.t.Helper()
	r.ok("site", "create", "s1")
	r.ok("hall", "create", "--site", "s1", "h1")
	r.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "100")
	r.ok("phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning")
	r.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", rackKW, "r1")
}

// bmcFleet serves n emulated Redfish BMCs (admin/admin) on loopback ports
// the test holds until it ends, and returns them with a file holding their
// password, for --bmc-password-file.
func bmcFleet(t *testing.T, n int) (*redfish.Fleet, string) {
	t.Helper()
	fleet, err := redfish.StartFleet("127.0.0.1", n, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fleet.Close)
	pw := filepath.Join(t.TempDir(), "bmc-password")
	if err := os.WriteFile(pw, []byte("admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fleet, pw
}
