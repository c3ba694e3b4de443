package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/kvtest"
)

// loopbackIP is a random address of 127.0.0.0/8: etcd's usual ports on
// it are free without picking a port, releasing it and hoping.
func loopbackIP() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

// The member starts inside the first test that needs it, not before
// m.Run: its goroutines would race m.Run's own set-up.
var shared struct {
	once sync.Once
	dir  string
	srv  *embed.Etcd
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// sharedEndpoint is the client URL of the embedded etcd every test of the
// package shares (each on a prefix of its own).
func sharedEndpoint(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "etcdkv-test-"); shared.err != nil {
			return
		}
		shared.srv, shared.err = startEmbedded(shared.dir)
	})
	if shared.err != nil {
		t.Fatal("embedded etcd:", shared.err)
	}
	return "http://" + shared.srv.Clients[0].Addr().String()
}

func startEmbedded(dir string) (*embed.Etcd, error) {
	ip := loopbackIP()
	cu := url.URL{Scheme: "http", Host: ip + ":2379"}
	pu := url.URL{Scheme: "http", Host: ip + ":2380"}
	cfg := embed.NewConfig()
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "fatal" // its shutdown logs errors of closed listeners
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-srv.Server.ReadyNotify():
		return srv, nil
	case err := <-srv.Err():
		srv.Close()
		return nil, err
	}
}

var prefixes atomic.Int64

// open opens an engine on a prefix of its own, or on prefix when given.
func open(t *testing.T, prefix string) *Engine {
	t.Helper()
	return openAt(t, sharedEndpoint(t), prefix)
}

