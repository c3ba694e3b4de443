package inventory

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/metalhall/metalhall/cluster/clustertest"
	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
)

// testEngineEnv chooses the engine the whole suite runs on:
//
//	bolt (or unset)  the bbolt file, as Open opens it
//	retry            bbolt, running every write function twice, the first
//	                 run's transaction discarded (an engine's conflict retry)
//	follow           bbolt behind a change stream (a kv.Follower, as
//	                 etcd's engine): the views are fed from its commits
//	etcd             the etcd engine, on one etcd member run inside the
//	                 test binary; each path is its own key prefix
const testEngineEnv = "METALHALL_TEST_ENGINE"

// openTestStore opens the store a test runs against. Every test of the
// suite opens its stores here (or through newInv), so that this is the
// one place the engine is chosen. path names the store: opening the same
// path again reaches the same data (on bbolt it is the file).
func openTestStore(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := tryOpenTestStore(t, path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryOpenTestStore is openTestStore for a test that expects the open to
// fail.
func tryOpenTestStore(t testing.TB, path string, opts Options) (*Store, error) {
	t.Helper()
	var wrap func(*boltkv.Engine) kv.Engine
	switch name := os.Getenv(testEngineEnv); name {
	case "", "bolt":
		return Open(path, opts)
	case "retry":
		wrap = func(e *boltkv.Engine) kv.Engine { return &retryEngine{Engine: e} }
	case "follow":
		wrap = func(e *boltkv.Engine) kv.Engine { return &followEngine{Engine: e} }
	case "etcd":
		return openEtcdTestStore(t, path, opts)
	default:
		t.Fatalf("%s=%q: the inventory suite runs on bolt, retry, follow or etcd", testEngineEnv, name)
	}
	e, err := boltkv.Open(path, boltkv.Options{LockTimeout: opts.LockTimeout, NoSync: opts.NoSync})
	if err != nil {
		return nil, err
	}
	s, err := OpenEngine(wrap(e), opts)
	if err != nil {
		e.Close()
		return nil, err
	}
	return s, nil
}

// errDiscard rolls back a retryEngine's first run.
var errDiscard = errors.New("first run discarded")

// retryEngine runs every write function twice: once in a transaction it
// rolls back, as an engine whose commit lost a conflict, then for real.
// A write that keeps anything of its first run (an append to a result
// outside the transaction) shows it in its outcome. between, when set,
// runs once between the two runs: another instance's write.
//
// It is not a Follower, so its writers must commit one at a time, as
// bbolt's do (Store.write orders its views by that): one lock spans
// both runs.
type retryEngine struct {
	*boltkv.Engine
	writes  atomic.Uint64
	mu      sync.Mutex
	between func(*boltkv.Engine)
}

func (e *retryEngine) Update(fn func(kv.Tx) error) error {
	e.writes.Add(1)
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.Engine.Update(func(tx kv.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		return errDiscard
	})
	if !errors.Is(err, errDiscard) {
		return err // refused by fn: an engine does not retry that
	}
	if between := e.between; between != nil {
		e.between = nil
		between(e.Engine)
	}
	return e.Engine.Update(fn)
}

func (e *retryEngine) Batch(fn func(kv.Tx) error) error { return e.Update(fn) }

// WriteTransactions counts each write once, as the store asked for it.
func (e *retryEngine) WriteTransactions() uint64 { return e.writes.Load() }

// followEngine is a kv.Follower over bbolt: it records what each write
// transaction puts and deletes and, once it has committed, hands the
// changes to every follower, in commit order, before Update returns.
// Several stores may follow one engine: instances sharing a cluster.
type followEngine struct {
	*boltkv.Engine
	writes atomic.Uint64

	// mu is taken inside a write transaction, under bbolt's writer lock,
	// and let go once the commit is handed out: the next commit is handed
	// out after this one. Follow holds it while it loads, so no commit
	// falls between the load and the stream.
	mu        sync.Mutex
	followers []func([]kv.Change)
	// held, while set, keeps commits back from the followers (in
	// order) until release: a test sees what a write does before the
	// stream tells of it.
	held    bool
	pending [][]kv.Change
}

var _ kv.Follower = (*followEngine)(nil)

func (e *followEngine) Update(fn func(kv.Tx) error) error {
	e.writes.Add(1)
	var rec *recordingTx
	locked := false
	err := e.Engine.Update(func(tx kv.Tx) error {
		rec = &recordingTx{Tx: tx, at: map[string]int{}}
		if err := fn(rec); err != nil {
			return err
		}
		e.mu.Lock()
		locked = true
		return nil
	})
	if locked {
		if err == nil {
			e.handOut(rec.changes)
		}
		e.mu.Unlock()
	}
	return err
}

func (e *followEngine) Batch(fn func(kv.Tx) error) error { return e.Update(fn) }

func (e *followEngine) WriteTransactions() uint64 { return e.writes.Load() }

// handOut gives one commit's changes to the followers; e.mu is held.
func (e *followEngine) handOut(cs []kv.Change) {
	if e.held {
		e.pending = append(e.pending, cs)
		return
	}
	for _, apply := range e.followers {
		apply(cs)
	}
}

func (e *followEngine) Follow(load func(kv.Tx) error, apply func([]kv.Change)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.Engine.View(load); err != nil {
		return err
	}
	e.followers = append(e.followers, apply)
	return nil
}

// hold keeps commits from the followers until release.
func (e *followEngine) hold() {
	e.mu.Lock()
	e.held = true
	e.mu.Unlock()
}

// release hands out the commits held back, in order.
func (e *followEngine) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.held = false
	for _, cs := range e.pending {
		e.handOut(cs)
	}
	e.pending = nil
}

// sharedEngine is one instance's handle on a followEngine other
// instances share: closing the store leaves the engine to the others.
type sharedEngine struct{ *followEngine }

func (sharedEngine) Close() error { return nil }

// recordingTx records the puts and deletes of a write transaction, one
// change per key (the last one), in the order the keys were first
// written: what a change stream reports of one commit.
type recordingTx struct {
	kv.Tx
	changes []kv.Change
	at      map[string]int // bucket \x00 key → index in changes
}

func (t *recordingTx) record(bucket, key, value []byte) {
	id := string(bucket) + "\x00" + string(key)
	c := kv.Change{Bucket: bytes.Clone(bucket), Key: bytes.Clone(key), Value: bytes.Clone(value)}
	if i, ok := t.at[id]; ok {
		t.changes[i] = c
		return
	}
	t.at[id] = len(t.changes)
	t.changes = append(t.changes, c)
}

func (t *recordingTx) Bucket(name []byte) kv.Bucket {
	b := t.Tx.Bucket(name)
	if b == nil {
		return nil
	}
	return recordingBucket{Bucket: b, name: name, tx: t}
}

func (t *recordingTx) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	b, err := t.Tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return recordingBucket{Bucket: b, name: name, tx: t}, nil
}

