package provisioner

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// Acceptance is a profile's acceptance suite: each section present is a
// check run at commissioning, with its thresholds. Every check is
// required unless named in Optional (then it is reported, never blocks).
type Acceptance struct {
	PCIe       *PCIeCheck       `yaml:"pcie" json:"pcie,omitempty"`
	Memory     *MemoryCheck     `yaml:"memory" json:"memory,omitempty"`
	ECC        *ECCCheck        `yaml:"ecc" json:"ecc,omitempty"`
	CPU        *CPUCheck        `yaml:"cpu" json:"cpu,omitempty"`
	NVMe       *NVMeCheck       `yaml:"nvme" json:"nvme,omitempty"`
	Ethernet   *EthernetCheck   `yaml:"ethernet" json:"ethernet,omitempty"`
	InfiniBand *InfiniBandCheck `yaml:"infiniband" json:"infiniband,omitempty"`
	GPUDiag    *GPUDiagCheck    `yaml:"gpu_diagnostics" json:"gpu_diagnostics,omitempty"`
	Firmware   *FirmwareCheck   `yaml:"firmware" json:"firmware,omitempty"`
	Cabling    *CablingCheck    `yaml:"cabling" json:"cabling,omitempty"`
	Burnin     *BurninCheck     `yaml:"burnin" json:"burnin,omitempty"`
	Optional   []string         `yaml:"optional" json:"optional,omitempty"`
}

// Check names, as reports and profiles' optional lists spell them.
const (
	checkInventory  = "inventory"
	checkPCIe       = "pcie"
	checkMemory     = "memory"
	checkECC        = "ecc"
	checkCPU        = "cpu"
	checkNVMe       = "nvme"
	checkEthernet   = "ethernet"
	checkInfiniBand = "infiniband"
	checkGPUDiag    = "gpu_diagnostics"
	checkFirmware   = "firmware"
	checkCabling    = "cabling"
)

var checkNames = []string{checkInventory, checkPCIe, checkMemory, checkECC, checkCPU, checkNVMe, checkEthernet, checkInfiniBand, checkGPUDiag, checkFirmware, checkCabling, checkBurnin}

// PCIeCheck: every GPU, NIC and NVMe link at the speed and width the
// device can do (its max_link_*). Kinds narrows it ("gpu", "nic",
// "nvme"); empty is all three.
type PCIeCheck struct {
	Kinds []string `yaml:"kinds" json:"kinds,omitempty"`
}

// MemoryCheck: populated DIMMs (SMBIOS) and the memory the kernel sees.
type MemoryCheck struct {
	DIMMs  int   `yaml:"dimms" json:"dimms,omitempty"`
	MinGiB int64 `yaml:"min_gib" json:"min_gib,omitempty"`
}

// ECCCheck: EDAC error counters since boot. Uncorrected errors always
// fail; corrected ones beyond MaxCorrected (default 0) do.
type ECCCheck struct {
	MaxCorrected int64 `yaml:"max_corrected" json:"max_corrected"`
}

// CPUCheck: sockets, physical cores and model (a substring).
type CPUCheck struct {
	Sockets  int    `yaml:"sockets" json:"sockets,omitempty"`
	MinCores int    `yaml:"min_cores" json:"min_cores,omitempty"`
	Model    string `yaml:"model" json:"model,omitempty"`
}

// NVMeCheck: every NVMe disk's SMART health. A critical warning always
// fails.
type NVMeCheck struct {
	Count             int    `yaml:"count" json:"count,omitempty"`
	MaxPercentageUsed int    `yaml:"max_percentage_used" json:"max_percentage_used,omitempty"` // 0: 100
	MaxMediaErrors    uint64 `yaml:"max_media_errors" json:"max_media_errors"`
}

// EthernetCheck: link state and speed of Ethernet ports. Ports names the
// ones that must have link (e.g. the provisioning port); MinPortsUp how
// many must; MinSpeedMbps applies to every port with link.
type EthernetCheck struct {
	Ports        []string `yaml:"ports" json:"ports,omitempty"`
	MinPortsUp   int      `yaml:"min_ports_up" json:"min_ports_up,omitempty"`
	MinSpeedMbps int      `yaml:"min_speed_mbps" json:"min_speed_mbps,omitempty"`
}

