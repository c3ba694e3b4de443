package etcdkv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
	"github.com/metalhall/metalhall/inventory/kv/kvtest"
)

// member is one process of a real etcd cluster (Debian's etcd-server).
type member struct {
	name, ip, dir string
	cmd           *exec.Cmd
	exited        chan struct{}
}

func (m *member) clientURL() string { return "http://" + m.ip + ":2379" }
func (m *member) peerURL() string   { return "http://" + m.ip + ":2380" }

// start runs the member; a member with a data directory rejoins with it.
func (m *member) start(t *testing.T, bin, cluster string) {
	t.Helper()
	log, err := os.OpenFile(filepath.Join(m.dir, "log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	m.cmd = exec.Command(bin,
		"--name", m.name, "--data-dir", filepath.Join(m.dir, "data"),
		"--listen-client-urls", m.clientURL(), "--advertise-client-urls", m.clientURL(),
		"--listen-peer-urls", m.peerURL(), "--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", cluster, "--initial-cluster-state", "new",
		"--initial-cluster-token", "metalhall-test",
		// Small timeouts keep the test short: quorum is lost and found
		// again in about a second.
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-outputs", "stderr")
	m.cmd.Stdout, m.cmd.Stderr = log, log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", m.name, err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(m.cmd, m.exited)
}

// kill stops the member at once and waits for it to be gone.
func (m *member) kill() {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
	m.cmd = nil
}

// startCluster starts n members on loopback; all are killed when the
// test ends, whatever happened.
func startCluster(t *testing.T, bin string, n int) []*member {
	t.Helper()
	ms := make([]*member, n)
	var peers []string
	for i := range ms {
		ms[i] = &member{name: fmt.Sprintf("m%d", i), ip: loopbackIP(), dir: t.TempDir()}
		peers = append(peers, ms[i].name+"="+ms[i].peerURL())
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.kill()
		}
		if t.Failed() {
			for _, m := range ms {
				if b, err := os.ReadFile(filepath.Join(m.dir, "log")); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("%s's last log lines:\n%s", m.name, strings.Join(lines[max(0, len(lines)-10):], "\n"))
				}
			}
		}
	})
	cluster := strings.Join(peers, ",")
	for _, m := range ms {
		m.start(t, bin, cluster)
	}
	return ms
}

func TestQuorumLossRefusesWritesAndViewsKeepAnswering(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (Debian package etcd-server; make deps installs it): this test runs a real three-member cluster")
	}
	ms := startCluster(t, bin, 3)
	cluster := strings.Join([]string{ms[0].name + "=" + ms[0].peerURL(), ms[1].name + "=" + ms[1].peerURL(), ms[2].name + "=" + ms[2].peerURL()}, ",")
	var endpoints []string
	for _, m := range ms {
		endpoints = append(endpoints, m.clientURL())
	}
	const timeout = 2 * time.Second
	cfg := Config{Endpoints: endpoints, RequestTimeout: timeout, DialTimeout: timeout}

	// The members elect a leader in about a second; until then Open
	// fails as unavailable.
	var e *Engine
	for deadline := time.Now().Add(30 * time.Second); e == nil; {
		e, err = Open(context.Background(), cfg)
		if err != nil {
			if !errors.Is(err, kv.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("Open on a starting cluster: %v", err)
			}
			continue
		}
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

	ms[1].kill()
	ms[2].kill()
	start := time.Now()
	err = put("during")
	t.Logf("write without quorum: after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, kv.ErrUnavailable) {
		t.Fatalf("write without quorum: %v, want kv.ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), ms[0].clientURL()) {
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

	ms[1].start(t, bin, cluster)
	ms[2].start(t, bin, cluster)
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
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (Debian package etcd-server; make deps installs it): this test runs the suite on it")
	}
	ep := startCluster(t, bin, 1)[0].clientURL()
	kvtest.RunWithPeers(t,
		func(t *testing.T) kv.Engine { return openAt(t, ep, "") },
		func(t *testing.T, e kv.Engine) kv.Engine { return openAt(t, ep, e.(*Engine).prefix) })
}
