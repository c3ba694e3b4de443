// Package kvtest is the conformance suite every kv engine passes: the
// contract of package kv, checked the same way for bbolt and etcd.
package kvtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
)

// Opener returns a fresh, empty store for one test, and closes it when
// the test ends (t.Cleanup).
type Opener func(t *testing.T) kv.Engine

// Peer opens another instance on e's store (closed when the test ends):
// two processes sharing one inventory.
type Peer func(t *testing.T, e kv.Engine) kv.Engine

// Run runs the suite on stores from open. The concurrency tests use one
// instance from two goroutines.
func Run(t *testing.T, open Opener) { RunWithPeers(t, open, nil) }

// RunWithPeers runs the suite; with peer the concurrency tests run two
// instances of one store and make their transactions overlap for real:
// each reads, then waits for the other to have read, then writes.
func RunWithPeers(t *testing.T, open Opener, peer Peer) {
	s := suite{open: open, peer: peer}
	t.Run("GetPutDelete", s.getPutDelete)
	t.Run("ReadYourWritesInsideTheTransaction", s.readYourWrites)
	t.Run("CursorsWalkTheTransactionsOwnWrites", s.cursorsOverOverlay)
	t.Run("CursorEdges", s.cursorEdges)
	t.Run("ForEachInOrderAndStopsOnError", s.forEach)
	t.Run("Sequences", s.sequences)
	t.Run("Buckets", s.buckets)
	t.Run("ErrorInFnChangesNothing", s.fnErrorAborts)
	t.Run("ReadOnlyTransactionRefusesWrites", s.readOnlyRefuses)
	t.Run("WriteToIsABboltFileWithTheSameContent", s.writeTo)
	t.Run("LargeTransactionIsAllOrNothing", s.largeTransaction)
	t.Run("ConcurrentIncrementsCountExactly", s.increments)
	t.Run("BatchIncrementsCountExactly", s.batchIncrements)
	t.Run("NoWriteSkew", s.writeSkew)
	t.Run("RangeReadConflictsWithInsert", s.rangeVsInsert)
	t.Run("RangeReadConflictsWithDelete", s.rangeVsDelete)
}

type suite struct {
	open Opener
	peer Peer
}

// pair is two instances of one fresh store, and whether they are two
// (their transactions can overlap).
func (s suite) pair(t *testing.T) (a, b kv.Engine, two bool) {
	a = s.open(t)
	if s.peer == nil {
		return a, a, false
	}
	return a, s.peer(t, a), true
}

// catchUp makes each engine see every commit made before (another
// instance's commits reach an engine's reads later): a write commits after
// them, and an Update returns once its engine has applied its own commit.
func catchUp(t *testing.T, es ...kv.Engine) {
	t.Helper()
	for _, e := range es {
		must(t, e, func(tx kv.Tx) error {
			b, err := create(tx, "kvtest-catch-up")
			if err != nil {
				return err
			}
			return b.Put([]byte("n"), []byte("x"))
		})
	}
}

