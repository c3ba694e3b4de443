package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAuditSinceTakesDurationsDatesAndTimes(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"1h":                   now.Add(-time.Hour),
		"90m":                  now.Add(-90 * time.Minute),
		"2d":                   now.AddDate(0, 0, -2),
		"2026-11-24T09:00:00Z": time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC),
		"2026-11-24":           time.Date(2026, 11, 24, 0, 0, 0, 0, time.Local),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-1h", "2026-13-01", "1w"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}

func TestAuditFindsATokenByItsLabelAndFilters(t *testing.T) {
	url, tok := startService(t)
	admin := cliRunner{t, url, tok}
	var ops struct {
		Secret string `json:"token"`
		ID     string `json:"id"`
	}
	if err := json.Unmarshal([]byte(admin.ok("token", "create", "--role", "technician", "--label", "ops-day", "-o", "json")), &ops); err != nil {
		t.Fatal(err)
	}
	day := cliRunner{t, url, ops.Secret}
	day.ok("site", "create", "riyadh-1")
	day.run("tenant", "create", "bank-x") // refused: technicians may not

	type ev struct{ Actor, Action, Outcome string }
	list := func(args ...string) []ev {
		t.Helper()
		var out []ev
		if err := json.Unmarshal([]byte(admin.ok(append([]string{"audit", "list", "-o", "json"}, args...)...)), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := list("--actor", "ops-day", "--since", "1h")
	if len(got) != 2 || got[0].Action != "site.create" || got[1].Outcome != "refused" {
		t.Fatalf("audit list --actor ops-day: %+v", got)
	}
	if got := list("--actor", "ops-day", "--outcome", "refused"); len(got) != 1 || got[0].Action != "tenant.create" {
		t.Errorf("--outcome refused: %+v", got)
	}
	if got := list("--action", "site."); len(got) != 1 || got[0].Actor != ops.ID {
		t.Errorf("--action site.: %+v", got)
	}
	if got := list("--since", time.Now().Add(time.Hour).Format("2006-01-02T15:04:05Z07:00")); len(got) != 0 {
		t.Errorf("--since an hour ahead: %+v", got)
	}
	if table := admin.ok("audit", "list", "--actor", ops.ID); !strings.Contains(table, "ops-day ("+ops.ID+")") {
		t.Errorf("the ACTOR column lacks the label:\n%s", table)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"audit", "list", "--since", "yesterday"}, exitUsage},
		{[]string{"audit", "list", "--outcome", "maybe"}, exitUsage},
		{[]string{"audit", "list", "--actor", "nobody"}, exitNotFound},
	} {
		if code, _, errs := admin.run(tc.args...); code != tc.code {
			t.Errorf("metalhall %s: exit %d %s; want %d", strings.Join(tc.args, " "), code, errs, tc.code)
		}
	}
}

// A script pages through the audit trail with --limit and --after, the
// service narrowing by action on its side, while other requests keep
// being audited: every matching event is read once, in order.
func TestAuditPagesForwardWithoutSkippingOrRepeating(t *testing.T) {
	url, tok := startService(t)
	admin := cliRunner{t, url, tok}
	for i := range 7 {
		admin.ok("site", "create", fmt.Sprintf("s%d", i))
	}
	type ev struct {
		Seq     uint64
		Subject string
	}
	page := func(args ...string) []ev {
		t.Helper()
		var out []ev
		if err := json.Unmarshal([]byte(admin.ok(append([]string{"audit", "list", "-o", "json", "--action", "site.create", "--outcome", "ok"}, args...)...)), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var subjects []string
	after := "0"
	for n := 0; ; n++ {
		p := page("--limit", "3", "--after", after)
		for _, e := range p {
			subjects = append(subjects, e.Subject)
		}
		if len(p) < 3 {
			break
		}
		after = fmt.Sprint(p[len(p)-1].Seq)
		// Written between pages: one that matches, one that does not.
		admin.ok("site", "create", fmt.Sprintf("late%d", n))
		admin.run("site", "create", "s0") // refused: exists
	}
	want := []string{"site/s0", "site/s1", "site/s2", "site/s3", "site/s4", "site/s5", "site/s6", "site/late0", "site/late1", "site/late2"}
	if strings.Join(subjects, " ") != strings.Join(want, " ") {
		t.Fatalf("pages read %v", subjects)
	}
	// Back from the newest.
	newest := page("--limit", "2")
	older := page("--limit", "2", "--before", fmt.Sprint(newest[0].Seq))
	if len(newest) != 2 || len(older) != 2 || older[1].Seq >= newest[0].Seq {
		t.Fatalf("newest %+v, before it %+v", newest, older)
	}
	if _, _, errs := admin.run("audit", "list", "--limit", "2", "--action", "site.create"); !strings.Contains(errs, "older events: --before") {
		t.Errorf("a full page on a table does not say where the next starts: %q", errs)
	}
}