// InfiniBandCheck: every port ACTIVE (physical state LinkUp) at no less
// than MinRateGbps, and Ports of them.
type InfiniBandCheck struct {
	Ports       int     `yaml:"ports" json:"ports,omitempty"`
	MinRateGbps float64 `yaml:"min_rate_gbps" json:"min_rate_gbps,omitempty"`
}

// GPUDiagCheck: NVIDIA DCGM's diagnostic at Level (1 to 4). Levels 3
// and 4 run from 15 minutes to hours: TimeoutMinutes bounds the run (0:
// 3, 7, 45 or 150 minutes by level), and commissioning waits that much
// longer for the inspection.
type GPUDiagCheck struct {
	Level          int `yaml:"level" json:"level"`
	TimeoutMinutes int `yaml:"timeout_minutes" json:"timeout_minutes,omitempty"`
}

// maxDCGMMinutes bounds a profile's DCGM timeout: a level 4 run on an
// 8-GPU server takes about two hours.
const maxDCGMMinutes = 300

// maxSuiteTime bounds what a suite adds to the inspection (DCGM, LLDP,
// burn-in, each at its bound): the agent's token lives 6 hours from the
// job's start, and booting and inspecting need the rest.
const maxSuiteTime = 5 * time.Hour

// FirmwareCheck: minimum firmware versions, in-band (BIOS from SMBIOS,
// NVMe, InfiniBand) and as the BMC reports them (BMC: component name →
// minimum, e.g. {BMC: "2.10", CPLD: "1.0.3"}). Versions compare as
// compareVersions says ("2.10" is after "2.9").
type FirmwareCheck struct {
	BIOS       string            `yaml:"bios" json:"bios,omitempty"`
	NVMe       string            `yaml:"nvme" json:"nvme,omitempty"`
	InfiniBand string            `yaml:"infiniband" json:"infiniband,omitempty"`
	BMC        map[string]string `yaml:"bmc" json:"bmc,omitempty"`
}

// CablingCheck: the agent listens ListenSeconds on every Ethernet port
// for the switch's LLDP announcement and records each neighbour; each
// port in Ports must have link and hear one, and every cable of the
// machine's cabling plan (from its rack manifest) must reach the planned
// switch port (accept_cabling.go).
type CablingCheck struct {
	ListenSeconds int      `yaml:"listen_seconds" json:"listen_seconds"`
	Ports         []string `yaml:"ports" json:"ports,omitempty"`
}

// validate says what is wrong with a profile's acceptance section.
func (a *Acceptance) validate() error {
	var bad []string
	for _, o := range a.Optional {
		if !slices.Contains(checkNames, o) {
			bad = append(bad, fmt.Sprintf("optional: %q is not a check (one of %s)", o, strings.Join(checkNames, ", ")))
		}
	}
	if a.PCIe != nil {
		for _, k := range a.PCIe.Kinds {
			if k != wire.LinkGPU && k != wire.LinkNIC && k != wire.LinkNVMe {
				bad = append(bad, fmt.Sprintf("pcie.kinds: %q is not gpu, nic or nvme", k))
			}
		}
	}
	if a.Memory != nil && (a.Memory.DIMMs < 0 || a.Memory.MinGiB < 0) {
		bad = append(bad, "memory: dimms and min_gib must not be negative")
	}
	if a.ECC != nil && a.ECC.MaxCorrected < 0 {
		bad = append(bad, "ecc.max_corrected must not be negative")
	}
	if a.NVMe != nil && (a.NVMe.MaxPercentageUsed < 0 || a.NVMe.Count < 0) {
		bad = append(bad, "nvme: count and max_percentage_used must not be negative")
	}
	if a.GPUDiag != nil && (a.GPUDiag.Level < 1 || a.GPUDiag.Level > 4) {
		bad = append(bad, fmt.Sprintf("gpu_diagnostics.level: %d; DCGM has levels 1 to 4", a.GPUDiag.Level))
	}
	if a.GPUDiag != nil && (a.GPUDiag.TimeoutMinutes < 0 || a.GPUDiag.TimeoutMinutes > maxDCGMMinutes) {
		bad = append(bad, fmt.Sprintf("gpu_diagnostics.timeout_minutes: %d; 0 (the level's default) to %d", a.GPUDiag.TimeoutMinutes, maxDCGMMinutes))
	}
	if a.Cabling != nil && (a.Cabling.ListenSeconds < 1 || a.Cabling.ListenSeconds > 120) {
		bad = append(bad, fmt.Sprintf("cabling.listen_seconds: %d; 1 to 120 (switches announce every 30 s by default: 35 hears one)", a.Cabling.ListenSeconds))
	}
	if a.Burnin != nil {
		bad = append(bad, a.Burnin.validate()...)
	}
	if a.Firmware != nil {
		for k, v := range a.Firmware.BMC {
			if strings.TrimSpace(k) == "" || strings.TrimSpace(v) == "" {
				bad = append(bad, fmt.Sprintf("firmware.bmc: %q: %q; name a component and its minimum version", k, v))
			}
		}
	}
	if d := a.agentTime(); len(bad) == 0 && d > maxSuiteTime {
		bad = append(bad, fmt.Sprintf("the suite may keep the agent %v (DCGM, LLDP and burn-in at their bounds); at most %v fits a commissioning", d.Round(time.Minute), maxSuiteTime))
	}
	if len(bad) > 0 {
		return fmt.Errorf("acceptance: %s", strings.Join(bad, "; "))
	}
	return nil
}

