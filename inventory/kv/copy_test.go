package kv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/boltkv"
	"github.com/metalhall/metalhall/inventory/kv/etcdkv"
	"github.com/metalhall/metalhall/lab/etcdcluster"
)

// openBolt opens a fresh bbolt engine in the test's temp dir.
func openBolt(t *testing.T) kv.Engine {
	t.Helper()
	e, err := boltkv.Open(filepath.Join(t.TempDir(), "kv.db"), boltkv.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// fill writes a store shaped like an inventory: many buckets, one large,
// one with a record larger than a chunk, an empty one with a sequence,
// an empty value.
func fill(t *testing.T, e kv.Engine) [][]byte {
	t.Helper()
	var names [][]byte
	for i := range 20 {
		names = append(names, fmt.Appendf(nil, "bucket_%02d", i))
	}
	err := e.Update(func(tx kv.Tx) error {
		for i, name := range names {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			n := i * 7
			if i == 3 {
				n = 2000
			}
			if i == 5 {
				n = 0 // empty, but counted up
			}
			for j := range n {
				if err := b.Put(fmt.Appendf(nil, "k%06d", j), fmt.Appendf(nil, "value %d of %s", j, name)); err != nil {
					return err
				}
			}
			for range i * 3 {
				if _, err := b.NextSequence(); err != nil {
					return err
				}
			}
		}
		b := tx.Bucket(names[7])
		if err := b.Put([]byte("big"), bytes.Repeat([]byte{'x'}, 100<<10)); err != nil {
			return err
		}
		return b.Put([]byte("empty"), []byte{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// dump reads every bucket of names: keys and values, and sequences.
func dump(t *testing.T, e kv.Engine, names [][]byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := e.View(func(tx kv.Tx) error {
		for _, name := range names {
			b := tx.Bucket(name)
			if b == nil {
				continue
			}
			out[string(name)+" seq"] = fmt.Sprint(b.Sequence())
			if err := b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameDump(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d keys and sequences, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %.40q, want %.40q", k, got[k], v)
		}
	}
}

// copyRoundTrip copies a filled bbolt store into a fresh engine from
// openDst and back into a fresh bbolt file, checking both copies. Any
// engine runs it: pass its opener.
func copyRoundTrip(t *testing.T, openDst func(t *testing.T) kv.Engine) {
	src := openBolt(t)
	names := fill(t, src)
	want := dump(t, src, names)
	mid := openDst(t)
	opts := kv.CopyOptions{Buckets: names, ChunkKeys: 50, ChunkBytes: 8 << 10}
	rep, err := kv.Copy(context.Background(), mid, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	sameDump(t, dump(t, mid, names), want)
	if err := kv.CheckNoMigration(mid); err != nil {
		t.Errorf("a finished copy still marked: %v", err)
	}
	if len(rep.Buckets) != len(names) {
		t.Errorf("report has %d buckets, want %d", len(rep.Buckets), len(names))
	}
	keys := 0
	for _, b := range rep.Buckets {
		if !b.Same || b.SHA256 != b.DstSHA256 || len(b.SHA256) != 64 {
			t.Errorf("bucket %s not reported the same: %+v", b.Name, b)
		}
		keys += b.Keys
	}
	if keys != rep.Keys || rep.Keys != 2000+2+7*(190-3-5) {
		t.Errorf("report counts %d keys (sum %d), want %d", rep.Keys, keys, 2000+2+7*(190-3-5))
	}
	back := openBolt(t)
	if _, err := kv.Copy(context.Background(), back, mid, opts); err != nil {
		t.Fatal(err)
	}
	sameDump(t, dump(t, back, names), want)
}

func TestCopyCarriesEveryBucketKeyAndSequenceAndVerifiesThem(t *testing.T) {
	copyRoundTrip(t, openBolt)
}

// counting wraps an engine and records the largest write transaction.
type counting struct {
	kv.Engine
	maxPuts, maxBytes int
	puts, size        int
	failAt, updates   int // fail the failAt-th Update (0: never)
	corrupt           []byte
}

var errCut = errors.New("the line was cut")

func (c *counting) Update(fn func(kv.Tx) error) error {
	c.updates++
	if c.updates == c.failAt {
		return errCut
	}
	return c.Engine.Update(func(tx kv.Tx) error {
		c.puts, c.size = 0, 0
		if err := fn(countingTx{tx, c}); err != nil {
			return err
		}
		c.maxPuts, c.maxBytes = max(c.maxPuts, c.puts), max(c.maxBytes, c.size)
		return nil
	})
}

type countingTx struct {
	kv.Tx
	c *counting
}

func (t countingTx) Bucket(name []byte) kv.Bucket {
	b := t.Tx.Bucket(name)
	if b == nil {
		return nil
	}
	return countingBucket{b, t.c}
}

func (t countingTx) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	b, err := t.Tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return countingBucket{b, t.c}, nil
}

// countingBucket does not pass SetSequence through: Copy counts up.
type countingBucket struct {
	kv.Bucket
	c *counting
}

func (b countingBucket) Put(k, v []byte) error {
	b.c.puts++
	b.c.size += len(k) + len(v)
	if b.c.corrupt != nil && bytes.Equal(k, b.c.corrupt) {
		v = append(bytes.Clone(v), '!') // a store that keeps what it was not given
	}
	return b.Bucket.Put(k, v)
}

func TestCopyWritesInChunksOfBoundedSize(t *testing.T) {
	src := openBolt(t)
	names := fill(t, src)
	dst := &counting{Engine: openBolt(t)}
	rep, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names, ChunkKeys: 16, ChunkBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	sameDump(t, dump(t, dst, names), dump(t, src, names))
	if dst.maxPuts > 16 {
		t.Errorf("a transaction put %d keys, the limit is 16", dst.maxPuts)
	}
	// One record is larger than a chunk: it goes alone.
	if dst.maxBytes > 100<<10+10 {
		t.Errorf("a transaction wrote %d bytes", dst.maxBytes)
	}
	if rep.Transactions != dst.updates {
		t.Errorf("report says %d transactions, the engine saw %d", rep.Transactions, dst.updates)
	}
	if rep.Transactions < 2000/16 {
		t.Errorf("%d transactions for 2000+ keys in chunks of 16", rep.Transactions)
	}
}

func TestCopyRefusesADestinationWithKeysAndChangesNothing(t *testing.T) {
	src := openBolt(t)
	names := fill(t, src)
	dst := openBolt(t)
	if err := dst.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucketIfNotExists(names[2])
		if err != nil {
			return err
		}
		return b.Put([]byte("mine"), []byte("keep me"))
	}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, dst, append(names, kv.MigrationBucket))
	_, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names})
	var ne *kv.NotEmptyError
	if !errors.As(err, &ne) || !errors.Is(err, kv.ErrNotEmpty) || len(ne.Buckets) != 1 || ne.Buckets[0] != string(names[2]) {
		t.Fatalf("copy into a store with keys: %v, want a NotEmptyError naming %s", err, names[2])
	}
	sameDump(t, dump(t, dst, append(names, kv.MigrationBucket)), before)
	if err := kv.CheckNoMigration(dst); err != nil {
		t.Errorf("a refused copy marked the destination: %v", err)
	}
}

func TestCopyOverwriteReplacesWhatTheDestinationHeld(t *testing.T) {
	src := openBolt(t)
	names := fill(t, src)
	dst := openBolt(t)
	if err := dst.Update(func(tx kv.Tx) error {
		for _, name := range [][]byte{names[0], names[3], names[5]} {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			for i := range 300 {
				if err := b.Put(fmt.Appendf(nil, "stale%04d", i), []byte("old")); err != nil {
					return err
				}
			}
			if err := b.(kv.SequenceSetter).SetSequence(1 << 40); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rep, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names, Overwrite: true, ChunkKeys: 100})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Cleared != 900 {
		t.Errorf("cleared %d keys, want 900", rep.Cleared)
	}
	sameDump(t, dump(t, dst, names), dump(t, src, names))
}

func TestCopyVerifyFindsACorruptedDestination(t *testing.T) {
	src := openBolt(t)
	names := fill(t, src)
	dst := &counting{Engine: openBolt(t), corrupt: []byte("k001500")}
	_, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names})
	var ve *kv.VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, kv.ErrVerify) {
		t.Fatalf("copy into a corrupting store: %v, want a VerifyError", err)
	}
	if len(ve.Buckets) != 1 || ve.Buckets[0].Name != "bucket_03" || ve.Buckets[0].Keys != ve.Buckets[0].DstKeys {
		t.Errorf("verify blamed %+v, want bucket_03 alone, same key count", ve.Buckets)
	}
	if !errors.Is(kv.CheckNoMigration(dst), kv.ErrUnfinishedCopy) {
		t.Error("a copy that failed its verification is not marked unfinished")
	}
}

func TestAnInterruptedCopyLeavesTheMarkUntilCopiedAgainOverIt(t *testing.T) {
	src := openBolt(t)
	names := fill(t, src)
	inner := openBolt(t)
	dst := &counting{Engine: inner, failAt: 9}
	if _, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names, ChunkKeys: 10}); !errors.Is(err, errCut) {
		t.Fatalf("copy cut at its 9th transaction: %v", err)
	}
	err := kv.CheckNoMigration(inner)
	var ue *kv.UnfinishedCopyError
	if !errors.As(err, &ue) || ue.Started.IsZero() {
		t.Fatalf("an interrupted copy: CheckNoMigration says %v", err)
	}
	// A copy cancelled between chunks stops there, marked too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := kv.Copy(ctx, openBolt(t), src, kv.CopyOptions{Buckets: names}); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled copy: %v", err)
	}
	// Again without overwriting: refused, the mark is what is there.
	if _, err := kv.Copy(context.Background(), inner, src, kv.CopyOptions{Buckets: names}); !errors.Is(err, kv.ErrNotEmpty) {
		t.Fatalf("copy over an unfinished one without overwrite: %v", err)
	}
	// A half copy is no source either.
	if _, err := kv.Copy(context.Background(), openBolt(t), inner, kv.CopyOptions{Buckets: names}); !errors.Is(err, kv.ErrUnfinishedCopy) {
		t.Errorf("copy from a half copy: %v", err)
	}
	if _, err := kv.Copy(context.Background(), inner, src, kv.CopyOptions{Buckets: names, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	if err := kv.CheckNoMigration(inner); err != nil {
		t.Errorf("after a whole copy: %v", err)
	}
	sameDump(t, dump(t, inner, names), dump(t, src, names))
}

func TestCopyRefusesBadBucketLists(t *testing.T) {
	src, dst := openBolt(t), openBolt(t)
	for _, names := range [][][]byte{nil, {[]byte("a"), []byte("a")}, {kv.MigrationBucket}, {{}}} {
		if _, err := kv.Copy(context.Background(), dst, src, kv.CopyOptions{Buckets: names}); err == nil {
			t.Errorf("copy of buckets %q: no error", names)
		}
	}
	if err := kv.CheckNoMigration(dst); err != nil {
		t.Errorf("a refused copy marked the destination: %v", err)
	}
}

// The same round trip through the etcd engine, on a real three-member
// cluster (Debian's etcd-server): bbolt → etcd → bbolt, each copy
// verified, in chunks within etcd's limits.
func TestCopyRoundTripThroughARealEtcdCluster(t *testing.T) {
	if err := etcdcluster.Available(); err != nil {
		t.Skip(err)
	}
	c, err := etcdcluster.Start(t.Context(), etcdcluster.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	copyRoundTrip(t, func(t *testing.T) kv.Engine {
		e, err := etcdkv.Open(t.Context(), etcdkv.Config{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	})
}
