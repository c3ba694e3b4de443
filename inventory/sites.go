package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/metalhall/metalhall/inventory/kv"
)

// CreateSite adds a site.
func (s *Store) CreateSite(ctx context.Context, site Site) (*Site, error) {
	if err := checkName("name", site.Name); err != nil {
		return nil, err
	}
	if err := checkDescription(site.Description); err != nil {
		return nil, err
	}
	site.CreatedAt = s.now().UTC()
	err := s.update(func(tx kv.Tx) error {
		if exists(tx, bSites, site.Name) {
			return &ExistsError{Kind: "site", Name: site.Name}
		}
		return putJSON(bkt(tx, bSites), []byte(site.Name), site)
	})
	if err != nil {
		return nil, err
	}
	return &site, nil
}

// Site returns one site.
func (s *Store) Site(ctx context.Context, name string) (*Site, error) {
	var out *Site
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[Site](tx, bSites, "site", name); return })
	return out, err
}

// Sites lists all sites by name.
func (s *Store) Sites(ctx context.Context) ([]Site, error) {
	var out []Site
	err := s.view(func(tx kv.Tx) (err error) { out, err = list[Site](tx, bSites, nil); return })
	return out, err
}

// CreateHall adds a hall to a site.
func (s *Store) CreateHall(ctx context.Context, h Hall) (*Hall, error) {
	if err := checkName("name", h.Name); err != nil {
		return nil, err
	}
	if err := checkName("site", h.Site); err != nil {
		return nil, err
	}
	h.CreatedAt = s.now().UTC()
	err := s.update(func(tx kv.Tx) error {
		if !exists(tx, bSites, h.Site) {
			return &NotFoundError{Kind: "site", Name: h.Site}
		}
		if exists(tx, bHalls, h.Name) {
			return &ExistsError{Kind: "hall", Name: h.Name}
		}
		return putJSON(bkt(tx, bHalls), []byte(h.Name), h)
	})
	if err != nil {
		return nil, err
	}
	return &h, nil
}

// Hall returns one hall.
func (s *Store) Hall(ctx context.Context, name string) (*Hall, error) {
	var out *Hall
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[Hall](tx, bHalls, "hall", name); return })
	return out, err
}

// Halls lists halls, of one site when site is not empty.
func (s *Store) Halls(ctx context.Context, site string) ([]Hall, error) {
	var out []Hall
	err := s.view(func(tx kv.Tx) (err error) {
		out, err = list(tx, bHalls, func(h *Hall) bool { return site == "" || h.Site == site })
		return
	})
	return out, err
}

// CreatePhase adds a commissioning phase to a hall. Phases start planned.
func (s *Store) CreatePhase(ctx context.Context, p Phase) (*Phase, error) {
	if err := checkName("hall", p.Hall); err != nil {
		return nil, err
	}
	if p.Number < 1 || p.Number > 999 {
		return nil, invalid("number", "must be between 1 and 999, got %d", p.Number)
	}
	if p.BudgetW <= 0 {
		return nil, invalid("power_kw", "must be greater than 0")
	}
	if p.BudgetW > MaxPhaseBudgetW {
		return nil, invalid("power_kw", "must be at most %s kW for a phase, got %s kW", FormatKW(MaxPhaseBudgetW), FormatKW(p.BudgetW))
	}
	if err := checkDate("target_date", p.TargetDate); err != nil {
		return nil, err
	}
	p.State = PhasePlanned
	p.CreatedAt = s.now().UTC()
	err := s.update(func(tx kv.Tx) error {
		if !exists(tx, bHalls, p.Hall) {
			return &NotFoundError{Kind: "hall", Name: p.Hall}
		}
		k := phaseKey(p.Hall, p.Number)
		if bkt(tx, bPhases).Get(k) != nil {
			return &ExistsError{Kind: "phase", Name: fmt.Sprintf("%s/%d", p.Hall, p.Number)}
		}
		return putJSON(bkt(tx, bPhases), k, p)
	})
	if err != nil {
		return nil, err
	}
	return &p, nil
}

func getPhase(tx kv.Tx, hall string, number int) (*Phase, error) {
	var p Phase
	if err := getJSON(bkt(tx, bPhases), phaseKey(hall, number), &p); err != nil {
		return nil, &NotFoundError{Kind: "phase", Name: fmt.Sprintf("%s/%d", hall, number)}
	}
	return &p, nil
}

