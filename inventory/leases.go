package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

var (
	bLeases   = []byte("leases")    // mac → Lease
	bLeaseIPs = []byte("lease_ips") // ip → mac: who holds each leased address, checked and written with the lease
)

func init() { extraBuckets = append(extraBuckets, bLeases, bLeaseIPs) }

// Lease is an address the DHCP server handed out, kept so that a restart
// hands the same address to the same MAC.
type Lease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expires  time.Time `json:"expires"`
}

// PutLeases stores leases in one transaction (the DHCP server writes them
// behind, in batches, never one per packet). A lease whose address
// another MAC holds, unexpired, is left out: it was claimed elsewhere
// (ClaimLease) after this one lapsed. The others are stored and a
// *LeaseConflictError names those left out.
func (s *Store) PutLeases(ctx context.Context, ls []Lease) error {
	var lost []Lease
	err := s.update(func(tx kv.Tx) error {
		lost = lost[:0]
		b, ips := bkt(tx, bLeases), bkt(tx, bLeaseIPs)
		now := s.now()
		for _, l := range ls {
			mac, err := ParseMAC(l.MAC)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(l.IP)
			if err != nil {
				return invalid("ip", "lease of %s: %q is not an IP address", l.MAC, l.IP)
			}
			l.MAC, l.IP = mac, ip.String()
			if holder, ok := leaseHolder(b, ips, ip, now); ok && holder != mac {
				lost = append(lost, l)
				continue
			}
			if err := holdLease(b, ips, l); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && len(lost) > 0 {
		return &LeaseConflictError{Leases: lost}
	}
	return err
}

// LeaseConflictError names the leases PutLeases left out because another
// MAC holds their address.
type LeaseConflictError struct{ Leases []Lease }

func (e *LeaseConflictError) Error() string {
	l := e.Leases[0]
	return fmt.Sprintf("%d lease(s) not kept, their addresses are held by other MACs (e.g. %s for %s): the others were stored", len(e.Leases), l.IP, l.MAC)
}

// leaseHolder returns the MAC that holds ip through an unexpired lease.
func leaseHolder(leases, ips kv.Bucket, ip netip.Addr, now time.Time) (string, bool) {
	mac := ips.Get([]byte(ip.String()))
	if mac == nil {
		return "", false
	}
	var l Lease
	if err := getJSON(leases, mac, &l); err != nil || l.IP != ip.String() || !l.Expires.After(now) {
		return "", false // lapsed, or its MAC moved on: free
	}
	return string(mac), true
}

// holdLease stores l and makes its address its MAC's, letting go of the
// address the MAC held before, if any. l is canonical (ParseMAC, Addr).
func holdLease(leases, ips kv.Bucket, l Lease) error {
	var old Lease
	if getJSON(leases, []byte(l.MAC), &old) == nil && old.IP != l.IP {
		if string(ips.Get([]byte(old.IP))) == l.MAC {
			if err := ips.Delete([]byte(old.IP)); err != nil {
				return err
			}
		}
	}
	if err := putJSON(leases, []byte(l.MAC), l); err != nil {
		return err
	}
	return ips.Put([]byte(l.IP), []byte(l.MAC))
}

// Shared reports whether other metalhall instances allocate from this
// store too, so that dynamic addresses must be claimed in it
// (ClaimLease) rather than only in memory. A bbolt file is held by one
// process (its lock): not shared. An engine other instances write to
// (kv.Follower, etcd) is.
func (s *Store) Shared() bool { return s.follows }

// ErrNoFreeAddress is returned by ClaimLease when every address of the
// range is reserved for a machine or leased, unexpired, to another MAC.
var ErrNoFreeAddress = errors.New("no free address in the dynamic range")

// LeaseClaim asks ClaimLease for a dynamic address.
type LeaseClaim struct {
	MAC         net.HardwareAddr
	First, Last netip.Addr // the dynamic range, inclusive
	// From is where the search starts (the address after the last one
	// given out, so that a range is used round); invalid: First.
	From netip.Addr
	// Expires is the lease's end.
	Expires time.Time
	// Now is when the claim is made, on the claimer's clock: leases that
	// ended before are free. Zero: the store's clock.
	Now time.Time
}

// maxRange bounds the search of one claim, as the in-memory allocator's.
const maxRange = 1 << 16

// ClaimLease gives c.MAC an address of the range and records its lease,
// in one write transaction: the address is checked free and taken in the
// same commit, so servers sharing the store (several instances on one
// etcd cluster) never give one address to two MACs. The MAC keeps the
// address it holds in the range, its lease extended; otherwise it gets
// the first address from c.From round the range that no machine reserves
// and no other MAC holds unexpired — a lapsed lease's address is taken
// back. A full range is ErrNoFreeAddress.
//
// It is one transaction per new MAC (discovery), never per packet: the
// DHCP server keeps what it was given in memory for the lease's life.
func (s *Store) ClaimLease(ctx context.Context, c LeaseClaim) (Lease, error) {
	if len(c.MAC) != 6 {
		return Lease{}, invalid("mac", "%q is not an Ethernet MAC address", c.MAC)
	}
	if !c.First.Is4() || !c.Last.Is4() || c.Last.Less(c.First) {
		return Lease{}, invalid("range", "%v-%v is not a range of IPv4 addresses", c.First, c.Last)
	}
	if err := ctx.Err(); err != nil {
		return Lease{}, err
	}
	now := c.Now
	if now.IsZero() {
		now = s.now()
	}
	from := c.From
	if !from.IsValid() || from.Less(c.First) || c.Last.Less(from) {
		from = c.First
	}
	// A look first, in a read transaction: a full range (a flood of new
	// MACs) costs no write, and the write below starts where the look
	// found room, so its own search is short.
	err := s.view(func(tx kv.Tx) error {
		l, err := pickLease(tx, c, from, now)
		if err == nil {
			from = netip.MustParseAddr(l.IP)
		}
		return err
	})
	if err != nil {
		return Lease{}, err
	}
	q := &leaseClaim{c: c, from: from, now: now, done: make(chan struct{})}
	s.claimQ.mu.Lock()
	s.claimQ.pending = append(s.claimQ.pending, q)
	s.claimQ.mu.Unlock()

	s.claimQ.commit.Lock()
	select {
	case <-q.done: // an earlier committer took it
	default:
		s.claimQ.mu.Lock()
		batch := s.claimQ.pending
		s.claimQ.pending = nil
		s.claimQ.mu.Unlock()
		s.commitClaims(batch)
	}
	s.claimQ.commit.Unlock()
	<-q.done
	return q.got, q.err
}

// claimQueue is the group commit of ClaimLease, as jobQueue is of job
// updates: while one transaction commits, the claims that arrive queue,
// and the next transaction takes them all. A lone claim waits for
// nothing (bbolt's Batch would wait 10 ms for company: a DHCP worker
// blocked that long per new MAC caps discovery at a few hundred MACs a
// second).
type claimQueue struct {
	commit  sync.Mutex // one committer at a time
	mu      sync.Mutex // guards pending
	pending []*leaseClaim
}

type leaseClaim struct {
	c    LeaseClaim
	from netip.Addr
	now  time.Time
	got  Lease
	err  error
	done chan struct{}
}

// commitClaims gives each claim of batch its lease in one transaction,
// in the order they arrived; each sees the ones before it. A claim that
// finds no room fails alone.
func (s *Store) commitClaims(batch []*leaseClaim) {
	err := s.update(func(tx kv.Tx) error {
		leases, ips := bkt(tx, bLeases), bkt(tx, bLeaseIPs)
		for _, q := range batch {
			q.got, q.err = Lease{}, nil // the function may run again
			l, err := pickLease(tx, q.c, q.from, q.now)
			if err != nil {
				q.err = err
				continue
			}
			if err := holdLease(leases, ips, l); err != nil {
				return err
			}
			q.got = l
		}
		return nil
	})
	for _, q := range batch {
		if err != nil {
			q.got, q.err = Lease{}, err
		}
		close(q.done)
	}
}

// pickLease chooses the lease ClaimLease gives: c.MAC's own address if it
// still holds it in the range, else the first free one from from round
// the range. It writes nothing.
func pickLease(tx kv.Tx, c LeaseClaim, from netip.Addr, now time.Time) (Lease, error) {
	mac := c.MAC.String()
	leases, ips, reserved := bkt(tx, bLeases), bkt(tx, bLeaseIPs), bkt(tx, bIdxIP)
	free := func(ip netip.Addr) bool {
		if reserved.Get([]byte(ip.String())) != nil {
			return false
		}
		holder, ok := leaseHolder(leases, ips, ip, now)
		return !ok || holder == mac
	}
	var old Lease
	if v := leases.Get([]byte(mac)); v != nil {
		if err := json.Unmarshal(v, &old); err != nil {
			return Lease{}, fmt.Errorf("lease of %s: %w", mac, err)
		}
	}
	l := Lease{MAC: mac, Hostname: old.Hostname, Expires: c.Expires}
	if ip, err := netip.ParseAddr(old.IP); err == nil && !ip.Less(c.First) && !c.Last.Less(ip) && free(ip) {
		l.IP = ip.String()
		if old.Expires.After(l.Expires) {
			l.Expires = old.Expires
		}
		return l, nil
	}
	ip := from
	for range maxRange {
		if free(ip) {
			l.IP = ip.String()
			return l, nil
		}
		if ip = ip.Next(); c.Last.Less(ip) {
			ip = c.First
		}
		if ip == from {
			break
		}
	}
	return Lease{}, fmt.Errorf("%s-%s for %s: %w", c.First, c.Last, mac, ErrNoFreeAddress)
}

// Leases lists the stored leases that have not expired at now.
func (s *Store) Leases(ctx context.Context, now time.Time) ([]Lease, error) {
	var out []Lease
	err := s.view(func(tx kv.Tx) (err error) {
		out, err = list(tx, bLeases, func(l *Lease) bool { return l.Expires.After(now) })
		return
	})
	return out, err
}

// AppendEvents adds many events in one transaction, shared with the group
// commit of job updates (Store.batch): every event is checked before any
// is written.
func (s *Store) AppendEvents(ctx context.Context, evs []Event) error {
	now := s.now().UTC()
	for _, e := range evs {
		if e.Subject == "" || e.Action == "" {
			return invalid("event", "subject and action are required")
		}
		if err := CheckSubject(e.Subject); err != nil {
			return err
		}
	}
	var last uint64
	err := s.batch(func(tx kv.Tx) error {
		last = 0 // a retry starts over
		b := bkt(tx, bEvents)
		for _, e := range evs {
			if e.Time.IsZero() {
				e.Time = now
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			e.Seq = seq
			stampTenancy(tx, &e)
			if err := putJSON(b, u64(seq), e); err != nil {
				return err
			}
			if err := bkt(tx, bIdxSubject).Put(subjectKey(e.Subject, seq), []byte{0}); err != nil {
				return err
			}
			last = seq
		}
		return nil
	})
	if err == nil {
		s.eventsAppended(last)
	}
	return err
}
