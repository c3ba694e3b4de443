// Package boltkv is the kv engine over one bbolt file: the embedded
// default, one binary and nothing else to run.
package boltkv

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/metalhall/metalhall/inventory/kv"
)

// ErrLocked is returned by Open when another process holds the file.
var ErrLocked = errors.New("the database file is held by another process")

// Options tune Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to let go of
	// the file (0: one second).
	LockTimeout time.Duration
	// NoSync skips fsync on commit. Only for benchmarks and tests.
	NoSync bool
	// ReadOnly opens the file without taking the writer's lock.
	ReadOnly bool
}

// Engine is a kv.Engine over a bbolt database.
type Engine struct {
	db *bolt.DB

	// writeTxns counts write transactions; lastBatchTx is the ID of the
	// last shared Batch transaction counted (bbolt runs several Batch
	// calls in one transaction: one write, not several).
	writeTxns   atomic.Uint64
	lastBatchTx atomic.Uint64
}

var _ kv.Engine = (*Engine)(nil)

// Open opens (creating if needed) the bbolt file at path.
func Open(path string, opts Options) (*Engine, error) {
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout, NoSync: opts.NoSync, ReadOnly: opts.ReadOnly,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Engine{db: db}, nil
}

// Path is the database file.
func (e *Engine) Path() string { return e.db.Path() }

// Close closes the file.
func (e *Engine) Close() error { return e.db.Close() }

// WriteTransactions is the number of write transactions since Open.
func (e *Engine) WriteTransactions() uint64 { return e.writeTxns.Load() }

// View runs fn in a read transaction.
func (e *Engine) View(fn func(kv.Tx) error) error {
	return e.db.View(func(tx *bolt.Tx) error { return fn(txn{tx}) })
}

// Update runs fn in bbolt's single write transaction.
func (e *Engine) Update(fn func(kv.Tx) error) error {
	e.writeTxns.Add(1)
	return e.db.Update(func(tx *bolt.Tx) error { return fn(txn{tx}) })
}

// Batch runs fn in a write transaction shared with concurrent callers.
func (e *Engine) Batch(fn func(kv.Tx) error) error {
	return e.db.Batch(func(tx *bolt.Tx) error {
		if id := uint64(tx.ID()); e.lastBatchTx.Swap(id) != id {
			e.writeTxns.Add(1)
		}
		return fn(txn{tx})
	})
}

type txn struct{ tx *bolt.Tx }

func (t txn) Writable() bool                     { return t.tx.Writable() }
func (t txn) WriteTo(w io.Writer) (int64, error) { return t.tx.WriteTo(w) }
func (t txn) Bucket(name []byte) kv.Bucket       { return wrap(t.tx, t.tx.Bucket(name)) }
func (t txn) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, seamErr(err)
	}
	return wrap(t.tx, b), nil
}

// wrap returns b as a kv.Bucket (nil stays nil). In a write transaction
// it packs pages to 90% instead of bbolt's 50%: most writes append keys
// in order (imports, events), and half-empty pages would double the file.
func wrap(tx *bolt.Tx, b *bolt.Bucket) kv.Bucket {
	if b == nil {
		return nil
	}
	if tx.Writable() {
		b.FillPercent = 0.9
	}
	return bucket{b}
}

type bucket struct{ b *bolt.Bucket }

func (b bucket) Get(k []byte) []byte                      { return b.b.Get(k) }
func (b bucket) Put(k, v []byte) error                    { return seamErr(b.b.Put(k, v)) }
func (b bucket) Delete(k []byte) error                    { return seamErr(b.b.Delete(k)) }
func (b bucket) Cursor() kv.Cursor                        { return b.b.Cursor() }
func (b bucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }
func (b bucket) Sequence() uint64                         { return b.b.Sequence() }
func (b bucket) NextSequence() (uint64, error) {
	n, err := b.b.NextSequence()
	return n, seamErr(err)
}

// seamErr turns bbolt's errors the seam names into the seam's.
func seamErr(err error) error {
	if errors.Is(err, berrors.ErrTxNotWritable) {
		return kv.ErrTxNotWritable
	}
	return err
}

// SetSequence sets the bucket's sequence (kv.SequenceSetter): a copy
// gives the destination the source's sequences.
func (b bucket) SetSequence(v uint64) error { return seamErr(b.b.SetSequence(v)) }

var _ kv.SequenceSetter = bucket{}
