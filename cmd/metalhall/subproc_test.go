package main

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// subproc is the real metalhall binary serving on loopback, as an operator
// runs it, so tests can kill it with SIGKILL and start it again on the same
// data dir.
type subproc struct {
	t    *testing.T
	bin  string
	dir  string
	url  string
	addr string
	// prov is the provisioning listener: what the machines reach.
	prov, provURL string
	flags         []string
	// listeners are the bound sockets every start inherits.
	listeners []*os.File
	cmd       *exec.Cmd
	token     string
	// env is added to the service's environment at the next start (a
	// test gate directory, see inventory/testgate.go).
	env []string
}

func newSubproc(t *testing.T, flags ...string) *subproc {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped in -short")
	}
	bin := filepath.Join(t.TempDir(), "metalhall")
	// The test gates (inventory/testgate.go) let crash tests kill the
	// service at an exact point; they act only when a test arms them.
	if out, err := exec.Command("go", "build", "-tags", "metalhall_testgates", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The binary is killed and started again on the same addresses: the
	// test binds them once and holds them, and every start gets them by
	// socket activation (activation.go), as systemd would pass them. No
	// other process can take the port between a kill and the restart.
	admin, prov := holdListener(t), holdListener(t)
	addr, provAddr := admin.Addr().String(), prov.Addr().String()
	s := &subproc{t: t, bin: bin, dir: t.TempDir(), addr: addr, url: "http://" + addr, prov: provAddr, provURL: "http://" + provAddr,
		listeners: []*os.File{listenerFile(t, admin), listenerFile(t, prov)},
		// The power-state sync would contact every enrolled BMC: tests
		// decide themselves which BMCs are talked to.
		flags: append([]string{"--log-level", "error", "--power-sync-interval", "0"}, flags...)}
	s.start()
	t.Cleanup(s.kill)
	tok, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	s.token = strings.TrimSpace(string(tok))
	return s
}

func (s *subproc) start() {
	s.t.Helper()
	// LISTEN_PID must be the service's own PID, known only after the
	// fork: a shell sets it to its own and execs the binary in its place.
	if len(s.listeners) != 2 {
		s.t.Fatal("subproc: no listeners to pass (holdListener, listenerFile)")
	}
	args := append([]string{"-c", `LISTEN_PID=$$ exec "$0" "$@"`, s.bin, "serve", "--data-dir", s.dir, "--listen", s.addr, "--provision-listen", s.prov}, s.flags...)
	s.cmd = exec.Command("/bin/sh", args...)
	s.cmd.Stderr = os.Stderr
	s.cmd.ExtraFiles = s.listeners
	s.cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=admin:provisioning")
	s.cmd.Env = append(s.cmd.Env, s.env...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for i := 0; ; i++ {
		if resp, err := http.Get(s.url + "/healthz"); err == nil {
			resp.Body.Close()
			return
		}
		if i > 500 {
			s.t.Fatal("service did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill ends the service with SIGKILL: no cleanup of any kind.
func (s *subproc) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
	}
	s.cmd = nil
}

// cli runs the CLI binary against the service.
func (s *subproc) cli(args ...string) (string, error) {
	cmd := exec.Command(s.bin, append([]string{"--server", s.url, "--token", s.token}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *subproc) mustCLI(args ...string) string {
	s.t.Helper()
	out, err := s.cli(args...)
	if err != nil {
		s.t.Fatalf("metalhall %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// holdListener binds a loopback port for the whole test.
func holdListener(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// listenerFile is the descriptor a child inherits.
func listenerFile(t *testing.T, ln *net.TCPListener) *os.File {
	t.Helper()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