// Accept runs the profile's acceptance suite over an inspection: every
// check the profile names, plus the profile's inventory match (GPU
// count, memory...), so a report is the whole verdict. The report's
// Passed is set. BMC firmware baselines are judged with AcceptMachine.
func Accept(p *Profile, inv *wire.Inventory) inventory.AcceptanceReport {
	return AcceptMachine(p, inv, nil)
}

// AcceptPlanned is Accept for a machine with a cabling plan: the cabling
// check compares what each NIC heard over LLDP with it.
func AcceptPlanned(p *Profile, inv *wire.Inventory, plan []inventory.PlannedCable) inventory.AcceptanceReport {
	return AcceptMachine(p, inv, &inventory.Machine{Cabling: plan})
}

// AcceptMachine is Accept with what the service knows of the machine
// (nil: nothing): its cabling plan, the firmware inventory its BMC
// reported (for the profile's BMC firmware baselines), and whether its
// disks may hold a tenant's data (then the disk burn-in was not asked
// for).
func AcceptMachine(p *Profile, inv *wire.Inventory, m *inventory.Machine) inventory.AcceptanceReport {
	var bmcFW *inventory.BMCFirmware
	var plan []inventory.PlannedCable
	needsErase := false
	if m != nil {
		bmcFW, needsErase, plan = m.BMCFirmware, m.NeedsErase, m.Cabling
	}
	r := inventory.AcceptanceReport{Profile: p.Name}
	a := p.Acceptance
	if a == nil {
		a = &Acceptance{}
	}
	hw := inv.Hardware
	if hw == nil {
		hw = &wire.Hardware{}
	}
	add := func(name string, c inventory.Check) {
		c.Name, c.Required = name, !slices.Contains(a.Optional, name)
		if c.Result == "" {
			c.Result = inventory.CheckPassed
			if len(c.Findings) > 0 {
				c.Result = inventory.CheckFailed
			}
		}
		r.Checks = append(r.Checks, c)
	}
	add(checkInventory, inventoryCheck(p, inv))
	if a.PCIe != nil {
		add(checkPCIe, pcieCheck(a.PCIe, hw, inv))
	}
	if a.Memory != nil {
		add(checkMemory, memoryCheck(a.Memory, hw, inv))
	}
	if a.ECC != nil {
		add(checkECC, eccCheck(a.ECC, hw))
	}
	if a.CPU != nil {
		add(checkCPU, cpuCheck(a.CPU, inv))
	}
	if a.NVMe != nil {
		add(checkNVMe, nvmeCheck(a.NVMe, hw))
	}
	if a.Ethernet != nil {
		add(checkEthernet, ethernetCheck(a.Ethernet, inv))
	}
	if a.InfiniBand != nil {
		add(checkInfiniBand, ibCheck(a.InfiniBand, hw))
	}
	if a.GPUDiag != nil {
		add(checkGPUDiag, gpuDiagCheck(a.GPUDiag, hw))
	}
	if a.Firmware != nil {
		add(checkFirmware, firmwareCheck(a.Firmware, hw, inv, bmcFW))
	}
	if a.Cabling != nil {
		add(checkCabling, cablingCheck(a.Cabling, hw, plan))
	}
	if a.Burnin != nil {
		add(checkBurnin, burninCheck(a.Burnin, hw, needsErase))
	}
	r.Settle()
	return r
}

