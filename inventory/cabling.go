package inventory

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/metalhall/metalhall/inventory/kv"
)

// PlannedCable is one line of a rack's cable schedule: a NIC of the
// machine and the switch port its cable must reach, as a rail-optimised
// fabric's cabling plan lists them. The commissioning's cabling check
// compares it with what the NIC hears over LLDP.
type PlannedCable struct {
	// NIC is the machine's port: its interface name (ens3f0), PCI address
	// (0000:17:00.0) or MAC. A PCI address or MAC survives a change of
	// interface naming; a name is what technicians read off a diagram.
	NIC string `json:"nic" yaml:"nic"`
	// Switch is the switch's LLDP system name (leaf-03) or chassis ID.
	Switch string `json:"switch" yaml:"switch"`
	// Port is the switch port's LLDP port ID (Ethernet12) or description.
	Port string `json:"port" yaml:"port"`
}

// MaxPlannedCables bounds a machine's plan: an 8-GPU server has a dozen
// or so cabled ports.
const MaxPlannedCables = 64

// pciAddressRE is a PCI address with its domain, as sysfs writes it.
var pciAddressRE = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// CableError says which cable of a machine's plan is wrong (Index is
// 0-based), so a manifest reader can point at its line.
type CableError struct {
	Index int
	Err   error
}

func (e *CableError) Error() string { return fmt.Sprintf("cabling[%d]: %v", e.Index, e.Err) }
func (e *CableError) Unwrap() error { return e.Err }

// normaliseCabling checks a machine's plan and brings MACs and PCI
// addresses to the form the agent reports them in. A NIC may be planned
// once, and a switch port may take one cable.
func normaliseCabling(plan []PlannedCable) error {
	if len(plan) > MaxPlannedCables {
		return invalid("cabling", "lists %d cables; a machine has at most %d", len(plan), MaxPlannedCables)
	}
	nics, ports := map[string]int{}, map[string]int{}
	for i := range plan {
		c := &plan[i]
		if err := normaliseCable(c); err != nil {
			return &CableError{i, err}
		}
		if j, ok := nics[c.NIC]; ok {
			return &CableError{i, invalid("nic", "%s is planned twice (also cabling[%d])", c.NIC, j)}
		}
		nics[c.NIC] = i
		if j, ok := ports[c.switchPortKey()]; ok {
			return &CableError{i, invalid("port", "%s %s is planned for two NICs (also cabling[%d]): a switch port takes one cable", c.Switch, c.Port, j)}
		}
		ports[c.switchPortKey()] = i
	}
	return nil
}

func normaliseCable(c *PlannedCable) error {
	c.NIC, c.Switch, c.Port = strings.TrimSpace(c.NIC), strings.TrimSpace(c.Switch), strings.TrimSpace(c.Port)
	switch {
	case c.NIC == "":
		return invalid("nic", "is required: the machine's interface name (ens3f0), PCI address (0000:17:00.0) or MAC")
	case pciAddressRE.MatchString(strings.ToLower(c.NIC)):
		c.NIC = strings.ToLower(c.NIC)
	case looksLikeMAC(c.NIC):
		mac, err := ParseMAC(c.NIC)
		if err != nil {
			return invalid("nic", "%q looks like a MAC but is not one (expected six hex octets, e.g. 0c:42:a1:12:34:56)", c.NIC)
		}
		c.NIC = mac
	default:
		// Linux interface names: at most 15 bytes, no '/', ':' or blanks.
		if len(c.NIC) > 15 || strings.ContainsAny(c.NIC, "/: \t") || !printable(c.NIC) {
			return invalid("nic", "%q is not an interface name, PCI address (0000:17:00.0) or MAC", c.NIC)
		}
	}
	for _, f := range []struct{ field, v, what string }{
		{"switch", c.Switch, "the switch's LLDP system name (leaf-03) or chassis ID"},
		{"port", c.Port, "the switch port's LLDP port ID (Ethernet12) or description"},
	} {
		if f.v == "" {
			return invalid(f.field, "is required: %s", f.what)
		}
		// LLDP strings are 1 to 255 bytes.
		if len(f.v) > 255 || !printable(f.v) {
			return invalid(f.field, "%q is not %s (printable, at most 255 bytes)", f.v, f.what)
		}
	}
	return nil
}

