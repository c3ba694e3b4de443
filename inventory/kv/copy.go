package kv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"
)

// MigrationBucket is the reserved bucket in which Copy marks a copy that
// has not finished: its destination is not a whole store until the mark
// is gone. No schema may use this name.
var MigrationBucket = []byte("kv_migration")

// migrationKey is the mark itself, in MigrationBucket.
var migrationKey = []byte("in_progress")

// ErrUnfinishedCopy is reported (wrapped in *UnfinishedCopyError) for a
// store that Copy wrote into and did not finish: part of the source is
// missing from it.
var ErrUnfinishedCopy = errors.New("the store holds an unfinished copy of another store: it is not a whole inventory; copy it again, overwriting it")

// UnfinishedCopyError says when the unfinished copy started.
type UnfinishedCopyError struct{ Started time.Time }

func (e *UnfinishedCopyError) Error() string {
	if e.Started.IsZero() {
		return ErrUnfinishedCopy.Error()
	}
	return fmt.Sprintf("%v (the copy started %s)", ErrUnfinishedCopy, e.Started.UTC().Format(time.RFC3339))
}

func (e *UnfinishedCopyError) Unwrap() error { return ErrUnfinishedCopy }

// CheckNoMigration returns an *UnfinishedCopyError when e holds the mark
// of a Copy into it that did not finish, nil otherwise. A store that
// opens e should refuse to run on it.
func CheckNoMigration(e Engine) error {
	var started []byte
	err := e.View(func(tx Tx) error {
		if b := tx.Bucket(MigrationBucket); b != nil {
			started = bytes.Clone(b.Get(migrationKey))
		}
		return nil
	})
	if err != nil || started == nil {
		return err
	}
	var m migrationMark
	_ = json.Unmarshal(started, &m) // a mark that does not parse is still a mark
	return &UnfinishedCopyError{Started: m.Started}
}

type migrationMark struct {
	Started time.Time `json:"started"`
}

// ErrNotEmpty is wrapped by *NotEmptyError.
var ErrNotEmpty = errors.New("the destination store is not empty")

// NotEmptyError refuses a Copy into a store that holds keys, unless it
// overwrites them.
type NotEmptyError struct {
	Buckets []string // the buckets that hold keys
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("%v (keys in %s): copy into an empty store, or overwrite it (its keys are deleted first)", ErrNotEmpty, strings.Join(e.Buckets, ", "))
}

func (e *NotEmptyError) Unwrap() error { return ErrNotEmpty }

// ErrVerify is wrapped by *VerifyError.
var ErrVerify = errors.New("the copy does not match its source")

// VerifyError names the buckets whose copy differs from the source.
type VerifyError struct {
	Buckets []BucketReport // only those that differ
}

func (e *VerifyError) Error() string {
	var parts []string
	for _, b := range e.Buckets {
		parts = append(parts, fmt.Sprintf("bucket %q: source %d keys, sequence %d, sha256 %.12s; copy %d keys, sequence %d, sha256 %.12s",
			b.Name, b.Keys, b.Sequence, b.SHA256, b.DstKeys, b.DstSequence, b.DstSHA256))
	}
	return fmt.Sprintf("%v: %s; the destination is left marked unfinished", ErrVerify, strings.Join(parts, "; "))
}

func (e *VerifyError) Unwrap() error { return ErrVerify }

// SequenceSetter is implemented by buckets whose sequence can be set to
// any value (bbolt's SetSequence). Copy uses it to give the destination
// the source's sequences; without it, it counts up with NextSequence,
// which cannot go down.
type SequenceSetter interface {
	SetSequence(uint64) error
}

// The default chunk limits stay well under etcd's defaults (128
// operations and 1.5 MiB per transaction): a chunk's puts plus the
// engine's own bookkeeping keys must fit in one etcd transaction.
const (
	DefaultChunkKeys  = 64
	DefaultChunkBytes = 512 << 10
)

// CopyOptions tune Copy.
type CopyOptions struct {
	// Buckets are the buckets to copy, all of them: the schema's list
	// (the inventory's Buckets()). A bucket the source lacks is skipped.
	Buckets [][]byte
	// Overwrite clears the destination's buckets first; without it a
	// destination with keys is refused.
	Overwrite bool
	// ChunkKeys and ChunkBytes bound one write transaction on the
	// destination: at most ChunkKeys keys and, unless a single record is
	// larger, ChunkBytes of keys and values. Zero: the defaults.
	ChunkKeys, ChunkBytes int
	// Now is the clock of the unfinished-copy mark (default time.Now).
	Now func() time.Time
}

// BucketReport is one bucket of a copy: what the source held and what
// the destination read back.
type BucketReport struct {
	Name        string `json:"name"`
	Keys        int    `json:"keys"`
	Bytes       int64  `json:"bytes"`
	Sequence    uint64 `json:"sequence"`
	SHA256      string `json:"sha256"`
	DstKeys     int    `json:"dst_keys"`
	DstSequence uint64 `json:"dst_sequence"`
	DstSHA256   string `json:"dst_sha256"`
	Same        bool   `json:"same"`
}