func inventoryCheck(p *Profile, inv *wire.Inventory) inventory.Check {
	var c inventory.Check
	for _, m := range Mismatches(p, inv) {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "machine", Problem: m})
	}
	c.Summary = fmt.Sprintf("%s; %d CPU sockets, %d GiB", gpuLine(inv.GPUs), inv.CPU.Sockets, inv.MemoryBytes>>30)
	return c
}

func gpuLine(gs []wire.GPUGroup) string {
	if len(gs) == 0 {
		return "no GPUs"
	}
	var parts []string
	for _, g := range gs {
		parts = append(parts, fmt.Sprintf("%d × %s", g.Count, g.Model))
	}
	return strings.Join(parts, ", ")
}

// pcieGen names a link speed by its PCIe generation.
func pcieGen(gts float64) string {
	for i, s := range []float64{2.5, 5, 8, 16, 32, 64, 128} {
		if math.Abs(gts-s) < 0.1 {
			return "Gen" + strconv.Itoa(i+1)
		}
	}
	return strconv.FormatFloat(gts, 'f', -1, 64) + " GT/s"
}

func linkSubject(l wire.PCIeLink) string {
	switch l.Kind {
	case wire.LinkGPU:
		return "GPU " + l.Address
	case wire.LinkNVMe:
		return "NVMe " + l.Address
	}
	if len(l.NetInterfaces) > 0 {
		return "NIC " + strings.Join(l.NetInterfaces, ",") + " (" + l.Address + ")"
	}
	return "NIC " + l.Address
}

func pcieCheck(pc *PCIeCheck, hw *wire.Hardware, inv *wire.Inventory) inventory.Check {
	var c inventory.Check
	n := 0
	for _, l := range hw.PCIeLinks {
		if len(pc.Kinds) > 0 && !slices.Contains(pc.Kinds, l.Kind) {
			continue
		}
		n++
		narrow, slow := l.Width < l.MaxWidth, l.SpeedGTs < l.MaxSpeedGTs
		if !narrow && !slow {
			continue
		}
		// A narrow link is almost always mechanical (card, riser or cable
		// not fully seated); a slow one at full width can also be a BIOS
		// setting capping the slot's speed.
		fix := "reseat"
		if !narrow {
			fix = "reseat; if it stays slow, check the slot's link-speed setting in the BIOS"
		}
		c.Findings = append(c.Findings, inventory.Finding{Subject: linkSubject(l),
			Problem: fmt.Sprintf("at PCIe %s x%d, expected %s x%d", pcieGen(l.SpeedGTs), l.Width, pcieGen(l.MaxSpeedGTs), l.MaxWidth), Fix: fix})
	}
	if n == 0 {
		c.Result = inventory.CheckNotRun
		c.Summary = "not run: the inspection has no PCIe link attributes for GPUs, NICs or NVMe"
		return c
	}
	c.Summary = fmt.Sprintf("%d of %d links at their maximum speed and width", n-len(c.Findings), n)
	return c
}

func memoryCheck(mc *MemoryCheck, hw *wire.Hardware, inv *wire.Inventory) inventory.Check {
	var c inventory.Check
	gib := inv.MemoryBytes >> 30
	if mc.MinGiB > 0 && gib < mc.MinGiB {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "memory", Problem: fmt.Sprintf("%d GiB seen by the OS, expected at least %d GiB", gib, mc.MinGiB),
			Fix: "check every DIMM is seated and enabled in the BIOS"})
	}
	if mc.DIMMs > 0 {
		if hw.DMIError != "" && len(hw.DIMMs) == 0 {
			c.Result = inventory.CheckNotRun
			c.Summary = "not run: " + hw.DMIError
			return c
		}
		var empty []wire.DIMM
		populated := 0
		for _, d := range hw.DIMMs {
			if d.SizeMiB > 0 {
				populated++
			} else {
				empty = append(empty, d)
			}
		}
		switch {
		case populated >= mc.DIMMs:
		case len(empty) == mc.DIMMs-populated:
			// Every slot should be full: the empty ones are the missing ones.
			for _, d := range empty {
				c.Findings = append(c.Findings, inventory.Finding{Subject: "DIMM slot " + d.Locator,
					Problem: fmt.Sprintf("is empty (%d of %d DIMMs found)", populated, mc.DIMMs), Fix: "reseat or replace the DIMM"})
			}
		default:
			var names []string
			for _, d := range empty {
				names = append(names, d.Locator)
			}
			c.Findings = append(c.Findings, inventory.Finding{Subject: "memory",
				Problem: fmt.Sprintf("%d DIMMs found, expected %d (empty slots: %s)", populated, mc.DIMMs, strings.Join(names, ", ")),
				Fix:     "fit the missing DIMMs as the board's population guide says"})
		}
		c.Summary = fmt.Sprintf("%d DIMMs in %d slots, %d GiB", populated, len(hw.DIMMs), gib)
		return c
	}
	c.Summary = fmt.Sprintf("%d GiB", gib)
	return c
}

