package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// Addresses gives netboot the inventory's address reservations, and a
// dynamic range per subnet for machines not enrolled yet (discovery). It
// reads only the inventory's boot view, in memory: a DHCP packet costs one
// lookup and no database transaction. Subnets created, changed or deleted
// while the service runs have their dynamic range set at the next packet
// that needs one.
//
// On a store other instances share (Store.Shared), a dynamic address is
// claimed in the inventory (Store.ClaimLease: the address checked free
// and taken in one transaction), so that no two instances hand one
// address to two MACs; it is then kept in memory for the lease's life,
// and renewals are written behind (BootEvents.WriteLeases). One
// transaction per new MAC and lease, none per packet. On a store this
// process alone holds (the bbolt file) memory is the only allocator and
// leases are only written behind: a claim would cost a commit per new
// MAC for nothing.
type Addresses struct {
	view  *inventory.BootView
	inv   *inventory.Store
	boot  *Engine
	lease time.Duration
	dyn   *netboot.MemoryAddresses
	now   func() time.Time // the clock of claims; tests may set it before the first packet

	segGen atomic.Uint64 // 1 + the view's subnet generation the segments follow; 0: none yet

	mu       sync.Mutex
	segments map[string]inventory.BootSubnet // subnets as their segments in dyn were last set
	learned  map[netip.Addr]net.HardwareAddr // proxy mode: who took which address elsewhere
}

// NewAddresses loads the unexpired leases; booter decides what each MAC
// boots, from the same lookup (netboot.BootAddresses).
func NewAddresses(ctx context.Context, inv *inventory.Store, booter *Engine, leaseTime time.Duration) (*Addresses, error) {
	if booter == nil {
		return nil, errors.New("provisioner: Addresses need the engine that decides what machines boot")
	}
	if leaseTime <= 0 {
		leaseTime = time.Hour
	}
	a := &Addresses{view: inv.BootView(), inv: inv, boot: booter, lease: leaseTime, dyn: netboot.NewMemoryAddresses(),
		now: time.Now, segments: map[string]inventory.BootSubnet{}, learned: map[netip.Addr]net.HardwareAddr{}}
	if inv.Shared() {
		a.claimInStore()
	}
	if err := a.syncSegments(); err != nil {
		return nil, err
	}
	leases, err := inv.Leases(ctx, a.now())
	if err != nil {
		return nil, err
	}
	for _, l := range leases {
		mac, err1 := net.ParseMAC(l.MAC)
		ip, err2 := netip.ParseAddr(l.IP)
		if err1 == nil && err2 == nil {
			// A restart hands out the same address, for what is left of
			// the lease; then it is claimed again.
			a.dyn.Hold(mac, ip, l.Hostname, l.Expires)
		}
	}
	return a, nil
}

// claimInStore makes dynamic addresses claimed in the inventory.
func (a *Addresses) claimInStore() {
	a.dyn.SetClaimer(storeClaimer{a}, func() time.Time { return a.now() })
}

// storeClaimer claims dynamic addresses in the inventory
// (netboot.Claimer).
type storeClaimer struct{ a *Addresses }

func (c storeClaimer) Claim(ctx context.Context, mac net.HardwareAddr, r netboot.DynamicRange) (netip.Addr, time.Time, error) {
	now := c.a.now()
	l, err := c.a.inv.ClaimLease(ctx, inventory.LeaseClaim{MAC: mac, First: r.First, Last: r.Last, From: r.From, Now: now, Expires: now.Add(c.a.lease)})
	if errors.Is(err, inventory.ErrNoFreeAddress) {
		return netip.Addr{}, time.Time{}, netboot.ErrPoolExhausted
	}
	if err != nil {
		return netip.Addr{}, time.Time{}, err
	}
	ip, err := netip.ParseAddr(l.IP)
	return ip, l.Expires, err
}

