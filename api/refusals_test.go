package api

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// Requests without a valid token cost a counter, not a database write:
// anything on the provisioning network can send them.
func TestTenThousandUnauthenticatedRequestsLeaveTheDatabaseAlone(t *testing.T) {
	f := newFixture(t)
	// One record for the whole run, however slow the machine.
	f.srv.refused.every = time.Hour
	dbSize := func() int64 {
		fi, err := os.Stat(f.inv.Path())
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := dbSize()
	long := strings.Repeat("x", 30_000)
	paths := []string{
		"/api/v1/machines/" + long + "/events",
		"/api/v1/machines/ma/events",
		"/api/v1/racks/ra",
		"/api/v1/sites",
		"/api/v1/machines/ma/job",
		"/api/v1/images",
		"/api/v1/machines/mb",
		"/api/v1/audit",
		"/api/v1/racks/" + long,
		"/api/v1/tokens",
	}
	const n, workers = 10_000, 8
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				req, _ := http.NewRequest("GET", f.http.URL+paths[i%len(paths)], nil)
				if i%3 == 0 {
					req.Header.Set("Authorization", "Bearer mh_0123456789abcdef_"+strings.Repeat("A", 43))
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Error(err)
					continue
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if codes[http.StatusUnauthorized]+codes[http.StatusBadRequest] != n {
		t.Fatalf("answers: %v, want only 401 and 400", codes)
	}
	if grew := dbSize() - before; grew > 1<<20 {
		t.Errorf("the database grew by %d bytes for %d refused requests", grew, n)
	}
	// The audit trail is still readable and sums the refusals up.
	status, data := f.do("admin", "GET", "/api/v1/audit", nil)
	if status != http.StatusOK {
		t.Fatalf("audit list: %d %s", status, data)
	}
	var evs []inventory.Event
	if err := json.Unmarshal(data, &evs); err != nil {
		t.Fatal(err)
	}
	records := 0
	for _, e := range evs {
		if e.Action == "auth.refused" {
			records++
		}
		if len(e.Subject) > inventory.MaxSubjectLen {
			t.Errorf("audit subject of %d bytes", len(e.Subject))
		}
	}
	if records != 1 {
		t.Errorf("%d aggregated refusal records, want 1", records)
	}
	status, data = f.do("", "GET", "/metrics", nil)
	if status != http.StatusOK || !strings.Contains(string(data), "metalhall_api_unauthenticated_total") {
		t.Errorf("no refusal counter in /metrics: %d", status)
	}
}

// A NUL in a path once broke a machine's event history for good.
func TestControlCharactersInPathsAreRefusedAndChangeNothing(t *testing.T) {
	f := newFixture(t)
	before := len(must(f.inv.Events(context.Background(), inventory.EventFilter{})))
	for _, who := range []string{"", "admin", "tenant-a"} {
		for _, p := range []string{"/api/v1/machines/ma%00x/events", "/api/v1/machines/ma%1b%5b2J", "/api/v1/racks/ra%00"} {
			status, data := f.do(who, "GET", p, nil)
			if status != http.StatusBadRequest || !strings.Contains(string(data), "control character") {
				t.Errorf("GET %s as %q: %d %s, want 400 naming the control character", p, who, status, data)
			}
		}
	}
	if after := len(must(f.inv.Events(context.Background(), inventory.EventFilter{}))); after != before {
		t.Errorf("%d events written for refused names", after-before)
	}
	if status, data := f.do("admin", "GET", "/api/v1/machines/ma/events", nil); status != http.StatusOK {
		t.Fatalf("machine events after the probes: %d %s", status, data)
	}
	// A name too long for any object is refused the same way.
	if status, _ := f.do("admin", "GET", "/api/v1/machines/"+strings.Repeat("m", 300), nil); status != http.StatusBadRequest {
		t.Errorf("a 300-byte name: %d, want 400", status)
	}
}

// A refused create whose name cannot be a subject is still audited, with
// the name escaped and cut short.
func TestRefusedBadNamesAreAuditedEscaped(t *testing.T) {
	f := newFixture(t)
	name := "s\x00\x1b[2J" + strings.Repeat("x", 5000)
	if status, data := f.do("admin", "POST", "/api/v1/sites", SiteCreate{Name: name}); status != http.StatusBadRequest {
		t.Fatalf("site create with a bad name: %d %s", status, data)
	}
	evs := must(f.inv.Events(context.Background(), inventory.EventFilter{}))
	last := evs[len(evs)-1]
	if last.Action != "site.create" || last.Outcome != "refused" || len(last.Subject) > inventory.MaxSubjectLen || inventory.CheckSubject(last.Subject) != nil {
		t.Fatalf("audit record of the refusal: %+v", last)
	}
	if !strings.Contains(last.Subject, `\x00\x1b[2J`) {
		t.Errorf("subject %q does not show the escaped name", last.Subject)
	}
}

// A tenant's own machine without a job answers 404 on its job, and that
// is not a refusal: `machine show` asks for it every time, and the audit
// trail must not fill with what looks like probing. Asking about another
// tenant's machine still is one.
func TestATenantsOwnMissingJobIsNotAuditedAsARefusal(t *testing.T) {
	f := newFixture(t)
	refusals := func() int {
		n := 0
		for _, e := range must(f.inv.Events(context.Background(), inventory.EventFilter{})) {
			if e.Outcome == "refused" && e.Action == "machine.job" {
				n++
			}
		}
		return n
	}
	before := refusals()
	if status, data := f.do("tenant-a", "GET", "/api/v1/machines/ma/job", nil); status != 404 {
		t.Fatalf("own machine without a job: %d %s", status, data)
	}
	if n := refusals() - before; n != 0 {
		t.Errorf("a tenant's own machine without a job left %d refusal(s) in the audit trail, want none", n)
	}
	if status, data := f.do("tenant-a", "GET", "/api/v1/machines/mb/job", nil); status != 404 {
		t.Fatalf("another tenant's machine: %d %s", status, data)
	}
	if n := refusals() - before; n != 1 {
		t.Errorf("another tenant's machine left %d refusal(s), want 1", n)
	}
}
