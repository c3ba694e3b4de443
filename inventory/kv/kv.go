// Package kv is the seam between the inventory's rules and the engine that
// keeps them: a small transactional key-value surface shaped like bbolt's
// (named buckets of ordered byte keys, cursors, per-bucket sequences), so
// that the domain is written once and runs on the embedded bbolt file
// (boltkv) or on an etcd cluster (etcdkv).
//
// The contract every engine keeps (kvtest checks it):
//   - a View sees one consistent snapshot; an Update is serializable: it
//     commits only if nothing it read changed since its snapshot, else it
//     fails or is retried as a whole;
//   - an Update's function may run more than once (retry on conflict,
//     shared Batch transactions): it must not have effects outside the
//     transaction except through variables it resets at its start;
//   - a function's error aborts the transaction and changes nothing;
//   - keys and values returned are valid only until the transaction ends;
//     copy what must outlive it.
package kv

import (
	"errors"
	"io"
)

// Engine runs transactions.
type Engine interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it if fn
	// returns nil.
	Update(fn func(Tx) error) error
	// Batch is Update that may share its transaction with concurrent
	// callers (fn may run more than once, and must be idempotent).
	Batch(fn func(Tx) error) error
	// WriteTransactions counts the write transactions committed or tried
	// since the engine was opened (shared Batch transactions count once).
	WriteTransactions() uint64
	Close() error
}

// Tx is one transaction.
type Tx interface {
	// Bucket returns the named bucket, or nil if it does not exist.
	Bucket(name []byte) Bucket
	// CreateBucketIfNotExists creates the named bucket (write transactions
	// only).
	CreateBucketIfNotExists(name []byte) (Bucket, error)
	Writable() bool
	// WriteTo writes the whole store as seen by this transaction to w as
	// a bbolt database file: the backup format whatever the engine.
	io.WriterTo
}

// Bucket is an ordered map of byte keys to byte values.
type Bucket interface {
	// Get returns the value of key, or nil if there is none.
	Get(key []byte) []byte
	Put(key, value []byte) error
	Delete(key []byte) error
	Cursor() Cursor
	// ForEach calls fn for every key in order; an error stops it.
	// fn must not change the bucket.
	ForEach(fn func(k, v []byte) error) error
	// Sequence is the bucket's counter; NextSequence increments it
	// (write transactions only) and returns the new value.
	Sequence() uint64
	NextSequence() (uint64, error)
}

// Cursor walks a bucket in key order. Each method returns the key and
// value it lands on, or a nil key past either end.
type Cursor interface {
	First() (key, value []byte)
	Last() (key, value []byte)
	Next() (key, value []byte)
	Prev() (key, value []byte)
	// Seek moves to key, or to the first key after it.
	Seek(key []byte) (key2, value []byte)
}

var (
	// ErrTxNotWritable is returned by writes in a read-only transaction.
	ErrTxNotWritable = errors.New("kv: transaction not writable")
	// ErrUnavailable wraps the engine's failure to reach its storage (an
	// etcd cluster without quorum): the write did not commit by the time
	// the error returned. On etcd a commit that timed out may still be
	// applied once quorum returns (the surviving member had it in its log
	// and leads again), so callers say "not committed", never "nothing
	// changed".
	ErrUnavailable = errors.New("the store is unavailable")
	// ErrConflict is returned when a serializable write lost to another
	// writer more times than the engine retries.
	ErrConflict = errors.New("the write conflicted with concurrent writes; try again")
	// ErrTooLarge is returned when one transaction's writes exceed what
	// the engine can commit atomically.
	ErrTooLarge = errors.New("the transaction is too large")
)

// Change is one key's change in a commit. Value is nil when the key was
// deleted.
type Change struct {
	Bucket, Key, Value []byte
}

// Follower is an engine whose state can change under this process: other
// instances write to it (etcdkv). The inventory keeps its in-memory views
// (boot view, event feed) from Follow instead of from its own commits.
type Follower interface {
	// Follow calls load with a read transaction on the current state,
	// then apply with the changes of every later commit, in commit order,
	// one call per commit. load and apply never run concurrently. An
	// Update of this process returns only after apply has seen its commit
	// (read your writes).
	Follow(load func(Tx) error, apply func([]Change)) error
}
