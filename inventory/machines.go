package inventory

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/metalhall/metalhall/inventory/kv"
)

// Enrollment is a machine to add, with its BMC password already sealed by
// the caller (the inventory never sees it in clear).
type Enrollment struct {
	Machine        Machine
	SealedPassword []byte
}

// EnrollMachine adds a machine to a rack. It is refused when it does not fit
// the rack (units, power) or reuses another machine's MAC, BMC or address.
func (s *Store) EnrollMachine(ctx context.Context, e Enrollment) (*Machine, error) {
	m := e.Machine
	if err := normaliseMachine(&m); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	m.State, m.CreatedAt, m.UpdatedAt = MachineEnrolled, now, now
	var out *Machine
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		// enroll fills in the tenant, secret and tenancy from what it
		// reads: a retry starts from the caller's machine again.
		out = cloneMachine(&m)
		return s.enroll(tx, out, e.SealedPassword, vc)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) enroll(tx kv.Tx, m *Machine, sealed []byte, vc *viewChanges) error {
	if exists(tx, bMachines, m.Name) {
		return &ExistsError{Kind: "machine", Name: m.Name}
	}
	m.BMC.SecretRef = "" // only the store names secrets
	if len(sealed) > 0 {
		m.BMC.SecretRef = BMCCredential(m.Name).Ref
		if err := bkt(tx, bSecrets).Put([]byte(m.BMC.SecretRef), sealed); err != nil {
			return err
		}
	}
	if m.Tenant == "" {
		if r, err := get[Rack](tx, bRacks, "rack", m.Rack); err == nil {
			m.Tenant = r.Tenant // a machine racked in a tenant's rack is the tenant's
		}
	}
	return s.putMachine(tx, nil, m, vc)
}

// normaliseMachine validates what a caller may set on a machine and brings
// MACs to canonical form.
func normaliseMachine(m *Machine) error {
	if err := checkName("name", m.Name); err != nil {
		return err
	}
	if err := checkName("rack", m.Rack); err != nil {
		return err
	}
	if m.Height == 0 {
		m.Height = 1
	}
	if m.Unit < 1 || m.Unit > MaxRackUnits {
		return invalid("unit", "must be between 1 and %d (the lowest U the machine occupies), got %d", MaxRackUnits, m.Unit)
	}
	if m.Height < 1 || m.Height > 16 {
		return invalid("height", "must be between 1 and 16 U, got %d", m.Height)
	}
	if len(m.MACs) == 0 {
		return invalid("mac", "at least one MAC address is required")
	}
	seen := map[string]bool{}
	for i, raw := range m.MACs {
		mac, err := ParseMAC(raw)
		if err != nil {
			return err
		}
		if seen[mac] {
			return invalid("mac", "%s is listed twice", mac)
		}
		seen[mac] = true
		m.MACs[i] = mac
	}
	if err := checkBMCAddress(m.BMC.Address); err != nil {
		return err
	}
	m.BMC.Address = normaliseBMCAddress(m.BMC.Address)
	switch m.BMC.Protocol {
	case ProtocolIPMI, ProtocolRedfish:
	default:
		return invalid("bmc_protocol", "%q is not supported: use ipmi or redfish", m.BMC.Protocol)
	}
	if m.BMC.Username == "" {
		return invalid("bmc_user", "is required")
	}
	if len(m.BMC.Username) > maxBMCUser {
		return invalid("bmc_user", "is %d characters long, more than the %d a BMC user may have", len(m.BMC.Username), maxBMCUser)
	}
	switch m.BMC.Auth {
	case "", "session", "basic":
	default:
		return invalid("bmc_auth", "%q is not an auth mode: use session or basic, or leave it empty (a session when the BMC offers one)", m.BMC.Auth)
	}
	switch m.BMC.BootMode {
	case "", "uefi", "legacy":
	default:
		return invalid("bmc_boot_mode", "%q is not a boot mode: use uefi or legacy (BIOS)", m.BMC.BootMode)
	}
	if (m.BMC.Auth != "" || m.BMC.System != "") && m.BMC.Protocol != ProtocolRedfish {
		return invalid("bmc_system", "BMC auth mode and system are for Redfish BMCs only; this one speaks %s", m.BMC.Protocol)
	}
	if strings.ContainsAny(m.BMC.System, " /?#\x00") || len(m.BMC.System) > 128 {
		return invalid("bmc_system", "%q is not a Redfish system Id or Name", m.BMC.System)
	}
	if m.PowerW < 0 || m.PowerW > 200_000 {
		return invalid("power_w", "must be between 0 and 200000 W, got %d", m.PowerW)
	}
	if m.Profile != "" {
		if err := checkName("profile", m.Profile); err != nil {
			return err
		}
	}
	if m.IP != "" {
		if _, err := checkAddr("ip", m.IP); err != nil {
			return err
		}
	}
	return normaliseCabling(m.Cabling)
}

