package provisioner

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// BMCFirmwareReader is a BMC that lists firmware versions. The engine
// reads them at a commissioning's BMC check when its BMC adapter has it.
type BMCFirmwareReader interface {
	FirmwareInventory(ctx context.Context, m *inventory.Machine) ([]inventory.FirmwareComponent, error)
}

// FirmwareInventory reads the firmware versions the machine's BMC
// reports.
func (a *Machines) FirmwareInventory(ctx context.Context, m *inventory.Machine) ([]inventory.FirmwareComponent, error) {
	ep, err := a.Endpoint(ctx, m)
	if err != nil {
		return nil, err
	}
	fw, err := a.Ctl.FirmwareInventory(ctx, ep)
	if err != nil {
		return nil, err
	}
	out := make([]inventory.FirmwareComponent, 0, len(fw))
	for _, f := range fw {
		out = append(out, inventory.FirmwareComponent{ID: f.ID, Name: f.Name, Version: f.Version, Updateable: f.Updateable})
	}
	return out, nil
}

// recordBMCFirmware reads and stores the BMC's firmware inventory. A read
// that fails does not fail the BMC check (power control works without
// it): the error is stored, and a profile with BMC firmware baselines
// fails its firmware check with it.
func (e *Engine) recordBMCFirmware(ctx context.Context, j *inventory.Job, m *inventory.Machine) {
	r, ok := e.bmc.(BMCFirmwareReader)
	if !ok {
		return
	}
	fw := inventory.BMCFirmware{ReadAt: e.cfg.Now().UTC()}
	comps, err := r.FirmwareInventory(ctx, m)
	if err != nil {
		fw.Error = err.Error()
	} else {
		fw.Components = comps
	}
	// Written behind, with its event: the bmc-check step's end, written
	// next, carries both in its commit, before check-profile reads them.
	e.inv.RecordBMCFirmwareBehind(m.Name, fw)
	if err != nil {
		e.event(ctx, j, "bmc.firmware", "the BMC's firmware inventory could not be read: "+err.Error())
		return
	}
	var parts []string
	for _, c := range comps {
		parts = append(parts, c.ID+" "+c.Version)
	}
	e.event(ctx, j, "bmc.firmware", fmt.Sprintf("the BMC reports %d firmware versions: %s", len(comps), strings.Join(parts, ", ")))
}

// bmcFirmwareFindings compares the BMC's firmware inventory with the
// profile's minimum versions. A baseline names components by their ID or
// Name, without case; it also covers every component whose ID or Name
// continues it after a separator ("CPLD" covers "CPLD_0" and "CPLD 1",
// "BMC" covers "BMC Firmware"), so one line covers a component fitted
// several times.
func bmcFirmwareFindings(baselines map[string]string, fw *inventory.BMCFirmware) []inventory.Finding {
	if len(baselines) == 0 {
		return nil
	}
	if fw == nil || len(fw.Components) == 0 {
		why := "the BMC's firmware inventory was not read"
		if fw != nil && fw.Error != "" {
			why = "the BMC's firmware inventory could not be read: " + fw.Error
		}
		return []inventory.Finding{{Subject: "BMC firmware", Problem: why, Fix: "check the BMC is reachable and lists its firmware (Redfish UpdateService), then commission again"}}
	}
	var out []inventory.Finding
	for _, key := range slices.Sorted(maps.Keys(baselines)) {
		min := baselines[key]
		found := false
		for _, c := range fw.Components {
			if !componentMatches(key, c) {
				continue
			}
			found = true
			if compareVersions(c.Version, min) < 0 {
				out = append(out, inventory.Finding{Subject: "BMC-reported " + c.ID, Problem: fmt.Sprintf("firmware %s below baseline %s", c.Version, min),
					Fix: "update the " + c.ID + " firmware to " + min + " or later"})
			}
		}
		if !found {
			var ids []string
			for _, c := range fw.Components {
				ids = append(ids, c.ID)
			}
			out = append(out, inventory.Finding{Subject: "BMC firmware " + key, Problem: "not in the BMC's firmware inventory (it lists " + strings.Join(ids, ", ") + ")",
				Fix: "name the component as the BMC does in the profile's firmware.bmc"})
		}
	}
	return out
}

func componentMatches(key string, c inventory.FirmwareComponent) bool {
	for _, n := range []string{c.ID, c.Name} {
		if len(n) < len(key) || !strings.EqualFold(n[:len(key)], key) {
			continue
		}
		if len(n) == len(key) {
			return true
		}
		// A separator after the key, not a longer word: "BMC" covers
		// "BMC Firmware" but not "BMCX".
		if r := n[len(key)]; !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return true
		}
	}
	return false
}
