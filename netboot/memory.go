package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// MemoryAddresses is an in-memory Addresses: fixed reservations plus one
// dynamic range per segment. On its own (tests, the lab) it allocates
// dynamic addresses itself, for good; with a Claimer (SetClaimer) it
// claims them in a store other servers share and keeps each in memory
// only for as long as the claim lasts.
type MemoryAddresses struct {
	mu       sync.Mutex
	segments []*memSegment
	byMAC    map[string]Reservation // reservations
	dyn      map[string]Reservation // dynamic leases
	owner    map[netip.Addr]string

	claimer Claimer
	now     func() time.Time
	until   map[string]time.Time // dynamic leases held through claimer: when each lapses
}

// Claimer claims dynamic addresses in a store that other DHCP servers
// share: it checks the address free and takes it in one transaction, so
// no two servers hand one address to two MACs. It is called once per
// MAC per lease, never per packet.
type Claimer interface {
	// Claim gives mac an address of r (the one it holds there, if any)
	// and says until when it holds it. A full range is an error wrapping
	// ErrPoolExhausted.
	Claim(ctx context.Context, mac net.HardwareAddr, r DynamicRange) (ip netip.Addr, until time.Time, err error)
}

// DynamicRange is a segment's dynamic range, as a Claimer is asked it.
type DynamicRange struct {
	Prefix      netip.Prefix
	First, Last netip.Addr // inclusive
	// From is where to start looking: after the last address given out
	// on the segment, so that the range is used round.
	From netip.Addr
}

type memSegment struct {
	subnet     Subnet
	relay      netip.Addr // invalid: local segment
	start, end netip.Addr // dynamic range, inclusive; invalid: none
	next       netip.Addr
}

// NewMemoryAddresses returns an empty MemoryAddresses.
func NewMemoryAddresses() *MemoryAddresses {
	return &MemoryAddresses{
		byMAC: make(map[string]Reservation),
		dyn:   make(map[string]Reservation),
		owner: make(map[netip.Addr]string),
		until: make(map[string]time.Time),
		now:   time.Now,
	}
}

// SetClaimer makes Allocate claim dynamic addresses through c, read
// against the clock now (nil: time.Now). Set it before the first packet.
func (m *MemoryAddresses) SetClaimer(c Claimer, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claimer, m.now = c, now
}

// Hold records that mac holds ip on the segment whose prefix holds it,
// as a dynamic lease until until: a lease claimed before a restart.
func (m *MemoryAddresses) Hold(mac net.HardwareAddr, ip netip.Addr, hostname string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.segments {
		if s.subnet.Prefix.Contains(ip) {
			m.setDynamic(mac.String(), Reservation{IP: ip, Subnet: s.subnet, Hostname: hostname, Dynamic: true}, until)
			return nil
		}
	}
	return fmt.Errorf("hold %s for %s: no segment holds that address", ip, mac)
}

// setDynamic records a dynamic lease; the MAC's previous address, and
// the MAC that held this one before, let go of. Called with m.mu held.
func (m *MemoryAddresses) setDynamic(mac string, r Reservation, until time.Time) {
	if old, ok := m.dyn[mac]; ok && old.IP != r.IP && m.owner[old.IP] == mac {
		delete(m.owner, old.IP)
	}
	if prev, ok := m.owner[r.IP]; ok && prev != mac {
		if pr, ok := m.dyn[prev]; ok && pr.IP == r.IP {
			delete(m.dyn, prev)
			delete(m.until, prev)
		}
	}
	m.dyn[mac] = r
	m.owner[r.IP] = mac
	if !until.IsZero() {
		m.until[mac] = until
	}
}

// lapsed reports whether mac's dynamic lease was held through a claim
// that has run out: the store may have given its address to another
// MAC since, so memory no longer answers for it. Without a claimer this
// memory is the only allocator, and what it gave stays given. Called
// with m.mu held.
func (m *MemoryAddresses) lapsed(mac string) bool {
	if m.claimer == nil {
		return false
	}
	u, ok := m.until[mac]
	return ok && !m.now().Before(u)
}

// AddSegment adds a segment. relay is the giaddr relays use for it
// (invalid for the server's own segment); start..end is its dynamic range
// (both invalid for none).
func (m *MemoryAddresses) AddSegment(s Subnet, relay, start, end netip.Addr) error {
	if err := checkSegment(s, start, end); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.segments = append(m.segments, &memSegment{subnet: s, relay: relay, start: start, end: end, next: start})
	return nil
}