// putMachine writes m and keeps every index and the rack usage in step with
// it, in the caller's transaction. old is the stored record (nil for a new
// machine). Placement is checked here, so no write path can skip it. Only
// the index entries whose fields changed are touched, and m goes into vc
// for the boot view only when a field the view shows changed.
func (s *Store) putMachine(tx kv.Tx, old, m *Machine, vc *viewChanges) error {
	if err := checkPlacement(tx, old, m); err != nil {
		return err
	}
	if old == nil || old.Tenant != m.Tenant || m.Tenancy == "" {
		id, err := newTenancy(tx)
		if err != nil {
			return err
		}
		m.Tenancy = id
		if err := bkt(tx, bIdxTenancy).Put([]byte(m.Name), []byte(id)); err != nil {
			return err
		}
	}
	idxMAC := bkt(tx, bIdxMAC)
	if old != nil {
		for _, mac := range old.MACs {
			if !slices.Contains(m.MACs, mac) {
				if err := idxMAC.Delete(macKey(mac)); err != nil {
					return err
				}
			}
		}
	}
	for _, mac := range m.MACs {
		if old != nil && slices.Contains(old.MACs, mac) {
			continue
		}
		if err := idxMAC.Put(macKey(mac), []byte(m.Name)); err != nil {
			return err
		}
	}
	if old == nil || old.BMC.Key() != m.BMC.Key() {
		if old != nil {
			if err := unindexBMC(tx, old); err != nil {
				return err
			}
		}
		if err := bkt(tx, bIdxBMC).Put([]byte(m.BMC.Key()), []byte(m.Name)); err != nil {
			return err
		}
	}
	if old == nil || old.IP != m.IP {
		if old != nil && old.IP != "" {
			if err := bkt(tx, bIdxIP).Delete([]byte(old.IP)); err != nil {
				return err
			}
		}
		if m.IP != "" {
			if err := bkt(tx, bIdxIP).Put([]byte(m.IP), []byte(m.Name)); err != nil {
				return err
			}
		}
	}
	if old == nil || old.Rack != m.Rack || old.Unit != m.Unit || old.Height != m.Height {
		if old != nil {
			if err := bkt(tx, bIdxRackM).Delete(rackMachineKey(old.Rack, old.Name)); err != nil {
				return err
			}
		}
		var place [4]byte
		binary.BigEndian.PutUint16(place[0:], uint16(m.Unit))
		binary.BigEndian.PutUint16(place[2:], uint16(m.Height))
		if err := bkt(tx, bIdxRackM).Put(rackMachineKey(m.Rack, m.Name), place[:]); err != nil {
			return err
		}
	}
	if old == nil || usageChanged(old, m) {
		if old != nil {
			if err := adjustUsage(tx, old.Rack, old, -1); err != nil {
				return err
			}
		}
		if err := adjustUsage(tx, m.Rack, m, +1); err != nil {
			return err
		}
	}
	if old == nil || old.State != m.State || old.IP != m.IP || !slices.Equal(old.MACs, m.MACs) {
		vc.machines = append(vc.machines, m)
	}
	vc.touched = append(vc.touched, m.Name)
	if m.NewInspection != nil {
		if !json.Valid(m.NewInspection) {
			return invalid("inspection", "is not valid JSON")
		}
		if err := bkt(tx, bInspections).Put([]byte(m.Name), m.NewInspection); err != nil {
			return err
		}
		m.NewInspection = nil
	}
	return s.putMachineRecord(tx, m)
}

