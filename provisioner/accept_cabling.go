package provisioner

import (
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// cablingCheck judges what each Ethernet port heard over LLDP: the
// profile's named ports must have link and hear a switch, and each cable
// of the machine's plan must reach its planned switch port. It reports
// every mismatch, every dead planned link, and every neighbour on a
// planned switch that the plan does not list. Without a plan the
// neighbours are only recorded in the summary.
func cablingCheck(cc *CablingCheck, hw *wire.Hardware, plan []inventory.PlannedCable) inventory.Check {
	var c inventory.Check
	if hw.LLDP == nil {
		c.Result = inventory.CheckNotRun
		c.Summary = "not run: the agent did not listen for LLDP (an agent older than the cabling check?)"
		return c
	}
	planned := make([]bool, len(hw.LLDP)) // ports a cable of the plan names
	good := 0
	for _, pc := range plan {
		i := slices.IndexFunc(hw.LLDP, func(p wire.LLDPPort) bool { return pc.IsNIC(p.Interface, p.PCIAddress, p.MAC) })
		if i < 0 {
			c.Findings = append(c.Findings, inventory.Finding{Subject: "planned NIC " + pc.NIC,
				Problem: "is not on the machine; plan: " + pc.Switch + " " + pc.Port,
				Fix:     "check the NIC is fitted and enabled in the BIOS, or correct the cabling plan"})
			continue
		}
		planned[i] = true
		if f, ok := plannedCableFinding(cc, hw.LLDP[i], pc, plan); ok {
			c.Findings = append(c.Findings, f)
		} else {
			good++
		}
	}
	for i, p := range hw.LLDP {
		if planned[i] {
			continue
		}
		if p.Neighbor != nil && len(plan) > 0 && slices.ContainsFunc(plan, func(pc inventory.PlannedCable) bool {
			return pc.IsSwitch(p.Neighbor.SystemName, p.Neighbor.ChassisID)
		}) {
			// A cable into the planned fabric from a port the plan does not
			// name takes a switch port some other NIC may be planned for.
			c.Findings = append(c.Findings, inventory.Finding{Subject: lldpSubject(p),
				Problem: "sees " + neighbourName(p.Neighbor) + ", which the cabling plan does not list for this machine",
				Fix:     "unplug that cable, or add it to the cabling plan"})
			continue
		}
		if slices.Contains(cc.Ports, p.Interface) {
			if f, ok := deadPortFinding(cc, p, ""); ok {
				c.Findings = append(c.Findings, f)
			}
		}
	}
	for _, want := range cc.Ports {
		if !slices.ContainsFunc(hw.LLDP, func(p wire.LLDPPort) bool { return p.Interface == want }) {
			c.Findings = append(c.Findings, inventory.Finding{Subject: "Ethernet port " + want, Problem: "not found", Fix: "check the NIC is fitted and enabled in the BIOS"})
		}
	}
	heard := 0
	var seen []string
	for _, p := range hw.LLDP {
		if p.Neighbor != nil {
			heard++
			seen = append(seen, p.Interface+" sees "+neighbourName(p.Neighbor))
		}
	}
	c.Summary = fmt.Sprintf("%d of %d Ethernet ports heard a neighbour", heard, len(hw.LLDP))
	if len(plan) > 0 {
		c.Summary = fmt.Sprintf("%d of %d planned cables as planned; ", good, len(plan)) + c.Summary
	}
	if len(seen) > 0 {
		c.Summary += ": " + strings.Join(seen, ", ")
	}
	return c
}

// plannedCableFinding compares one planned cable with what its port
// heard; ok is false when the cable is as planned.
func plannedCableFinding(cc *CablingCheck, p wire.LLDPPort, pc inventory.PlannedCable, plan []inventory.PlannedCable) (inventory.Finding, bool) {
	want := pc.Switch + " " + pc.Port
	if f, dead := deadPortFinding(cc, p, want); dead {
		return f, true
	}
	n := p.Neighbor
	if pc.IsSwitch(n.SystemName, n.ChassisID) && pc.IsPort(n.PortID, n.PortDescription) {
		return inventory.Finding{}, false
	}
	fix := "move the cable to " + want
	// Two NICs swapped at the switch is the common case: say whose planned
	// port this one reached.
	for _, other := range plan {
		if other.NIC != pc.NIC && other.IsSwitch(n.SystemName, n.ChassisID) && other.IsPort(n.PortID, n.PortDescription) {
			fix += " (" + neighbourName(n) + " is planned for " + other.NIC + ")"
			break
		}
	}
	return inventory.Finding{Subject: lldpSubject(p), Problem: "sees " + neighbourName(n) + "; plan: " + want, Fix: fix}, true
}

// deadPortFinding reports a port that has no link, could not be listened
// on or heard nothing; want is the planned switch port ("" without a
// plan). ok is false when the port heard a neighbour.
func deadPortFinding(cc *CablingCheck, p wire.LLDPPort, want string) (inventory.Finding, bool) {
	plan, at := "", "the switch port"
	if want != "" {
		plan, at = "; plan: "+want, want
	}
	f := inventory.Finding{Subject: lldpSubject(p)}
	switch {
	case p.Neighbor != nil:
		return f, false
	case !p.Carrier:
		f.Problem, f.Fix = "has no link"+plan, "check the cable and "+at
	case p.Error != "":
		f.Problem = "could not be listened on: " + p.Error + plan
	default:
		f.Problem, f.Fix = fmt.Sprintf("heard no LLDP within %d s%s", cc.ListenSeconds, plan), "check LLDP is enabled on "+at
	}
	return f, true
}

func lldpSubject(p wire.LLDPPort) string {
	if p.PCIAddress != "" {
		return p.Interface + " (" + p.PCIAddress + ")"
	}
	return p.Interface
}

// neighbourName is a switch port as people name it: the switch's system
// name (its chassis ID without one) and the port ID, or the port's
// description when the ID is only a MAC (lldpd's default, for one).
func neighbourName(n *wire.LLDPNeighbor) string {
	sw := n.SystemName
	if sw == "" {
		sw = n.ChassisID
	}
	port := n.PortID
	if _, err := net.ParseMAC(port); err == nil && n.PortDescription != "" {
		port = n.PortDescription
	}
	return sw + " " + port
}
