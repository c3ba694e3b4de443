package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// EditSite changes a site's description.
func (s *Store) EditSite(ctx context.Context, name string, description string) (*Site, error) {
	if err := checkDescription(description); err != nil {
		return nil, err
	}
	var out *Site
	err := s.update(func(tx kv.Tx) error {
		site, err := get[Site](tx, bSites, "site", name)
		if err != nil {
			return err
		}
		site.Description = description
		out = site
		return putJSON(bkt(tx, bSites), []byte(name), site)
	})
	return out, err
}

// EditHall moves a hall to another site: the one thing a hall holds
// besides its name, and the one a typo at creation gets wrong.
func (s *Store) EditHall(ctx context.Context, name, site string) (*Hall, error) {
	if err := checkName("site", site); err != nil {
		return nil, err
	}
	var out *Hall
	err := s.update(func(tx kv.Tx) error {
		h, err := get[Hall](tx, bHalls, "hall", name)
		if err != nil {
			return err
		}
		if !exists(tx, bSites, site) {
			return &NotFoundError{Kind: "site", Name: site}
		}
		h.Site = site
		out = h
		return putJSON(bkt(tx, bHalls), []byte(name), h)
	})
	return out, err
}

// EditTenant changes a tenant's description.
func (s *Store) EditTenant(ctx context.Context, name string, description string) (*Tenant, error) {
	if err := checkDescription(description); err != nil {
		return nil, err
	}
	var out *Tenant
	err := s.update(func(tx kv.Tx) error {
		t, err := get[Tenant](tx, bTenants, "tenant", name)
		if err != nil {
			return err
		}
		t.Description = description
		out = t
		return putJSON(bkt(tx, bTenants), []byte(name), t)
	})
	return out, err
}

// SubnetEdit changes a subnet; a nil field is kept. An empty range
// (both ends "") removes the dynamic range; DNS, when not nil, replaces
// the list. The CIDR does not change: machines' reservations and leases
// were checked against it.
type SubnetEdit struct {
	Gateway               *string
	RangeFirst, RangeLast *string
	DNS                   []string
}

