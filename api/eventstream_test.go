package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
)

// feed reads one page of the event feed as who.
func (f *fixture) feed(who, query string) EventPage {
	f.t.Helper()
	status, data := f.do(who, "GET", "/api/v1/events?"+query, nil)
	if status != http.StatusOK {
		f.t.Fatalf("events?%s as %s: %d %s", query, who, status, data)
	}
	var p EventPage
	if err := json.Unmarshal(data, &p); err != nil {
		f.t.Fatal(err)
	}
	if p.Events == nil {
		f.t.Fatalf("events?%s as %s: events is null, not a list: %s", query, who, data)
	}
	return p
}

func TestEventFeedWakesAWaitingFollowerOnTheCommit(t *testing.T) {
	f := newFixture(t)
	// Without after: nothing of the past, and where "now" is.
	now := f.feed("technician", "")
	if len(now.Events) != 0 {
		t.Fatalf("the feed from now: %+v", now)
	}
	got := make(chan EventPage, 1)
	go func() { got <- f.feed("technician", fmt.Sprintf("after=%d&wait=1m", now.Next)) }()
	if status, data := f.do("admin", "POST", "/api/v1/machines/mb/maintenance", MaintenanceRequest{On: true, Reason: "fan"}); status != http.StatusOK {
		t.Fatalf("maintenance: %d %s", status, data)
	}
	p := <-got // the wait ends on the commit, not on a clock
	if len(p.Events) != 1 || p.Events[0].Action != "machine.maintenance" || p.Events[0].Subject != "machine/mb" || p.Next != p.Events[0].Seq {
		t.Fatalf("the waiting follower got %+v", p)
	}
	// Continuing from Next: nothing new, at once (wait=0).
	if again := f.feed("technician", fmt.Sprintf("after=%d", p.Next)); len(again.Events) != 0 || again.Next != p.Next {
		t.Fatalf("continuing from next: %+v", again)
	}
}

func TestEventFeedShowsEachCallerOnlyWhatItMaySee(t *testing.T) {
	f := newFixture(t)
	start := f.feed("admin", "").Next
	for _, m := range []string{"ma", "mb"} {
		if status, data := f.do("admin", "POST", "/api/v1/machines/"+m+"/maintenance", MaintenanceRequest{On: true, Reason: "psu"}); status != http.StatusOK {
			t.Fatalf("maintenance %s: %d %s", m, status, data)
		}
	}
	if status, data := f.do("admin", "POST", "/api/v1/tokens", TokenCreate{Role: "technician", Label: "night shift"}); status != http.StatusCreated {
		t.Fatalf("token: %d %s", status, data)
	}
	subjects := func(who string) []string {
		var out []string
		for _, e := range f.feed(who, fmt.Sprintf("after=%d", start)).Events {
			out = append(out, e.Subject)
			if who == "tenant-a" && strings.Contains(e.Actor, f.tokenID("admin")) {
				t.Errorf("tenant-a sees the admin's token ID: %+v", e)
			}
		}
		return out
	}
	wantSubjects := func(who string, want ...string) {
		t.Helper()
		got := subjects(who)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s sees %v, want %v", who, got, want)
		}
	}
	tok := f.feed("admin", fmt.Sprintf("after=%d", start)).Events
	wantSubjects("admin", "machine/ma", "machine/mb", tok[len(tok)-1].Subject)
	wantSubjects("technician", "machine/ma", "machine/mb") // not the token
	wantSubjects("tenant-a", "machine/ma")
	wantSubjects("tenant-b", "machine/mb")
}

func TestEventFeedPassesOverWhatTheCallerMayNotSee(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	start := f.feed("tenant-a", "").Next
	var evs []inventory.Event
	for i := range eventScan + 5 {
		evs = append(evs, inventory.Event{Actor: "provisioner", Subject: "machine/mb", Action: "dhcp", Detail: fmt.Sprint(i)})
	}
	if err := f.inv.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	// tb's machine's events: a page of none for ta, at once, with Next
	// moved on by one scan, though it asked to wait.
	p := f.feed("tenant-a", fmt.Sprintf("after=%d&wait=1m", start))
	if len(p.Events) != 0 || p.Next != start+eventScan {
		t.Fatalf("ta's first page: %d events, next %d, want none and %d", len(p.Events), p.Next, start+eventScan)
	}
	p = f.feed("tenant-a", fmt.Sprintf("after=%d", p.Next))
	if len(p.Events) != 0 || p.Next != start+eventScan+5 {
		t.Fatalf("ta's second page: %d events, next %d, want none and %d", len(p.Events), p.Next, start+eventScan+5)
	}
}