func eccCheck(ec *ECCCheck, hw *wire.Hardware) inventory.Check {
	var c inventory.Check
	if len(hw.EDAC) == 0 {
		c.Result = inventory.CheckNotRun
		c.Summary = "not run: no EDAC memory controller in the inspection (EDAC driver not loaded in the boot environment?)"
		return c
	}
	var ce, ue int64
	for _, m := range hw.EDAC {
		ce, ue = ce+m.Corrected, ue+m.Uncorrected
		judge := func(subject string, corr, unc int64) {
			switch {
			case unc > 0:
				c.Findings = append(c.Findings, inventory.Finding{Subject: subject,
					Problem: fmt.Sprintf("has %d uncorrected and %d corrected ECC errors since boot", unc, corr), Fix: "replace the DIMM"})
			case corr > ec.MaxCorrected:
				c.Findings = append(c.Findings, inventory.Finding{Subject: subject,
					Problem: fmt.Sprintf("has %d corrected ECC errors since boot (at most %d allowed)", corr, ec.MaxCorrected), Fix: "replace the DIMM"})
			}
		}
		if len(m.ByDIMM) > 0 {
			for _, d := range m.ByDIMM {
				judge("DIMM "+d.Label+" ("+m.Controller+")", d.Corrected, d.Uncorrected)
			}
			continue
		}
		judge("memory controller "+m.Controller, m.Corrected, m.Uncorrected)
	}
	c.Summary = fmt.Sprintf("%d corrected, %d uncorrected ECC errors on %d memory controllers", ce, ue, len(hw.EDAC))
	return c
}

func cpuCheck(cc *CPUCheck, inv *wire.Inventory) inventory.Check {
	var c inventory.Check
	cpu := inv.CPU
	if cc.Sockets > 0 && cpu.Sockets != cc.Sockets {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "CPU", Problem: fmt.Sprintf("%d sockets populated, expected %d", cpu.Sockets, cc.Sockets), Fix: "fit or reseat the missing CPU"})
	}
	if cc.MinCores > 0 && cpu.Cores < cc.MinCores {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "CPU", Problem: fmt.Sprintf("%d cores, expected at least %d", cpu.Cores, cc.MinCores), Fix: "check no cores are disabled in the BIOS"})
	}
	if cc.Model != "" && !strings.Contains(cpu.Model, cc.Model) {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "CPU", Problem: fmt.Sprintf("model %q, expected %q", cpu.Model, cc.Model), Fix: "fit the CPU the profile names"})
	}
	c.Summary = fmt.Sprintf("%d × %s, %d cores, %d threads", cpu.Sockets, orDash(cpu.Model), cpu.Cores, cpu.Threads)
	return c
}

// criticalWarnings names the bits of the SMART log's critical warning.
var criticalWarnings = []string{"available spare below threshold", "temperature out of range", "reliability degraded", "read-only", "volatile memory backup failed", "persistent memory region read-only"}

