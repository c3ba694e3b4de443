package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
)

// RackFirmware is the firmware of every machine of a rack — in-band from
// each one's latest inspection, and as its BMC reported it at the last
// commissioning — and where the rack drifts: each component whose version
// differs between machines, and each machine below its profile's
// baseline (from its latest acceptance report).
type RackFirmware struct {
	Rack     string            `json:"rack"`
	Machines []MachineFirmware `json:"machines"`
	// Drift has one line per component with more than one version:
	// "BIOS: 2.1 on 3 machines; 2.0 on U17 gpu-a01-05".
	Drift []string `json:"drift"`
}

// MachineFirmware is one machine's in-band firmware versions.
type MachineFirmware struct {
	Machine    string   `json:"machine"`
	Unit       int      `json:"unit"`
	Inspected  bool     `json:"inspected"`
	BIOS       string   `json:"bios,omitempty"`
	NVMe       []string `json:"nvme,omitempty"`       // distinct drive firmware revisions
	InfiniBand []string `json:"infiniband,omitempty"` // distinct HCA firmware versions
	// BMCReported is the firmware the BMC listed (Redfish
	// FirmwareInventory; IPMI: the BMC's own only) at the last
	// commissioning; BMCError why the last read failed.
	BMCReported []BMCFirmwareVersion `json:"bmc_reported,omitempty"`
	BMCError    string               `json:"bmc_error,omitempty"`
	// BelowBaseline lists the firmware findings of the latest acceptance.
	BelowBaseline []string `json:"below_baseline,omitempty"`
}

// BMCFirmwareVersion is one component's firmware as the BMC reports it.
type BMCFirmwareVersion struct {
	Component string `json:"component"` // the BMC's ID for it: BMC, BIOS, CPLD_0...
	Version   string `json:"version"`
}

func (s *Server) firmwareRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/racks/{name}/firmware", action: "rack.firmware",
			summary: "Firmware of every machine of a rack (in-band BIOS, NVMe, InfiniBand; what the BMC reports) and where it drifts",
			roles:   staff, scope: scopeRack, reply: RackFirmware{}, handle: s.rackFirmware},
	}
}

func (s *Server) rackFirmware(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	ms, latest, err := s.rackReports(c, name)
	if err != nil {
		return 0, nil, err
	}
	reports, err := s.rackInspections(c, ms)
	if err != nil {
		return 0, nil, err
	}
	out := RackFirmware{Rack: name, Machines: []MachineFirmware{}, Drift: []string{}}
	// component → version → "U17 gpu-a01-05" of the machines that have it
	seen := map[string]map[string][]string{}
	note := func(component, version, who string) {
		if seen[component] == nil {
			seen[component] = map[string][]string{}
		}
		seen[component][version] = append(seen[component][version], who)
	}
	for _, m := range ms {
		row := MachineFirmware{Machine: m.Name, Unit: m.Unit}
		var inv wire.Inventory
		if r := reports[m.Name]; len(r) > 0 && json.Unmarshal(r, &inv) == nil {
			row.Inspected = true
			row.BIOS = inv.System.BIOSVersion
			if hw := inv.Hardware; hw != nil {
				row.NVMe = distinct(hw.NVMe, func(h wire.NVMeHealth) string { return h.Firmware })
				row.InfiniBand = distinct(hw.IBPorts, func(p wire.IBPort) string { return p.Firmware })
			}
			who := fmt.Sprintf("U%d %s", m.Unit, m.Name)
			if row.BIOS != "" {
				note("BIOS", row.BIOS, who)
			}
			for _, v := range row.NVMe {
				note("NVMe", v, who)
			}
			for _, v := range row.InfiniBand {
				note("InfiniBand", v, who)
			}
		}
		if fw := m.BMCFirmware; fw != nil {
			row.BMCError = fw.Error
			who := fmt.Sprintf("U%d %s", m.Unit, m.Name)
			for _, c := range fw.Components {
				row.BMCReported = append(row.BMCReported, BMCFirmwareVersion{Component: c.ID, Version: c.Version})
				note("BMC "+c.ID, c.Version, who)
			}
		}
		if r := latest[m.Name]; r != nil {
			for _, ch := range r.Checks {
				if ch.Name == "firmware" {
					for _, f := range ch.Findings {
						row.BelowBaseline = append(row.BelowBaseline, f.Line())
					}
				}
			}
		}
		out.Machines = append(out.Machines, row)
	}
	comps := []string{"BIOS", "NVMe", "InfiniBand"}
	var bmcComps []string
	for c := range seen {
		if strings.HasPrefix(c, "BMC ") {
			bmcComps = append(bmcComps, c)
		}
	}
	sort.Strings(bmcComps)
	for _, comp := range append(comps, bmcComps...) {
		if line := driftLine(comp, seen[comp]); line != "" {
			out.Drift = append(out.Drift, line)
		}
	}
	return http.StatusOK, out, nil
}

func distinct[T any](xs []T, f func(T) string) []string {
	var out []string
	for _, x := range xs {
		if v := f(x); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// driftLine names the most common version by its count and every other
// by the machines that have it: those are the ones to look at.
func driftLine(component string, versions map[string][]string) string {
	if len(versions) < 2 {
		return ""
	}
	vs := make([]string, 0, len(versions))
	for v := range versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool {
		if len(versions[vs[i]]) != len(versions[vs[j]]) {
			return len(versions[vs[i]]) > len(versions[vs[j]])
		}
		return vs[i] < vs[j]
	})
	// With no majority (the commonest on one machine) every version is
	// named by its machines.
	var parts []string
	rest := vs
	if n := len(versions[vs[0]]); n > 1 {
		parts, rest = []string{fmt.Sprintf("%s on %d machines", vs[0], n)}, vs[1:]
	}
	for _, v := range rest {
		parts = append(parts, fmt.Sprintf("%s on %s", v, strings.Join(versions[v], ", ")))
	}
	return component + ": " + strings.Join(parts, "; ")
}
