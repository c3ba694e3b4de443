package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
)

// MemoryAddresses is an in-memory Addresses, for tests and the lab: fixed
// reservations plus one dynamic range per segment.
type MemoryAddresses struct {
	mu       sync.Mutex
	segments []*memSegment
	byMAC    map[string]Reservation // reservations
	dyn      map[string]Reservation // dynamic leases
	owner    map[netip.Addr]string
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
	}
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
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.byMAC[mac.String()]
	if !ok {
		r, ok = m.dyn[mac.String()]
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
func (m *MemoryAddresses) Allocate(_ context.Context, mac net.HardwareAddr, relay netip.Addr) (Reservation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.dyn[mac.String()]; ok {
		return r, nil
	}
	s := m.segment(relay)
	if s == nil || !s.start.IsValid() {
		return Reservation{}, fmt.Errorf("allocate for %s via %v: no dynamic range on that segment", mac, relay)
	}
	// One lap around the range from the last allocation.
	ip := s.next
	for range 1 << 16 {
		if _, taken := m.owner[ip]; !taken {
			r := Reservation{IP: ip, Subnet: s.subnet, Dynamic: true}
			m.dyn[mac.String()] = r
			m.owner[ip] = mac.String()
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