func nvmeCheck(nc *NVMeCheck, hw *wire.Hardware) inventory.Check {
	var c inventory.Check
	maxUsed := nc.MaxPercentageUsed
	if maxUsed == 0 {
		maxUsed = 100
	}
	if nc.Count > 0 && len(hw.NVMe) < nc.Count {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "NVMe", Problem: fmt.Sprintf("%d drives found, expected %d", len(hw.NVMe), nc.Count), Fix: "reseat or fit the missing drives"})
	}
	for _, h := range hw.NVMe {
		subject := "NVMe " + h.Disk
		if h.Serial != "" {
			subject += " (serial " + h.Serial + ")"
		}
		if h.Error != "" {
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: "health unknown: " + h.Error, Fix: "check the drive"})
			continue
		}
		var probs []string
		if h.CriticalWarning != 0 {
			var names []string
			for i, n := range criticalWarnings {
				if h.CriticalWarning&(1<<i) != 0 {
					names = append(names, n)
				}
			}
			probs = append(probs, fmt.Sprintf("critical warning 0x%02x (%s)", h.CriticalWarning, strings.Join(names, ", ")))
		}
		if h.MediaErrors > nc.MaxMediaErrors {
			probs = append(probs, fmt.Sprintf("%d media errors", h.MediaErrors))
		}
		if h.PercentageUsed > maxUsed {
			probs = append(probs, fmt.Sprintf("%d%% of rated endurance used (at most %d%%)", h.PercentageUsed, maxUsed))
		}
		if len(probs) > 0 {
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: strings.Join(probs, ", "), Fix: "replace the drive"})
		}
	}
	c.Summary = fmt.Sprintf("%d NVMe drives, %d unhealthy", len(hw.NVMe), len(c.Findings))
	return c
}

// ethernetNICs are the inspected NICs that are Ethernet: InfiniBand
// netdevs have 20-byte hardware addresses.
func ethernetNICs(inv *wire.Inventory) []wire.NIC {
	var out []wire.NIC
	for _, n := range inv.NICs {
		if len(n.MAC) == len("00:00:00:00:00:00") {
			out = append(out, n)
		}
	}
	return out
}

func nicSubject(n wire.NIC) string {
	if n.PCIAddress != "" {
		return n.Name + " (" + n.PCIAddress + ")"
	}
	return n.Name
}

func ethernetCheck(ec *EthernetCheck, inv *wire.Inventory) inventory.Check {
	var c inventory.Check
	nics := ethernetNICs(inv)
	up := 0
	for _, n := range nics {
		if n.Carrier {
			up++
			if ec.MinSpeedMbps > 0 && n.SpeedMbps < ec.MinSpeedMbps {
				c.Findings = append(c.Findings, inventory.Finding{Subject: nicSubject(n),
					Problem: fmt.Sprintf("link up at %s, expected at least %s", mbps(n.SpeedMbps), mbps(ec.MinSpeedMbps)),
					Fix:     "check the cable or transceiver and the switch port's speed"})
			}
		}
	}
	for _, want := range ec.Ports {
		i := slices.IndexFunc(nics, func(n wire.NIC) bool { return n.Name == want })
		switch {
		case i < 0:
			c.Findings = append(c.Findings, inventory.Finding{Subject: "Ethernet port " + want, Problem: "not found", Fix: "check the NIC is fitted and enabled in the BIOS"})
		case !nics[i].Carrier:
			c.Findings = append(c.Findings, inventory.Finding{Subject: nicSubject(nics[i]), Problem: "has no link", Fix: "check the cable and the switch port"})
		}
	}
	if ec.MinPortsUp > 0 && up < ec.MinPortsUp {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "Ethernet", Problem: fmt.Sprintf("%d ports with link, expected at least %d", up, ec.MinPortsUp), Fix: "check the cables and the switch ports"})
	}
	c.Summary = fmt.Sprintf("%d of %d Ethernet ports with link", up, len(nics))
	return c
}

func mbps(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%d Gb/s", n/1000)
	}
	return fmt.Sprintf("%d Mb/s", n)
}

