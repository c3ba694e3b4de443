package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/redfish"
)

// lockedBuffer is a bytes.Buffer two goroutines may use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until cond holds or ctx ends (no timing is asserted:
// the deadline only bounds a test that would otherwise hang).
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// consoleSession is `metalhall machine console` running with a keyboard
// the test types on.
type consoleSession struct {
	keys      *io.PipeWriter
	out, errs *lockedBuffer
	code      chan int
}

func (r cliRunner) console(ctx context.Context, args ...string) *consoleSession {
	kb, keys := io.Pipe()
	s := &consoleSession{keys: keys, out: &lockedBuffer{}, errs: &lockedBuffer{}, code: make(chan int, 1)}
	full := append([]string{"metalhall", "--server", r.server, "--token", r.token, "machine", "console"}, args...)
	go func() { s.code <- runWithInput(ctx, full, kb, s.out, s.errs) }()
	return s
}

func (s *consoleSession) exit(t *testing.T, ctx context.Context) int {
	t.Helper()
	select {
	case c := <-s.code:
		return c
	case <-ctx.Done():
		t.Fatalf("the console command did not end; stderr %q", s.errs.String())
		return -1
	}
}

// TestTechnicianAttachesToAMachinesSerialConsole runs the CLI against the
// service and a real IPMI BMC (ipmi_sim, whose Serial-over-LAN is wired to
// a loopback socket standing for the machine's serial port): what the
// machine prints reaches the operator, what the operator types reaches the
// machine, a second operator is refused, staff take over, ~. leaves, and
// the audit trail has every session. A Redfish machine has no console,
// and both commands say so.
func TestTechnicianAttachesToAMachinesSerialConsole(t *testing.T) {
	serial := ipmisim.NewSerialPort(t)
	sim := ipmisim.ForTest(t, ipmisim.Config{User: "admin", Password: "ipmi-pw", SOL: serial.Device()})
	hs := httptest.NewServer(redfish.NewServer(redfish.Config{Username: "root", Password: "rf-pw"}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	c.ok("site", "create", "s1")
	c.ok("hall", "create", "--site", "s1", "h1")
	c.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000")
	c.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1")
	dir := t.TempDir()
	pw := func(name, secret string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(secret+"\n"), 0o600)
		return p
	}
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:00:bb:01", "--bmc-address", sim.Addr(),
		"--bmc-protocol", "ipmi", "--bmc-user", "admin", "--bmc-password-file", pw("ipmi", "ipmi-pw"), "ipmi-1")
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "2", "--mac", "52:54:00:00:bb:02", "--bmc-address", hs.URL,
		"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("rf", "rf-pw"), "rf-1")

	// Redfish: no console, said plainly by both commands.
	for _, args := range [][]string{{"machine", "console", "rf-1"}, {"machine", "console-log", "rf-1"}} {
		code, out, errs := c.run(args...)
		if code != exitConflict || out != "" || !strings.Contains(errs, "Serial-over-LAN") || !strings.Contains(errs, "redfish BMC") {
			t.Fatalf("%v on a Redfish machine: exit %d, %q / %q", args, code, out, errs)
		}
	}

	// The first operator attaches; the machine prints, the operator types.
	first := c.console(ctx, "ipmi-1")
	waitFor(t, ctx, "the first session", func() bool { return strings.Contains(first.errs.String(), "[connected to ipmi-1") })
	machine, err := serial.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := machine.Write([]byte("metalhall-agent: inspecting gpu-a01-07\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the machine's output on the operator's screen", func() bool {
		return strings.Contains(first.out.String(), "metalhall-agent: inspecting gpu-a01-07")
	})
	if _, err := first.keys.Write([]byte("uname -a\r~~x\r")); err != nil {
		t.Fatal(err)
	}
	var typed bytes.Buffer
	buf := make([]byte, 256)
	for !strings.Contains(typed.String(), "~x\r") {
		machine.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := machine.Read(buf)
		typed.Write(buf[:n])
		if err != nil {
			t.Fatalf("the machine read %q, then %v", typed.String(), err)
		}
	}
	if typed.String() != "uname -a\r~x\r" {
		t.Fatalf("the machine read %q, want %q", typed.String(), "uname -a\r~x\r")
	}

	// A second operator is refused, with what to do.
	code, out, errs := c.run("machine", "console", "ipmi-1")
	if code != exitConflict || out != "" || !strings.Contains(errs, "already open") || !strings.Contains(errs, "--force") {
		t.Fatalf("a second console: exit %d %q / %q", code, out, errs)
	}
	// Staff take it over; the first operator is told and let go.
	second := c.console(ctx, "--force", "ipmi-1")
	waitFor(t, ctx, "the takeover", func() bool { return strings.Contains(second.errs.String(), "[connected to ipmi-1") })
	if code := first.exit(t, ctx); code != 0 {
		t.Fatalf("the first session after the takeover: exit %d, %s", code, first.errs.String())
	}
	if !strings.Contains(first.out.String(), "console taken over by token") {
		t.Fatalf("the first operator was not told of the takeover: %q", first.out.String())
	}
	if _, err := machine.Write([]byte("login: ")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "output on the new session", func() bool { return strings.Contains(second.out.String(), "login: ") })
	// ~. at the start of a line leaves.
	second.keys.Write([]byte("\r~."))
	if code := second.exit(t, ctx); code != 0 {
		t.Fatalf("leaving with ~.: exit %d, %s", code, second.errs.String())
	}

	// Every session is in the audit trail: who, start, end, bytes.
	var events []struct{ Actor, Action, Outcome, Detail string }
	if err := json.Unmarshal([]byte(c.ok("audit", "list", "-o", "json")), &events); err != nil {
		t.Fatal(err)
	}
	started, ended := 0, 0
	for _, e := range events {
		if e.Action != "machine.console" || e.Actor == "" {
			continue
		}
		switch {
		case e.Outcome == "started":
			started++
		case e.Outcome == "ok" && strings.Contains(e.Detail, "bytes from the machine"):
			ended++
		}
	}
	if started != 2 || ended != 2 {
		t.Fatalf("audit trail: %d sessions started, %d ended; want 2 and 2: %+v", started, ended, events)
	}
}