// Phase returns one phase of a hall.
func (s *Store) Phase(ctx context.Context, hall string, number int) (*Phase, error) {
	var out *Phase
	err := s.view(func(tx kv.Tx) (err error) { out, err = getPhase(tx, hall, number); return })
	return out, err
}

// Phases lists a hall's phases in order.
func (s *Store) Phases(ctx context.Context, hall string) ([]Phase, error) {
	var out []Phase
	err := s.view(func(tx kv.Tx) error {
		if !exists(tx, bHalls, hall) {
			return &NotFoundError{Kind: "hall", Name: hall}
		}
		var err error
		out, err = hallPhases(tx, hall)
		return err
	})
	return out, err
}

func hallPhases(tx kv.Tx, hall string) ([]Phase, error) {
	var out []Phase
	prefix := append([]byte(hall), 0)
	c := bkt(tx, bPhases).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var p Phase
		if err := json.Unmarshal(v, &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// SetPhaseState moves a phase through planned → commissioning → live. A
// phase goes live only when every rack in it is active or decommissioned.
func (s *Store) SetPhaseState(ctx context.Context, hall string, number int, to PhaseState) (*Phase, error) {
	var out *Phase
	err := s.update(func(tx kv.Tx) error {
		p, err := getPhase(tx, hall, number)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%s/%d", hall, number)
		if _, ok := phaseNext[to]; !ok {
			return invalid("state", "%q is not a phase state (planned, commissioning, live)", to)
		}
		allowed := phaseNext[p.State]
		if !slices.Contains(allowed, to) {
			return &TransitionError{Kind: "phase", Name: name, From: string(p.State), To: string(to), Allowed: strs(allowed)}
		}
		if to == PhaseLive {
			var notReady []string
			err := phaseRacks(tx, hall, number, func(r *Rack) error {
				if r.State != RackActive && r.State != RackDecommissioned {
					notReady = append(notReady, fmt.Sprintf("%s (%s)", r.Name, r.State))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(notReady) > 0 {
				return &TransitionError{Kind: "phase", Name: name, From: string(p.State), To: string(to),
					Reason: "racks not active or decommissioned: " + strings.Join(notReady, ", ")}
			}
		}
		if to == PhasePlanned {
			// Back to planned only while no rack of the phase is being
			// commissioned or running.
			var busy []string
			_ = phaseRacks(tx, hall, number, func(r *Rack) error {
				if r.State == RackCommissioning || r.State == RackActive {
					busy = append(busy, r.Name)
				}
				return nil
			})
			if len(busy) > 0 {
				return &TransitionError{Kind: "phase", Name: name, From: string(p.State), To: string(to),
					Reason: "racks already commissioning or active: " + strings.Join(busy, ", ")}
			}
		}
		p.State = to
		out = p
		return putJSON(bkt(tx, bPhases), phaseKey(hall, number), p)
	})
	return out, err
}

// phaseRacks calls fn for each rack of a hall phase, in name order.
func phaseRacks(tx kv.Tx, hall string, number int, fn func(*Rack) error) error {
	prefix := phaseKey(hall, number)
	racks := bkt(tx, bRacks)
	c := bkt(tx, bIdxPhaseR).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		var r Rack
		if err := getJSON(racks, k[len(prefix):], &r); err != nil {
			return fmt.Errorf("phase index points at rack %q: %w", k[len(prefix):], err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

// CreateSubnet adds a provisioning subnet.
func (s *Store) CreateSubnet(ctx context.Context, sn Subnet) (*Subnet, error) {
	if err := checkName("name", sn.Name); err != nil {
		return nil, err
	}
	prefix, err := netip.ParsePrefix(sn.CIDR)
	if err != nil || !prefix.Addr().Is4() {
		return nil, invalid("cidr", "%q is not an IPv4 CIDR such as 10.1.0.0/24", sn.CIDR)
	}
	if prefix != prefix.Masked() {
		return nil, invalid("cidr", "%q has host bits set; did you mean %s?", sn.CIDR, prefix.Masked())
	}
	if prefix.Bits() > 30 {
		return nil, invalid("cidr", "%q is too small for hosts (use /30 or larger)", sn.CIDR)
	}
	sn.CIDR = prefix.String()
	if err := checkSubnetInside(prefix, &sn); err != nil {
		return nil, err
	}
	sn.CreatedAt = s.now().UTC()
	err = s.write(func(tx kv.Tx, vc *viewChanges) error {
		if exists(tx, bSubnets, sn.Name) {
			return &ExistsError{Kind: "subnet", Name: sn.Name}
		}
		others, err := list[Subnet](tx, bSubnets, nil)
		if err != nil {
			return err
		}
		for _, o := range others {
			if op, _ := netip.ParsePrefix(o.CIDR); op.Overlaps(prefix) {
				return &ConflictError{Msg: fmt.Sprintf("subnet %s overlaps subnet %q (%s)", prefix, o.Name, o.CIDR)}
			}
		}
		vc.subnets = append(vc.subnets, sn)
		return putJSON(bkt(tx, bSubnets), []byte(sn.Name), sn)
	})
	if err != nil {
		return nil, err
	}
	return &sn, nil
}

// checkSubnetInside checks what a subnet holds against its prefix: the
// gateway, the dynamic range and the DNS servers. Creation and edits
// share it.
func checkSubnetInside(prefix netip.Prefix, sn *Subnet) error {
	gw, err := checkAddr("gateway", sn.Gateway)
	if err != nil {
		return err
	}
	if !prefix.Contains(gw) {
		return invalid("gateway", "%s is outside %s", gw, prefix)
	}
	if (sn.RangeFirst == "") != (sn.RangeLast == "") {
		return invalid("range", "give both ends, as FIRST-LAST")
	}
	if sn.RangeFirst != "" {
		first, err := checkAddr("range", sn.RangeFirst)
		if err != nil {
			return err
		}
		last, err := checkAddr("range", sn.RangeLast)
		if err != nil {
			return err
		}
		if !prefix.Contains(first) || !prefix.Contains(last) {
			return invalid("range", "%s-%s is not inside %s", first, last, prefix)
		}
		if last.Less(first) {
			return invalid("range", "%s-%s ends before it starts", first, last)
		}
	}
	for _, d := range sn.DNS {
		if _, err := checkAddr("dns", d); err != nil {
			return err
		}
	}
	return nil
}

// Subnets lists subnets by name.
func (s *Store) Subnets(ctx context.Context) ([]Subnet, error) {
	var out []Subnet
	err := s.view(func(tx kv.Tx) (err error) { out, err = list[Subnet](tx, bSubnets, nil); return })
	return out, err
}

// SubnetFor returns the subnet that contains ip.
func (s *Store) SubnetFor(ctx context.Context, ip string) (*Subnet, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, invalid("ip", "%q is not an IP address", ip)
	}
	subs, err := s.Subnets(ctx)
	if err != nil {
		return nil, err
	}
	for i := range subs {
		if p, _ := netip.ParsePrefix(subs[i].CIDR); p.Contains(a) {
			return &subs[i], nil
		}
	}
	return nil, &NotFoundError{Kind: "subnet for", Name: ip}
}

// CreateTenant adds a tenant.
func (s *Store) CreateTenant(ctx context.Context, t Tenant) (*Tenant, error) {
	if err := checkName("name", t.Name); err != nil {
		return nil, err
	}
	if err := checkDescription(t.Description); err != nil {
		return nil, err
	}
	t.CreatedAt = s.now().UTC()
	err := s.update(func(tx kv.Tx) error {
		if exists(tx, bTenants, t.Name) {
			return &ExistsError{Kind: "tenant", Name: t.Name}
		}
		return putJSON(bkt(tx, bTenants), []byte(t.Name), t)
	})
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// Tenant returns one tenant.
func (s *Store) Tenant(ctx context.Context, name string) (*Tenant, error) {
	var out *Tenant
	err := s.view(func(tx kv.Tx) (err error) { out, err = get[Tenant](tx, bTenants, "tenant", name); return })
	return out, err
}

// Tenants lists tenants by name.
func (s *Store) Tenants(ctx context.Context) ([]Tenant, error) {
	var out []Tenant
	err := s.view(func(tx kv.Tx) (err error) { out, err = list[Tenant](tx, bTenants, nil); return })
	return out, err
}
