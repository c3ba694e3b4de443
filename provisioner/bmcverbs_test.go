package provisioner

import (
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// Every verb the inventory accepts reaches package bmc as one of its own:
// a verb added on one side and not the other fails here, not on a BMC.
func TestEveryInventoryVerbHasABMCVerb(t *testing.T) {
	for _, a := range inventory.PowerActions {
		if bmcPowerAction[a] == "" {
			t.Errorf("power action %q has no bmc action", a)
		}
	}
	for _, d := range inventory.BootDevices {
		if bmcBootDevice[d] == "" {
			t.Errorf("boot device %q has no bmc device", d)
		}
	}
}

func TestVerbsAreParsedOnceAndRefusedClearly(t *testing.T) {
	if a, err := inventory.ParsePowerAction("cycle"); err != nil || a != inventory.PowerCycle {
		t.Fatalf("%q %v", a, err)
	}
	for _, bad := range []string{"", "status", "reset", "ON"} {
		if _, err := inventory.ParsePowerAction(bad); err == nil {
			t.Errorf("power action %q accepted", bad)
		}
	}
	if _, err := inventory.ParseBootDevice("floppy"); err == nil {
		t.Error("boot device floppy accepted")
	}
	if d, err := inventory.ParseBootDevice("pxe"); err != nil || d != inventory.BootPXE {
		t.Fatalf("%q %v", d, err)
	}
}
