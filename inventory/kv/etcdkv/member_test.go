package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// One member of three killed — whichever: the one the client talks to,
// the leader — changes nothing visible: the next write commits and is
// seen, within the request timeout.
func TestOneMemberOfThreeKilledChangesNothing(t *testing.T) {
	c := startCluster(t, 3)
	e, err := openRetrying(t, Config{Endpoints: c.Endpoints(), RequestTimeout: 5 * time.Second, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
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
		t.Fatal(err)
	}
	for i := range 3 {
		c.Kill(i)
		start := time.Now()
		if err := put(fmt.Sprintf("without-%d", i)); err != nil {
			t.Fatalf("write with member %d of 3 killed: %v", i+1, err)
		}
		t.Logf("write with member %d killed: %v", i+1, time.Since(start).Round(time.Millisecond))
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitHealthy(context.Background(), -1); err != nil {
			t.Fatal(err)
		}
	}
}

// openRetrying opens an engine on a cluster that may still be electing
// its first leader (Open fails as unavailable until then).
func openRetrying(t *testing.T, cfg Config) (*Engine, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := Open(context.Background(), cfg)
		if err == nil || !errors.Is(err, kv.ErrUnavailable) || time.Now().After(deadline) {
			return e, err
		}
	}
}
