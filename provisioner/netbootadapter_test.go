package provisioner

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

func TestAddressesFromInventory(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	must(l.inv.CreateSubnet(ctx, inventory.Subnet{Name: "disc", CIDR: "10.8.0.0/24", Gateway: "10.8.0.1", RangeFirst: "10.8.0.100", RangeLast: "10.8.0.101"}))
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	m := must(l.inv.Machine(ctx, "m1"))
	mac := must(net.ParseMAC(m.MACs[0]))

	a := must(NewAddresses(ctx, l.inv, l.eng, time.Hour))
	r, ok, err := a.Lookup(ctx, mac, netip.Addr{})
	if err != nil || !ok || r.IP.String() != m.IP || r.Hostname != "m1" || r.Subnet.Gateway.String() != "10.7.0.1" {
		t.Fatalf("reservation: %+v %v %v", r, ok, err)
	}
	if _, ok, _ := a.Lookup(ctx, mac, netip.MustParseAddr("10.8.0.1")); ok {
		t.Fatal("a reservation answered behind a relay of another subnet")
	}
	unknown := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	if _, ok, _ := a.Lookup(ctx, unknown, netip.Addr{}); ok {
		t.Fatal("unknown MAC has an address")
	}
	dyn, err := a.Allocate(ctx, unknown, netip.MustParseAddr("10.8.0.1"))
	if err != nil || dyn.IP.String() != "10.8.0.100" {
		t.Fatalf("dynamic: %+v %v", dyn, err)
	}
	if owner, ok := a.Owner(ctx, netip.MustParseAddr(m.IP)); !ok || owner.String() != m.MACs[0] {
		t.Fatalf("owner of the reservation: %v %v", owner, ok)
	}
	a.Learn(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 8}, netip.MustParseAddr("192.168.99.7"))
	if owner, ok := a.Owner(ctx, netip.MustParseAddr("192.168.99.7")); !ok || owner[5] != 8 {
		t.Fatal("learned address not owned")
	}

	// Leases and boot steps go to the inventory in batches; a restart hands
	// the same dynamic address to the same MAC.
	sink := &BootEvents{Inv: l.inv}
	if err := sink.WriteLeases(ctx, []netboot.Lease{{MAC: unknown.String(), IP: dyn.IP, Expires: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := sink.WriteEvents(ctx, []netboot.Event{
		{MAC: m.MACs[0], Step: netboot.StepDHCPAck, Detail: "10.7.0.10"},
		{MAC: unknown.String(), Step: netboot.StepDHCPOffer},
	}); err != nil {
		t.Fatal(err)
	}
	evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "machine/m1"}))
	if len(evs) == 0 || evs[len(evs)-1].Action != "boot.dhcp-ack" {
		t.Fatalf("machine events: %+v", evs)
	}
	if evs := must(l.inv.Events(ctx, inventory.EventFilter{Subject: "mac/" + unknown.String()})); len(evs) != 1 {
		t.Fatalf("unknown MAC events: %+v", evs)
	}
	again := must(NewAddresses(ctx, l.inv, l.eng, time.Hour))
	if r, ok, _ := again.Lookup(ctx, unknown, netip.MustParseAddr("10.8.0.1")); !ok || r.IP != dyn.IP {
		t.Fatalf("after restart: %+v %v", r, ok)
	}
	if !strings.HasPrefix(l.eng.AgentToken("job-000001"), "ag_job-000001_") {
		t.Fatal("token shape")
	}
}

// A flood of packets from unknown MACs leaves one event per MAC and step
// per window; a machine's own steps are all kept.
func TestUnknownMACBootEventsAreKeptOncePerWindow(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	m := must(l.inv.Machine(ctx, "m1"))
	sink := &BootEvents{Inv: l.inv, UnknownEvery: time.Minute}
	t0 := time.Now()
	var flood []netboot.Event
	for i := range 50 {
		for _, mac := range []string{"02:00:00:00:01:01", "02:00:00:00:01:02"} {
			flood = append(flood,
				netboot.Event{Time: t0.Add(time.Duration(i) * time.Second / 10), MAC: mac, Step: netboot.StepDHCPOffer},
				netboot.Event{Time: t0.Add(time.Duration(i) * time.Second / 10), MAC: mac, Step: netboot.StepDHCPAck})
		}
		flood = append(flood, netboot.Event{Time: t0.Add(time.Duration(i) * time.Second / 10), MAC: m.MACs[0], Step: netboot.StepDHCPAck})
	}
	if err := sink.WriteEvents(ctx, flood); err != nil {
		t.Fatal(err)
	}
	count := func(subject string) int { return len(must(l.inv.Events(ctx, inventory.EventFilter{Subject: subject}))) }
	if n := count("mac/02:00:00:00:01:01"); n != 2 {
		t.Errorf("unknown MAC: %d events from 100 packets, want 2 (one offer, one ack)", n)
	}
	if got, want := sink.Suppressed.Load(), uint64(2*2*49); got != want {
		t.Errorf("suppressed %d, want %d", got, want)
	}
	before := count("machine/m1")
	// The window passes: the same step is recorded again.
	if err := sink.WriteEvents(ctx, []netboot.Event{{Time: t0.Add(2 * time.Minute), MAC: "02:00:00:00:01:01", Step: netboot.StepDHCPAck}}); err != nil {
		t.Fatal(err)
	}
	if n := count("mac/02:00:00:00:01:01"); n != 3 {
		t.Errorf("after the window: %d events, want 3", n)
	}
	if before < 50 {
		t.Errorf("machine m1: %d events, want all 50 of its acks", before)
	}
}

// A subnet changed while the service runs answers with its new range and
// options from the next packet, and a deleted one no longer answers.
func TestSubnetEditsReachTheDynamicRangeAtTheNextPacket(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	must(l.inv.CreateSubnet(ctx, inventory.Subnet{Name: "disc", CIDR: "10.8.0.0/24", Gateway: "10.8.0.1", RangeFirst: "10.8.0.100", RangeLast: "10.8.0.101"}))
	a := must(NewAddresses(ctx, l.inv, l.eng, time.Hour))
	relay := netip.MustParseAddr("10.8.0.1")
	first := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	r := must(a.Allocate(ctx, first, relay))
	if r.IP.String() != "10.8.0.100" {
		t.Fatalf("first allocation: %+v", r)
	}

	gw, lo, hi := "10.8.0.254", "10.8.0.100", "10.8.0.120"
	must(l.inv.EditSubnet(ctx, "disc", inventory.SubnetEdit{Gateway: &gw, RangeFirst: &lo, RangeLast: &hi, DNS: []string{"10.8.0.53"}}))
	if r, ok, err := a.Lookup(ctx, first, relay); err != nil || !ok || r.IP.String() != "10.8.0.100" || r.Subnet.Gateway.String() != gw || len(r.Subnet.DNS) != 1 {
		t.Fatalf("the address handed out before the edit, after it: %+v %v %v", r, ok, err)
	}
	// The old range held two addresses; the new one holds more.
	for i := byte(2); i <= 4; i++ {
		r, err := a.Allocate(ctx, net.HardwareAddr{2, 0, 0, 0, 0, i}, relay)
		if err != nil || r.Subnet.Gateway.String() != gw {
			t.Fatalf("allocation %d after the edit: %+v %v", i, r, err)
		}
	}

	// A lease only in memory is not in the store: the delete goes through.
	if err := l.inv.DeleteSubnet(ctx, "disc"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(ctx, net.HardwareAddr{2, 0, 0, 0, 0, 9}, relay); err == nil {
		t.Fatal("a deleted subnet still hands out addresses")
	}
}