// must runs an Update that must succeed.
func must(t *testing.T, e kv.Engine, fn func(kv.Tx) error) {
	t.Helper()
	if err := e.Update(fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// view runs a View that must succeed.
func view(t *testing.T, e kv.Engine, fn func(kv.Tx) error) {
	t.Helper()
	if err := e.View(fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func create(tx kv.Tx, name string) (kv.Bucket, error) {
	return tx.CreateBucketIfNotExists([]byte(name))
}

// fill puts key=value pairs (k1, v1, k2, v2...) into bucket name.
func fill(t *testing.T, e kv.Engine, name string, kvs ...string) {
	t.Helper()
	must(t, e, func(tx kv.Tx) error {
		b, err := create(tx, name)
		if err != nil {
			return err
		}
		for i := 0; i < len(kvs); i += 2 {
			if err := b.Put([]byte(kvs[i]), []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
}

// contents lists bucket name as "k=v" in cursor order.
func contents(b kv.Bucket) []string {
	out := []string{}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		out = append(out, string(k)+"="+string(v))
	}
	return out
}

func bucketContents(t *testing.T, e kv.Engine, name string) []string {
	t.Helper()
	var out []string
	view(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte(name))
		if b == nil {
			return fmt.Errorf("bucket %q missing", name)
		}
		out = contents(b)
		return nil
	})
	return out
}

func same(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s suite) getPutDelete(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "a", "1", "b", "2", "empty", "")
	view(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if got := string(b.Get([]byte("a"))); got != "1" {
			t.Errorf("Get(a) = %q, want 1", got)
		}
		if got := b.Get([]byte("nope")); got != nil {
			t.Errorf("Get of an absent key = %q, want nil", got)
		}
		if got := b.Get([]byte("empty")); got == nil || len(got) != 0 {
			t.Errorf("Get of a key with an empty value = %#v, want a non-nil empty value", got)
		}
		return nil
	})
	must(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if err := b.Put([]byte("a"), []byte("one")); err != nil {
			return err
		}
		if err := b.Delete([]byte("absent")); err != nil {
			return fmt.Errorf("deleting an absent key: %w", err)
		}
		return b.Delete([]byte("b"))
	})
	if got, want := bucketContents(t, e, "m"), []string{"a=one", "empty="}; !same(got, want) {
		t.Errorf("after overwrite and delete: %q, want %q", got, want)
	}
	err := e.Update(func(tx kv.Tx) error { return tx.Bucket([]byte("m")).Put(nil, []byte("x")) })
	if err == nil {
		t.Errorf("Put with an empty key succeeded")
	}
}

func (s suite) readYourWrites(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "a", "1")
	must(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if err := b.Put([]byte("a"), []byte("2")); err != nil {
			return err
		}
		if got := string(b.Get([]byte("a"))); got != "2" {
			t.Errorf("Get after Put in the same transaction = %q, want 2", got)
		}
		if err := b.Delete([]byte("a")); err != nil {
			return err
		}
		if got := b.Get([]byte("a")); got != nil {
			t.Errorf("Get after Delete in the same transaction = %q, want nil", got)
		}
		nb, err := create(tx, "new")
		if err != nil {
			return err
		}
		if err := nb.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		if tx.Bucket([]byte("new")) == nil {
			t.Errorf("a bucket created in the transaction is not there for it")
		}
		return nil
	})
	if got := bucketContents(t, e, "m"); len(got) != 0 {
		t.Errorf("m after the delete: %q, want empty", got)
	}
	if got, want := bucketContents(t, e, "new"), []string{"k=v"}; !same(got, want) {
		t.Errorf("new: %q, want %q", got, want)
	}
}

func (s suite) cursorsOverOverlay(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "a", "1", "b", "2", "c", "3", "d", "4")
	must(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if err := b.Put([]byte("bb"), []byte("22")); err != nil {
			return err
		}
		if err := b.Put([]byte("d"), []byte("44")); err != nil {
			return err
		}
		if err := b.Delete([]byte("c")); err != nil {
			return err
		}
		want := []string{"a=1", "b=2", "bb=22", "d=44"}
		if got := contents(b); !same(got, want) {
			t.Errorf("forward in the write transaction: %q, want %q", got, want)
		}
		var back []string
		c := b.Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			back = append(back, string(k)+"="+string(v))
		}
		if wantBack := []string{"d=44", "bb=22", "b=2", "a=1"}; !same(back, wantBack) {
			t.Errorf("backward in the write transaction: %q, want %q", back, wantBack)
		}
		for seek, want := range map[string]string{"": "a", "b": "b", "ba": "bb", "c": "d", "bz": "d", "e": ""} {
			if k, _ := b.Cursor().Seek([]byte(seek)); string(k) != want {
				t.Errorf("Seek(%q) = %q, want %q", seek, k, want)
			}
		}
		return nil
	})
	if got, want := bucketContents(t, e, "m"), []string{"a=1", "b=2", "bb=22", "d=44"}; !same(got, want) {
		t.Errorf("after commit: %q, want %q", got, want)
	}
}

func (s suite) cursorEdges(t *testing.T) {
	e := s.open(t)
	fill(t, e, "empty")
	fill(t, e, "m", "a", "1", "b", "2")
	fill(t, e, "n", "a", "other bucket")
	fill(t, e, "l", "z", "before m")
	view(t, e, func(tx kv.Tx) error {
		c := tx.Bucket([]byte("empty")).Cursor()
		if k, _ := c.First(); k != nil {
			t.Errorf("First in an empty bucket = %q", k)
		}
		if k, _ := c.Last(); k != nil {
			t.Errorf("Last in an empty bucket = %q", k)
		}
		c = tx.Bucket([]byte("m")).Cursor()
		if k, _ := c.Last(); string(k) != "b" {
			t.Errorf("Last = %q, want b", k)
		}
		if k, _ := c.Next(); k != nil {
			t.Errorf("Next past the last key = %q, want nil", k)
		}
		if k, _ := c.First(); string(k) != "a" {
			t.Errorf("First = %q, want a", k)
		}
		if k, _ := c.Prev(); k != nil {
			t.Errorf("Prev before the first key = %q, want nil (keys of other buckets must not show)", k)
		}
		if k, _ := c.Seek([]byte("c")); k != nil {
			t.Errorf("Seek past the last key = %q, want nil", k)
		}
		return nil
	})
}

