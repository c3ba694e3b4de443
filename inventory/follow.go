package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"github.com/metalhall/metalhall/inventory/kv"
)

// applyCommit keeps the in-memory views (boot view, event feed, hold)
// from one commit of a kv.Follower engine: this store's own writes and
// other instances' alike, one call per commit, in commit order (the
// engine never runs two at once, nor one beside load).
func (s *Store) applyCommit(cs []kv.Change) {
	vc, hold, holdChanged := s.viewFromCommit(cs)
	if holdChanged {
		s.hold.Store(hold)
	}
	s.boot.apply(&vc)
	if vc.lastEvent > 0 {
		s.events.committed(vc.lastEvent)
	}
}

// viewFromCommit translates one commit's changes into what write would
// have collected for the views: every machine written (its boot fields,
// and a wake-up for its job's waiters) or deleted, every job written,
// every subnet written or deleted, the newest event appended, and the
// hold when it changed. Changes to other buckets do not show in them.
//
// A record that does not decode is left out: the views keep what they
// showed, and a reader of that record gets the error from its
// transaction.
//
// Machines and jobs are decoded through the store's memos: this
// instance's own writes are remembered already, and another instance's
// are then remembered for the reads that follow them.
func (s *Store) viewFromCommit(cs []kv.Change) (vc viewChanges, hold *Hold, holdChanged bool) {
	for _, c := range cs {
		switch {
		case bytes.Equal(c.Bucket, bMachines):
			name := string(c.Key)
			if c.Value == nil {
				vc.deleted = append(vc.deleted, name)
				continue
			}
			m, err := s.machines.decode(name, c.Value)
			if err != nil {
				continue
			}
			vc.machines = append(vc.machines, m)
			vc.touched = append(vc.touched, name)
		case bytes.Equal(c.Bucket, bJobs):
			// Jobs are never deleted; a finished one leaves the queue
			// from its own record, and idx_active changes only with it.
			if c.Value == nil {
				continue
			}
			j, err := s.jobs.decode(string(c.Key), c.Value)
			if err != nil {
				continue
			}
			vc.jobs = append(vc.jobs, j)
		case bytes.Equal(c.Bucket, bSubnets):
			if c.Value == nil {
				vc.subnetsDeleted = append(vc.subnetsDeleted, string(c.Key))
				continue
			}
			var sn Subnet
			if json.Unmarshal(c.Value, &sn) != nil {
				continue
			}
			vc.subnets = append(vc.subnets, sn)
		case bytes.Equal(c.Bucket, bEvents):
			if c.Value != nil && len(c.Key) == 8 {
				vc.lastEvent = max(vc.lastEvent, binary.BigEndian.Uint64(c.Key))
			}
		case bytes.Equal(c.Bucket, bMeta) && bytes.Equal(c.Key, keyHold):
			holdChanged, hold = true, nil
			if c.Value != nil {
				h := new(Hold)
				if json.Unmarshal(c.Value, h) != nil {
					holdChanged = false
					continue
				}
				hold = h
			}
		}
	}
	return vc, hold, holdChanged
}