// looksLikeMAC is a NIC reference meant as a MAC: six groups of two
// characters split by ':' or '-'.
func looksLikeMAC(s string) bool {
	return len(s) == 17 && (strings.Count(s, ":") == 5 || strings.Count(s, "-") == 5)
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (c PlannedCable) switchPortKey() string {
	return strings.ToLower(c.Switch) + "\x00" + c.Port
}

// IsNIC says whether the plan's NIC is the port with this interface
// name, PCI address and MAC.
func (c PlannedCable) IsNIC(name, pciAddress, mac string) bool {
	return c.NIC == name || (pciAddress != "" && c.NIC == pciAddress) || (mac != "" && c.NIC == strings.ToLower(mac))
}

// IsSwitch says whether an LLDP neighbour with this system name and
// chassis ID is the planned switch. System names are host names: case
// does not count.
func (c PlannedCable) IsSwitch(systemName, chassisID string) bool {
	return (systemName != "" && strings.EqualFold(c.Switch, systemName)) || strings.EqualFold(c.Switch, chassisID)
}

// IsPort says whether an LLDP neighbour's port (ID or description) is
// the planned one.
func (c PlannedCable) IsPort(portID, description string) bool {
	return c.Port == portID || (description != "" && c.Port == description)
}

// ValidateCabling checks a machine's cabling plan without touching the
// store and brings its NICs to canonical form; a *CableError names the
// cable that is wrong.
func ValidateCabling(plan []PlannedCable) error { return normaliseCabling(plan) }

// rackCablingClash finds a switch port planned for two machines of one
// import: the index of the later machine and what clashes.
func rackCablingClash(ms []Enrollment) (int, error) {
	plans := make([]*Machine, len(ms))
	for i := range ms {
		plans[i] = &ms[i].Machine
	}
	return cablingClash(plans)
}

// cablingClash finds a switch port planned for two of the machines: the
// index of the later one and what clashes.
func cablingClash(ms []*Machine) (int, error) {
	type at struct {
		machine string
		cable   int
	}
	seen := map[string]at{}
	for i, m := range ms {
		for j, c := range m.Cabling {
			k := c.switchPortKey()
			if prev, ok := seen[k]; ok && prev.machine != m.Name {
				return i, &CableError{j, invalid("port", "%s %s is also planned for machine %q (its cabling[%d]): a switch port takes one cable",
					c.Switch, c.Port, prev.machine, prev.cable)}
			}
			seen[k] = at{m.Name, j}
		}
	}
	return 0, nil
}

// PlanError says which machine's plan a SetCablingPlans refused.
type PlanError struct {
	Machine string
	Err     error
}

func (e *PlanError) Error() string { return fmt.Sprintf("machine %q: %v", e.Machine, e.Err) }
func (e *PlanError) Unwrap() error { return e.Err }

// SetCablingPlans replaces the cabling plans of machines of one rack (a
// cable schedule imported on its own), in one transaction: every machine
// must be in the rack, every plan valid, and no switch port planned for
// two machines of the rack once the plans are replaced; otherwise nothing
// changes. Machines not named keep their plans. It returns the machines
// whose plan changed.
func (s *Store) SetCablingPlans(ctx context.Context, rack string, plans map[string][]PlannedCable) ([]string, error) {
	names := slices.Sorted(maps.Keys(plans))
	clean := map[string][]PlannedCable{}
	for _, n := range names {
		p := slices.Clone(plans[n])
		if err := normaliseCabling(p); err != nil {
			return nil, &PlanError{n, err}
		}
		clean[n] = p
	}
	var changed []string
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		changed = nil
		if _, err := get[Rack](tx, bRacks, "rack", rack); err != nil {
			return err
		}
		for _, n := range names {
			m, err := get[Machine](tx, bMachines, "machine", n)
			if err != nil {
				return err
			}
			if m.Rack != rack {
				return &PlanError{n, invalid("machine", "is in rack %q, not %q", m.Rack, rack)}
			}
		}
		var after []*Machine
		if err := s.rackMachines(tx, rack, func(m *Machine) error {
			if p, ok := clean[m.Name]; ok {
				m.Cabling = p
			}
			after = append(after, m)
			return nil
		}); err != nil {
			return err
		}
		if i, err := cablingClash(after); err != nil {
			return &PlanError{after[i].Name, err}
		}
		for _, n := range names {
			m, err := s.updateMachine(tx, n, func(m *Machine) error {
				if slices.Equal(m.Cabling, clean[n]) {
					return errUnchanged
				}
				m.Cabling = clean[n]
				return nil
			}, vc)
			if errors.Is(err, errUnchanged) {
				continue
			}
			if err != nil {
				return &PlanError{n, err}
			}
			changed = append(changed, m.Name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changed, nil
}

// errUnchanged tells SetCablingPlans' update that there is nothing to write.
var errUnchanged = errors.New("unchanged")
