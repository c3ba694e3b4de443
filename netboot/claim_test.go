package netboot

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// claimLog is a Claimer that hands out addresses from its own table, as
// a store shared with other servers would, and counts the claims.
type claimLog struct {
	next  netip.Addr
	byMAC map[string]netip.Addr
	asked []DynamicRange
	until time.Time
	err   error
	bogus bool
}

func (c *claimLog) Claim(_ context.Context, mac net.HardwareAddr, r DynamicRange) (netip.Addr, time.Time, error) {
	c.asked = append(c.asked, r)
	if c.err != nil {
		return netip.Addr{}, time.Time{}, c.err
	}
	if c.bogus {
		return netip.MustParseAddr("10.99.9.9"), c.until, nil
	}
	if ip, ok := c.byMAC[mac.String()]; ok {
		return ip, c.until, nil
	}
	ip := c.next
	c.next = c.next.Next()
	c.byMAC[mac.String()] = ip
	return ip, c.until, nil
}

func TestClaimedLeasesAreHeldInMemoryUntilTheyLapse(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryAddresses()
	sub := Subnet{Prefix: netip.MustParsePrefix("10.99.0.0/24"), LeaseTime: time.Hour}
	if err := m.AddSegment(sub, netip.Addr{}, netip.MustParseAddr("10.99.0.100"), netip.MustParseAddr("10.99.0.131")); err != nil {
		t.Fatal(err)
	}
	c := &claimLog{next: netip.MustParseAddr("10.99.0.117"), byMAC: map[string]netip.Addr{}, until: now.Add(time.Hour)}
	m.SetClaimer(c, func() time.Time { return now })
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}

	r, err := m.Allocate(ctx, mac, netip.Addr{})
	if err != nil || r.IP != netip.MustParseAddr("10.99.0.117") || !r.Dynamic || r.Subnet.Prefix != sub.Prefix {
		t.Fatalf("claimed: %+v %v", r, err)
	}
	for range 3 {
		if got, ok, _ := m.Lookup(ctx, mac, netip.Addr{}); !ok || got.IP != r.IP {
			t.Fatalf("lookup of a held claim: %+v %v", got, ok)
		}
		if got, _ := m.Allocate(ctx, mac, netip.Addr{}); got.IP != r.IP {
			t.Fatalf("allocate again: %+v", got)
		}
	}
	if len(c.asked) != 1 {
		t.Fatalf("%d claims for one MAC within its lease, want 1", len(c.asked))
	}
	if want := (DynamicRange{Prefix: sub.Prefix, First: netip.MustParseAddr("10.99.0.100"), Last: netip.MustParseAddr("10.99.0.131"), From: netip.MustParseAddr("10.99.0.100")}); c.asked[0] != want {
		t.Errorf("asked %+v, want %+v", c.asked[0], want)
	}
	other := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	if _, err := m.Allocate(ctx, other, netip.Addr{}); err != nil || c.asked[1].From != netip.MustParseAddr("10.99.0.118") {
		t.Errorf("the next claim starts at %v (%v), want after the last address given", c.asked[1].From, err)
	}

	now = now.Add(time.Hour) // lapsed
	if _, ok, _ := m.Lookup(ctx, mac, netip.Addr{}); ok {
		t.Error("a lapsed claim still answers")
	}
	if _, ok := m.Owner(ctx, r.IP); ok {
		t.Error("a lapsed claim still owns its address")
	}
	c.until = now.Add(time.Hour)
	if got, err := m.Allocate(ctx, mac, netip.Addr{}); err != nil || got.IP != r.IP || len(c.asked) != 3 {
		t.Errorf("claimed again after the lapse: %+v %v (%d claims)", got, err, len(c.asked))
	}
	if owner, ok := m.Owner(ctx, r.IP); !ok || owner.String() != mac.String() {
		t.Errorf("owner after the new claim: %v %v", owner, ok)
	}

	c.err = ErrPoolExhausted
	if _, err := m.Allocate(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 3}, netip.Addr{}); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("a full range: %v", err)
	}
	c.err, c.bogus = nil, true
	if _, err := m.Allocate(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 4}, netip.Addr{}); err == nil {
		t.Error("a claim outside the range was taken")
	}
}