func ibCheck(ic *InfiniBandCheck, hw *wire.Hardware) inventory.Check {
	var c inventory.Check
	if ic.Ports > 0 && len(hw.IBPorts) != ic.Ports {
		c.Findings = append(c.Findings, inventory.Finding{Subject: "InfiniBand", Problem: fmt.Sprintf("%d ports found, expected %d", len(hw.IBPorts), ic.Ports),
			Fix: "check every HCA is fitted and in InfiniBand mode"})
	}
	active := 0
	for _, p := range hw.IBPorts {
		subject := fmt.Sprintf("InfiniBand %s port %d", p.Device, p.Port)
		if p.PCIAddress != "" {
			subject += " (" + p.PCIAddress + ")"
		}
		if p.State != "ACTIVE" || p.PhysState != "LinkUp" {
			// The physical state says where to look: Polling is no light
			// from the other end, LinkUp without ACTIVE is a fabric with
			// no subnet manager configuring the port.
			fix := "check the cable at both ends and the switch port"
			switch p.PhysState {
			case "LinkUp":
				fix = "the link is up but not configured: check the fabric's subnet manager"
			case "Disabled":
				fix = "the port is disabled: enable it"
			}
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject,
				Problem: fmt.Sprintf("is %s (%s), expected ACTIVE (LinkUp)", orDash(p.State), orDash(p.PhysState)), Fix: fix})
			continue
		}
		active++
		if ic.MinRateGbps > 0 && p.RateGbps < ic.MinRateGbps {
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject,
				Problem: fmt.Sprintf("is at %s, expected at least %g Gb/s", p.Rate, ic.MinRateGbps), Fix: "reseat or replace the cable"})
		}
	}
	c.Summary = fmt.Sprintf("%d of %d ports ACTIVE", active, len(hw.IBPorts))
	return c
}

func gpuDiagCheck(gc *GPUDiagCheck, hw *wire.Hardware) inventory.Check {
	var c inventory.Check
	d := hw.DCGM
	if d == nil || !d.Ran {
		// Never a silent pass: a diagnostic that did not run says why.
		reason := "the agent did not report it"
		if d != nil && d.Reason != "" {
			reason = d.Reason
		}
		c.Result = inventory.CheckNotRun
		c.Summary = "not run: " + reason
		return c
	}
	for _, t := range d.Tests {
		if t.Result != "Fail" {
			continue
		}
		subject, part := "GPU diagnostics", "GPU"
		switch {
		case t.GPU >= 0:
			subject = fmt.Sprintf("GPU %d", t.GPU)
		case t.Entity != "":
			// "CPU 0", "NVSwitch 2": the part is the entity's group.
			subject, part = t.Entity, strings.Fields(t.Entity)[0]
		}
		c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: fmt.Sprintf("failed DCGM test %q: %s", t.Name, orDash(t.Info)), Fix: "see DCGM's advice; replace the " + part + " if it fails again"})
	}
	c.Summary = fmt.Sprintf("DCGM level %d: %d tests, %d failed", d.Level, len(d.Tests), len(c.Findings))
	if d.Version != "" {
		c.Summary = fmt.Sprintf("DCGM %s level %d: %d tests, %d failed", d.Version, d.Level, len(d.Tests), len(c.Findings))
	}
	return c
}

func firmwareCheck(fc *FirmwareCheck, hw *wire.Hardware, inv *wire.Inventory, bmcFW *inventory.BMCFirmware) inventory.Check {
	var c inventory.Check
	below := func(subject, have, min, what string) {
		if min == "" {
			return
		}
		if have == "" {
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: "firmware version unknown, baseline " + min, Fix: "check it by hand"})
			return
		}
		if compareVersions(have, min) < 0 {
			c.Findings = append(c.Findings, inventory.Finding{Subject: subject, Problem: fmt.Sprintf("firmware %s below baseline %s", have, min), Fix: "update the " + what + " to " + min + " or later"})
		}
	}
	below("BIOS", inv.System.BIOSVersion, fc.BIOS, "BIOS")
	if fc.NVMe != "" {
		for _, h := range hw.NVMe {
			below("NVMe "+h.Disk, h.Firmware, fc.NVMe, "drive's firmware")
		}
	}
	if fc.InfiniBand != "" {
		seen := map[string]bool{}
		for _, p := range hw.IBPorts {
			if !seen[p.Device] {
				seen[p.Device] = true
				below("InfiniBand "+p.Device, p.Firmware, fc.InfiniBand, "HCA firmware")
			}
		}
	}
	c.Findings = append(c.Findings, bmcFirmwareFindings(fc.BMC, bmcFW)...)
	c.Summary = fmt.Sprintf("BIOS %s; %d below baseline", orDash(inv.System.BIOSVersion), len(c.Findings))
	if bmcFW != nil && len(bmcFW.Components) > 0 {
		c.Summary = fmt.Sprintf("BIOS %s; %d components reported by the BMC; %d below baseline", orDash(inv.System.BIOSVersion), len(bmcFW.Components), len(c.Findings))
	}
	return c
}