func TestEventFeedAfterAHandoverShowsNeitherTenantTheOther(t *testing.T) {
	f := newFixture(t)
	start := f.feed("admin", "").Next
	f.deploy("tenant-a", "ma", "secret-of-a")
	f.release("tenant-a", "ma")
	if status, data := f.do("technician", "POST", "/api/v1/tenants/tb/assign", TenantAssign{Rack: "ra"}); status != http.StatusOK {
		t.Fatalf("rack assignment after the release: %d %s", status, data)
	}
	seenByA := f.feed("tenant-a", fmt.Sprintf("after=%d", start)).Next
	idB := f.job("tenant-b", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04", UserData: "#cloud-config secret-of-b"})

	_, data := f.do("tenant-b", "GET", fmt.Sprintf("/api/v1/events?after=%d", start), nil)
	f.leaks("tenant-b", data, "secret-of-a", f.tokenID("tenant-a"), f.tokenID("admin"), f.tokenID("technician"), "10.0.0.1", `"ta"`)
	if !strings.Contains(string(data), idB) {
		t.Errorf("tenant-b does not see its own job %s: %s", idB, data)
	}
	_, data = f.do("tenant-a", "GET", fmt.Sprintf("/api/v1/events?after=%d", seenByA), nil)
	f.leaks("tenant-a", data, idB, "secret-of-b", f.tokenID("tenant-b"), f.tokenID("admin"), f.tokenID("technician"), "10.0.0.1", `"tb"`)
	if strings.Contains(string(data), "machine/ma") {
		t.Errorf("tenant-a still follows the machine it gave back: %s", data)
	}
}

func TestEventFeedRefusesBadQueriesAndStopsForAShutdown(t *testing.T) {
	f := newFixture(t)
	next := f.feed("admin", "").Next
	for _, q := range []string{"after=abc", fmt.Sprintf("after=%d", next+1), "wait=-1s", "wait=soon", "limit=0", "limit=10001"} {
		status, data := f.do("admin", "GET", "/api/v1/events?"+q, nil)
		var e Error
		if status != http.StatusBadRequest || json.Unmarshal(data, &e) != nil || e.Message == "" {
			t.Errorf("events?%s: %d %s, want 400 saying what is wrong", q, status, data)
		}
	}
	got := make(chan EventPage, 1)
	go func() { got <- f.feed("admin", fmt.Sprintf("after=%d&wait=1m", next)) }()
	f.srv.StopWaits()
	if p := <-got; len(p.Events) != 0 || p.Next != next {
		t.Fatalf("a wait ended by the shutdown: %+v", p)
	}
}

func TestEventFeedNarrowedToASubjectWaitsPastOtherObjectsEvents(t *testing.T) {
	f := newFixture(t)
	if status, data := f.do("admin", "GET", "/api/v1/events?subject=gpu-01", nil); status != http.StatusBadRequest || !strings.Contains(string(data), "KIND/NAME") {
		t.Fatalf("a subject without its kind: %d %s", status, data)
	}
	now := f.feed("admin", "")
	got := make(chan EventPage, 1)
	go func() { got <- f.feed("admin", fmt.Sprintf("after=%d&wait=1m&subject=machine/mb", now.Next)) }()
	// The barrier: the follower is parked in its wait.
	for !strings.Contains(f.metrics(), "metalhall_api_event_waits 1") {
		runtime.Gosched()
	}
	for _, m := range []string{"ma", "mb"} { // ma's event wakes it; it waits on
		if status, data := f.do("admin", "POST", "/api/v1/machines/"+m+"/maintenance", MaintenanceRequest{On: true, Reason: "fan"}); status != http.StatusOK {
			t.Fatalf("maintenance %s: %d %s", m, status, data)
		}
	}
	p := <-got
	if len(p.Events) != 1 || p.Events[0].Subject != "machine/mb" || p.Next != p.Events[0].Seq {
		t.Fatalf("the follower of machine/mb got %+v", p)
	}
	if !strings.Contains(f.metrics(), "metalhall_api_event_waits 0") {
		t.Fatal("a wait that ended is still counted")
	}
}

func (f *fixture) metrics() string {
	f.t.Helper()
	_, data := f.do("", "GET", "/metrics", nil)
	return string(data)
}