func (s suite) forEach(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "c", "3", "a", "1", "b", "2")
	stop := errors.New("stop")
	view(t, e, func(tx kv.Tx) error {
		var seen []string
		err := tx.Bucket([]byte("m")).ForEach(func(k, v []byte) error {
			seen = append(seen, string(k)+"="+string(v))
			if string(k) == "b" {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) {
			t.Errorf("ForEach returned %v, want fn's error", err)
		}
		if want := []string{"a=1", "b=2"}; !same(seen, want) {
			t.Errorf("ForEach saw %q, want %q", seen, want)
		}
		return nil
	})
}

func (s suite) sequences(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m")
	fill(t, e, "other")
	must(t, e, func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if n := b.Sequence(); n != 0 {
			t.Errorf("Sequence of a new bucket = %d, want 0", n)
		}
		for want := uint64(1); want <= 3; want++ {
			n, err := b.NextSequence()
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("NextSequence = %d, want %d", n, want)
			}
		}
		return nil
	})
	view(t, e, func(tx kv.Tx) error {
		if n := tx.Bucket([]byte("m")).Sequence(); n != 3 {
			t.Errorf("Sequence after commit = %d, want 3", n)
		}
		if n := tx.Bucket([]byte("other")).Sequence(); n != 0 {
			t.Errorf("another bucket's Sequence = %d, want 0", n)
		}
		return nil
	})
}

func (s suite) buckets(t *testing.T) {
	e := s.open(t)
	view(t, e, func(tx kv.Tx) error {
		if tx.Bucket([]byte("m")) != nil {
			t.Errorf("Bucket of a bucket never created is not nil")
		}
		return nil
	})
	fill(t, e, "m", "k", "v")
	fill(t, e, "m") // again: no error, nothing lost
	if got, want := bucketContents(t, e, "m"), []string{"k=v"}; !same(got, want) {
		t.Errorf("after creating it again: %q, want %q", got, want)
	}
	fill(t, e, "m2", "k", "other")
	if got, want := bucketContents(t, e, "m"), []string{"k=v"}; !same(got, want) {
		t.Errorf("a bucket sharing a name prefix leaks into m: %q, want %q", got, want)
	}
	err := e.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(nil)
		return err
	})
	if err == nil {
		t.Errorf("creating a bucket without a name succeeded")
	}
}