// accept runs the acceptance suite, records its report and fails the step
// with the fix list when a required check did not pass.
func (e *Engine) accept(ctx context.Context, j *inventory.Job, m *inventory.Machine, p *Profile, inv *wire.Inventory) error {
	r := AcceptMachine(p, inv, m)
	r.Machine, r.Job = m.Name, j.ID
	rec, err := e.inv.RecordAcceptance(ctx, r)
	if err != nil {
		return fmt.Errorf("recording the acceptance report: %w", err)
	}
	if rec.Passed {
		e.event(ctx, j, "acceptance.passed", fmt.Sprintf("acceptance (profile %q) passed: %d checks", p.Name, len(rec.Checks)))
		return nil
	}
	fails := rec.Failures()
	e.event(ctx, j, "acceptance.failed", fmt.Sprintf("acceptance (profile %q) failed: %s", p.Name, strings.Join(fails, "; ")))
	return failf("acceptance (profile %q) failed: %s", p.Name, strings.Join(fails, "; "))
}

// acceptanceTask says what the agent runs beyond the inspection for a
// machine's profile: the GPU diagnostic and the LLDP listening, when the
// profile asks for them. A
// profile that cannot be read asks nothing here; the check-profile step
// fails on it with the reason.
func (e *Engine) acceptanceTask(ctx context.Context, machine string) *wire.AcceptanceTask {
	m, err := e.inv.Machine(ctx, machine)
	if err != nil || m.Profile == "" || e.cfg.Profiles == nil {
		return nil
	}
	p, err := e.cfg.Profiles.Profile(ctx, m.Profile)
	if err != nil {
		return nil
	}
	t := e.acceptanceTaskFor(p)
	if t != nil && t.Burnin != nil && m.NeedsErase {
		// The disk test overwrites what it tests: never on disks that may
		// hold a tenant's data. The burn-in check says it was not run.
		b := *t.Burnin
		b.DiskMiB = 0
		t.Burnin = &b
	}
	return t
}

// agentTime is how much longer than a plain inspection the agent takes
// for the profile's suite: the inspection step waits that much more.
func (a *Acceptance) agentTime() time.Duration {
	if a == nil {
		return 0
	}
	var d time.Duration
	if g := a.GPUDiag; g != nil {
		if g.TimeoutMinutes > 0 {
			d += time.Duration(g.TimeoutMinutes) * time.Minute
		} else {
			d += wire.DCGMDefaultTimeout(g.Level)
		}
	}
	if c := a.Cabling; c != nil {
		d += time.Duration(c.ListenSeconds) * time.Second
	}
	if b := a.Burnin; b != nil {
		disks := 16
		if a.NVMe != nil && a.NVMe.Count > 0 {
			disks = a.NVMe.Count
		}
		d += b.agentTime(disks)
	}
	return d
}

// inspectTimeout is the inspection step's wait for a machine: the
// configured one plus what its profile's suite adds.
func (e *Engine) inspectTimeout(ctx context.Context, m *inventory.Machine) time.Duration {
	if m.Profile == "" || e.cfg.Profiles == nil {
		return e.cfg.InspectTimeout
	}
	p, err := e.cfg.Profiles.Profile(ctx, m.Profile)
	if err != nil {
		return e.cfg.InspectTimeout
	}
	return e.cfg.InspectTimeout + p.Acceptance.agentTime()
}

func (e *Engine) acceptanceTaskFor(p *Profile) *wire.AcceptanceTask {
	if p.Acceptance == nil || (p.Acceptance.GPUDiag == nil && p.Acceptance.Cabling == nil && p.Acceptance.Burnin == nil) {
		return nil
	}
	t := &wire.AcceptanceTask{}
	if g := p.Acceptance.GPUDiag; g != nil {
		t.DCGMLevel, t.DCGMTimeoutSeconds = g.Level, g.TimeoutMinutes*60
	}
	if c := p.Acceptance.Cabling; c != nil {
		t.LLDPSeconds = c.ListenSeconds
	}
	if b := p.Acceptance.Burnin; b != nil {
		t.Burnin = b.task(p.OSDisk)
	}
	return t
}
