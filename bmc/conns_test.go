package bmc

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/redfish"
	dto "github.com/prometheus/client_model/go"
)

// countingListener is the BMC's side of the connections: it counts and
// keeps every connection it accepts, so a test can see how many the
// Controller opened and can close them as a BMC whose keep-alive timer
// ran out does.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// hangUp closes every connection accepted so far, from the BMC's side.
func (l *countingListener) hangUp() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
	l.conns = nil
}

// connBMC is a lab/redfish emulator on a loopback listener that counts
// connections, and the logins it was asked for.
type connBMC struct {
	*redfish.Server
	ln     *countingListener
	ep     Endpoint
	logins atomic.Int64
}

func startConnBMC(t *testing.T, cfg redfish.Config) *connBMC {
	t.Helper()
	cfg.Username, cfg.Password = "admin", "s3cret"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &connBMC{Server: redfish.NewServer(cfg), ln: &countingListener{Listener: ln}}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/Sessions") {
			b.logins.Add(1)
		}
		b.ServeHTTP(w, r)
	}))
	ts.Listener = b.ln
	ts.Start()
	t.Cleanup(ts.Close)
	b.ep = Endpoint{Address: "http://" + ln.Addr().String(), Protocol: Redfish, Username: cfg.Username, Password: cfg.Password}
	return b
}

func TestRedfishOperationsOnOneBMCShareOneConnection(t *testing.T) {
	b := startConnBMC(t, redfish.Config{})
	c := testController(t, Config{})
	t.Cleanup(c.Close)
	ctx := ctxT(t, 30*time.Second)

	if _, err := c.PowerState(ctx, b.ep); err != nil {
		t.Fatal(err)
	}
	logins := b.logins.Load()
	if err := c.SetBootDevice(ctx, b.ep, BootOptions{Device: BootPXE, UEFI: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
		t.Fatal(err)
	}
	if _, err := c.EventLog(ctx, b.ep); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := c.PowerState(ctx, b.ep); err != nil {
			t.Fatal(err)
		}
	}
	// One connection, give or take a spare: Go's Transport dials one when
	// a request comes before the previous answer's connection is back in
	// the pool, and keeps whichever is idle first. Without reuse across
	// operations it takes at least one per operation (8), without reuse
	// at all one per request.
	if n := b.ln.accepted.Load(); n > 4 {
		t.Fatalf("the BMC accepted %d connections for 8 operations (%d requests), want 1 (a few at most)", n, b.Requests())
	}
	var m dto.Metric
	if err := c.metrics.dials.Write(&m); err != nil {
		t.Fatal(err)
	}
	if n := m.GetCounter().GetValue(); n != float64(b.ln.accepted.Load()) {
		t.Fatalf("metalhall_bmc_connections_opened_total = %v, the BMC accepted %d", n, b.ln.accepted.Load())
	}
	// Only the connection is shared: every operation still logged in
	// with a session of its own and logged out.
	if n := b.logins.Load() - logins; n != 7 {
		t.Fatalf("%d logins for the 7 operations after the first, want 7", n)
	}
	if n := b.Sessions(); n != 0 {
		t.Fatalf("%d sessions left open", n)
	}
}

func TestRedfishBMCThatClosedIdleConnectionsPowerCyclesOnce(t *testing.T) {
	b := startConnBMC(t, redfish.Config{PowerOn: true})
	c := testController(t, Config{Retries: -1}) // a retry must not hide a failure
	t.Cleanup(c.Close)
	ctx := ctxT(t, 60*time.Second)

	if _, err := c.PowerState(ctx, b.ep); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		// The BMC's keep-alive ran out since the last operation: it
		// closed its side. The Controller may not have noticed yet when
		// the next operation picks a connection.
		b.ln.hangUp()
		before := len(b.Resets())
		if err := c.SetPower(ctx, b.ep, ActionCycle); err != nil {
			t.Fatalf("cycle %d after the BMC closed its connections: %v", i+1, err)
		}
		if got := b.Resets()[before:]; len(got) != 1 {
			t.Fatalf("cycle %d: the BMC got %d resets %v, want exactly 1", i+1, len(got), got)
		}
	}
	if n := b.Sessions(); n != 0 {
		t.Fatalf("%d sessions left open", n)
	}
}

func TestRedfishFailedOperationClosesItsBMCsConnectionsOnly(t *testing.T) {
	bad := startConnBMC(t, redfish.Config{})
	good := startConnBMC(t, redfish.Config{})
	c := testController(t, Config{Retries: -1})
	t.Cleanup(c.Close)
	ctx := ctxT(t, 30*time.Second)

	for _, b := range []*connBMC{bad, good} {
		if _, err := c.PowerState(ctx, b.ep); err != nil {
			t.Fatal(err)
		}
	}
	kept := c.conns.of(good.ep.lockKey())
	if len(kept) == 0 || len(c.conns.of(bad.ep.lockKey())) == 0 {
		t.Fatal("no connection kept after an operation")
	}
	bad.SetRefuse(true) // 503, as a BMC whose web server restarts
	if _, err := c.PowerState(ctx, bad.ep); err == nil {
		t.Fatal("PowerState of a BMC answering 503 succeeded")
	}
	if n := len(c.conns.of(bad.ep.lockKey())); n != 0 {
		t.Fatalf("%d connections to the failing BMC still open after its operation failed", n)
	}
	now := c.conns.of(good.ep.lockKey())
	for _, tc := range kept {
		if !slices.Contains(now, tc) {
			t.Fatal("another BMC's failure closed this BMC's connection")
		}
	}
	bad.SetRefuse(false)
	for _, b := range []*connBMC{bad, good} {
		if _, err := c.PowerState(ctx, b.ep); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRedfishControllerCloseLeavesNoConnectionOrGoroutine(t *testing.T) {
	const n = 20
	f, err := redfish.StartFleet("127.0.0.1", n, 0, func(int) redfish.Config {
		return redfish.Config{Username: "u", Password: "p"}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	baseG := runtime.NumGoroutine()
	baseFD := openFDs(t)

	c := testController(t, Config{MaxConcurrent: 8})
	ctx := ctxT(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, b := range f.BMCs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep := Endpoint{Address: "http://" + b.Addr, Protocol: Redfish, Username: "u", Password: "p"}
			errs <- c.SetPower(ctx, ep, ActionOn)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if open := c.conns.size(); open < n {
		t.Fatalf("%d connections open after one operation on each of %d BMCs, want one each kept", open, n)
	}
	// The fleet keeps running: only the Controller's Close may end them.
	c.Close()
	if open := c.conns.size(); open != 0 {
		t.Fatalf("%d connections open after Close", open)
	}
	waitUntil(t, "the connections' goroutines and file descriptors are gone", func() bool {
		return runtime.NumGoroutine() <= baseG && openFDs(t) <= baseFD
	})
	ep := Endpoint{Address: "http://" + f.BMCs[0].Addr, Protocol: Redfish, Username: "u", Password: "p"}
	if _, err := c.PowerState(ctx, ep); !errors.Is(err, errClosed) {
		t.Fatalf("PowerState after Close: %v, want %v", err, errClosed)
	}
	if open := c.conns.size(); open != 0 {
		t.Fatalf("%d connections open after an operation after Close", open)
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}
