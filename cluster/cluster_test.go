package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/metalhall/metalhall/cluster"
	"github.com/metalhall/metalhall/cluster/clustertest"
)

// shared is one embedded etcd member for every test, started by the
// first that needs it: inside the tests, not before m.Run, whose set-up
// the member's goroutines would race.
var shared struct {
	once sync.Once
	srv  *clustertest.Server
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.Close()
	}
	os.Exit(code)
}

func sharedEtcd(t *testing.T) *clustertest.Server {
	t.Helper()
	shared.once.Do(func() { shared.srv, shared.err = clustertest.Start() })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// join makes an instance with its own client (so the test can make it
// vanish by closing the client) and a short TTL.
func join(t *testing.T, id string) (*cluster.Member, *clientv3.Client) {
	t.Helper()
	c := sharedEtcd(t).Client(t)
	m, err := cluster.Join(context.Background(), cluster.Config{Client: c, Prefix: clustertest.Prefix(t), ID: id, TTL: 2 * time.Second,
		APIURL: "https://" + id + ":8280", ProvisioningURL: "http://" + id + ":8281"})
	if err != nil {
		t.Fatalf("join %s: %v", id, err)
	}
	t.Cleanup(func() { m.Close() })
	return m, c
}

// hangGuard bounds a wait that should end; it is not a timing.
const hangGuard = time.Minute

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(hangGuard):
		t.Fatalf("%s never happened", what)
	}
}

func TestTwoMembersClaimingOneJobExactlyOneWins(t *testing.T) {
	a, _ := join(t, "a")
	b, _ := join(t, "b")
	ctx := context.Background()
	for i := range 20 {
		job := fmt.Sprintf("job-%d", i)
		var wins [2]bool
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for k, m := range []*cluster.Member{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				wins[k], errs[k] = m.Claim(ctx, job)
			}()
		}
		close(start)
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("%s: claims failed: %v, %v", job, errs[0], errs[1])
		}
		if wins[0] == wins[1] {
			t.Fatalf("%s: a won %v, b won %v: want exactly one", job, wins[0], wins[1])
		}
		winner, loser := a, b
		if wins[1] {
			winner, loser = b, a
		}
		if owner, err := a.Owner(ctx, job); err != nil || owner != winner.ID() {
			t.Fatalf("%s: owner %q (%v), want %s", job, owner, err, winner.ID())
		}
		// Claiming again: the owner still owns it, the other still does not.
		if ok, err := winner.Claim(ctx, job); !ok || err != nil {
			t.Fatalf("%s: owner's second claim: %v %v", job, ok, err)
		}
		if ok, err := loser.Claim(ctx, job); ok || err != nil {
			t.Fatalf("%s: other's second claim: %v %v", job, ok, err)
		}
		// Only the owner's release frees it.
		if err := loser.Release(ctx, job); err != nil {
			t.Fatal(err)
		}
		if owner, _ := a.Owner(ctx, job); owner != winner.ID() {
			t.Fatalf("%s: the other's release freed the job: owner %q", job, owner)
		}
	}
}

func TestOwnerThatVanishesIsTakenOverAfterTheTTL(t *testing.T) {
	a, aClient := join(t, "a")
	b, _ := join(t, "b")
	ctx := context.Background()
	if ok, err := a.Claim(ctx, "j1"); !ok || err != nil {
		t.Fatalf("a claims: %v %v", ok, err)
	}
	if ok, err := b.Claim(ctx, "j1"); ok || err != nil {
		t.Fatalf("b claims a's job: %v %v", ok, err)
	}
	// Drain what the claims' own events may have left.
	select {
	case <-b.Orphaned():
	default:
	}
	lost := a.Lost()
	// a vanishes: its client goes without revoking anything, so its lease
	// lives on in etcd until the TTL runs out.
	aClient.Close()
	waitClosed(t, lost, "a's Lost")
	for {
		select {
		case <-b.Orphaned():
		case <-time.After(hangGuard):
			t.Fatal("b was never told of an orphaned job")
		}
		ok, err := b.Claim(ctx, "j1")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
	}
	if owner, _ := b.Owner(ctx, "j1"); owner != "b" {
		t.Fatalf("owner %q after takeover, want b", owner)
	}
	ms, err := b.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].ID != "b" {
		t.Fatalf("members after a vanished: %+v %v", ms, err)
	}
}

