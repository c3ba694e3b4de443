package etcdkv

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalhall/metalhall/inventory/kv"
)

// item is one key of the mirror (relative to the prefix), or one write of
// a transaction's overlay (del: the write deletes the key).
type item struct {
	key string
	val []byte
	mod int64
	del bool
}

func itemLess(a, b item) bool { return a.key < b.key }

func newTree() *btree.BTreeG[item] { return btree.NewG(32, itemLess) }

// snapshot is the mirror as of one revision: immutable once published,
// so any number of transactions read it without locks.
type snapshot struct {
	// tree is the etcd state with a pending intent's writes laid over it:
	// readers see a large transaction whole or not at all.
	tree *btree.BTreeG[item]
	// rev: every event up to rev is in tree. Updates guard their range
	// reads with "not modified after rev".
	rev int64
	// intent is the pending intent in etcd, nil when there is none.
	intent *intent
}

// mirror holds the inventory's keys in memory, fed by the watch.
type mirror struct {
	// followMu is held by the watch while it applies a revision and calls
	// the followers, and by Follow while it loads and registers one: a
	// follower misses no revision and sees none twice.
	followMu  sync.Mutex
	followers []func([]kv.Change)

	mu     sync.Mutex
	tree   *btree.BTreeG[item] // etcd's state; only the watch changes it
	intent *intent             // the intent in tree, decoded
	snap   *snapshot
	// dataAck is the revision whose events are applied and delivered to
	// the followers; progress the highest revision etcd reported this
	// watch caught up with (progress notifications).
	dataAck, progress int64
	changed           chan struct{} // closed and replaced on every advance
}

func newMirror() *mirror {
	return &mirror{tree: newTree(), snap: &snapshot{tree: newTree()}, changed: make(chan struct{})}
}

func (m *mirror) current() *snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

func (m *mirror) acked() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.dataAck, m.progress)
}

// publish makes the tree, as of rev, the snapshot readers get. Called
// with mu held.
func (m *mirror) publish(rev int64) {
	s := &snapshot{tree: m.tree.Clone(), rev: rev, intent: m.intent}
	if in := m.intent; in != nil && in.err == nil {
		for _, op := range in.ops {
			if op.del {
				s.tree.Delete(item{key: op.key})
			} else {
				s.tree.ReplaceOrInsert(item{key: op.key, val: op.val, mod: in.rev})
			}
		}
	}
	m.snap = s
}