func checkSegment(s Subnet, start, end netip.Addr) error {
	if !s.Prefix.IsValid() {
		return errors.New("segment: prefix required")
	}
	if start.IsValid() && (!s.Prefix.Contains(start) || !s.Prefix.Contains(end) || end.Less(start)) {
		return fmt.Errorf("segment %s: dynamic range %s-%s is not inside it", s.Prefix, start, end)
	}
	return nil
}

// SetSegment adds the segment with s's prefix and relay, or changes it in
// place: its subnet options and dynamic range. Addresses already handed
// out stay with their MACs and answer the new options from the next
// packet; the next allocation starts at the range's start.
func (m *MemoryAddresses) SetSegment(s Subnet, relay, start, end netip.Addr) error {
	if err := checkSegment(s, start, end); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, seg := range m.segments {
		if seg.subnet.Prefix == s.Prefix && seg.relay == relay {
			seg.subnet, seg.start, seg.end, seg.next = s, start, end, start
			m.resubnet(s)
			return nil
		}
	}
	m.segments = append(m.segments, &memSegment{subnet: s, relay: relay, start: start, end: end, next: start})
	return nil
}

// RemoveSegment removes the segments with prefix; the addresses handed
// out on them are forgotten.
func (m *MemoryAddresses) RemoveSegment(prefix netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.segments = slices.DeleteFunc(m.segments, func(seg *memSegment) bool { return seg.subnet.Prefix == prefix })
	for mac, r := range m.dyn {
		if r.Subnet.Prefix == prefix {
			delete(m.dyn, mac)
			delete(m.until, mac)
			if m.owner[r.IP] == mac {
				delete(m.owner, r.IP)
			}
		}
	}
}

// resubnet gives the reservations and leases on s's prefix s's options.
func (m *MemoryAddresses) resubnet(s Subnet) {
	for _, set := range []map[string]Reservation{m.byMAC, m.dyn} {
		for mac, r := range set {
			if r.Subnet.Prefix == s.Prefix {
				r.Subnet = s
				set[mac] = r
			}
		}
	}
}

// Reserve reserves ip for mac; the segment is the one whose prefix holds ip.
func (m *MemoryAddresses) Reserve(mac net.HardwareAddr, ip netip.Addr, hostname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.segments {
		if s.subnet.Prefix.Contains(ip) {
			m.byMAC[mac.String()] = Reservation{IP: ip, Subnet: s.subnet, Hostname: hostname}
			m.owner[ip] = mac.String()
			return nil
		}
	}
	return fmt.Errorf("reserve %s for %s: no segment holds that address", ip, mac)
}

func (m *MemoryAddresses) segment(relay netip.Addr) *memSegment {
	for _, s := range m.segments {
		if relay.IsValid() {
			if s.relay == relay || (!s.relay.IsValid() && s.subnet.Prefix.Contains(relay)) {
				return s
			}
			continue
		}
		if !s.relay.IsValid() {
			return s
		}
	}
	return nil
}

// RelayKnown implements SegmentKnower: relay reaches a segment with a
// dynamic range, the one Allocate would choose.
func (m *MemoryAddresses) RelayKnown(relay netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.segment(relay) != nil
}

// Lookup implements Addresses.
func (m *MemoryAddresses) Lookup(_ context.Context, mac net.HardwareAddr, relay netip.Addr) (Reservation, bool, error) {
	key := mac.String() // once per packet, and outside the lock every DHCP worker takes
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byMAC[key]
	if !ok {
		r, ok = m.dyn[key]
		ok = ok && !m.lapsed(key)
	}
	if !ok {
		return Reservation{}, false, nil
	}
	// A reservation is only good on its own segment: a machine moved
	// behind another relay is unknown there.
	if s := m.segment(relay); s == nil || s.subnet.Prefix != r.Subnet.Prefix {
		return Reservation{}, false, nil
	}
	return r, true, nil
}

// ErrPoolExhausted is returned by Allocate when the dynamic range is full.
var ErrPoolExhausted = errors.New("dynamic range exhausted")

