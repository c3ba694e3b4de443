package api

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// authzTable is the hand-written authorization table, a security document
// reviewed on its own: the test takes its expectations from there, never
// from the route table's roles or scopes.
const authzTable = "../docs/security/authorization.md"

// authzColumns are the table's callers, in column order.
var authzColumns = []string{"no token", "bad token", "admin", "technician", "tenant, own", "tenant, other"}

// authzRow is one route's expected answers; 0 means "—" (no object to be
// another tenant's).
type authzRow struct {
	method, pattern string
	want            map[string]int
	line            int
}

func readAuthzTable(t *testing.T) []authzRow {
	t.Helper()
	f, err := os.Open(authzTable)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []authzRow
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "| ") || !strings.Contains(line, " /api/") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 1+len(authzColumns) {
			t.Fatalf("%s:%d: %d cells, want %d: %s", authzTable, n, len(cells), 1+len(authzColumns), line)
		}
		method, pattern, ok := strings.Cut(strings.TrimSpace(cells[0]), " ")
		if !ok {
			t.Fatalf("%s:%d: route %q is not METHOD PATH", authzTable, n, cells[0])
		}
		r := authzRow{method: method, pattern: pattern, want: map[string]int{}, line: n}
		for i, col := range authzColumns {
			c := strings.TrimSpace(cells[1+i])
			if c == "—" {
				continue
			}
			code, err := strconv.Atoi(c)
			if err != nil || code < 100 || code > 599 {
				t.Fatalf("%s:%d: %s: %q is not a status code or —", authzTable, n, col, c)
			}
			r.want[col] = code
		}
		for _, col := range authzColumns[:5] {
			if r.want[col] == 0 {
				t.Fatalf("%s:%d: %s has no expected status", authzTable, n, col)
			}
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// objectOf is what kind of tenant-owned object a path's {name} is, read
// off the path itself (not the route's declared scope, which is what the
// table checks).
func objectOf(pattern string) string {
	for _, kind := range []string{"machines", "racks", "images"} {
		if strings.HasPrefix(pattern, "/api/v1/"+kind+"/{name}") {
			return kind
		}
	}
	return ""
}

// tenantObjects are each tenant's own rack, machine and private image in
// the fixture.
var tenantObjects = map[string]map[string]string{
	"tenant-a": {"machines": "ma", "racks": "ra", "images": "ta-img"},
	"tenant-b": {"machines": "mb", "racks": "rb", "images": "tb-img"},
}

// TestAuthorizationTable sends every route of the hand-written table as
// every caller to a running service, each request on a fresh database, and
// checks the status the table says. Tenants are run both ways: A on its own
// and on B's objects, B on its own and on A's.
func TestAuthorizationTable(t *testing.T) {
	rows := readAuthzTable(t)
	probe := newFixture(t)
	byKey := map[string]route{}
	for _, rt := range probe.srv.routes {
		byKey[rt.method+" "+rt.pattern] = rt
	}
	seen := map[string]bool{}
	for _, row := range rows {
		key := row.method + " " + row.pattern
		if seen[key] {
			t.Errorf("%s:%d: %s has two rows", authzTable, row.line, key)
		}
		seen[key] = true
		if _, ok := byKey[key]; !ok {
			t.Errorf("%s:%d: %s is not a route the service serves", authzTable, row.line, key)
		}
	}
	for key := range byKey {
		if !seen[key] {
			t.Errorf("route %s has no row in %s: add one, reviewed", key, authzTable)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	type caller struct{ name, token, col, object string }
	callers := []caller{
		{"no-token", "", "no token", ""},
		{"bad-token", "BAD", "bad token", ""},
		{"admin", "admin", "admin", ""},
		{"technician", "technician", "technician", ""},
		{"tenant-a-own", "tenant-a", "tenant, own", "tenant-a"},
		{"tenant-a-other", "tenant-a", "tenant, other", "tenant-b"},
		{"tenant-b-own", "tenant-b", "tenant, own", "tenant-b"},
		{"tenant-b-other", "tenant-b", "tenant, other", "tenant-a"},
	}
	for _, row := range rows {
		rt := byKey[row.method+" "+row.pattern]
		kind := objectOf(row.pattern)
		if (kind != "") != (row.want["tenant, other"] != 0) {
			t.Errorf("%s:%d: %s names an object (%q) but tenant, other is %d: give a status for objects, — otherwise",
				authzTable, row.line, row.pattern, kind, row.want["tenant, other"])
			continue
		}
		for _, who := range callers {
			want, ok := row.want[who.col]
			if !ok {
				continue
			}
			t.Run(rt.action+"/"+who.name, func(t *testing.T) {
				f := newFixture(t)
				ctx := context.Background()
				vars, body := example(rt.action)
				vars = copyMap(vars)
				if who.object != "" && kind != "" {
					vars["name"] = tenantObjects[who.object][kind]
				}
				if vars["name"] == "TOKEN" {
					// Any but an admin's: the last admin token cannot be
					// revoked (TestTheLastAdminTokenCannotBeRevoked).
					for _, tok := range must(f.inv.Tokens(ctx)) {
						if tok.Role != inventory.RoleAdmin {
							vars["name"] = tok.ID
						}
					}
				}
				path := fill(row.pattern, vars)
				if rt.action == "image.import" {
					path += "?name=uploaded"
				}
				if u, ok := body.(ImageURLImport); ok {
					u.URL = f.files.URL
					body = u
				}
				if rt.action == "machine.job" || rt.action == "machine.cancel" || rt.action == "machine.console-log" {
					// These act on a running job: give the machine one, asked
					// for by the caller's role (a tenant may cancel only what
					// a tenant asked for; the handover tests cover the rest).
					asker := inventory.RoleAdmin
					if strings.HasPrefix(who.name, "tenant") {
						asker = inventory.RoleTenant
					}
					j := must(f.srv.prov.Submit(ctx, provisioner.Request{Kind: inventory.JobPower, Machine: vars["name"], PowerAction: inventory.PowerOn, ActorRole: asker}))
					if rt.action == "machine.console-log" {
						if err := f.inv.PutConsoleLog(ctx, inventory.ConsoleLog{Job: j.ID, Data: []byte("BIOS POST\r\n"), Captured: 11}); err != nil {
							t.Fatal(err)
						}
					}
				}
				switch rt.action {
				case "job.resume":
					// There is something to resume only on a restored copy.
					if err := f.inv.SetHold(ctx, inventory.Hold{Reason: "restored from a backup"}); err != nil {
						t.Fatal(err)
					}
				case "site.delete", "hall.delete", "subnet.delete", "subnet.update", "tenant.delete":
					// An empty one to delete (or change): deletes of what
					// something depends on are refused, and
					// inventory/objectedit_test.go checks those.
					makeEmpty(t, f.inv, rt.action)
				}
				token := who.token
				if token == "BAD" {
					// The tenant's token ID with a wrong secret.
					s := f.tokens["tenant-a"]
					token = s[:len(s)-4] + "AAAA"
				}
				before := len(must(f.inv.Events(ctx, inventory.EventFilter{})))
				status, data := f.do(token, row.method, path, body)
				if status != want {
					t.Fatalf("%s %s as %s: status %d, the table (%s:%d) says %d: %s",
						row.method, path, who.name, status, authzTable, row.line, want, data)
				}
				if status >= 400 {
					var e Error
					if json.Unmarshal(data, &e) != nil || e.Message == "" || e.Code == "" {
						t.Fatalf("error body %s", data)
					}
				}
				after := must(f.inv.Events(ctx, inventory.EventFilter{}))
				refused := status == 401 || status == 403 || (status == 404 && who.object != "")
				if (row.method != "GET" || refused || rt.audited) && len(after) <= before {
					t.Fatalf("no audit event for %s %s as %s", row.method, path, who.name)
				}
				for _, ev := range after {
					if strings.Contains(ev.Detail, "hunter2") || strings.Contains(ev.Detail, f.tokens["admin"]) {
						t.Fatalf("secret in audit event %+v", ev)
					}
				}
			})
		}
	}
}

// makeEmpty gives a delete (or edit) row its object, named "sempty",
// holding nothing.
func makeEmpty(t *testing.T, inv *inventory.Store, action string) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch action {
	case "site.delete":
		_, err = inv.CreateSite(ctx, inventory.Site{Name: "sempty"})
	case "hall.delete":
		_, err = inv.CreateHall(ctx, inventory.Hall{Name: "sempty", Site: "s1"})
	case "subnet.delete", "subnet.update":
		_, err = inv.CreateSubnet(ctx, inventory.Subnet{Name: "sempty", CIDR: "10.51.0.0/24", Gateway: "10.51.0.1"})
	case "tenant.delete":
		_, err = inv.CreateTenant(ctx, inventory.Tenant{Name: "sempty"})
	}
	if err != nil {
		t.Fatal(err)
	}
}