func (s suite) fnErrorAborts(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "a", "1")
	boom := errors.New("boom")
	err := e.Update(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if err := b.Put([]byte("a"), []byte("changed")); err != nil {
			return err
		}
		if err := b.Put([]byte("b"), []byte("new")); err != nil {
			return err
		}
		if _, err := b.NextSequence(); err != nil {
			return err
		}
		if _, err := create(tx, "created"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if got, want := bucketContents(t, e, "m"), []string{"a=1"}; !same(got, want) {
		t.Errorf("after an aborted update: %q, want %q", got, want)
	}
	view(t, e, func(tx kv.Tx) error {
		if n := tx.Bucket([]byte("m")).Sequence(); n != 0 {
			t.Errorf("Sequence after an aborted update = %d, want 0", n)
		}
		if tx.Bucket([]byte("created")) != nil {
			t.Errorf("a bucket created by an aborted update exists")
		}
		return nil
	})
}

func (s suite) readOnlyRefuses(t *testing.T) {
	e := s.open(t)
	fill(t, e, "m", "a", "1")
	view(t, e, func(tx kv.Tx) error {
		if tx.Writable() {
			t.Errorf("a View's transaction says it is writable")
		}
		b := tx.Bucket([]byte("m"))
		checks := map[string]error{
			"Put":    b.Put([]byte("a"), []byte("2")),
			"Delete": b.Delete([]byte("a")),
		}
		_, checks["NextSequence"] = b.NextSequence()
		_, checks["CreateBucketIfNotExists"] = tx.CreateBucketIfNotExists([]byte("n"))
		for what, err := range checks {
			if !errors.Is(err, kv.ErrTxNotWritable) {
				t.Errorf("%s in a View: %v, want kv.ErrTxNotWritable", what, err)
			}
		}
		return nil
	})
	must(t, e, func(tx kv.Tx) error {
		if !tx.Writable() {
			t.Errorf("an Update's transaction says it is not writable")
		}
		return nil
	})
	if got, want := bucketContents(t, e, "m"), []string{"a=1"}; !same(got, want) {
		t.Errorf("after refused writes: %q, want %q", got, want)
	}
}

func (s suite) writeTo(t *testing.T) {
	e := s.open(t)
	fill(t, e, "machines", "m1", "one", "m2", "two", "\x00binary\xff", "\x01\x02")
	fill(t, e, "racks", "r1", "rack")
	fill(t, e, "empty")
	must(t, e, func(tx kv.Tx) error {
		for range 5 {
			if _, err := tx.Bucket([]byte("machines")).NextSequence(); err != nil {
				return err
			}
		}
		return nil
	})
	path := filepath.Join(t.TempDir(), "backup.db")
	view(t, e, func(tx kv.Tx) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := tx.WriteTo(f)
		if err != nil {
			return err
		}
		if n == 0 {
			t.Errorf("WriteTo wrote 0 bytes")
		}
		return f.Close()
	})
	b, err := boltkv.Open(path, boltkv.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the backup does not open as a bbolt file: %v", err)
	}
	defer b.Close()
	for _, name := range []string{"machines", "racks", "empty"} {
		if got, want := bucketContents(t, b, name), bucketContents(t, e, name); !same(got, want) {
			t.Errorf("bucket %s in the backup: %q, want %q", name, got, want)
		}
	}
	view(t, b, func(tx kv.Tx) error {
		if n := tx.Bucket([]byte("machines")).Sequence(); n != 5 {
			t.Errorf("sequence in the backup = %d, want 5", n)
		}
		return nil
	})
}

func (s suite) largeTransaction(t *testing.T) {
	e := s.open(t)
	const n = 300 // a 40-machine rack import is about this many writes
	fill(t, e, "m", "keep", "me")
	boom := errors.New("boom")
	write := func(fail bool) error {
		return e.Update(func(tx kv.Tx) error {
			b := tx.Bucket([]byte("m"))
			for i := range n {
				if err := b.Put(fmt.Appendf(nil, "k%04d", i), bytes.Repeat([]byte{'v'}, 200)); err != nil {
					return err
				}
			}
			if fail {
				return boom
			}
			return b.Delete([]byte("keep"))
		})
	}
	if err := write(true); !errors.Is(err, boom) {
		t.Fatalf("failing large update: %v", err)
	}
	if got := bucketContents(t, e, "m"); len(got) != 1 {
		t.Fatalf("after a failed large update the bucket has %d keys, want the 1 it had", len(got))
	}
	if err := write(false); err != nil {
		t.Fatalf("large update: %v", err)
	}
	if got := bucketContents(t, e, "m"); len(got) != n {
		t.Fatalf("after a large update the bucket has %d keys, want %d", len(got), n)
	}
}

// increment adds one to counter "n" in bucket "c", retrying when the
// engine gives up on a conflict (the contract allows it).
func increment(e kv.Engine, batch bool) error {
	fn := func(tx kv.Tx) error {
		b, err := create(tx, "c")
		if err != nil {
			return err
		}
		var n uint64
		if v := b.Get([]byte("n")); v != nil {
			fmt.Sscan(string(v), &n)
		}
		return b.Put([]byte("n"), fmt.Append(nil, n+1))
	}
	for {
		var err error
		if batch {
			err = e.Batch(fn)
		} else {
			err = e.Update(fn)
		}
		if !errors.Is(err, kv.ErrConflict) {
			return err
		}
	}
}