// syncSegments gives every subnet with a dynamic range its segment, once.
// It costs an atomic load unless a subnet changed since the last call.
func (a *Addresses) syncSegments() error {
	if a.segGen.Load() == a.view.SubnetGeneration()+1 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	subs, gen := a.view.Subnets()
	if a.segGen.Load() == gen+1 {
		return nil
	}
	var errs []error
	seen := make(map[string]bool, len(subs))
	for _, sn := range subs {
		seen[sn.Name] = true
		if old, ok := a.segments[sn.Name]; ok && sameSegment(old, sn) {
			continue
		}
		if !sn.RangeFirst.IsValid() {
			if old, ok := a.segments[sn.Name]; ok {
				a.dyn.RemoveSegment(old.Prefix) // its range was removed
				delete(a.segments, sn.Name)
			}
			continue
		}
		// No relay address: the segment serves on-link clients and clients
		// relayed from any address inside the subnet.
		if err := a.dyn.SetSegment(a.netbootSubnet(sn), netip.Addr{}, sn.RangeFirst, sn.RangeLast); err != nil {
			errs = append(errs, fmt.Errorf("subnet %q: %w", sn.Name, err))
			continue
		}
		a.segments[sn.Name] = sn
	}
	for name, old := range a.segments {
		if !seen[name] {
			a.dyn.RemoveSegment(old.Prefix) // the subnet was deleted
			delete(a.segments, name)
		}
	}
	a.segGen.Store(gen + 1)
	return errors.Join(errs...)
}

// sameSegment reports whether a subnet's segment needs no change: the
// same range and the same options.
func sameSegment(a, b inventory.BootSubnet) bool {
	return a.Prefix == b.Prefix && a.Gateway == b.Gateway && a.RangeFirst == b.RangeFirst && a.RangeLast == b.RangeLast && slices.Equal(a.DNS, b.DNS)
}

func (a *Addresses) netbootSubnet(sn inventory.BootSubnet) netboot.Subnet {
	return netboot.Subnet{Prefix: sn.Prefix, Gateway: sn.Gateway, DNS: sn.DNS, LeaseTime: a.lease}
}

// reservation is an enrolled machine's reserved address on the segment
// reached through relay.
func (a *Addresses) reservation(e inventory.BootEntry, relay netip.Addr) (netboot.Reservation, bool) {
	if !e.IP.IsValid() || !e.Subnet.Prefix.IsValid() {
		return netboot.Reservation{}, false
	}
	if relay.IsValid() && !e.Subnet.Prefix.Contains(relay) {
		return netboot.Reservation{}, false
	}
	return netboot.Reservation{IP: e.IP, Subnet: a.netbootSubnet(e.Subnet), Hostname: e.Machine}, true
}