// putMachineRecord stores a machine's record, and remembers it decoded
// (the job's worker reads it next).
func (s *Store) putMachineRecord(tx kv.Tx, m *Machine) error {
	data, err := putJSONData(bkt(tx, bMachines), []byte(m.Name), m)
	if err != nil {
		return err
	}
	s.machines.remember(m.Name, data, m)
	return nil
}

// usageChanged reports whether a change of a machine moves its rack's
// usage (machines, units, power, machines by state).
func usageChanged(old, m *Machine) bool {
	return old.Rack != m.Rack || old.Height != m.Height || old.PowerW != m.PowerW || old.State != m.State
}

// unindexBMC removes old's BMC index entry, under its canonical key and,
// for records indexed before addresses were normalised, its raw address.
func unindexBMC(tx kv.Tx, old *Machine) error {
	idx := bkt(tx, bIdxBMC)
	for _, k := range []string{old.BMC.Key(), old.BMC.Address} {
		if owner := idx.Get([]byte(k)); owner != nil && string(owner) == old.Name {
			if err := idx.Delete([]byte(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// unindexMachine removes the index entries of old other than its MACs (the
// caller handles those) and takes it out of its rack's usage.
func unindexMachine(tx kv.Tx, old *Machine) error {
	if err := unindexBMC(tx, old); err != nil {
		return err
	}
	if old.IP != "" {
		if err := bkt(tx, bIdxIP).Delete([]byte(old.IP)); err != nil {
			return err
		}
	}
	if err := bkt(tx, bIdxRackM).Delete(rackMachineKey(old.Rack, old.Name)); err != nil {
		return err
	}
	return adjustUsage(tx, old.Rack, old, -1)
}

func rackMachineKey(rack, machine string) []byte {
	k := make([]byte, 0, len(rack)+1+len(machine))
	return append(append(append(k, rack...), 0), machine...)
}

func adjustUsage(tx kv.Tx, rack string, m *Machine, sign int) error {
	b := bkt(tx, bRackUsage)
	var u RackUsage
	if err := getJSON(b, []byte(rack), &u); err != nil {
		return fmt.Errorf("usage of rack %q: %w", rack, err)
	}
	u.Machines += sign
	u.UsedUnits += sign * m.Height
	u.InstalledW += int64(sign) * m.PowerW
	if u.ByState == nil {
		u.ByState = map[MachineState]int{}
	}
	u.ByState[m.State] += sign
	if u.ByState[m.State] == 0 {
		delete(u.ByState, m.State)
	}
	return putJSON(b, []byte(rack), u)
}

// checkPlacement enforces the physical rules: the rack exists and takes
// machines, the units are free and inside the rack, MACs, BMC address and
// reserved IP belong to no other machine, and the rack's power budget holds.
func checkPlacement(tx kv.Tx, old, m *Machine) error {
	r, err := get[Rack](tx, bRacks, "rack", m.Rack)
	if err != nil {
		return err
	}
	moved := old == nil || old.Rack != m.Rack || old.Unit != m.Unit || old.Height != m.Height || old.PowerW != m.PowerW
	if moved {
		if r.State == RackDecommissioned {
			return &PlacementError{Limit: "rack", Msg: fmt.Sprintf("machine %q: rack %q is decommissioned", m.Name, r.Name)}
		}
		if top := m.Unit + m.Height - 1; top > r.Units {
			return &PlacementError{Limit: "units", Msg: fmt.Sprintf(
				"machine %q: units %d-%d do not fit rack %q, which has %d units", m.Name, m.Unit, top, r.Name, r.Units)}
		}
		prefix := append([]byte(r.Name), 0)
		c := bkt(tx, bIdxRackM).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			other := string(k[len(prefix):])
			if other == m.Name {
				continue
			}
			ou, oh := int(binary.BigEndian.Uint16(v[0:])), int(binary.BigEndian.Uint16(v[2:]))
			if m.Unit <= ou+oh-1 && ou <= m.Unit+m.Height-1 {
				return &PlacementError{Limit: "units", Msg: fmt.Sprintf(
					"machine %q: units %d-%d of rack %q overlap machine %q at units %d-%d",
					m.Name, m.Unit, m.Unit+m.Height-1, r.Name, other, ou, ou+oh-1)}
			}
		}
		var u RackUsage
		if err := getJSON(bkt(tx, bRackUsage), []byte(r.Name), &u); err != nil {
			return fmt.Errorf("usage of rack %q: %w", r.Name, err)
		}
		drawn := u.InstalledW
		if old != nil && old.Rack == m.Rack {
			drawn -= old.PowerW
		}
		if total := drawn + m.PowerW; total > r.BudgetW {
			if r.BudgetW == 0 {
				return &PlacementError{Limit: "rack-power", Msg: fmt.Sprintf(
					"machine %q: rack %q has no power budget; give the rack one first", m.Name, r.Name)}
			}
			return &PlacementError{Limit: "rack-power", Msg: fmt.Sprintf(
				"machine %q: rack %q has a power budget of %s kW and its machines draw %s kW; %s kW more would exceed it by %s kW",
				m.Name, r.Name, FormatKW(r.BudgetW), FormatKW(drawn), FormatKW(m.PowerW), FormatKW(total-r.BudgetW))}
		}
	}
	idxMAC := bkt(tx, bIdxMAC)
	for _, mac := range m.MACs {
		if owner := idxMAC.Get(macKey(mac)); owner != nil && string(owner) != m.Name {
			return &PlacementError{Limit: "mac", Msg: fmt.Sprintf("machine %q: MAC %s already belongs to machine %q", m.Name, mac, owner)}
		}
	}
	for _, k := range []string{m.BMC.Key(), m.BMC.Address} {
		if owner := bkt(tx, bIdxBMC).Get([]byte(k)); owner != nil && string(owner) != m.Name {
			return &PlacementError{Limit: "bmc-address", Msg: fmt.Sprintf("machine %q: BMC address %s already belongs to machine %q (the same BMC, %s)", m.Name, m.BMC.Address, owner, m.BMC.Key())}
		}
	}
	if m.IP != "" && (old == nil || old.IP != m.IP) {
		if owner := bkt(tx, bIdxIP).Get([]byte(m.IP)); owner != nil && string(owner) != m.Name {
			return &PlacementError{Limit: "ip", Msg: fmt.Sprintf("machine %q: address %s is already reserved for machine %q", m.Name, m.IP, owner)}
		}
		if err := checkReservation(tx, m); err != nil {
			return err
		}
	}
	if m.Tenant != "" && (old == nil || old.Tenant != m.Tenant) && !exists(tx, bTenants, m.Tenant) {
		return &NotFoundError{Kind: "tenant", Name: m.Tenant}
	}
	return nil
}

// checkReservation requires a reserved address to lie in a known subnet,
// and not be its network, broadcast or gateway address or in its dynamic
// range (which the DHCP server hands to unknown machines).
func checkReservation(tx kv.Tx, m *Machine) error {
	a, _ := netip.ParseAddr(m.IP)
	subs, err := list[Subnet](tx, bSubnets, nil)
	if err != nil {
		return err
	}
	for _, sn := range subs {
		p, _ := netip.ParsePrefix(sn.CIDR)
		if !p.Contains(a) {
			continue
		}
		switch {
		case a == p.Addr() || a == lastAddr(p):
			return invalid("ip", "%s is the network or broadcast address of subnet %q", a, sn.Name)
		case a.String() == sn.Gateway:
			return invalid("ip", "%s is the gateway of subnet %q", a, sn.Name)
		case sn.RangeFirst != "" && inRange(a, sn.RangeFirst, sn.RangeLast):
			return invalid("ip", "%s is inside the dynamic range %s-%s of subnet %q; reserve an address outside it", a, sn.RangeFirst, sn.RangeLast, sn.Name)
		}
		return nil
	}
	return invalid("ip", "%s is in no subnet; create a subnet that holds it first", a)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := binary.BigEndian.Uint32(b[:]) | host
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func inRange(a netip.Addr, first, last string) bool {
	f, _ := netip.ParseAddr(first)
	l, _ := netip.ParseAddr(last)
	return !a.Less(f) && !l.Less(a)
}

// Machine returns one machine.
func (s *Store) Machine(ctx context.Context, name string) (*Machine, error) {
	var out *Machine
	err := s.view(func(tx kv.Tx) (err error) { out, err = s.getMachine(tx, name); return })
	return out, err
}

// MachineByMAC returns the machine that owns a MAC, through the stored index.
func (s *Store) MachineByMAC(ctx context.Context, mac string) (*Machine, error) {
	canon, err := ParseMAC(mac)
	if err != nil {
		return nil, err
	}
	var out *Machine
	err = s.view(func(tx kv.Tx) error {
		name := bkt(tx, bIdxMAC).Get(macKey(canon))
		if name == nil {
			return &NotFoundError{Kind: "machine with MAC", Name: canon}
		}
		var err error
		out, err = s.getMachine(tx, string(name))
		return err
	})
	return out, err
}

// MachineByIP returns the machine an address is reserved for.
func (s *Store) MachineByIP(ctx context.Context, ip string) (*Machine, error) {
	var out *Machine
	err := s.view(func(tx kv.Tx) error {
		name := bkt(tx, bIdxIP).Get([]byte(ip))
		if name == nil {
			return &NotFoundError{Kind: "machine with address", Name: ip}
		}
		var err error
		out, err = s.getMachine(tx, string(name))
		return err
	})
	return out, err
}

// MachineFilter selects machines; zero fields match everything.
type MachineFilter struct {
	Rack   string
	Hall   string
	State  MachineState
	Tenant string
}

// Machines lists machines. With Rack or Hall set it walks the rack index
// instead of the whole table.
func (s *Store) Machines(ctx context.Context, f MachineFilter) ([]Machine, error) {
	if f.State != "" && !ValidMachineState(f.State) {
		return nil, invalid("state", "%q is not a machine state (one of %v)", f.State, MachineStates())
	}
	keep := func(m *Machine) bool {
		return (f.State == "" || m.State == f.State) && (f.Tenant == "" || m.Tenant == f.Tenant)
	}
	var out []Machine
	err := s.view(func(tx kv.Tx) error {
		collect := func(m *Machine) error {
			if keep(m) {
				out = append(out, *m)
			}
			return nil
		}
		switch {
		case f.Rack != "":
			if !exists(tx, bRacks, f.Rack) {
				return &NotFoundError{Kind: "rack", Name: f.Rack}
			}
			return s.rackMachines(tx, f.Rack, collect)
		case f.Hall != "":
			if !exists(tx, bHalls, f.Hall) {
				return &NotFoundError{Kind: "hall", Name: f.Hall}
			}
			return hallRacks(tx, f.Hall, func(r *Rack) error { return s.rackMachines(tx, r.Name, collect) })
		default:
			return bkt(tx, bMachines).ForEach(func(k, v []byte) error {
				m, err := s.machines.decode(string(k), v)
				if err != nil {
					return fmt.Errorf("%s %q: %w", bMachines, k, err)
				}
				return collect(m)
			})
		}
	})
	return out, err
}

// Secret returns the sealed bytes stored under ref.
func (s *Store) Secret(ctx context.Context, ref string) ([]byte, error) {
	var out []byte
	err := s.view(func(tx kv.Tx) error {
		v := bkt(tx, bSecrets).Get([]byte(ref))
		if v == nil {
			return &NotFoundError{Kind: "secret", Name: ref}
		}
		out = bytes.Clone(v)
		return nil
	})
	return out, err
}

// UpdateMachine applies fn to a machine and stores the result in one
// transaction. A state change must be one the state machine allows, a move
// must pass placement, and a failed machine must say why and at which step.
// fn may refuse by returning an error; then nothing changes.
func (s *Store) UpdateMachine(ctx context.Context, name string, fn func(*Machine) error) (*Machine, error) {
	var out *Machine
	err := s.write(func(tx kv.Tx, vc *viewChanges) (err error) {
		out, err = s.updateMachine(tx, name, fn, vc)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) updateMachine(tx kv.Tx, name string, fn func(*Machine) error, vc *viewChanges) (*Machine, error) {
	old, err := get[Machine](tx, bMachines, "machine", name)
	if err != nil {
		return nil, err
	}
	m := cloneMachine(old)
	if err := fn(m); err != nil {
		return nil, err
	}
	return s.storeMachine(tx, old, m, vc)
}

// storeMachine checks a change of old into m (fn already applied) and
// stores it.
func (s *Store) storeMachine(tx kv.Tx, old, m *Machine, vc *viewChanges) (*Machine, error) {
	if m.Name != old.Name {
		return nil, invalid("name", "a machine cannot be renamed")
	}
	if m.State != old.State {
		if err := machineTransition(old, m.State); err != nil {
			return nil, err
		}
		if m.State == MachineMaintenance {
			m.PrevState = old.State
		}
	}
	if m.State == MachineFailed && (m.Reason == "" || m.FailedStep == "") {
		return nil, invalid("reason", "a failed machine must carry the reason and the step that failed")
	}
	if m.State != MachineFailed && m.State != MachineMaintenance && m.State != old.State {
		m.FailedStep = ""
		if m.Reason == old.Reason {
			m.Reason = ""
		}
	}
	if err := normaliseMachine(m); err != nil {
		return nil, err
	}
	m.UpdatedAt = s.now().UTC()
	if err := s.putMachine(tx, old, m, vc); err != nil {
		return nil, err
	}
	return m, nil
}

func cloneMachine(m *Machine) *Machine {
	c := *m
	c.MACs = slices.Clone(m.MACs)
	c.NewInspection = bytes.Clone(m.NewInspection)
	c.Cabling = slices.Clone(m.Cabling)
	return &c
}

// SetMachineState moves a machine to another state. reason and step are
// required for failed and kept for maintenance.
func (s *Store) SetMachineState(ctx context.Context, name string, to MachineState, reason, step string) (*Machine, error) {
	return s.UpdateMachine(ctx, name, func(m *Machine) error {
		if m.State == to && ValidMachineState(to) {
			// Asking for the state it is in is refused, not a silent no-op.
			return &TransitionError{Kind: "machine", Name: name, From: string(m.State), To: string(to), Allowed: strs(machineNext[m.State])}
		}
		m.State = to
		if to == MachineFailed || to == MachineMaintenance {
			m.Reason, m.FailedStep = reason, step
		}
		return nil
	})
}

// SetMaintenance puts a machine into maintenance (on) or returns it to the
// state it was in before (off).
func (s *Store) SetMaintenance(ctx context.Context, name string, on bool, reason string) (*Machine, error) {
	if len(reason) > maxReason {
		return nil, invalid("reason", "is %d characters long, more than %d", len(reason), maxReason)
	}
	return s.UpdateMachine(ctx, name, func(m *Machine) error {
		if on {
			if m.State == MachineMaintenance {
				return &ConflictError{Msg: fmt.Sprintf("machine %q is already in maintenance", name)}
			}
			m.State, m.Reason = MachineMaintenance, reason
			return nil
		}
		if m.State != MachineMaintenance {
			return &ConflictError{Msg: fmt.Sprintf("machine %q is not in maintenance (it is %s)", name, m.State)}
		}
		back := m.PrevState
		switch back {
		case MachineEnrolled, MachineAvailable, MachineDeployed:
		default:
			// From a transient state (a job was interrupted) the machine
			// must be commissioned again before it is trusted.
			back = MachineEnrolled
		}
		m.State, m.PrevState, m.Reason = back, "", ""
		return nil
	})
}

// AssignMachineTenant gives a machine to a tenant ("" takes it back). A
// machine changes tenant only with no job running and, when a tenant had
// it, only once released (HandoverError).
func (s *Store) AssignMachineTenant(ctx context.Context, name, tenant string) (*Machine, error) {
	return s.assignMachineTenant(name, tenant, nil)
}

// UnassignMachineTenant takes a machine back from tenant, in one
// transaction with the check that tenant holds it: a concurrent
// reassignment to another tenant is never undone.
func (s *Store) UnassignMachineTenant(ctx context.Context, name, tenant string) (*Machine, error) {
	return s.assignMachineTenant(name, "", func(current string) error {
		if current != tenant {
			return &ConflictError{Msg: fmt.Sprintf("machine %q is not assigned to tenant %q", name, tenant)}
		}
		return nil
	})
}

// assignMachineTenant gives a machine to tenant; check, when set, first
// vets its current tenant inside the transaction.
func (s *Store) assignMachineTenant(name, tenant string, check func(current string) error) (*Machine, error) {
	var out *Machine
	err := s.write(func(tx kv.Tx, vc *viewChanges) (err error) {
		out, err = s.updateMachine(tx, name, func(m *Machine) error {
			if check != nil {
				if err := check(m.Tenant); err != nil {
					return err
				}
			}
			if err := checkHandover(tx, m, tenant); err != nil {
				return err
			}
			m.Tenant = tenant
			return nil
		}, vc)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RecordBMCStatus stores what the BMC said. Many of these arrive together
// from the power-state sync, so they are batched into shared transactions.
func (s *Store) RecordBMCStatus(ctx context.Context, name string, st BMCStatus) error {
	return s.batch(s.putBMCStatus(name, st))
}

// RecordBMCStatusBehind is RecordBMCStatus written behind (see
// UpdateJobBehind): for what a BMC command said, which the step's end,
// written next, carries in its commit. A crash may lose it; the next
// contact with the BMC says it again. A machine removed meanwhile is
// skipped.
func (s *Store) RecordBMCStatusBehind(name string, st BMCStatus) {
	s.batchBehind(s.putBMCStatus(name, st))
}

func (s *Store) putBMCStatus(name string, st BMCStatus) func(tx kv.Tx) error {
	return func(tx kv.Tx) error {
		m, err := s.getMachine(tx, name)
		if err != nil {
			return &NotFoundError{Kind: "machine", Name: name}
		}
		m.BMCStatus = st
		// Only the status changes: no index or usage is touched.
		return s.putMachineRecord(tx, m)
	}
}

// RecordInspection stores the agent's hardware report for the machine
// (apart from its record, see Machine.InspectedAt) and when it came.
func (s *Store) RecordInspection(ctx context.Context, name string, report json.RawMessage) (*Machine, error) {
	if !json.Valid(report) {
		return nil, invalid("inspection", "is not valid JSON")
	}
	return s.UpdateMachine(ctx, name, func(m *Machine) error {
		m.NewInspection, m.InspectedAt = bytes.Clone(report), s.now().UTC()
		return nil
	})
}

// DeleteMachine removes a machine that is not in the middle of a job or
// deployed for a tenant.
func (s *Store) DeleteMachine(ctx context.Context, name string) error {
	return s.write(func(tx kv.Tx, vc *viewChanges) error {
		m, err := get[Machine](tx, bMachines, "machine", name)
		if err != nil {
			return err
		}
		switch m.State {
		case MachineEnrolled, MachineAvailable, MachineFailed, MachineMaintenance, MachineRetired:
		default:
			return &ConflictError{Msg: fmt.Sprintf("machine %q is %s: release it or wait for its job before removing it", name, m.State)}
		}
		for _, mac := range m.MACs {
			if err := bkt(tx, bIdxMAC).Delete(macKey(mac)); err != nil {
				return err
			}
		}
		vc.deleted = append(vc.deleted, name)
		if err := unindexMachine(tx, m); err != nil {
			return err
		}
		if m.BMC.SecretRef != "" {
			if err := bkt(tx, bSecrets).Delete([]byte(m.BMC.SecretRef)); err != nil {
				return err
			}
		}
		if err := bkt(tx, bIdxTenancy).Delete([]byte(name)); err != nil {
			return err
		}
		if err := bkt(tx, bInspections).Delete([]byte(name)); err != nil {
			return err
		}
		return bkt(tx, bMachines).Delete([]byte(name))
	})
}
