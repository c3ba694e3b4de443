// Package etcdcluster runs a real etcd cluster (Debian's etcd-server) of a
// few members on loopback for tests and benchmarks: start, kill a member,
// restart it, lose quorum on purpose.
//
// Each cluster gets its own loopback address block (127.X.Y.1..N, fixed
// ports 2379/2380) instead of free ports picked and released: nothing can
// take a member's port between the pick and etcd's bind, and a killed
// member restarts on the same address.
package etcdcluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary is Debian's etcd server.
const Binary = "/usr/bin/etcd"

// Available says why a cluster cannot run here, or nil.
func Available() error {
	if _, err := os.Stat(Binary); err != nil {
		return fmt.Errorf("etcd not found at %s (Debian package etcd-server)", Binary)
	}
	return nil
}

// Config shapes a cluster.
type Config struct {
	Members int    // default 3
	Dir     string // data dirs and logs go under it (required)
	// Fast election timings suit tests: 50 ms heartbeats, 500 ms
	// elections. Zero keeps them.
	HeartbeatMS, ElectionMS int
	// Command makes a member's process (default exec.Command); Run runs a
	// health check where the members are (default: here). A cluster
	// inside a network namespace passes the namespace's (lab/netns).
	Command func(name string, args ...string) *exec.Cmd
	Run     func(fn func() error) error
}

// Cluster is a running cluster.
type Cluster struct {
	cfg     Config
	base    [3]byte // 127.base[0].base[1].(member)
	mu      sync.Mutex
	members []*member
}

type member struct {
	name, dir, log string
	addr           string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// Start starts every member and waits until the cluster has a leader.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		return nil, errors.New("etcdcluster: Config.Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdcluster: %w", err)
	}
	if cfg.Members <= 0 {
		cfg.Members = 3
	}
	if cfg.HeartbeatMS == 0 {
		cfg.HeartbeatMS, cfg.ElectionMS = 50, 500
	}
	if cfg.Command == nil {
		cfg.Command = exec.Command
	}
	if cfg.Run == nil {
		cfg.Run = func(fn func() error) error { return fn() }
	}
	c := &Cluster{cfg: cfg}
	if _, err := rand.Read(c.base[:2]); err != nil {
		return nil, err
	}
	c.base[0] = 10 + c.base[0]%240 // 127.10–249.x.y: away from 127.0.0.x
	for i := range cfg.Members {
		name := fmt.Sprintf("m%d", i+1)
		c.members = append(c.members, &member{
			name: name, dir: filepath.Join(cfg.Dir, name), log: filepath.Join(cfg.Dir, name+".log"),
			addr: fmt.Sprintf("127.%d.%d.%d", c.base[0], c.base[1], i+1),
		})
	}
	for i := range c.members {
		if err := c.Restart(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx, -1); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Endpoints are the client URLs of every member.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = "http://" + m.addr + ":2379"
	}
	return out
}

// Endpoint is member i's client URL.
func (c *Cluster) Endpoint(i int) string { return c.Endpoints()[i] }

// Log is member i's log file.
func (c *Cluster) Log(i int) string { return c.members[i].log }

func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.members {
		parts = append(parts, m.name+"=http://"+m.addr+":2380")
	}
	return strings.Join(parts, ",")
}

// Restart starts member i (again, on its data dir) if it is not running.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd != nil {
		select {
		case <-m.exited:
		default:
			return nil // running
		}
	}
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := c.cfg.Command(Binary,
		"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", "http://"+m.addr+":2379", "--advertise-client-urls", "http://"+m.addr+":2379",
		"--listen-peer-urls", "http://"+m.addr+":2380", "--initial-advertise-peer-urls", "http://"+m.addr+":2380",
		"--initial-cluster", c.initialCluster(), "--initial-cluster-state", "new",
		"--initial-cluster-token", fmt.Sprintf("metalhall-test-%d-%d", c.base[0], c.base[1]),
		"--heartbeat-interval", fmt.Sprint(c.cfg.HeartbeatMS), "--election-timeout", fmt.Sprint(c.cfg.ElectionMS),
		"--logger", "zap", "--log-outputs", "stderr")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (a test's Ctrl-C reaches the test, which
	// kills the members). No Pdeathsig: it fires when the forking OS
	// thread exits, and Go ends threads — those of netns.Run, here — long
	// before the test does.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("etcd member %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	m.cmd, m.exited = cmd, exited
	return nil
}

// Kill kills member i with SIGKILL and waits until it is gone.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

// Running says whether member i's process is alive.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// WaitHealthy waits until member i (or, with i < 0, every running member)
// answers /health with "true": the member is part of a cluster with a
// leader.
func (c *Cluster) WaitHealthy(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for j := range c.members {
		if (i >= 0 && j != i) || !c.Running(j) {
			continue
		}
		for {
			if c.healthy(ctx, j) {
				break
			}
			if !c.Running(j) {
				return fmt.Errorf("etcd member %s exited; see %s", c.members[j].name, c.members[j].log)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("etcd member %s not healthy: %w; see %s", c.members[j].name, ctx.Err(), c.members[j].log)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// healthy asks member i's /health over a socket opened where the members
// run (cfg.Run: a plain dial, since an HTTP client dials on threads of
// its own).
func (c *Cluster) healthy(ctx context.Context, i int) bool {
	ok := false
	c.cfg.Run(func() error {
		d := net.Dialer{Timeout: time.Second}
		conn, err := d.DialContext(ctx, "tcp", c.members[i].addr+":2379")
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(conn, "GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		ok = resp.StatusCode == 200 && strings.Contains(string(body), `"true"`)
		return nil
	})
	return ok
}

// Close kills every member. The data dirs stay under Config.Dir (the
// caller's temp dir).
func (c *Cluster) Close() {
	for i := range c.members {
		c.Kill(i)
	}
}
