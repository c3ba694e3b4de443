package provisioner

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// Addresses gives netboot the inventory's address reservations, and a
// dynamic range per subnet for machines not enrolled yet (discovery). It
// reads reservations from the inventory's in-memory MAC index and keeps
// the subnets in memory, refreshed every few seconds, so a DHCP packet
// costs no database transaction.
type Addresses struct {
	inv   *inventory.Store
	lease time.Duration
	dyn   *netboot.MemoryAddresses

	mu       sync.Mutex
	subnets  []netboot.Subnet
	loadedAt time.Time
	learned  map[netip.Addr]net.HardwareAddr // proxy mode: who took which address elsewhere
}

// NewAddresses loads the subnets and the unexpired leases.
func NewAddresses(ctx context.Context, inv *inventory.Store, leaseTime time.Duration) (*Addresses, error) {
	if leaseTime <= 0 {
		leaseTime = time.Hour
	}
	a := &Addresses{inv: inv, lease: leaseTime, dyn: netboot.NewMemoryAddresses(), learned: map[netip.Addr]net.HardwareAddr{}}
	subs, err := inv.Subnets(ctx)
	if err != nil {
		return nil, err
	}
	for _, sn := range subs {
		ns := toNetbootSubnet(sn, leaseTime)
		a.subnets = append(a.subnets, ns)
		if sn.RangeFirst == "" {
			continue
		}
		first, _ := netip.ParseAddr(sn.RangeFirst)
		last, _ := netip.ParseAddr(sn.RangeLast)
		// No relay address: the segment serves on-link clients and clients
		// relayed from any address inside the subnet.
		if err := a.dyn.AddSegment(ns, netip.Addr{}, first, last); err != nil {
			return nil, fmt.Errorf("subnet %q: %w", sn.Name, err)
		}
	}
	a.loadedAt = time.Now()
	leases, err := inv.Leases(ctx, time.Now())
	if err != nil {
		return nil, err
	}
	for _, l := range leases {
		mac, err1 := net.ParseMAC(l.MAC)
		ip, err2 := netip.ParseAddr(l.IP)
		if err1 == nil && err2 == nil {
			a.dyn.Reserve(mac, ip, l.Hostname) // a restart hands out the same address
		}
	}
	return a, nil
}

func toNetbootSubnet(sn inventory.Subnet, lease time.Duration) netboot.Subnet {
	p, _ := netip.ParsePrefix(sn.CIDR)
	gw, _ := netip.ParseAddr(sn.Gateway)
	out := netboot.Subnet{Prefix: p, Gateway: gw, LeaseTime: lease}
	for _, d := range sn.DNS {
		if a, err := netip.ParseAddr(d); err == nil {
			out.DNS = append(out.DNS, a)
		}
	}
	return out
}

func (a *Addresses) subnetList(ctx context.Context) []netboot.Subnet {
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.loadedAt) > 5*time.Second {
		if subs, err := a.inv.Subnets(ctx); err == nil {
			a.subnets = a.subnets[:0]
			for _, sn := range subs {
				a.subnets = append(a.subnets, toNetbootSubnet(sn, a.lease))
			}
			a.loadedAt = time.Now()
		}
	}
	return a.subnets
}

// Lookup returns an enrolled machine's reserved address.
func (a *Addresses) Lookup(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (netboot.Reservation, bool, error) {
	e, ok := a.inv.LookupMAC(mac)
	if !ok {
		return a.dyn.Lookup(ctx, mac, relay)
	}
	if e.IP == "" {
		return netboot.Reservation{}, false, nil
	}
	ip, err := netip.ParseAddr(e.IP)
	if err != nil {
		return netboot.Reservation{}, false, err
	}
	for _, sn := range a.subnetList(ctx) {
		if sn.Prefix.Contains(ip) && (!relay.IsValid() || sn.Prefix.Contains(relay)) {
			return netboot.Reservation{IP: ip, Subnet: sn, Hostname: e.Machine}, true, nil
		}
	}
	return netboot.Reservation{}, false, nil
}

// Allocate gives an unknown MAC an address from the dynamic range.
func (a *Addresses) Allocate(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (netboot.Reservation, error) {
	return a.dyn.Allocate(ctx, mac, relay)
}

// Owner returns the MAC an address belongs to.
func (a *Addresses) Owner(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool) {
	if m, err := a.inv.MachineByIP(ctx, ip.String()); err == nil && len(m.MACs) > 0 {
		mac, err := net.ParseMAC(m.MACs[0])
		return mac, err == nil
	}
	a.mu.Lock()
	mac, ok := a.learned[ip]
	a.mu.Unlock()
	if ok {
		return mac, true
	}
	return a.dyn.Owner(ctx, ip)
}

// learnedMax bounds what proxy mode remembers: one entry per address of
// the provisioning networks is plenty.
const learnedMax = 1 << 16

// Learn records, in proxy mode, which address a PXE client took from the
// other DHCP server, so its boot-script request is recognised.
func (a *Addresses) Learn(ctx context.Context, mac net.HardwareAddr, ip netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.learned) >= learnedMax {
		clear(a.learned)
	}
	a.learned[ip] = append(net.HardwareAddr(nil), mac...)
}

// BootEvents writes netboot's boot steps as machine events and its leases
// to the inventory, in batches (netboot.AsyncRecorder calls it).
type BootEvents struct{ Inv *inventory.Store }

// WriteEvents records boot steps on the machines they belong to; a MAC no
// machine owns is recorded under "mac/<MAC>", so discovery shows it.
func (b BootEvents) WriteEvents(ctx context.Context, evs []netboot.Event) error {
	out := make([]inventory.Event, 0, len(evs))
	for _, e := range evs {
		subject := "netboot"
		if e.MAC != "" {
			subject = "mac/" + e.MAC
			if mac, err := net.ParseMAC(e.MAC); err == nil {
				if ent, ok := b.Inv.LookupMAC(mac); ok {
					subject = "machine/" + ent.Machine
				}
			}
		}
		out = append(out, inventory.Event{Time: e.Time, Actor: "netboot", Subject: subject, Action: "boot." + string(e.Step), Outcome: "ok", Detail: e.Detail})
	}
	return b.Inv.AppendEvents(ctx, out)
}

// WriteLeases persists leases.
func (b BootEvents) WriteLeases(ctx context.Context, ls []netboot.Lease) error {
	out := make([]inventory.Lease, 0, len(ls))
	for _, l := range ls {
		out = append(out, inventory.Lease{MAC: l.MAC, IP: l.IP.String(), Hostname: l.Hostname, Expires: l.Expires})
	}
	return b.Inv.PutLeases(ctx, out)
}

var (
	_ netboot.Addresses    = (*Addresses)(nil)
	_ netboot.LeaseLearner = (*Addresses)(nil)
	_ netboot.Sink         = BootEvents{}
)
