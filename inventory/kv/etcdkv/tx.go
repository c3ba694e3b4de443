package etcdkv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/btree"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/metalhall/metalhall/inventory/kv"
)

// The key layout under the prefix (see the package comment).
const (
	recordPrefix = "b/"
	recordEnd    = "b0" // '/'+1: the end of every "b/..." key
	seqPrefix    = "s/"
	markerPrefix = "k/"
	markerEnd    = "k0"
	delPrefix    = "d/"
	intentKey    = "i"
	// commitPrefix + an engine's nonce: the ID of the engine's last
	// commit, written by each of its transactions, so that a commit whose
	// answer was lost can be found out (resolveCommit).
	commitPrefix = "x/"

	// bbolt's limits, kept so that a backup (a bbolt file) always loads.
	maxKeySize = 32768
)

func bucketLo(name string) string { return recordPrefix + name + "/" }
func bucketHi(name string) string { return recordPrefix + name + "0" }

// splitRecord splits "b/<bucket>/<key>".
func splitRecord(rel string) (bucket, key string, ok bool) {
	rest, ok := strings.CutPrefix(rel, recordPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// tx is a transaction over a snapshot; a writable one keeps its writes in
// an overlay and records what it read, for the commit's compares.
type tx struct {
	e        *Engine
	snap     *snapshot
	writable bool

	writes  *btree.BTreeG[item] // the overlay: the last write of each key
	reads   map[string]int64    // point reads: mod revision seen, 0 absent
	cursors []*cursor           // range reads: each cursor's span
	deleted map[string]bool     // buckets this tx deletes from
}

func newTx(e *Engine, s *snapshot, writable bool) *tx {
	t := &tx{e: e, snap: s, writable: writable}
	if writable {
		t.writes = newTree()
		t.reads = map[string]int64{}
		t.deleted = map[string]bool{}
	}
	return t
}

func (t *tx) Writable() bool { return t.writable }

// get reads rel through the overlay, recording the read.
func (t *tx) get(rel string) ([]byte, bool) {
	if t.writable {
		if w, ok := t.writes.Get(item{key: rel}); ok {
			return w.val, !w.del
		}
	}
	it, ok := t.snap.tree.Get(item{key: rel})
	if t.writable {
		if _, seen := t.reads[rel]; !seen {
			t.reads[rel] = it.mod // 0 when absent: "still absent"
		}
	}
	if !ok {
		return nil, false
	}
	if it.val == nil {
		return []byte{}, true
	}
	return it.val, true
}

func (t *tx) put(rel string, val []byte) {
	t.writes.ReplaceOrInsert(item{key: rel, val: append([]byte{}, val...)})
}

// del deletes rel. Deleting a key the snapshot does not have only drops
// this transaction's own put of it.
func (t *tx) del(rel, bucket string) {
	if !t.snap.tree.Has(item{key: rel}) {
		t.writes.Delete(item{key: rel})
		return
	}
	t.writes.ReplaceOrInsert(item{key: rel, del: true})
	t.deleted[bucket] = true
}

// after returns the first visible item in [from, hi), from excluded
// unless incl. The snapshot is walked first: its first key the overlay
// does not delete is the answer unless the overlay has a new key before
// it. Each walk skips only deleted keys, so a cursor's whole walk stays
// linear however many keys the transaction wrote or deleted.
func (t *tx) after(from, hi string, incl bool) (item, bool) {
	var best item
	found := false
	t.snap.tree.AscendRange(item{key: from}, item{key: hi}, func(it item) bool {
		if !incl && it.key == from {
			return true
		}
		it, ok := t.overlaid(it)
		if !ok {
			return true
		}
		best, found = it, true
		return false
	})
	if t.writable {
		end := hi
		if found {
			end = best.key
		}
		t.writes.AscendRange(item{key: from}, item{key: end}, func(w item) bool {
			if w.del || (!incl && w.key == from) {
				return true
			}
			best, found = w, true
			return false
		})
	}
	return best, found
}

// overlaid is a snapshot item as this transaction sees it: replaced by
// its own write of the key, or not visible (false) when it deleted it.
func (t *tx) overlaid(it item) (item, bool) {
	if t.writable {
		if w, ok := t.writes.Get(it); ok {
			return w, !w.del
		}
	}
	return it, true
}

// before returns the last visible item in [lo, to], to excluded unless
// incl; after's mirror image.
func (t *tx) before(lo, to string, incl bool) (item, bool) {
	var best item
	found := false
	t.snap.tree.DescendLessOrEqual(item{key: to}, func(it item) bool {
		if it.key < lo {
			return false
		}
		if !incl && it.key == to {
			return true
		}
		it, ok := t.overlaid(it)
		if !ok {
			return true
		}
		best, found = it, true
		return false
	})
	if t.writable {
		t.writes.DescendLessOrEqual(item{key: to}, func(w item) bool {
			if w.key < lo || (found && w.key <= best.key) {
				return false
			}
			if w.del || (!incl && w.key == to) {
				return true
			}
			best, found = w, true
			return false
		})
	}
	return best, found
}

// validBucket: bucket names are path elements of the key layout.
func validBucket(name []byte) error {
	switch {
	case len(name) == 0:
		return berrors.ErrBucketNameRequired
	case bytes.IndexByte(name, '/') >= 0:
		return fmt.Errorf("bucket name %q contains '/', which the etcd engine keeps for its key layout: name the bucket without it", name)
	}
	return nil
}

// exists says whether bucket name exists. Buckets are never removed, so
// only its absence is recorded as a read.
func (t *tx) exists(name string) bool {
	rel := markerPrefix + name
	if t.writable && t.writes.Has(item{key: rel}) {
		return true
	}
	if t.snap.tree.Has(item{key: rel}) {
		return true
	}
	if t.writable {
		t.reads[rel] = 0
	}
	return false
}

func (t *tx) Bucket(name []byte) kv.Bucket {
	if validBucket(name) != nil || !t.exists(string(name)) {
		return nil
	}
	return &bucket{t: t, name: string(name)}
}

func (t *tx) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	if !t.writable {
		return nil, kv.ErrTxNotWritable
	}
	if err := validBucket(name); err != nil {
		return nil, err
	}
	if !t.exists(string(name)) {
		t.put(markerPrefix+string(name), nil)
	}
	return &bucket{t: t, name: string(name)}, nil
}

type bucket struct {
	t    *tx
	name string
}

func (b *bucket) rel(key []byte) string { return bucketLo(b.name) + string(key) }

func (b *bucket) Get(key []byte) []byte {
	v, ok := b.t.get(b.rel(key))
	if !ok {
		return nil
	}
	return v
}

func (b *bucket) Put(key, value []byte) error {
	switch {
	case !b.t.writable:
		return kv.ErrTxNotWritable
	case len(key) == 0:
		return berrors.ErrKeyRequired
	case len(key) > maxKeySize:
		return berrors.ErrKeyTooLarge
	}
	b.t.put(b.rel(key), value)
	return nil
}

func (b *bucket) Delete(key []byte) error {
	if !b.t.writable {
		return kv.ErrTxNotWritable
	}
	b.t.del(b.rel(key), b.name)
	return nil
}

func (b *bucket) Sequence() uint64 {
	v, ok := b.t.get(seqPrefix + b.name)
	if !ok || len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (b *bucket) NextSequence() (uint64, error) {
	if !b.t.writable {
		return 0, kv.ErrTxNotWritable
	}
	n := b.Sequence() + 1
	b.t.put(seqPrefix+b.name, binary.BigEndian.AppendUint64(nil, n))
	return n, nil
}

// SetSequence sets the bucket's sequence to any value
// (kv.SequenceSetter: a copy gives the destination the source's).
func (b *bucket) SetSequence(v uint64) error {
	if !b.t.writable {
		return kv.ErrTxNotWritable
	}
	b.t.put(seqPrefix+b.name, binary.BigEndian.AppendUint64(nil, v))
	return nil
}

var _ kv.SequenceSetter = (*bucket)(nil)

func (b *bucket) Cursor() kv.Cursor {
	c := &cursor{t: b.t, lo: bucketLo(b.name), hi: bucketHi(b.name)}
	if b.t.writable {
		b.t.cursors = append(b.t.cursors, c)
	}
	return c
}

func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	if !b.t.writable {
		// A view has no overlay and records no reads: walk the snapshot.
		lo, hi := bucketLo(b.name), bucketHi(b.name)
		var err error
		b.t.snap.tree.AscendRange(item{key: lo}, item{key: hi}, func(it item) bool {
			v := it.val
			if v == nil {
				v = []byte{}
			}
			err = fn([]byte(it.key[len(lo):]), v)
			return err == nil
		})
		return err
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Cursor positions.
const (
	unpositioned = iota
	onKey
	pastEnd
	beforeFirst
)

// cursor walks a bucket by key through the overlay and the snapshot, so
// writes between its moves never lose its place. It records the span of
// keys it read: [spanLo, spanHi).
type cursor struct {
	t      *tx
	lo, hi string // the bucket's keys: [lo, hi)
	cur    string
	state  int

	spanned        bool
	spanLo, spanHi string
}

// read extends the span by [lo, hi).
func (c *cursor) read(lo, hi string) {
	if !c.spanned {
		c.spanned, c.spanLo, c.spanHi = true, lo, hi
		return
	}
	c.spanLo, c.spanHi = min(c.spanLo, lo), max(c.spanHi, hi)
}

// land moves onto it (found) or off the end given.
func (c *cursor) land(it item, found bool, off int) ([]byte, []byte) {
	if !found {
		c.state = off
		return nil, nil
	}
	c.state, c.cur = onKey, it.key
	v := it.val
	if v == nil {
		v = []byte{}
	}
	return []byte(it.key[len(c.lo):]), v
}

func (c *cursor) First() ([]byte, []byte) {
	it, ok := c.t.after(c.lo, c.hi, true)
	c.read(c.lo, endOf(it, ok, c.hi))
	return c.land(it, ok, pastEnd)
}

func (c *cursor) Last() ([]byte, []byte) {
	it, ok := c.t.before(c.lo, c.hi, false)
	c.read(startOf(it, ok, c.lo), c.hi)
	return c.land(it, ok, beforeFirst)
}

func (c *cursor) Next() ([]byte, []byte) {
	switch c.state {
	case unpositioned, beforeFirst:
		return c.First()
	case pastEnd:
		return nil, nil
	}
	it, ok := c.t.after(c.cur, c.hi, false)
	c.read(c.cur, endOf(it, ok, c.hi))
	return c.land(it, ok, pastEnd)
}

func (c *cursor) Prev() ([]byte, []byte) {
	switch c.state {
	case unpositioned, pastEnd:
		return c.Last()
	case beforeFirst:
		return nil, nil
	}
	it, ok := c.t.before(c.lo, c.cur, false)
	c.read(startOf(it, ok, c.lo), c.cur+"\x00")
	return c.land(it, ok, beforeFirst)
}

func (c *cursor) Seek(key []byte) ([]byte, []byte) {
	from := c.lo + string(key)
	it, ok := c.t.after(from, c.hi, true)
	c.read(from, endOf(it, ok, c.hi))
	return c.land(it, ok, pastEnd)
}

// endOf is the exclusive end of a read that stopped at it (or ran to hi).
func endOf(it item, found bool, hi string) string {
	if !found {
		return hi
	}
	return it.key + "\x00"
}

// startOf is the start of a read backwards that stopped at it (or ran to
// lo).
func startOf(it item, found bool, lo string) string {
	if !found {
		return lo
	}
	return it.key
}
