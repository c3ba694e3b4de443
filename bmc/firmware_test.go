package bmc

import (
	"reflect"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/redfish"
)

// The FirmwareInventory's every member comes back, ordered by ID, with
// its version as the BMC wrote it.
func TestRedfishFirmwareInventoryListsEveryComponent(t *testing.T) {
	b := startRedfish(t, redfish.Config{FirmwareVersion: "U50 v2.10 (04/10/2024)", BIOSVersion: "2.1.7",
		Firmware: []redfish.Firmware{{ID: "CPLD_0", Name: "CPLD", Version: "1.0.3"}, {ID: "HGX_FW_GPU_SXM_1", Name: "GPU SXM 1", Version: "GB300.1.4.0-rc2"}}})
	c := testController(t, Config{})
	fw, err := c.FirmwareInventory(ctxT(t, 30*time.Second), b.ep)
	if err != nil {
		t.Fatal(err)
	}
	want := []Firmware{
		{ID: "BMC", Name: "BMC Firmware", Version: "U50 v2.10 (04/10/2024)", Updateable: true},
		{ID: "BIOS", Name: "BIOS", Version: "2.1.7", Updateable: true},
		{ID: "CPLD_0", Name: "CPLD", Version: "1.0.3", Updateable: true},
		{ID: "HGX_FW_GPU_SXM_1", Name: "GPU SXM 1", Version: "GB300.1.4.0-rc2", Updateable: true},
	}
	if !reflect.DeepEqual(fw, want) {
		t.Errorf("firmware = %+v\nwant %+v", fw, want)
	}
}

// A BMC without an UpdateService still says its own and the BIOS's
// versions.
func TestRedfishWithoutUpdateServiceFallsBackToManagerAndSystem(t *testing.T) {
	b := startRedfish(t, redfish.Config{NoSessions: true, FirmwareVersion: "3.1", BIOSVersion: "1.9"})
	b.ep.Auth = AuthBasic
	c := testController(t, Config{})
	fw, err := c.FirmwareInventory(ctxT(t, 30*time.Second), b.ep)
	if err != nil {
		t.Fatal(err)
	}
	want := []Firmware{{ID: "BMC", Name: "BMC", Version: "3.1"}, {ID: "BIOS", Name: "BIOS", Version: "1.9"}}
	if !reflect.DeepEqual(fw, want) {
		t.Errorf("firmware = %+v, want %+v", fw, want)
	}
}

// IPMI has no firmware inventory: the BMC's own revision is what there is.
func TestIPMIFirmwareInventoryIsTheBMCsRevision(t *testing.T) {
	_, ep := startSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	fw, err := c.FirmwareInventory(ctxT(t, 60*time.Second), ep)
	if err != nil {
		t.Fatal(err)
	}
	if len(fw) != 1 || fw[0].ID != "BMC" || fw[0].Version == "" {
		t.Errorf("firmware = %+v", fw)
	}
}
