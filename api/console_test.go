package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// quietBMC's consoles print nothing until closed, and refuse a second
// operator as the real one does.
type quietBMC struct {
	nopBMC
	mu   sync.Mutex
	open map[string]bool
}

type quietConsole struct {
	done chan struct{}
	once sync.Once
	end  func()
}

func (c *quietConsole) Read(p []byte) (int, error) { <-c.done; return 0, io.EOF }
func (c *quietConsole) Write(p []byte) (int, error) {
	return len(p), nil
}
func (c *quietConsole) Close() error { c.once.Do(func() { close(c.done); c.end() }); return nil }

func (b *quietBMC) AttachConsole(ctx context.Context, m *inventory.Machine, holder string, force bool) (io.ReadWriteCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open[m.Name] && !force {
		return nil, &provisioner.ConsoleBusyError{Machine: m.Name, Holder: "tok-1", Since: time.Now()}
	}
	b.open[m.Name] = true
	return &quietConsole{done: make(chan struct{}), end: func() {
		b.mu.Lock()
		delete(b.open, m.Name)
		b.mu.Unlock()
	}}, nil
}

func TestConsoleSessionsEndWhenIdleAndRefuseASecondOperator(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var hs *httptest.Server
	serve := func(idle time.Duration) {
		srv := must(New(Config{Store: f.inv, Sealer: f.sealer, BMC: &quietBMC{open: map[string]bool{}}, ConsoleIdle: idle}))
		hs = httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
	}
	serve(0) // the default: no session here goes idle
	attach := func(who, query string, body io.Reader) *http.Response {
		t.Helper()
		req := must(http.NewRequestWithContext(ctx, "POST", hs.URL+"/api/v1/machines/ma/console"+query, body))
		req.Header.Set("Authorization", "Bearer "+f.tokens[who])
		req.Header.Set("Expect", "100-continue")
		return must(http.DefaultClient.Do(req))
	}
	// The keyboard stays open and nothing is typed or printed.
	kb, keys := io.Pipe()
	defer keys.Close()
	first := attach("technician", "", kb)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("attach: %d", first.StatusCode)
	}

	// While it is open, a second operator is refused at once (its body is
	// still open: the refusal must not wait for it) and told what to do.
	kb2, keys2 := io.Pipe()
	defer keys2.Close()
	second := attach("admin", "", kb2)
	msg, _ := io.ReadAll(second.Body)
	if second.StatusCode != http.StatusConflict || !strings.Contains(string(msg), "console_busy") || !strings.Contains(string(msg), "--force") {
		t.Fatalf("a second operator: %d %s", second.StatusCode, msg)
	}
	// A tenant may not take over, even its own machine's console.
	kb3, keys3 := io.Pipe()
	defer keys3.Close()
	if r := attach("tenant-a", "?force=true", kb3); r.StatusCode != http.StatusForbidden {
		t.Fatalf("tenant --force: %d", r.StatusCode)
	}

	// The operator leaves: the keyboard closes, the session ends.
	keys.Close()
	if screen, _ := io.ReadAll(first.Body); strings.Contains(string(screen), "ended") {
		t.Fatalf("a session the operator left says %q", screen)
	}

	// An idle session ends by itself and says why.
	serve(200 * time.Millisecond)
	kb4, keys4 := io.Pipe()
	defer keys4.Close()
	idle := attach("technician", "", kb4)
	screen, _ := io.ReadAll(idle.Body)
	if !strings.Contains(string(screen), "console session ended: idle for 200ms") {
		t.Fatalf("the idle session ended with %q", screen)
	}
	evs := must(f.inv.Events(ctx, inventory.EventFilter{Subject: "machine/ma"}))
	found := false
	for _, e := range evs {
		found = found || e.Action == "machine.console" && e.Outcome == "ok" && strings.Contains(e.Detail, "idle for 200ms")
	}
	if !found {
		t.Fatalf("no audit record of the idle session's end: %+v", evs)
	}
}