func TestLostClosesWhenTheLeaseIsRevokedAndASessionComesBack(t *testing.T) {
	a, _ := join(t, "a")
	ctx := context.Background()
	if ok, err := a.Claim(ctx, "j1"); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	// Find a's lease through its registration and revoke it, as etcd does
	// when the lease expires.
	admin := sharedEtcd(t).Client(t)
	resp, err := admin.Get(ctx, clustertest.Prefix(t)+"members/a")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("a's registration: %v %v", resp, err)
	}
	lost := a.Lost()
	if _, err := admin.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, lost, "Lost after the revoke")
	if owner, _ := a.Owner(ctx, "j1"); owner != "" {
		t.Fatalf("the claim outlived its lease: owner %q", owner)
	}
	// The member gets a new session by itself and may claim again; the
	// next Lost is a new, open channel.
	for {
		ok, err := a.Claim(ctx, "j1")
		if err == nil && ok {
			break
		}
		if err != nil && !errors.Is(err, cluster.ErrNoSession) {
			t.Fatal(err)
		}
		// The revoke's deletion and the new session each fire Orphaned.
		select {
		case <-a.Orphaned():
		case <-time.After(hangGuard):
			t.Fatal("no new session")
		}
	}
	select {
	case <-a.Lost():
		t.Fatal("the new session's Lost is already closed")
	default:
	}
	ms, _ := a.Members(ctx)
	if len(ms) != 1 || ms[0].ID != "a" {
		t.Fatalf("registration not renewed with the session: %+v", ms)
	}
}

func TestMembersListsTheLiveInstancesAndCloseLeaves(t *testing.T) {
	a, _ := join(t, "a")
	b, _ := join(t, "b")
	ctx := context.Background()
	ms, err := a.Members(ctx)
	if err != nil || len(ms) != 2 || ms[0].ID != "a" || ms[1].ID != "b" || ms[1].ProvisioningURL != "http://b:8281" || ms[0].Started.IsZero() {
		t.Fatalf("members: %+v %v", ms, err)
	}
	urls, err := a.PeerProvisioningURLs(ctx)
	if err != nil || len(urls) != 1 || urls[0] != "http://b:8281" {
		t.Fatalf("a's peers: %v %v", urls, err)
	}
	if ok, _ := b.Claim(ctx, "j1"); !ok {
		t.Fatal("b's claim refused")
	}
	// Close revokes at once: no TTL to wait for.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if ms, _ := a.Members(ctx); len(ms) != 1 {
		t.Fatalf("members after b left: %+v", ms)
	}
	if owner, _ := a.Owner(ctx, "j1"); owner != "" {
		t.Fatalf("b's claim outlived its Close: %q", owner)
	}
	// a's view of the owners comes from its watch, which may not have
	// seen the deletion yet (Claim then says no without asking etcd);
	// the deletion's event wakes Orphaned.
	for {
		ok, err := a.Claim(ctx, "j1")
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		select {
		case <-a.Orphaned():
		case <-time.After(hangGuard):
			t.Fatal("a could not claim the job b left")
		}
	}
}

func TestATakenIDIsRefused(t *testing.T) {
	join(t, "a")
	c := sharedEtcd(t).Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := cluster.Join(ctx, cluster.Config{Client: c, Prefix: clustertest.Prefix(t), ID: "a", TTL: 2 * time.Second})
	if !errors.Is(err, cluster.ErrIDInUse) {
		t.Fatalf("second instance with ID a: %v", err)
	}
	for _, bad := range []string{"a/b", "with space"} {
		if _, err := cluster.Join(ctx, cluster.Config{Client: c, Prefix: clustertest.Prefix(t), ID: bad}); err == nil {
			t.Errorf("ID %q accepted", bad)
		}
	}
}

func TestTheClusterPrefixIsBesideTheInventorysNotUnderIt(t *testing.T) {
	for inv, want := range map[string]string{"/metalhall/": cluster.DefaultPrefix, "/site-a/": "/site-a-cluster/", "/x": "/x-cluster/"} {
		got := cluster.PrefixFor(inv)
		if got != want {
			t.Errorf("PrefixFor(%q) = %q, want %q", inv, got, want)
		}
		// Outside the range an inventory's whole-prefix compare covers
		// (the inventory ends its prefix with "/" when it is given none).
		if !strings.HasSuffix(inv, "/") {
			inv += "/"
		}
		if end := clientv3.GetPrefixRangeEnd(inv); got >= inv && got < end {
			t.Errorf("PrefixFor(%q) = %q lies in the inventory's range [%q, %q)", inv, got, inv, end)
		}
	}
}
