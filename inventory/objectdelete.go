package inventory

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/metalhall/metalhall/inventory/kv"
)

// The deletes below remove what people created and nothing else: each is
// refused while anything still depends on the object, with a message that
// names what depends on it, so nothing is left pointing at a name that is
// gone. The checks run inside the deleting transaction.

// namesOf lists what name says of each x.
func namesOf[T any](xs []T, name func(*T) string) []string {
	out := make([]string, len(xs))
	for i := range xs {
		out[i] = name(&xs[i])
	}
	return out
}

// dependentsError refuses a delete: kind name still has these.
func dependentsError(kind, name string, n int, one, many string, names []string, fix string) error {
	return &ConflictError{Msg: fmt.Sprintf("%s %s still has %s: %s; %s first", kind, name, countNoun(n, one, many), listNames(names), fix)}
}

// DeleteSite removes a site that has no halls.
func (s *Store) DeleteSite(ctx context.Context, name string) error {
	return s.update(func(tx kv.Tx) error {
		if !exists(tx, bSites, name) {
			return &NotFoundError{Kind: "site", Name: name}
		}
		halls, err := list(tx, bHalls, func(h *Hall) bool { return h.Site == name })
		if err != nil {
			return err
		}
		if len(halls) > 0 {
			return dependentsError("site", name, len(halls), "hall", "halls", namesOf(halls, func(h *Hall) string { return h.Name }), "delete them or move them to another site")
		}
		return bkt(tx, bSites).Delete([]byte(name))
	})
}

// DeleteHall removes a hall that has no racks and no phases.
func (s *Store) DeleteHall(ctx context.Context, name string) error {
	return s.update(func(tx kv.Tx) error {
		if !exists(tx, bHalls, name) {
			return &NotFoundError{Kind: "hall", Name: name}
		}
		phases, err := hallPhases(tx, name)
		if err != nil {
			return err
		}
		var racks, numbers []string
		for _, p := range phases {
			numbers = append(numbers, strconv.Itoa(p.Number))
			if err := phaseRacks(tx, name, p.Number, func(r *Rack) error { racks = append(racks, r.Name); return nil }); err != nil {
				return err
			}
		}
		if len(racks) > 0 {
			return dependentsError("hall", name, len(racks), "rack", "racks", racks, "delete them")
		}
		if len(phases) > 0 {
			return dependentsError("hall", name, len(phases), "phase", "phases", numbers, "delete them")
		}
		return bkt(tx, bHalls).Delete([]byte(name))
	})
}

// DeletePhase removes a phase of a hall that has no racks.
func (s *Store) DeletePhase(ctx context.Context, hall string, number int) error {
	return s.update(func(tx kv.Tx) error {
		if _, err := getPhase(tx, hall, number); err != nil {
			return err
		}
		var racks []string
		if err := phaseRacks(tx, hall, number, func(r *Rack) error { racks = append(racks, r.Name); return nil }); err != nil {
			return err
		}
		if len(racks) > 0 {
			return dependentsError("phase", fmt.Sprintf("%d of hall %s", number, hall), len(racks), "rack", "racks", racks, "delete them")
		}
		return bkt(tx, bPhases).Delete(phaseKey(hall, number))
	})
}

// DeleteSubnet removes a subnet that no machine reserves an address in
// and no unexpired dynamic lease is held in; the boot view stops serving
// it from the commit.
func (s *Store) DeleteSubnet(ctx context.Context, name string) error {
	now := s.now()
	return s.write(func(tx kv.Tx, vc *viewChanges) error {
		sn, err := get[Subnet](tx, bSubnets, "subnet", name)
		if err != nil {
			return err
		}
		prefix, err := netip.ParsePrefix(sn.CIDR)
		if err != nil {
			return fmt.Errorf("subnet %q: stored CIDR %q: %w", name, sn.CIDR, err)
		}
		if rs := subnetReservations(tx, prefix); len(rs) > 0 {
			names := namesOf(rs, func(r *reservation) string { return fmt.Sprintf("%s (%s)", r.machine, r.ip) })
			return dependentsError("subnet", name, len(rs), "machine with a reserved address", "machines with reserved addresses", names,
				"change their addresses or delete them")
		}
		if ls := subnetLeases(tx, prefix, now); len(ls) > 0 {
			names := make([]string, len(ls))
			latest := now
			for i, l := range ls {
				names[i] = fmt.Sprintf("%s (%s)", l.ip, l.mac)
				if l.expires.After(latest) {
					latest = l.expires
				}
			}
			return dependentsError("subnet", name, len(ls), "unexpired lease", "unexpired leases", names,
				"wait until they expire (the last at "+latest.UTC().Format("2006-01-02T15:04:05Z")+")")
		}
		vc.subnetsDeleted = append(vc.subnetsDeleted, name)
		return bkt(tx, bSubnets).Delete([]byte(name))
	})
}

// DeleteTenant removes a tenant that holds nothing: no rack or machine
// assigned, no live token, no private image. Its events stay in the audit
// trail.
func (s *Store) DeleteTenant(ctx context.Context, name string) error {
	now := s.now()
	return s.update(func(tx kv.Tx) error {
		if !exists(tx, bTenants, name) {
			return &NotFoundError{Kind: "tenant", Name: name}
		}
		racks, err := list(tx, bRacks, func(r *Rack) bool { return r.Tenant == name })
		if err != nil {
			return err
		}
		if len(racks) > 0 {
			return dependentsError("tenant", name, len(racks), "rack", "racks", namesOf(racks, func(r *Rack) string { return r.Name }), "unassign them")
		}
		machines, err := list(tx, bMachines, func(m *Machine) bool { return m.Tenant == name })
		if err != nil {
			return err
		}
		if len(machines) > 0 {
			return dependentsError("tenant", name, len(machines), "machine", "machines", namesOf(machines, func(m *Machine) string { return m.Name }), "release and unassign them")
		}
		tokens, err := list(tx, bTokens, func(t *Token) bool { return t.Tenant == name && t.Live(now) })
		if err != nil {
			return err
		}
		if len(tokens) > 0 {
			return dependentsError("tenant", name, len(tokens), "live token", "live tokens", namesOf(tokens, func(t *Token) string { return t.ID }), "revoke them")
		}
		images, err := list(tx, bImages, func(img *Image) bool { return img.Tenant == name })
		if err != nil {
			return err
		}
		if len(images) > 0 {
			return dependentsError("tenant", name, len(images), "private image", "private images", namesOf(images, func(img *Image) string { return img.Name }), "delete them")
		}
		return bkt(tx, bTenants).Delete([]byte(name))
	})
}
