package bmc

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Firmware is one component's firmware as the BMC lists it: the BMC
// itself, the BIOS, and whatever else the vendor reports (CPLD, PSUs,
// NICs, GPUs, the GPU baseboard's own components).
type Firmware struct {
	ID         string // the BMC's own ID for it: "BMC", "BIOS", "CPLD_0", "HGX_FW_GPU_SXM_1"
	Name       string // its display name, where the BMC gives one
	Version    string // as the BMC writes it
	Updateable bool
}

// FirmwareInventory reads the firmware versions the BMC reports. Redfish:
// the UpdateService's FirmwareInventory, every member; a service without
// one (some BMCs leave it out) gives the manager's FirmwareVersion as
// "BMC" and the system's BiosVersion as "BIOS". IPMI has no inventory of
// firmware: `mc info` gives the BMC's own firmware revision only.
func (c *Controller) FirmwareInventory(ctx context.Context, ep Endpoint) ([]Firmware, error) {
	var out []Firmware
	err := c.run(ctx, ep, "firmware-inventory", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		if ep.Protocol == IPMI {
			inv, err := c.ipmiInventory(ctx, ep)
			if err != nil {
				return err
			}
			out = []Firmware{{ID: "BMC", Name: "BMC", Version: inv.BMCFirmware}}
			return nil
		}
		out, err = s.redfishFirmware(ctx)
		return err
	})
	return out, err
}

func (s *session) redfishFirmware(ctx context.Context) ([]Firmware, error) {
	gf, sys, err := s.gofishSystem(ctx)
	if err != nil {
		return nil, err
	}
	var out []Firmware
	if us, err := gf.Service.UpdateService(); err == nil && us != nil {
		items, err := us.FirmwareInventories()
		if err != nil {
			return nil, fmt.Errorf("read the firmware inventory: %w", err)
		}
		for _, it := range items {
			if it == nil || strings.TrimSpace(it.Version) == "" {
				continue
			}
			out = append(out, Firmware{ID: it.ID, Name: it.Name, Version: strings.TrimSpace(it.Version), Updateable: it.Updateable})
		}
	}
	if len(out) == 0 {
		// No UpdateService, or an empty one: what every Redfish service
		// has still says the two versions that matter most.
		if ms, err := gf.Service.Managers(); err == nil && len(ms) > 0 && ms[0].FirmwareVersion != "" {
			out = append(out, Firmware{ID: "BMC", Name: "BMC", Version: ms[0].FirmwareVersion})
		}
		if sys.BIOSVersion != "" {
			out = append(out, Firmware{ID: "BIOS", Name: "BIOS", Version: sys.BIOSVersion})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the BMC reports no firmware versions: %w", errUnsupported)
	}
	// gofish fetches collection members concurrently: order them.
	slices.SortFunc(out, func(a, b Firmware) int { return cmpID(a.ID, b.ID) })
	return out, nil
}