// CopyReport is what Copy did.
type CopyReport struct {
	Buckets      []BucketReport `json:"buckets"`
	Keys         int            `json:"keys"`
	Bytes        int64          `json:"bytes"`
	Transactions int            `json:"transactions"` // write transactions on the destination
	Cleared      int            `json:"cleared"`      // keys deleted from the destination first
}

// Copy copies every bucket of opts.Buckets, keys and sequence, from one
// snapshot of src into dst, in write transactions of bounded size, then
// reads dst back and checks each bucket's key count, sha256 over its
// (key, value) pairs in order, and sequence against the snapshot.
//
// Until it has verified the copy, dst carries a mark (CheckNoMigration)
// that says it is not a whole store: a copy cut short by an error, a
// cancelled ctx or a crash leaves it behind, and the copy has to be run
// again, overwriting. On a *VerifyError the mark stays as well.
func Copy(ctx context.Context, dst, src Engine, opts CopyOptions) (*CopyReport, error) {
	if len(opts.Buckets) == 0 {
		return nil, errors.New("copy: no buckets to copy")
	}
	seen := map[string]bool{}
	for _, b := range opts.Buckets {
		switch {
		case len(b) == 0:
			return nil, errors.New("copy: an empty bucket name")
		case bytes.Equal(b, MigrationBucket):
			return nil, fmt.Errorf("copy: bucket %q is reserved for the copy's own mark", b)
		case seen[string(b)]:
			return nil, fmt.Errorf("copy: bucket %q named twice", b)
		}
		seen[string(b)] = true
	}
	if opts.ChunkKeys <= 0 {
		opts.ChunkKeys = DefaultChunkKeys
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = DefaultChunkBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := CheckNoMigration(src); err != nil {
		return nil, fmt.Errorf("copy: the source: %w", err)
	}
	if !opts.Overwrite {
		if err := checkEmpty(dst, opts.Buckets); err != nil {
			return nil, fmt.Errorf("copy: %w", err)
		}
	}
	c := &copier{ctx: ctx, dst: dst, opts: opts, rep: &CopyReport{Buckets: []BucketReport{}}}
	// One read transaction on src for the whole copy: what is copied and
	// what is verified is one snapshot, whatever writes src meanwhile.
	err := src.View(func(stx Tx) error {
		if err := c.mark(); err != nil {
			return err
		}
		if opts.Overwrite {
			if err := c.clear(); err != nil {
				return err
			}
		}
		for _, name := range opts.Buckets {
			sb := stx.Bucket(name)
			if sb == nil {
				continue
			}
			br, err := c.copyBucket(name, sb)
			if err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			c.rep.Buckets = append(c.rep.Buckets, br)
			c.rep.Keys += br.Keys
			c.rep.Bytes += br.Bytes
		}
		return nil
	})
	if err != nil {
		return c.rep, fmt.Errorf("copy: %w", err)
	}
	if err := c.verify(); err != nil {
		return c.rep, fmt.Errorf("copy: %w", err)
	}
	// Last: the copy is whole.
	err = c.update(func(tx Tx) error {
		b := tx.Bucket(MigrationBucket)
		if b == nil {
			return nil
		}
		return b.Delete(migrationKey)
	})
	if err != nil {
		return c.rep, fmt.Errorf("copy: removing the unfinished mark after a verified copy: %w", err)
	}
	return c.rep, nil
}

// checkEmpty refuses a destination with keys in any of buckets or with
// the mark of an earlier copy.
func checkEmpty(e Engine, buckets [][]byte) error {
	var full []string
	err := e.View(func(tx Tx) error {
		for _, name := range append([][]byte{MigrationBucket}, buckets...) {
			if b := tx.Bucket(name); b != nil {
				if k, _ := b.Cursor().First(); k != nil {
					full = append(full, string(name))
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the destination: %w", err)
	}
	if len(full) > 0 {
		return &NotEmptyError{Buckets: full}
	}
	return nil
}

type copier struct {
	ctx  context.Context
	dst  Engine
	opts CopyOptions
	rep  *CopyReport
}

// update is one write transaction on dst, counted; a cancelled ctx stops
// the copy between transactions.
func (c *copier) update(fn func(Tx) error) error {
	if err := c.ctx.Err(); err != nil {
		return err
	}
	c.rep.Transactions++
	return c.dst.Update(fn)
}

func (c *copier) mark() error {
	v, err := json.Marshal(migrationMark{Started: c.opts.Now().UTC()})
	if err != nil {
		return err
	}
	err = c.update(func(tx Tx) error {
		b, err := tx.CreateBucketIfNotExists(MigrationBucket)
		if err != nil {
			return err
		}
		return b.Put(migrationKey, v)
	})
	if err != nil {
		return fmt.Errorf("marking the destination unfinished: %w", err)
	}
	return nil
}

// clear deletes every key of the destination's buckets, a chunk per
// transaction, and sets their sequences to zero where the engine can.
func (c *copier) clear() error {
	for _, name := range c.opts.Buckets {
		for {
			n := 0
			err := c.update(func(tx Tx) error {
				n = 0
				b := tx.Bucket(name)
				if b == nil {
					return nil
				}
				// Collect, then delete: deleting under a cursor can skip keys.
				var keys [][]byte
				cur := b.Cursor()
				for k, _ := cur.First(); k != nil && len(keys) < c.opts.ChunkKeys; k, _ = cur.Next() {
					keys = append(keys, bytes.Clone(k))
				}
				for _, k := range keys {
					if err := b.Delete(k); err != nil {
						return err
					}
				}
				n = len(keys)
				if n == 0 && b.Sequence() != 0 {
					if s, ok := b.(SequenceSetter); ok {
						return s.SetSequence(0)
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("clearing bucket %q of the destination: %w", name, err)
			}
			c.rep.Cleared += n
			if n == 0 {
				break
			}
		}
	}
	return nil
}

// pairHash hashes (key, value) pairs in order, each length-prefixed so
// that no two different bucket contents hash alike by shifting bytes
// between a key and its value.
type pairHash struct {
	h     hash.Hash
	keys  int
	bytes int64
}

func newPairHash() *pairHash { return &pairHash{h: sha256.New()} }

func (p *pairHash) add(k, v []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(k)))
	p.h.Write(n[:])
	p.h.Write(k)
	binary.BigEndian.PutUint32(n[:], uint32(len(v)))
	p.h.Write(n[:])
	p.h.Write(v)
	p.keys++
	p.bytes += int64(len(k) + len(v))
}

func (p *pairHash) sum() string { return hex.EncodeToString(p.h.Sum(nil)) }

// copyBucket streams one source bucket into dst, a chunk per write
// transaction, hashing what it reads, and sets the sequence last.
func (c *copier) copyBucket(name []byte, sb Bucket) (BucketReport, error) {
	ph := newPairHash()
	cur := sb.Cursor()
	k, v := cur.First()
	type pair struct{ k, v []byte }
	var chunk []pair
	for {
		// Gather a chunk; the first record always goes, however large.
		chunk = chunk[:0]
		size := 0
		for k != nil && len(chunk) < c.opts.ChunkKeys && (len(chunk) == 0 || size+len(k)+len(v) <= c.opts.ChunkBytes) {
			// Copies: the destination's transaction may keep what it is
			// given until it commits, past the source cursor's move.
			chunk = append(chunk, pair{bytes.Clone(k), bytes.Clone(v)})
			size += len(k) + len(v)
			ph.add(k, v)
			k, v = cur.Next()
		}
		last := k == nil
		err := c.update(func(tx Tx) error {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			for _, p := range chunk {
				val := p.v
				if val == nil {
					val = []byte{}
				}
				if err := b.Put(p.k, val); err != nil {
					return err
				}
			}
			if last {
				return setSequence(c.ctx, b, sb.Sequence())
			}
			return nil
		})
		if err != nil {
			return BucketReport{}, err
		}
		if last {
			break
		}
	}
	return BucketReport{Name: string(name), Keys: ph.keys, Bytes: ph.bytes, Sequence: sb.Sequence(), SHA256: ph.sum()}, nil
}

// setSequence gives b the sequence seq.
func setSequence(ctx context.Context, b Bucket, seq uint64) error {
	if b.Sequence() == seq {
		return nil
	}
	if s, ok := b.(SequenceSetter); ok {
		return s.SetSequence(seq)
	}
	if b.Sequence() > seq {
		return fmt.Errorf("the destination's sequence is %d, past the source's %d, and this engine cannot set it back", b.Sequence(), seq)
	}
	for i := 0; b.Sequence() < seq; i++ {
		if i%(1<<20) == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if _, err := b.NextSequence(); err != nil {
			return err
		}
	}
	return nil
}

// verify reads every copied bucket back from dst and compares it with
// what was read from the source's snapshot.
func (c *copier) verify() error {
	var bad []BucketReport
	err := c.dst.View(func(tx Tx) error {
		for i := range c.rep.Buckets {
			br := &c.rep.Buckets[i]
			ph := newPairHash()
			if b := tx.Bucket([]byte(br.Name)); b != nil {
				cur := b.Cursor()
				for k, v := cur.First(); k != nil; k, v = cur.Next() {
					ph.add(k, v)
				}
				br.DstSequence = b.Sequence()
			}
			br.DstKeys, br.DstSHA256 = ph.keys, ph.sum()
			br.Same = br.DstKeys == br.Keys && br.DstSHA256 == br.SHA256 && br.DstSequence == br.Sequence
			if !br.Same {
				bad = append(bad, *br)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the copy back: %w", err)
	}
	if len(bad) > 0 {
		return &VerifyError{Buckets: bad}
	}
	return nil
}