// Lookup returns an enrolled machine's reserved address.
func (a *Addresses) Lookup(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (netboot.Reservation, bool, error) {
	e, ok := a.view.Lookup(mac)
	if !ok {
		return a.dynLookup(ctx, mac, relay)
	}
	r, ok := a.reservation(e, relay)
	return r, ok, nil
}

// LookupBoot implements netboot.BootAddresses: the reservation and the
// boot decision from one lookup of the MAC.
func (a *Addresses) LookupBoot(ctx context.Context, c netboot.Client) (netboot.Reservation, bool, netboot.Boot, error) {
	e, ok := a.view.Lookup(c.MAC)
	if !ok {
		r, known, err := a.dynLookup(ctx, c.MAC, c.Relay)
		return r, known, netboot.Boot{Kind: netboot.BootNone}, err
	}
	r, known := a.reservation(e, c.Relay)
	b, err := a.boot.bootFor(e, c)
	return r, known, b, err
}

func (a *Addresses) dynLookup(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (netboot.Reservation, bool, error) {
	if err := a.syncSegments(); err != nil {
		return netboot.Reservation{}, false, err
	}
	return a.dyn.Lookup(ctx, mac, relay)
}

// Allocate gives an unknown MAC an address from the dynamic range.
func (a *Addresses) Allocate(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (netboot.Reservation, error) {
	if err := a.syncSegments(); err != nil {
		return netboot.Reservation{}, err
	}
	return a.dyn.Allocate(ctx, mac, relay)
}

// RelayKnown reports whether relay reaches a subnet with a dynamic range
// (netboot.SegmentKnower).
func (a *Addresses) RelayKnown(relay netip.Addr) bool {
	if err := a.syncSegments(); err != nil {
		return false
	}
	return a.dyn.RelayKnown(relay)
}

// Owner returns the MAC an address belongs to.
func (a *Addresses) Owner(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool) {
	if mac, _, ok := a.view.Owner(ip); ok {
		return mac, true
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

// BootEvents writes netboot's boot steps and leases to the inventory, in
// batches (netboot.AsyncRecorder calls it). Use it by pointer.
//
// A MAC no machine owns is recorded under "mac/<MAC>", so discovery shows
// it, but each of its boot steps at most once per UnknownEvery: every
// packet of a discovery sweep, a DHCP load test or a flood of random MACs
// would otherwise become a stored event, and an unauthenticated sender
// could grow the database at will. Machines' own steps are all kept: they
// are their boot timeline.
type BootEvents struct {
	Inv *inventory.Store
	// UnknownEvery is how often the same step of the same unknown MAC is
	// recorded again. Zero: every 10 minutes.
	UnknownEvery time.Duration

	mu    sync.Mutex
	seen  map[string]time.Time // "MAC step" → when last recorded
	swept time.Time            // when seen was last swept for expired entries
	// Suppressed counts unknown-MAC events left out.
	Suppressed atomic.Uint64
	// LeasesNotKept counts renewals not stored because their address had
	// lapsed and been claimed by another MAC (inventory.LeaseConflictError).
	LeasesNotKept atomic.Uint64
}

// maxUnknownSeen bounds the memory of unknown MACs' recent steps; beyond
// it, new unknown MACs' events are left out until old ones expire.
const maxUnknownSeen = 65536

// WriteEvents records boot steps on the machines they belong to. An event
// netboot labelled with its machine (the Booter's decision, carried) is
// not looked up again; only the others (TFTP) are.
func (b *BootEvents) WriteEvents(ctx context.Context, evs []netboot.Event) error {
	out := make([]inventory.Event, 0, len(evs))
	for _, e := range evs {
		subject := "netboot"
		switch {
		case e.Machine != "":
			subject = "machine/" + e.Machine
		case e.MAC != "":
			subject = "mac/" + e.MAC
			if mac, err := net.ParseMAC(e.MAC); err == nil {
				if ent, ok := b.Inv.LookupMAC(mac); ok {
					subject = "machine/" + ent.Machine
				}
			}
		}
		if strings.HasPrefix(subject, "mac/") && !b.recordUnknown(e) {
			b.Suppressed.Add(1)
			continue
		}
		out = append(out, inventory.Event{Time: e.Time, Actor: "netboot", Subject: subject, Action: "boot." + string(e.Step), Outcome: "ok", Detail: e.Detail})
	}
	if len(out) == 0 {
		return nil
	}
	return b.Inv.AppendEvents(ctx, out)
}

// recordUnknown says whether an unknown MAC's step is due to be recorded,
// and notes it.
func (b *BootEvents) recordUnknown(e netboot.Event) bool {
	every := b.UnknownEvery
	if every <= 0 {
		every = 10 * time.Minute
	}
	at := e.Time
	if at.IsZero() {
		at = time.Now()
	}
	key := e.MAC + " " + string(e.Step)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = make(map[string]time.Time)
	}
	if last, ok := b.seen[key]; ok && at.Sub(last) < every {
		return false
	}
	if len(b.seen) >= maxUnknownSeen {
		// Full: sweep out expired entries, but at most once a minute, or a
		// flood of new MACs would cost a walk of the whole map per packet.
		if at.Sub(b.swept) < time.Minute {
			return false
		}
		b.swept = at
		for k, last := range b.seen {
			if at.Sub(last) >= every {
				delete(b.seen, k)
			}
		}
		if len(b.seen) >= maxUnknownSeen {
			return false
		}
	}
	b.seen[key] = at
	return true
}

// WriteLeases persists leases. A renewal whose address was claimed by
// another MAC meanwhile is counted (LeasesNotKept), not an error: the
// rest of the batch was stored, and that client is told no at its next
// request.
func (b *BootEvents) WriteLeases(ctx context.Context, ls []netboot.Lease) error {
	out := make([]inventory.Lease, 0, len(ls))
	for _, l := range ls {
		out = append(out, inventory.Lease{MAC: l.MAC, IP: l.IP.String(), Hostname: l.Hostname, Expires: l.Expires})
	}
	err := b.Inv.PutLeases(ctx, out)
	var lc *inventory.LeaseConflictError
	if errors.As(err, &lc) {
		b.LeasesNotKept.Add(uint64(len(lc.Leases)))
		return nil
	}
	return err
}

var (
	_ netboot.BootAddresses = (*Addresses)(nil)
	_ netboot.LeaseLearner  = (*Addresses)(nil)
	_ netboot.Sink          = (*BootEvents)(nil)
)
