package api

import (
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// TestTenantsDoNotSeeTheBMCInThePowerLimitRecord: the record of a cap the
// BMC refused quotes the BMC's error, address included; a tenant's view of
// the machine has it taken out, staff see it whole.
func TestTenantsDoNotSeeTheBMCInThePowerLimitRecord(t *testing.T) {
	m := inventory.Machine{Name: "m1", BMC: inventory.BMC{Address: "10.1.7.7:623", Protocol: inventory.ProtocolIPMI},
		PowerLimit: &inventory.PowerLimitRecord{LimitW: 9000, State: "unsupported",
			Detail: "BMC 10.1.7.7:623: unsupported (IPMI): power-limit: DCMI power limit not offered by this BMC"}}
	tenant := (&call{p: Principal{Role: inventory.RoleTenant, Tenant: "ta"}}).viewMachine(m)
	if strings.Contains(tenant.PowerLimit.Detail, "10.1.7.7") || !strings.Contains(tenant.PowerLimit.Detail, "not offered") {
		t.Fatalf("tenant sees %q", tenant.PowerLimit.Detail)
	}
	staff := (&call{p: Principal{Role: inventory.RoleTechnician}}).viewMachine(m)
	if !strings.Contains(staff.PowerLimit.Detail, "10.1.7.7") || !strings.Contains(m.PowerLimit.Detail, "10.1.7.7") {
		t.Fatalf("staff see %q; stored record %q", staff.PowerLimit.Detail, m.PowerLimit.Detail)
	}
}
