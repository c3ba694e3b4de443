package inventory

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bLeases = []byte("leases") // mac → Lease

func init() { extraBuckets = append(extraBuckets, bLeases) }

// Lease is an address the DHCP server handed out, kept so that a restart
// hands the same address to the same MAC.
type Lease struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expires  time.Time `json:"expires"`
}

// PutLeases stores leases in one transaction (the DHCP server writes them
// behind, in batches, never one per packet).
//
// They join the group commit of job updates (Store.batch), so everything
// is checked before anything is written.
func (s *Store) PutLeases(ctx context.Context, ls []Lease) error {
	for _, l := range ls {
		if _, err := ParseMAC(l.MAC); err != nil {
			return err
		}
	}
	return s.batch(func(tx *bolt.Tx) error {
		b := bkt(tx, bLeases)
		for _, l := range ls {
			if err := putJSON(b, []byte(l.MAC), l); err != nil {
				return err
			}
		}
		return nil
	})
}

// Leases lists the stored leases that have not expired at now.
func (s *Store) Leases(ctx context.Context, now time.Time) ([]Lease, error) {
	var out []Lease
	err := s.view(func(tx *bolt.Tx) (err error) {
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
	err := s.batch(func(tx *bolt.Tx) error {
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
	if err == nil && last > 0 {
		s.events.committed(last)
	}
	return err
}
