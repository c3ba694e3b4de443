package etcdkv

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/kvtest"
	"github.com/metalhall/metalhall/lab/etcdcluster"
)

// startCluster starts a real etcd cluster of n members (Debian's
// etcd-server, lab/etcdcluster); it is killed when the test ends, and its
// members' last log lines are shown if the test failed.
func startCluster(t *testing.T, n int) *etcdcluster.Cluster {
	t.Helper()
	if err := etcdcluster.Available(); err != nil {
		t.Skip(err, ": this test runs a real etcd cluster")
	}
	dir := t.TempDir()
	c, err := etcdcluster.Start(t.Context(), etcdcluster.Config{Members: n, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for i := range n {
				if b, err := os.ReadFile(c.Log(i)); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("member %d's last log lines:\n%s", i+1, strings.Join(lines[max(0, len(lines)-10):], "\n"))
				}
			}
		}
	})
	return c
}

func TestQuorumLossRefusesWritesAndViewsKeepAnswering(t *testing.T) {
	c := startCluster(t, 3)
	endpoints := c.Endpoints()
	const timeout = 2 * time.Second
	cfg := Config{Endpoints: endpoints, RequestTimeout: timeout, DialTimeout: timeout}

	// The members elect a leader in about a second; until then Open
	// fails as unavailable.
	e, err := openRetrying(t, cfg)
	if err != nil {
		t.Fatalf("Open on a starting cluster: %v", err)
	}
	defer e.Close()
	put := func(key string) error {
		return e.Update(func(tx kv.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("m"))
			if err != nil {
				return err
			}
			return b.Put([]byte(key), []byte("v"))
		})
	}
	if err := put("before"); err != nil {
		t.Fatalf("write on a healthy cluster: %v", err)
	}

	c.Kill(1)
	c.Kill(2)
	start := time.Now()
	err = put("during")
	t.Logf("write without quorum: after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("write without quorum: %v, want kv.ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), c.Endpoint(0)) {
		t.Errorf("the error does not name the cluster: %v", err)
	}
	if err := e.View(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("m"))
		if b == nil || b.Get([]byte("before")) == nil {
			t.Errorf("a view without quorum lost what was committed before")
		}
		if b != nil && b.Get([]byte("during")) != nil {
			t.Errorf("a refused write is visible")
		}
		return nil
	}); err != nil {
		t.Fatalf("view without quorum: %v", err)
	}

	for _, i := range []int{1, 2} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	// Writes go through again once the members have a leader; until then
	// they are refused the same way.
	for attempt := 1; ; attempt++ {
		err := put("after")
		if err == nil {
			t.Logf("write after the restart: attempt %d", attempt)
			break
		}
		if !errors.Is(err, kv.ErrUnavailable) || attempt == 15 {
			t.Fatalf("write after the restart, attempt %d: %v", attempt, err)
		}
	}
	// A new instance catches up from the cluster.
	f, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The refused write may still have been applied: the surviving
	// member had it in its log, and if it leads again it commits it (the
	// error says so). Either way both instances agree.
	fill(t, f, "sync", 1, "x")
	fill(t, e, "sync", 1, "y")
	var seen [2][]string
	for i, x := range []*Engine{e, f} {
		if err := x.View(func(tx kv.Tx) error {
			b := tx.Bucket([]byte("m"))
			if b == nil || b.Get([]byte("before")) == nil || b.Get([]byte("after")) == nil {
				t.Errorf("after the restart: %v", contentsOf(b))
			}
			seen[i] = contentsOf(b)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Join(seen[0], ",") != strings.Join(seen[1], ",") {
		t.Errorf("the instances disagree after the restart: %v and %v", seen[0], seen[1])
	}
	t.Logf("after the restart: %v", seen[0])
}

func contentsOf(b kv.Bucket) []string {
	if b == nil {
		return nil
	}
	var out []string
	b.ForEach(func(k, v []byte) error { out = append(out, string(k)); return nil })
	return out
}

// The suite against the etcd the lead's end-to-end tests run (Debian's
// 3.4): the engine uses nothing newer than its API (range compares,
// progress requests).
func TestConformanceOnDebianEtcd(t *testing.T) {
	ep := startCluster(t, 1).Endpoint(0)
	kvtest.RunWithPeers(t,
		func(t *testing.T) kv.Engine { return openAt(t, ep, "") },
		func(t *testing.T, e kv.Engine) kv.Engine { return openAt(t, ep, e.(*Engine).prefix) })
}