// EditSubnet changes a subnet's gateway, dynamic range or DNS servers in
// one transaction, and the boot view serves the change from its commit.
// What the subnet already holds is kept whole, so a change that would
// strand it is refused, naming what is in the way: a reserved address
// may not fall inside the range or be the gateway (the range would hand
// it to another MAC), and an unexpired dynamic lease may not fall outside
// the range (its holder would renew an address nobody owns any more).
func (s *Store) EditSubnet(ctx context.Context, name string, e SubnetEdit) (*Subnet, error) {
	if e.Gateway == nil && e.RangeFirst == nil && e.RangeLast == nil && e.DNS == nil {
		return nil, invalid("subnet", "names nothing to change: give a gateway, a range or DNS servers")
	}
	if (e.RangeFirst == nil) != (e.RangeLast == nil) {
		return nil, invalid("range", "give both ends, as FIRST-LAST")
	}
	now := s.now()
	var out *Subnet
	err := s.write(func(tx kv.Tx, vc *viewChanges) error {
		old, err := get[Subnet](tx, bSubnets, "subnet", name)
		if err != nil {
			return err
		}
		sn := *old
		if e.Gateway != nil {
			sn.Gateway = *e.Gateway
		}
		if e.RangeFirst != nil {
			sn.RangeFirst, sn.RangeLast = *e.RangeFirst, *e.RangeLast
		}
		if e.DNS != nil {
			sn.DNS = slices.Clone(e.DNS)
			if len(sn.DNS) == 0 {
				sn.DNS = nil
			}
		}
		prefix, err := netip.ParsePrefix(sn.CIDR)
		if err != nil {
			return fmt.Errorf("subnet %q: stored CIDR %q: %w", name, sn.CIDR, err)
		}
		if err := checkSubnetInside(prefix, &sn); err != nil {
			return err
		}
		var inRangeNow, onGateway []string
		reserved := subnetReservations(tx, prefix)
		for _, r := range reserved {
			if sn.RangeFirst != "" && inRange(r.ip, sn.RangeFirst, sn.RangeLast) {
				inRangeNow = append(inRangeNow, fmt.Sprintf("%s (%s)", r.machine, r.ip))
			}
			if r.ip.String() == sn.Gateway {
				onGateway = append(onGateway, fmt.Sprintf("%s (%s)", r.machine, r.ip))
			}
		}
		if len(onGateway) > 0 {
			return &ConflictError{Msg: fmt.Sprintf("subnet %q: gateway %s is reserved for machine %s: choose another gateway or change that machine's address first",
				name, sn.Gateway, strings.Join(onGateway, ", "))}
		}
		if len(inRangeNow) > 0 {
			return &ConflictError{Msg: fmt.Sprintf("subnet %q: the range %s-%s would take in %s reserved for %s: keep the range clear of reserved addresses",
				name, sn.RangeFirst, sn.RangeLast, countNoun(len(inRangeNow), "address", "addresses"), listNames(inRangeNow))}
		}
		if old.RangeFirst != "" && (sn.RangeFirst != old.RangeFirst || sn.RangeLast != old.RangeLast) {
			var stranded []string
			latest := now
			for _, l := range subnetLeases(tx, prefix, now) {
				if inRange(l.ip, old.RangeFirst, old.RangeLast) && (sn.RangeFirst == "" || !inRange(l.ip, sn.RangeFirst, sn.RangeLast)) {
					stranded = append(stranded, fmt.Sprintf("%s (%s)", l.ip, l.mac))
					if l.expires.After(latest) {
						latest = l.expires
					}
				}
			}
			if len(stranded) > 0 {
				return &ConflictError{Msg: fmt.Sprintf("subnet %q: %s leased from the range %s-%s would fall outside it: %s; keep the range covering them, or change it after they expire (the last at %s)",
					name, countNoun(len(stranded), "address", "addresses"), old.RangeFirst, old.RangeLast, listNames(stranded), latest.UTC().Format("2006-01-02T15:04:05Z"))}
			}
		}
		vc.subnets = append(vc.subnets, sn)
		out = &sn
		return putJSON(bkt(tx, bSubnets), []byte(name), &sn)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

type reservation struct {
	ip      netip.Addr
	machine string
}

// subnetReservations lists the machines' reserved addresses inside prefix.
func subnetReservations(tx kv.Tx, prefix netip.Prefix) []reservation {
	var out []reservation
	_ = bkt(tx, bIdxIP).ForEach(func(k, v []byte) error {
		if a, err := netip.ParseAddr(string(k)); err == nil && prefix.Contains(a) {
			out = append(out, reservation{ip: a, machine: string(v)})
		}
		return nil
	})
	return out
}

type heldLease struct {
	ip      netip.Addr
	mac     string
	expires time.Time
}

// subnetLeases lists the stored dynamic leases inside prefix that have
// not expired at now.
func subnetLeases(tx kv.Tx, prefix netip.Prefix, now time.Time) []heldLease {
	var out []heldLease
	ls, _ := list(tx, bLeases, func(l *Lease) bool { return l.Expires.After(now) })
	for _, l := range ls {
		if a, err := netip.ParseAddr(l.IP); err == nil && prefix.Contains(a) {
			out = append(out, heldLease{ip: a, mac: l.MAC, expires: l.Expires})
		}
	}
	return out
}

// countNoun spells a count with its noun: "1 rack", "3 racks".
func countNoun(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// listNames joins names for a refusal, the first ten and how many more:
// a hall of 400 racks must not make a message of 400 names.
func listNames(names []string) string {
	const shown = 10
	if len(names) <= shown {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:shown], ", "), len(names)-shown)
}