// openAt opens an engine on the cluster at ep.
func openAt(t *testing.T, ep, prefix string) *Engine {
	t.Helper()
	if prefix == "" {
		prefix = fmt.Sprintf("/test/%d/", prefixes.Add(1))
	}
	e, err := Open(context.Background(), Config{
		Endpoints: []string{ep}, Prefix: prefix,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func TestConformance(t *testing.T) {
	kvtest.RunWithPeers(t,
		func(t *testing.T) kv.Engine { return open(t, "") },
		func(t *testing.T, e kv.Engine) kv.Engine { return open(t, e.(*Engine).prefix) })
}

func TestBadConfigIsRefused(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no endpoints":         {},
		"cert without its key": {Endpoints: []string{sharedEndpoint(t)}, Cert: "c.pem"},
		"too few ops":          {Endpoints: []string{sharedEndpoint(t)}, MaxTxnOps: 2},
		"missing TLS files":    {Endpoints: []string{sharedEndpoint(t)}, CA: "/nonexistent/ca.pem"},
	} {
		if e, err := Open(context.Background(), cfg); err == nil {
			e.Close()
			t.Errorf("%s: Open succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestBucketNameWithSlashIsRefused(t *testing.T) {
	e := open(t, "")
	err := e.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("a/b"))
		return err
	})
	if err == nil {
		t.Fatal("a bucket name with '/' was accepted")
	}
	t.Log(err)
}

func fill(t *testing.T, e kv.Engine, bucket string, n int, val string) {
	t.Helper()
	if err := e.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bucket))
		if err != nil {
			return err
		}
		for i := range n {
			if err := b.Put(fmt.Appendf(nil, "k%04d", i), []byte(val)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("fill: %v", err)
	}
}

func TestFollowDeliversTheOtherInstancesCommitsInOrder(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	fill(t, a, "m", 1, "before")
	// b may not have seen the fill yet: load and apply together must
	// still end with every commit seen once.
	got := make(chan []kv.Change, 100)
	loaded := map[string]string{}
	if err := b.Follow(func(tx kv.Tx) error {
		if bk := tx.Bucket([]byte("m")); bk != nil {
			return bk.ForEach(func(k, v []byte) error { loaded[string(k)] = string(v); return nil })
		}
		return nil
	}, func(cs []kv.Change) { got <- cs }); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if err := a.Update(func(tx kv.Tx) error {
			bk := tx.Bucket([]byte("m"))
			if err := bk.Put([]byte("counter"), fmt.Append(nil, i)); err != nil {
				return err
			}
			if i%5 == 4 {
				return bk.Delete([]byte("k0000"))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	state := loaded
	next := 0
	for next < n {
		for _, c := range <-got {
			if string(c.Bucket) != "m" {
				t.Fatalf("change of bucket %q", c.Bucket)
			}
			if c.Value == nil {
				delete(state, string(c.Key))
				continue
			}
			state[string(c.Key)] = string(c.Value)
			if string(c.Key) == "counter" {
				if v := string(c.Value); v != fmt.Sprint(next) {
					t.Fatalf("counter %s delivered when %d was next", v, next)
				}
				next++
			}
		}
	}
	if _, ok := state["k0000"]; ok || state["counter"] != fmt.Sprint(n-1) {
		t.Errorf("followed state %v", state)
	}
}

func TestUpdateReturnsAfterItsFollowersSawIt(t *testing.T) {
	e := open(t, "")
	var seen atomic.Int64
	if err := e.Follow(func(kv.Tx) error { return nil }, func(cs []kv.Change) { seen.Add(int64(len(cs))) }); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		fill(t, e, "m", 1, fmt.Sprint(i))
		if got := seen.Load(); got != int64(i+1) {
			t.Fatalf("after %d updates the follower saw %d changes", i+1, got)
		}
	}
}

// values lists the distinct values of bucket m, and its key count.
func values(tx kv.Tx) (map[string]int, int) {
	out := map[string]int{}
	n := 0
	if b := tx.Bucket([]byte("m")); b != nil {
		b.ForEach(func(k, v []byte) error { out[string(v)]++; n++; return nil })
	}
	return out, n
}

func TestLargeTransactionIsSeenWholeOrNotAtAll(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	const n = 300
	var calls atomic.Int64
	var partial atomic.Value
	if err := b.Follow(func(kv.Tx) error { return nil }, func(cs []kv.Change) {
		calls.Add(1)
		if len(cs) != n && len(cs) != 1 {
			partial.Store(fmt.Sprintf("a follower got %d changes in one call, want %d", len(cs), n))
		}
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	readerDone := make(chan error, 2)
	for _, e := range []*Engine{a, b} {
		go func() {
			views := 0
			for {
				select {
				case <-stop:
					t.Logf("%d views", views)
					readerDone <- nil
					return
				default:
				}
				views++
				if err := e.View(func(tx kv.Tx) error {
					vals, count := values(tx)
					if count != 0 && (count != n || len(vals) != 1) {
						return fmt.Errorf("a view saw a partial transaction: %d keys, values %v", count, vals)
					}
					return nil
				}); err != nil {
					readerDone <- err
					return
				}
			}
		}()
	}
	before := a.WriteTransactions()
	for i := range 3 {
		fill(t, a, "m", n, fmt.Sprintf("v%d", i))
	}
	if got := a.WriteTransactions() - before; got < 3*5 {
		t.Errorf("3 transactions of %d writes took %d etcd transactions; want at least 5 each (intent, 3 chunks, end)", n, got)
	}
	close(stop)
	for range 2 {
		if err := <-readerDone; err != nil {
			t.Error(err)
		}
	}
	// b has seen all three once it has applied a later commit of its own.
	fill(t, b, "other", 1, "x")
	if p := partial.Load(); p != nil {
		t.Error(p)
	}
	if got := calls.Load(); got != 3+1 {
		t.Errorf("the follower was called %d times, want 4 (3 large transactions and one small)", got)
	}
	if err := a.View(func(tx kv.Tx) error {
		if vals, count := values(tx); count != n || vals["v2"] != n {
			t.Errorf("after: %d keys, values %v", count, vals)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestWriterDyingAfterItsIntentIsFinishedByAnother(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	const n = 300
	fill(t, a, "m", n, "old")
	fill(t, b, "sync", 1, "s") // b has seen the old records before it follows
	var changes atomic.Int64
	if err := b.Follow(func(kv.Tx) error { return nil }, func(cs []kv.Change) { changes.Add(int64(len(cs))) }); err != nil {
		t.Fatal(err)
	}
	died := errors.New("died after its intent")
	a.hookAfterIntent = func() error { return died }
	if err := a.Update(func(tx kv.Tx) error {
		bk := tx.Bucket([]byte("m"))
		for i := range n {
			if err := bk.Put(fmt.Appendf(nil, "k%04d", i), []byte("new")); err != nil {
				return err
			}
		}
		return nil
	}); !errors.Is(err, died) {
		t.Fatalf("Update: %v, want the hook's error", err)
	}
	a.hookAfterIntent = nil

	// The intent is in etcd, the records are not.
	ctx := context.Background()
	if r, err := a.cli.Get(ctx, a.key(intentKey)); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("intent after the writer died: %v, %v", r, err)
	}

	// Another instance's write finishes it first.
	fill(t, b, "other", 1, "x")
	if r, err := a.cli.Get(ctx, a.key(intentKey)); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("intent after another writer: %v, %v", r, err)
	}
	r, err := a.cli.Get(ctx, a.key(bucketLo("m")), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.Kvs {
		if string(kv.Value) != "new" {
			t.Fatalf("%s = %q in etcd after the roll forward", kv.Key, kv.Value)
		}
	}
	if len(r.Kvs) != n {
		t.Fatalf("%d records in etcd, want %d", len(r.Kvs), n)
	}
	for _, e := range []*Engine{a, b} {
		fill(t, e, "other", 1, "y") // catch up
		if err := e.View(func(tx kv.Tx) error {
			if vals, count := values(tx); count != n || vals["new"] != n {
				t.Errorf("after the roll forward: %d keys, values %v", count, vals)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The follower got the large transaction once (n), and the three
	// small ones.
	if got := changes.Load(); got != n+3 {
		t.Errorf("the follower got %d changes, want %d", got, n+3)
	}
}

// The product binary links this package; the etcd server is for tests.
func TestEngineDoesNotLinkTheEtcdServer(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "go.etcd.io/etcd/server/") {
			t.Errorf("etcdkv links %s", p)
		}
	}
}

func TestPrefixWithoutTrailingSlashIsRefused(t *testing.T) {
	_, err := Open(context.Background(), Config{Endpoints: []string{sharedEndpoint(t)}, Prefix: "/metalhall"})
	if err == nil {
		t.Fatal("a prefix without a trailing '/' was accepted: it would hold another prefix's keys")
	}
	t.Log(err)
}

func TestManyReadsCoalesceAndStillConflict(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	const n = 200 // more point reads than MaxTxnOps compares
	fill(t, a, "m", n, "1")
	fill(t, b, "sync", 1, "x")
	runs := 0
	err := a.Update(func(tx kv.Tx) error {
		runs++
		bk := tx.Bucket([]byte("m"))
		sum := 0
		for i := range n {
			sum += len(bk.Get(fmt.Appendf(nil, "k%04d", i)))
		}
		if runs == 1 {
			// Another instance changes one key this one has read.
			if err := b.Update(func(tx kv.Tx) error {
				return tx.Bucket([]byte("m")).Put([]byte("k0150"), []byte("22"))
			}); err != nil {
				return err
			}
		}
		tb, err := tx.CreateBucketIfNotExists([]byte("total"))
		if err != nil {
			return err
		}
		return tb.Put([]byte("sum"), fmt.Append(nil, sum))
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Errorf("the update ran %d times, want 2 (once more after the conflict)", runs)
	}
	if err := a.View(func(tx kv.Tx) error {
		if got := string(tx.Bucket([]byte("total")).Get([]byte("sum"))); got != fmt.Sprint(n+1) {
			t.Errorf("sum = %s, want %d", got, n+1)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestTransactionTooLargeForOneRequestIsRefused(t *testing.T) {
	e := open(t, "")
	fill(t, e, "m", 1, "keep")
	before := e.Revision()
	err := e.Update(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		for i := range 2000 {
			if err := b.Put(fmt.Appendf(nil, "k%04d", i), make([]byte, 1024)); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, kv.ErrTooLarge) {
		t.Fatalf("a 2 MB transaction: %v, want kv.ErrTooLarge", err)
	}
	t.Log(err)
	if err := e.View(func(tx kv.Tx) error {
		if got := string(tx.Bucket([]byte("m")).Get([]byte("k0000"))); got != "keep" {
			t.Errorf("k0000 = %q after a refused transaction", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := e.cli.Get(context.Background(), e.key(intentKey)); err != nil || len(r.Kvs) != 0 || e.Revision() != before {
		t.Errorf("a refused transaction left something: %v %v, revision %d -> %d", r, err, before, e.Revision())
	}
}

func TestWatchBehindCompactionReloads(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	fill(t, a, "m", 3, "v1")
	fill(t, b, "sync", 1, "x")
	var got []string
	if err := b.Follow(func(kv.Tx) error { return nil }, func(cs []kv.Change) {
		for _, c := range cs {
			if c.Value == nil {
				got = append(got, fmt.Sprintf("%s/%s deleted", c.Bucket, c.Key))
				continue
			}
			got = append(got, fmt.Sprintf("%s/%s=%q", c.Bucket, c.Key, c.Value))
		}
	}); err != nil {
		t.Fatal(err)
	}
	// b's watch stops; what it misses is compacted away.
	b.cancel()
	<-b.done
	if err := a.Update(func(tx kv.Tx) error {
		m := tx.Bucket([]byte("m"))
		if err := m.Put([]byte("k0000"), []byte("v2")); err != nil {
			return err
		}
		if err := m.Put([]byte("k0009"), []byte("new")); err != nil {
			return err
		}
		return m.Delete([]byte("k0001"))
	}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := a.cli.Compact(ctx, a.Revision()); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	b.cancel, b.done = cancel, make(chan struct{})
	go b.watch(wctx)

	fill(t, b, "sync", 1, "y") // returns once b has caught up
	want := []string{`m/k0000="v2"`, `m/k0001 deleted`, `m/k0009="new"`, `sync/k0000="y"`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the follower got %v, want %v", got, want)
	}
	if err := b.View(func(tx kv.Tx) error {
		if got, want := contentsOf(tx.Bucket([]byte("m"))), []string{"k0000", "k0002", "k0009"}; strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("b after the reload: %v, want %v", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Writers that meet a live writer's intent finish it alongside it: the
// chunks are idempotent, and neither's writes are lost.
func TestWritersMeetingAnIntentFinishItAlongsideItsWriter(t *testing.T) {
	a := open(t, "")
	b := open(t, a.prefix)
	const n, rounds, increments = 300, 3, 30
	done := make(chan error, 1)
	go func() {
		for range increments {
			if err := b.Update(func(tx kv.Tx) error {
				c, err := tx.CreateBucketIfNotExists([]byte("c"))
				if err != nil {
					return err
				}
				return c.Put([]byte("n"), fmt.Append(nil, len(c.Get([]byte("n")))+1))
			}); err != nil && !errors.Is(err, kv.ErrConflict) {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := range rounds {
		fill(t, a, "m", n, fmt.Sprintf("v%d", i))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fill(t, a, "sync", 1, "x")
	if err := a.View(func(tx kv.Tx) error {
		if vals, count := values(tx); count != n || vals[fmt.Sprintf("v%d", rounds-1)] != n {
			t.Errorf("m: %d keys, values %v", count, vals)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := a.cli.Get(context.Background(), a.key(intentKey)); err != nil || len(r.Kvs) != 0 {
		t.Errorf("an intent is left: %v %v", r, err)
	}
}

func TestOpenOnAnUnreachableClusterIsUnavailable(t *testing.T) {
	// Nothing listens on etcd's port of a random loopback address.
	_, err := Open(context.Background(), Config{
		Endpoints:      []string{"http://" + loopbackIP() + ":2379"},
		RequestTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond,
	})
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("Open: %v, want kv.ErrUnavailable", err)
	}
	t.Log(err)
}
