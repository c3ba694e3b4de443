package inventory

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func hw(i int) net.HardwareAddr { return must(net.ParseMAC(macN(i))) }

// Two DHCP servers on one store claim addresses for 50 MACs from a range
// of 30 at once: each address goes to one MAC, the 20 left over are told
// the range is full.
func TestClaimLeaseNeverGivesOneAddressToTwoMACs(t *testing.T) {
	s := newInv(t).(*Store)
	first, last := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.30")
	var (
		mu     sync.Mutex
		byIP   = map[string]string{}
		full   int
		start  = make(chan struct{})
		wg     sync.WaitGroup
		exp    = time.Now().Add(time.Hour)
		errsMu []error
	)
	for server := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			from := first
			for i := range 50 {
				mac := hw(1000 + (i+server*25)%50) // both servers see every MAC, in another order
				l, err := s.ClaimLease(ctx, LeaseClaim{MAC: mac, First: first, Last: last, From: from, Expires: exp})
				mu.Lock()
				switch {
				case errors.Is(err, ErrNoFreeAddress):
					full++
				case err != nil:
					errsMu = append(errsMu, err)
				default:
					if other, ok := byIP[l.IP]; ok && other != l.MAC {
						t.Errorf("%s given to %s and %s", l.IP, other, l.MAC)
					}
					byIP[l.IP] = l.MAC
					from = must(netip.ParseAddr(l.IP)).Next()
				}
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errsMu) > 0 {
		t.Fatal(errsMu)
	}
	if len(byIP) != 30 {
		t.Errorf("%d addresses given, want all 30", len(byIP))
	}
	if full != 40 { // 20 MACs find it full, on each server
		t.Errorf("%d claims found the range full, want 40", full)
	}
	// What is stored agrees: one lease per address, each its MAC's.
	ls := must(s.Leases(ctx, time.Now()))
	seen := map[string]bool{}
	for _, l := range ls {
		if seen[l.IP] {
			t.Errorf("two stored leases of %s", l.IP)
		}
		seen[l.IP] = true
		if byIP[l.IP] != l.MAC {
			t.Errorf("stored lease %s → %s, given to %s", l.IP, l.MAC, byIP[l.IP])
		}
	}
}

func TestClaimLeaseKeepsAMACsAddressAndTakesBackLapsedOnes(t *testing.T) {
	s := newInv(t).(*Store)
	now := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	one := netip.MustParseAddr("10.9.0.7")
	claim := func(i int, expires time.Time) (Lease, error) {
		return s.ClaimLease(ctx, LeaseClaim{MAC: hw(i), First: one, Last: one, Expires: expires})
	}
	a := must(claim(1, now.Add(time.Hour)))
	if a.IP != "10.9.0.7" || a.MAC != macN(1) {
		t.Fatalf("first claim: %+v", a)
	}
	if again := must(claim(1, now.Add(2*time.Hour))); again.IP != a.IP || !again.Expires.Equal(now.Add(2*time.Hour)) {
		t.Errorf("the same MAC again: %+v, want its address, extended", again)
	}
	if _, err := claim(2, now.Add(time.Hour)); !errors.Is(err, ErrNoFreeAddress) || err.Error() != "10.9.0.7-10.9.0.7 for "+macN(2)+": no free address in the dynamic range" {
		t.Fatalf("a second MAC on a full range: %v", err)
	}
	now = now.Add(3 * time.Hour) // MAC 1's lease lapses
	b := must(claim(2, now.Add(time.Hour)))
	if b.IP != a.IP {
		t.Fatalf("the lapsed address was not taken back: %+v", b)
	}
	// MAC 1's renewal, written behind, arrives late: it is not kept, and
	// MAC 2 keeps the address.
	err := s.PutLeases(ctx, []Lease{{MAC: macN(1), IP: "10.9.0.7", Expires: now.Add(time.Hour)}, {MAC: macN(3), IP: "10.9.0.200", Expires: now.Add(time.Hour)}})
	var lc *LeaseConflictError
	if !errors.As(err, &lc) || len(lc.Leases) != 1 || lc.Leases[0].MAC != macN(1) {
		t.Fatalf("a late renewal of a taken address: %v", err)
	}
	if _, err := claim(1, now.Add(time.Hour)); !errors.Is(err, ErrNoFreeAddress) {
		t.Errorf("MAC 1 after losing its address: %v", err)
	}
	got := map[string]string{}
	for _, l := range must(s.Leases(ctx, now)) {
		got[l.MAC] = l.IP
	}
	if len(got) != 2 || got[macN(2)] != "10.9.0.7" || got[macN(3)] != "10.9.0.200" {
		t.Errorf("stored leases: %v", got)
	}
}

func TestClaimLeaseSkipsReservedAddressesAndRefusesBadClaims(t *testing.T) {
	inv := newInv(t)
	s := inv.(*Store)
	hallFixture(t, inv)
	must(inv.CreateSubnet(ctx, Subnet{Name: "prov", CIDR: "10.1.0.0/24", Gateway: "10.1.0.1"}))
	e := machine("m1", "r1", 1, macN(1))
	e.Machine.IP = "10.1.0.10"
	must(inv.EnrollMachine(ctx, e))
	l := must(s.ClaimLease(ctx, LeaseClaim{MAC: hw(50), First: netip.MustParseAddr("10.1.0.10"), Last: netip.MustParseAddr("10.1.0.11"), Expires: time.Now().Add(time.Hour)}))
	if l.IP != "10.1.0.11" {
		t.Errorf("claim over a reserved address: %+v", l)
	}
	before := must(s.Leases(ctx, time.Now()))
	for _, c := range []LeaseClaim{
		{MAC: net.HardwareAddr{1, 2}, First: netip.MustParseAddr("10.1.0.10"), Last: netip.MustParseAddr("10.1.0.11")},
		{MAC: hw(51), First: netip.MustParseAddr("10.1.0.11"), Last: netip.MustParseAddr("10.1.0.10")},
		{MAC: hw(51)},
	} {
		if _, err := s.ClaimLease(ctx, c); !errors.Is(err, ErrInvalid) {
			t.Errorf("claim %+v: %v, want invalid", c, err)
		}
	}
	if err := s.PutLeases(ctx, []Lease{{MAC: macN(52), IP: "nope", Expires: time.Now().Add(time.Hour)}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("a lease without an address: %v", err)
	}
	if after := must(s.Leases(ctx, time.Now())); len(after) != len(before) {
		t.Errorf("refused claims changed the leases: %v → %v", before, after)
	}
}

// BenchmarkClaimLease is a discovery sweep: DHCP workers claiming
// addresses for new MACs at once, on a store that syncs each commit.
// Concurrent claims share commits (Batch).
func BenchmarkClaimLease(b *testing.B) {
	s, err := Open(b.TempDir()+"/metalhall.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	first, last := netip.MustParseAddr("10.64.0.0"), netip.MustParseAddr("10.64.255.255")
	exp := time.Now().Add(time.Hour)
	var n atomic.Uint64
	b.SetParallelism(8) // 8 × GOMAXPROCS claimers, as busy DHCP workers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			mac := net.HardwareAddr{2, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			from := netip.AddrFrom4([4]byte{10, 64, byte(i >> 8), byte(i)}) // the server's round, as MemoryAddresses passes it
			if _, err := s.ClaimLease(ctx, LeaseClaim{MAC: mac, First: first, Last: last, From: from, Expires: exp}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "claims/s")
	b.ReportMetric(float64(s.WriteTransactions())/float64(b.N), "commits/claim")
}
