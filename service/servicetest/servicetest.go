// Package servicetest runs a metalhall service in-process for tests and
// benchmarks, through the one composition root, on loopback listeners the
// caller holds from the start: no port is picked, released and bound
// again.
package servicetest

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/metalhall/metalhall/service"
)

// Listener is a listener on a free loopback port, held from now on.
func Listener(tb testing.TB) net.Listener {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// SyncBuffer is a bytes.Buffer the service's logger and the test may use
// at once.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Running is a service running until the test ends.
type Running struct {
	*service.Service
	Dir   string      // its data dir
	Token string      // the bootstrap admin token
	Logs  *SyncBuffer // what it logged
}

// Start builds a service on a fresh data dir (or dir, when not empty) with
// both listeners on loopback, runs it, and stops and closes it when the
// test ends. edit may change the configuration first. It answers as soon
// as Start returns: its listeners are bound before New returns.
func Start(tb testing.TB, dir string, edit func(*service.Config)) *Running {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	r := &Running{Dir: dir, Logs: &SyncBuffer{}}
	standInBootenv(tb, dir)
	cfg := service.Config{DataDir: dir, AdminListener: Listener(tb), ProvisionListener: Listener(tb),
		Logger: slog.New(slog.NewTextHandler(r.Logs, nil)), Version: "test"}
	if edit != nil {
		edit(&cfg)
	}
	svc, err := service.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("service.New: %v\n%s", err, r.Logs.String())
	}
	r.Service = svc
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("service stopped with %v\n%s", err, r.Logs.String())
		}
		if err := svc.Close(); err != nil {
			tb.Errorf("closing the service: %v", err)
		}
	})
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	r.Token = strings.TrimSpace(string(tok))
	return r
}

// standInBootenv writes a boot environment that boots nothing, unless dir
// has one: the service accepts jobs that netboot only with one in place,
// and the machines of these tests never boot.
func standInBootenv(tb testing.TB, dir string) {
	tb.Helper()
	be := filepath.Join(dir, "bootenv")
	if err := os.MkdirAll(be, 0o755); err != nil {
		tb.Fatal(err)
	}
	for _, f := range []string{service.BootenvKernel, service.BootenvInitrd} {
		p := filepath.Join(be, f)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.WriteFile(p, []byte("stand-in: boots nothing\n"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}