func (s suite) countIncrements(t *testing.T, batch bool) {
	a, b, _ := s.pair(t)
	const workers, each = 2, 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for _, e := range []kv.Engine{a, b} {
		for range workers {
			wg.Go(func() {
				for range each {
					if err := increment(e, batch); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("increment: %v", err)
	}
	catchUp(t, a, b)
	for _, e := range []kv.Engine{a, b} {
		view(t, e, func(tx kv.Tx) error {
			if got, want := string(tx.Bucket([]byte("c")).Get([]byte("n"))), fmt.Sprint(2*workers*each); got != want {
				t.Errorf("counter = %s, want %s", got, want)
			}
			return nil
		})
	}
}

func (s suite) increments(t *testing.T)      { s.countIncrements(t, false) }
func (s suite) batchIncrements(t *testing.T) { s.countIncrements(t, true) }

// overlap runs fa on a and fb on b so that, with two instances, their
// first runs both read before either writes: each calls the given wait
// between its reads and its writes. Both Updates must succeed, and with
// two instances the one that commits second must have run again: its
// first run read what the other then changed.
func overlap(t *testing.T, a, b kv.Engine, two bool, fa, fb func(tx kv.Tx, wait func()) error) {
	t.Helper()
	var read sync.WaitGroup
	read.Add(2)
	var runs atomic.Int32
	run := func(e kv.Engine, f func(kv.Tx, func()) error) error {
		first := true
		return e.Update(func(tx kv.Tx) error {
			runs.Add(1)
			wait := func() {}
			if first && two {
				wait = func() { read.Done(); read.Wait() }
			}
			first = false
			return f(tx, wait)
		})
	}
	catchUp(t, a, b)
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { errA = run(a, fa) })
	wg.Go(func() { errB = run(b, fb) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("updates: %v, %v", errA, errB)
	}
	if n := runs.Load(); two && n < 3 {
		t.Errorf("two overlapping transactions that conflict ran %d times in all: the second to commit did not run again", n)
	}
	catchUp(t, a, b)
}

func (s suite) writeSkew(t *testing.T) {
	a, b, two := s.pair(t)
	fill(t, a, "m", "x", "0", "y", "0")
	// Each writes its key only if x+y == 0: serially, only the first does.
	onlyIfNone := func(mine string) func(kv.Tx, func()) error {
		return func(tx kv.Tx, wait func()) error {
			bk := tx.Bucket([]byte("m"))
			sum := string(bk.Get([]byte("x"))) + string(bk.Get([]byte("y")))
			wait()
			if sum != "00" {
				return nil
			}
			return bk.Put([]byte(mine), []byte("1"))
		}
	}
	overlap(t, a, b, two, onlyIfNone("x"), onlyIfNone("y"))
	for _, e := range []kv.Engine{a, b} {
		got := bucketContents(t, e, "m")
		if !same(got, []string{"x=1", "y=0"}) && !same(got, []string{"x=0", "y=1"}) {
			t.Errorf("write skew: %q, want exactly one of x and y set", got)
		}
	}
}

// count counts the keys of bucket name with a cursor.
func count(tx kv.Tx, name string) int {
	return len(contents(tx.Bucket([]byte(name))))
}

func (s suite) rangeVsInsert(t *testing.T) {
	a, b, two := s.pair(t)
	fill(t, a, "other", "z", "z")
	fill(t, a, "slots")
	// One slot: each takes it only if the bucket is empty (a rack's last
	// unit, a budget's last kW).
	take := func(mine string) func(kv.Tx, func()) error {
		return func(tx kv.Tx, wait func()) error {
			n := count(tx, "slots")
			wait()
			if n > 0 {
				return nil
			}
			return tx.Bucket([]byte("slots")).Put([]byte(mine), []byte("taken"))
		}
	}
	overlap(t, a, b, two, take("a"), take("b"))
	for _, e := range []kv.Engine{a, b} {
		if got := bucketContents(t, e, "slots"); len(got) != 1 {
			t.Errorf("slots: %q, want exactly one taken", got)
		}
	}
}

func (s suite) rangeVsDelete(t *testing.T) {
	a, b, two := s.pair(t)
	fill(t, a, "slots", "a", "1", "b", "1")
	// At least one must remain: each removes its own only if both are
	// there.
	release := func(mine string) func(kv.Tx, func()) error {
		return func(tx kv.Tx, wait func()) error {
			n := 0
			if err := tx.Bucket([]byte("slots")).ForEach(func(k, v []byte) error { n++; return nil }); err != nil {
				return err
			}
			wait()
			if n < 2 {
				return nil
			}
			return tx.Bucket([]byte("slots")).Delete([]byte(mine))
		}
	}
	overlap(t, a, b, two, release("a"), release("b"))
	for _, e := range []kv.Engine{a, b} {
		if got := bucketContents(t, e, "slots"); len(got) != 1 {
			t.Errorf("slots: %q, want exactly one left", got)
		}
	}
}