// Allocate implements Addresses.
func (m *MemoryAddresses) Allocate(ctx context.Context, mac net.HardwareAddr, relay netip.Addr) (Reservation, error) {
	key := mac.String()
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.dyn[key]; ok && !m.lapsed(key) {
		return r, nil
	}
	s := m.segment(relay)
	if s == nil || !s.start.IsValid() {
		return Reservation{}, fmt.Errorf("allocate for %s via %v: no dynamic range on that segment", mac, relay)
	}
	if m.claimer != nil {
		return m.claim(ctx, mac, s)
	}
	// One lap around the range from the last allocation.
	ip := s.next
	for range 1 << 16 {
		if _, taken := m.owner[ip]; !taken {
			r := Reservation{IP: ip, Subnet: s.subnet, Dynamic: true}
			m.dyn[key] = r
			m.owner[ip] = key
			s.next = ip.Next()
			if s.end.Less(s.next) {
				s.next = s.start
			}
			return r, nil
		}
		ip = ip.Next()
		if s.end.Less(ip) {
			ip = s.start
		}
		if ip == s.next {
			break
		}
	}
	return Reservation{}, fmt.Errorf("allocate for %s in %s: %w", mac, s.subnet.Prefix, ErrPoolExhausted)
}

// claim asks the claimer for an address of s and keeps it until the
// claim lapses. The lock is let go during the claim (a store
// transaction): other MACs' packets are answered meanwhile.
func (m *MemoryAddresses) claim(ctx context.Context, mac net.HardwareAddr, s *memSegment) (Reservation, error) {
	c, subnet := m.claimer, s.subnet
	rng := DynamicRange{Prefix: subnet.Prefix, First: s.start, Last: s.end, From: s.next}
	m.mu.Unlock()
	ip, until, err := c.Claim(ctx, mac, rng)
	m.mu.Lock()
	if err != nil {
		return Reservation{}, fmt.Errorf("allocate for %s in %s: %w", mac, subnet.Prefix, err)
	}
	if !rng.Prefix.Contains(ip) || ip.Less(rng.First) || rng.Last.Less(ip) {
		return Reservation{}, fmt.Errorf("allocate for %s in %s: the claim gave %s, outside %s-%s", mac, subnet.Prefix, ip, rng.First, rng.Last)
	}
	r := Reservation{IP: ip, Subnet: subnet, Dynamic: true}
	m.setDynamic(mac.String(), r, until)
	// The segment may have changed or gone during the claim: move its
	// round on only if it is the one asked.
	if slices.Contains(m.segments, s) && s.start == rng.First && s.end == rng.Last {
		if s.next = ip.Next(); s.end.Less(s.next) {
			s.next = s.start
		}
	}
	return r, nil
}

// Learn implements LeaseLearner: ip is held by mac, unless ip is
// outside every segment (which also bounds what can be learnt) or
// reserved for another MAC.
func (m *MemoryAddresses) Learn(_ context.Context, mac net.HardwareAddr, ip netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	inside := false
	for _, s := range m.segments {
		inside = inside || s.subnet.Prefix.Contains(ip)
	}
	if !inside {
		return
	}
	if cur, ok := m.owner[ip]; ok && cur != mac.String() {
		for _, r := range m.byMAC {
			if r.IP == ip {
				return
			}
		}
	}
	m.owner[ip] = mac.String()
}

// Owner implements Addresses.
func (m *MemoryAddresses) Owner(_ context.Context, ip netip.Addr) (net.HardwareAddr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.owner[ip]
	if !ok {
		return nil, false
	}
	if r, dyn := m.dyn[s]; dyn && r.IP == ip && m.lapsed(s) {
		return nil, false // the store may have given it to another MAC since
	}
	mac, err := net.ParseMAC(s)
	return mac, err == nil
}

// MemoryBooter is an in-memory Booter: a Boot per MAC plus an optional
// discovery Boot for every other MAC.
type MemoryBooter struct {
	mu        sync.Mutex
	boots     map[string]Boot
	discovery *Boot
}

// NewMemoryBooter returns an empty MemoryBooter.
func NewMemoryBooter() *MemoryBooter { return &MemoryBooter{boots: make(map[string]Boot)} }

// Set sets what mac boots.
func (b *MemoryBooter) Set(mac net.HardwareAddr, boot Boot) {
	b.mu.Lock()
	b.boots[mac.String()] = boot
	b.mu.Unlock()
}

// SetDiscovery sets what every MAC without its own Boot gets (nil: none).
func (b *MemoryBooter) SetDiscovery(boot *Boot) {
	b.mu.Lock()
	b.discovery = boot
	b.mu.Unlock()
}

// Boot implements Booter.
func (b *MemoryBooter) Boot(_ context.Context, c Client) (Boot, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bt, ok := b.boots[c.MAC.String()]; ok {
		return bt, nil
	}
	if b.discovery != nil {
		return *b.discovery, nil
	}
	return Boot{}, nil
}
