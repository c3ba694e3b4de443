package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/netboot"
)

// Two instances' Addresses on one shared inventory store (claims on, as
// Store.Shared turns them on for etcd), each seeing every
// DISCOVER of 50 new MACs (as two DHCP servers on one segment do), race
// for a dynamic range of 32: no address goes to two MACs, both answer a
// MAC with the same address, and the 18 left over get the range's
// exhaustion error. A restart keeps each MAC's address; once leases
// lapse, their addresses go to new MACs.
func TestDynamicLeasesAreClaimedInTheStoreSoTwoInstancesNeverShareAnAddress(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	must(l.inv.CreateSubnet(ctx, inventory.Subnet{Name: "disc", CIDR: "10.8.0.0/24", Gateway: "10.8.0.1", RangeFirst: "10.8.0.32", RangeLast: "10.8.0.63"}))
	relay := netip.MustParseAddr("10.8.0.1")
	servers := []*Addresses{must(NewAddresses(ctx, l.inv, l.eng, time.Hour)), must(NewAddresses(ctx, l.inv, l.eng, time.Hour))}
	for _, a := range servers {
		a.claimInStore()
	}
	macs := make([]net.HardwareAddr, 50)
	for i := range macs {
		macs[i] = net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}
	}
	type answer struct {
		ip  netip.Addr
		err error
	}
	got := make([][]answer, len(servers))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for s, a := range servers {
		got[s] = make([]answer, len(macs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for j := range macs {
				i := (j + s*25) % len(macs) // each sees them all, in its own order
				r, err := a.Allocate(ctx, macs[i], relay)
				got[s][i] = answer{r.IP, err}
			}
		}()
	}
	close(start)
	wg.Wait()

	holder := map[netip.Addr]int{}
	given := 0
	for i := range macs {
		a, b := got[0][i], got[1][i]
		if (a.err == nil) != (b.err == nil) || a.ip != b.ip {
			t.Errorf("MAC %d: one instance answers %v (%v), the other %v (%v)", i, a.ip, a.err, b.ip, b.err)
			continue
		}
		if a.err != nil {
			if !errors.Is(a.err, netboot.ErrPoolExhausted) || a.err.Error() != fmt.Sprintf("allocate for %s in 10.8.0.0/24: dynamic range exhausted", macs[i]) {
				t.Errorf("MAC %d: %v, want the exhaustion error", i, a.err)
			}
			continue
		}
		if other, ok := holder[a.ip]; ok {
			t.Errorf("%v given to MAC %d and MAC %d", a.ip, other, i)
		}
		holder[a.ip] = i
		given++
	}
	if given != 32 {
		t.Errorf("%d MACs got an address from a range of 32", given)
	}
	// Claims are not per packet: asking again costs no transaction.
	before := l.inv.WriteTransactions()
	for i := range macs {
		for _, a := range servers {
			if r, ok, _ := a.Lookup(ctx, macs[i], relay); ok != (got[0][i].err == nil) || r.IP != got[0][i].ip {
				t.Errorf("MAC %d: lookup %v %v, allocated %v", i, r.IP, ok, got[0][i].ip)
			}
		}
	}
	if n := l.inv.WriteTransactions() - before; n != 0 {
		t.Errorf("lookups of held leases wrote %d transactions", n)
	}

	// A restart answers from the stored leases, from memory.
	again := must(NewAddresses(ctx, l.inv, l.eng, time.Hour))
	again.claimInStore()
	for ip, i := range holder {
		if r, ok, err := again.Lookup(ctx, macs[i], relay); err != nil || !ok || r.IP != ip || !r.Dynamic {
			t.Errorf("after a restart, MAC %d: %+v %v %v, want %v", i, r, ok, err, ip)
		}
	}
	if n := l.inv.WriteTransactions() - before; n != 0 {
		t.Errorf("a restart wrote %d transactions", n)
	}

	// Two hours on, every lease has lapsed: memory no longer answers for
	// them, a new MAC takes a lapsed address, an old MAC whose address
	// was not taken keeps its own.
	later := time.Now().Add(2 * time.Hour)
	again.now = func() time.Time { return later }
	var oldMAC int
	var oldIP netip.Addr
	for ip, i := range holder {
		oldMAC, oldIP = i, ip
		break
	}
	if _, ok, _ := again.Lookup(ctx, macs[oldMAC], relay); ok {
		t.Errorf("a lapsed lease still answered from memory")
	}
	if _, ok := again.Owner(ctx, oldIP); ok {
		t.Errorf("a lapsed lease still owns its address")
	}
	newcomer := net.HardwareAddr{2, 0, 0, 0, 2, 1}
	r, err := again.Allocate(ctx, newcomer, relay)
	if err != nil {
		t.Fatalf("a new MAC on a range of lapsed leases: %v", err)
	}
	if i, ok := holder[r.IP]; !ok {
		t.Errorf("the new MAC got %v, not a lapsed address", r.IP)
	} else if i == oldMAC {
		oldMAC = -1 // that one was taken: the old MAC must move
	}
	if oldMAC >= 0 {
		if r2, err := again.Allocate(ctx, macs[oldMAC], relay); err != nil || r2.IP != oldIP {
			t.Errorf("an old MAC coming back: %v %v, want its address %v", r2.IP, err, oldIP)
		}
	}
}