type recordingBucket struct {
	kv.Bucket
	name []byte
	tx   *recordingTx
}

func (b recordingBucket) Put(key, value []byte) error {
	if err := b.Bucket.Put(key, value); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // a put, not a delete
	}
	b.tx.record(b.name, key, value)
	return nil
}

// Delete records a deletion only of a key that was there: a stream
// reports no change for a delete that removed nothing.
func (b recordingBucket) Delete(key []byte) error {
	was := b.Bucket.Get(key) != nil
	if err := b.Bucket.Delete(key); err != nil {
		return err
	}
	if was {
		b.tx.record(b.name, key, nil)
	}
	return nil
}

// testEtcd is the etcd member the suite runs on with
// METALHALL_TEST_ENGINE=etcd, started by the first store opened.
var testEtcd struct {
	once sync.Once
	srv  *clustertest.Server
	err  error
}

func stopTestEtcd() {
	if testEtcd.srv != nil {
		testEtcd.srv.Close()
	}
}

// openEtcdTestStore opens the store named path on the suite's etcd
// member: the path's hash is its key prefix, so opening the same path
// again reaches the same data, as a reopened bbolt file does.
func openEtcdTestStore(t testing.TB, path string, opts Options) (*Store, error) {
	t.Helper()
	testEtcd.once.Do(func() { testEtcd.srv, testEtcd.err = clustertest.Start() })
	if testEtcd.err != nil {
		t.Fatal(testEtcd.err)
	}
	sum := sha256.Sum256([]byte(path))
	e, err := etcdkv.Open(context.Background(), etcdkv.Config{
		Endpoints: []string{testEtcd.srv.Endpoint},
		Prefix:    "/test/" + hex.EncodeToString(sum[:8]) + "/",
	})
	if err != nil {
		return nil, err
	}
	s, err := OpenEngine(e, opts)
	if err != nil {
		e.Close()
		return nil, err
	}
	return s, nil
}