// ack tells waiters that rev is applied (data) or known (progress).
func (m *mirror) ack(rev int64, data bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if data && rev > m.dataAck {
		m.dataAck = rev
	}
	if rev > m.progress {
		m.progress = rev
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// load reads every key under the prefix at one revision.
func (e *Engine) load(ctx context.Context) (*btree.BTreeG[item], int64, error) {
	tree := newTree()
	end := clientv3.GetPrefixRangeEnd(e.prefix)
	from, rev := e.prefix, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
		resp, err := e.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, fmt.Errorf("etcd engine: load the inventory from %s: %w", e.endpoints, ctx.Err())
			}
			if isUnavailable(err) {
				return nil, 0, fmt.Errorf("etcd engine: load the inventory: the etcd cluster at %s does not answer (no quorum or unreachable): %w (%w)",
					e.endpoints, kv.ErrUnavailable, err)
			}
			return nil, 0, e.etcdErr("load the inventory", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			tree.ReplaceOrInsert(item{key: string(kv.Key[len(e.prefix):]), val: kv.Value, mod: kv.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return tree, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// reset replaces the mirror's state with tree as of rev (Open, and after
// the watch fell behind compaction) and returns what changed in the
// buckets since the last snapshot.
func (e *Engine) reset(tree *btree.BTreeG[item], rev int64) []kv.Change {
	m := e.m
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.snap
	m.tree = tree
	m.intent = nil
	if it, ok := tree.Get(item{key: intentKey}); ok {
		m.intent = decodeIntent(it.val, it.mod)
	}
	m.publish(rev)
	if len(m.followers) == 0 {
		return nil // Open: nobody follows yet
	}
	return diff(old.tree, m.snap.tree)
}

// diff lists the record changes from a to b.
func diff(a, b *btree.BTreeG[item]) []kv.Change {
	var out []kv.Change
	lo, hi := item{key: recordPrefix}, item{key: recordEnd}
	b.AscendRange(lo, hi, func(it item) bool {
		if old, ok := a.Get(it); !ok || string(old.val) != string(it.val) {
			out = appendChange(out, it.key, it.val, false)
		}
		return true
	})
	a.AscendRange(lo, hi, func(it item) bool {
		if !b.Has(it) {
			out = appendChange(out, it.key, nil, true)
		}
		return true
	})
	slices.SortFunc(out, func(x, y kv.Change) int {
		return cmp.Or(bytes.Compare(x.Bucket, y.Bucket), bytes.Compare(x.Key, y.Key))
	})
	return out
}

// appendChange appends the change of record key rel ("b/<bucket>/<key>").
func appendChange(out []kv.Change, rel string, val []byte, del bool) []kv.Change {
	bucket, key, ok := splitRecord(rel)
	if !ok {
		return out
	}
	if del {
		val = nil
	} else if val == nil {
		val = []byte{}
	}
	return append(out, kv.Change{Bucket: []byte(bucket), Key: []byte(key), Value: val})
}

// applyRevision applies the events of one revision and tells the
// followers.
func (e *Engine) applyRevision(rev int64, evs []*clientv3.Event) {
	m := e.m
	m.followMu.Lock()
	defer m.followMu.Unlock()
	var changes []kv.Change
	m.mu.Lock()
	if rev <= m.snap.rev {
		m.mu.Unlock() // already in the mirror (a reload overtook the watch)
		return
	}
	pending := m.intent
	for _, ev := range evs {
		rel := strings.TrimPrefix(string(ev.Kv.Key), e.prefix)
		del := ev.Type == mvccpb.DELETE
		if del {
			m.tree.Delete(item{key: rel})
		} else {
			m.tree.ReplaceOrInsert(item{key: rel, val: ev.Kv.Value, mod: ev.Kv.ModRevision})
		}
		switch {
		case rel == intentKey && del:
			m.intent = nil
		case rel == intentKey:
			// The commit point of a large transaction: its whole write
			// set is this revision's change.
			m.intent = decodeIntent(ev.Kv.Value, ev.Kv.ModRevision)
			if m.intent.err != nil {
				e.log.Error("etcd engine: unreadable intent", "key", e.key(intentKey), "revision", ev.Kv.ModRevision, "err", m.intent.err)
			}
			for _, op := range m.intent.ops {
				changes = appendChange(changes, op.key, op.val, op.del)
			}
		case pending != nil && pending.has(rel):
			// A chunk of the pending intent: delivered with the intent.
		default:
			changes = appendChange(changes, rel, ev.Kv.Value, del)
		}
	}
	m.publish(rev)
	m.mu.Unlock()
	e.deliver(changes)
	m.ack(rev, true)
}

// deliver calls the followers; followMu is held.
func (e *Engine) deliver(changes []kv.Change) {
	if len(changes) == 0 {
		return
	}
	for _, f := range e.m.followers {
		f(changes)
	}
}

// watch keeps the mirror current until ctx ends.
func (e *Engine) watch(ctx context.Context) {
	defer close(e.done)
	const first, most = 50 * time.Millisecond, 2 * time.Second
	backoff := first
	for ctx.Err() == nil {
		if e.watchOnce(ctx) {
			backoff = first
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-e.kick:
			t.Stop()
			backoff = first
			continue
		case <-t.C:
		}
		backoff = min(2*backoff, most)
	}
}

// watchOnce runs one watch from the mirror's revision until it fails,
// and says whether it applied anything.
func (e *Engine) watchOnce(ctx context.Context) (progressed bool) {
	// Requiring a leader makes a member cut off from its cluster end the
	// watch instead of going silent: the next try may reach another.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	from := e.m.current().rev + 1
	wch := e.cli.Watch(wctx, e.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	for wr := range wch {
		if wr.CompactRevision != 0 {
			e.log.Warn("etcd engine: the watch fell behind compaction; reloading the inventory", "from", from, "compacted", wr.CompactRevision)
			e.reload(ctx)
			return true
		}
		if err := wr.Err(); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("etcd engine: watch ended; retrying", "endpoints", e.endpoints, "err", err)
			}
			return progressed
		}
		if wr.IsProgressNotify() {
			e.m.ack(wr.Header.Revision, false)
			continue
		}
		// Events of one revision are applied together: a transaction's
		// writes become visible at once.
		evs := wr.Events
		for len(evs) > 0 {
			rev, n := evs[0].Kv.ModRevision, 1
			for n < len(evs) && evs[n].Kv.ModRevision == rev {
				n++
			}
			e.applyRevision(rev, evs[:n])
			evs = evs[n:]
			progressed = true
		}
	}
	return progressed
}

// reload loads the whole prefix again and tells the followers the
// difference.
func (e *Engine) reload(ctx context.Context) {
	tree, rev, err := e.load(ctx)
	if err != nil {
		e.log.Warn("etcd engine: reload failed; retrying", "err", err)
		return
	}
	e.m.followMu.Lock()
	defer e.m.followMu.Unlock()
	e.deliver(e.reset(tree, rev))
	e.m.ack(rev, true)
}

// waitApplied waits until the mirror has applied the events of rev (a
// commit of this instance) and its followers have seen them.
func (e *Engine) waitApplied(rev int64) error { return e.wait(rev, -1) }

// waitPast waits, after a conflict at revision rev, until the mirror has
// caught up with rev. rev may be no event of this prefix, so etcd is asked
// where the watch stands (progress). Before 3.4.24 etcd could report
// progress ahead of events still on their way, so the mirror must also
// have applied something after seen (the snapshot that lost): the write
// that won is such an event.
func (e *Engine) waitPast(rev, seen int64) error { return e.wait(rev, seen) }

func (e *Engine) wait(rev, seen int64) error {
	ctx, cancel := e.requestCtx()
	defer cancel()
	data := seen < 0
	m := e.m
	for {
		m.mu.Lock()
		ok := m.dataAck >= rev || (!data && m.progress >= rev && m.dataAck > seen)
		ch := m.changed
		m.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case e.kick <- struct{}{}: // a watch waiting to retry: now
		default:
		}
		var tick <-chan time.Time
		if !data {
			// Ask etcd where the watch stands, again until it answers
			// past rev.
			_ = e.cli.RequestProgress(clientv3.WithRequireLeader(ctx))
			tick = time.After(50 * time.Millisecond)
		}
		select {
		case <-ch:
		case <-tick:
		case <-ctx.Done():
			if data {
				return fmt.Errorf("etcd engine: committed at revision %d, but this instance's watch of %s has not applied it within %s", rev, e.endpoints, e.cfg.RequestTimeout)
			}
			return e.unavailable(fmt.Sprintf("catch up with revision %d", rev), ctx.Err())
		}
	}
}
