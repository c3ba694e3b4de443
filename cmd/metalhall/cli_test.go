package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/service/servicetest"
)

// freeAddr returns a loopback address nobody listens on right now: where
// no service should answer. Services get listeners the test holds
// (startService in process; socket activation for the binary, subproc).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startService runs the service in-process until the test ends. Its
// listeners are bound before New returns, so it answers at once.
func startService(t *testing.T) (url, token string) {
	t.Helper()
	rs := servicetest.Start(t, "", nil)
	return rs.AdminURL(), rs.Token
}

type cliRunner struct {
	t      *testing.T
	server string
	token  string
}

// run executes one CLI command and returns its exit status, stdout and
// stderr.
func (r cliRunner) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	full := append([]string{"metalhall", "--server", r.server, "--token", r.token}, args...)
	code := run(context.Background(), full, &out, &errb)
	return code, out.String(), errb.String()
}

// ok runs a command that must succeed and returns its stdout.
func (r cliRunner) ok(args ...string) string {
	r.t.Helper()
	code, out, errs := r.run(args...)
	if code != 0 {
		r.t.Fatalf("metalhall %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// TestTechnicianOnboardsARackForATenant is the "done when": a hall
// described, a manifest imported, the elevation and capacity shown, a rack
// handed to a tenant whose token then sees exactly that rack.
func TestTechnicianOnboardsARackForATenant(t *testing.T) {
	url, adminTok := startService(t)
	admin := cliRunner{t, url, adminTok}

	techJSON := admin.ok("token", "create", "--role", "technician", "--label", "night shift", "-o", "json")
	var tech struct{ Token, ID string }
	if err := json.Unmarshal([]byte(techJSON), &tech); err != nil || !strings.HasPrefix(tech.Token, "mh_") {
		t.Fatalf("token create: %v %s", err, techJSON)
	}
	tc := cliRunner{t, url, tech.Token}
	tc.ok("site", "create", "--description", "sovereign AI campus", "riyadh-1")
	tc.ok("hall", "create", "--site", "riyadh-1", "hall-a")
	tc.ok("phase", "create", "--hall", "hall-a", "--number", "1", "--power-kw", "12000", "--target-date", "2027-03-01")
	tc.ok("phase", "create", "--hall", "hall-a", "--number", "2", "--power-kw", "18000")
	tc.ok("phase", "set-state", "--hall", "hall-a", "--number", "1", "--to", "commissioning")
	tc.ok("rack", "create", "--hall", "hall-a", "--phase", "1", "--row", "B", "--power-kw", "130", "b01")

	tc.ok("profile", "import", "--file", exampleProfile, "hgx-h100")
	out := tc.ok("rack", "import", "--file", "../../docs/manifest-example.yaml")
	if !strings.Contains(out, "rack a01 created: 4 machines enrolled") {
		t.Fatalf("import: %s", out)
	}
	if out := tc.ok("rack", "import", "--file", "../../docs/manifest-example.yaml"); !strings.Contains(out, "0 machines enrolled, 4 already there") {
		t.Fatalf("re-import: %s", out)
	}
	// A corrected cabling plan is the one change a re-import makes.
	example, _ := os.ReadFile("../../docs/manifest-example.yaml")
	recabled := filepath.Join(t.TempDir(), "recabled.yaml")
	os.WriteFile(recabled, bytes.Replace(example, []byte("switch: leaf-01, port: Ethernet3"), []byte("switch: leaf-01, port: Ethernet4"), 1), 0o600)
	if out := tc.ok("rack", "import", "--file", recabled); !strings.Contains(out, "4 already there\ncabling plan replaced: gpu-a01-01\n") {
		t.Fatalf("re-import with a corrected plan: %s", out)
	}
	elev := tc.ok("rack", "show", "a01")
	for _, want := range []string{"power 40.8 / 44 kW (93%)", "units 32 / 48 used",
		"rated 40.8 kW   measured 0 kW (0%) of 0 machines; 4 without a reading   budget 44 kW", "U10-U03  │ gpu-a01-01", "U48-U35  │ free (14U)", "U02-U01  │ free (2U)"} {
		if !strings.Contains(elev, want) {
			t.Errorf("elevation lacks %q:\n%s", want, elev)
		}
	}
	capacity := tc.ok("hall", "capacity", "hall-a")
	if !strings.Contains(capacity, "174 (1.4%)") || !strings.Contains(capacity, "40.8 (0.3%)") || !strings.Contains(capacity, "enrolled 4") ||
		!strings.Contains(capacity, "MEASURED kW") || !strings.Contains(capacity, "0 (0%) 0 read, 4 unread") {
		t.Errorf("capacity:\n%s", capacity)
	}
	var phases []struct {
		Number int
		Power  struct {
			RatedW     int64 `json:"rated_w"`
			Unmeasured int   `json:"unmeasured"`
		}
	}
	if err := json.Unmarshal([]byte(tc.ok("phase", "list", "--hall", "hall-a", "-o", "json")), &phases); err != nil || len(phases) != 2 ||
		phases[0].Power.RatedW != 40_800 || phases[0].Power.Unmeasured != 4 {
		t.Errorf("phase list: %v %+v", err, phases)
	}

	// A technician may not create tenants or tokens; an admin may.
	if code, _, errs := tc.run("tenant", "create", "bank-x"); code != exitAuth || !strings.Contains(errs, "technician token may not tenant.create") {
		t.Fatalf("technician tenant create: %d %s", code, errs)
	}
	admin.ok("tenant", "create", "bank-x")
	admin.ok("tenant", "create", "telco-y")
	tc.ok("tenant", "assign", "--tenant", "bank-x", "--rack", "a01")
	var tenantTok struct{ Token string }
	json.Unmarshal([]byte(admin.ok("token", "create", "--role", "tenant", "--tenant", "bank-x", "-o", "json")), &tenantTok)
	bank := cliRunner{t, url, tenantTok.Token}

	var racks []struct{ Name string }
	json.Unmarshal([]byte(bank.ok("rack", "list", "-o", "json")), &racks)
	if len(racks) != 1 || racks[0].Name != "a01" {
		t.Fatalf("tenant sees racks %+v", racks)
	}
	var machines []struct{ Name, Tenant string }
	json.Unmarshal([]byte(bank.ok("--output", "json", "machine", "list")), &machines)
	if len(machines) != 4 || machines[0].Tenant != "bank-x" {
		t.Fatalf("tenant sees machines %+v", machines)
	}
	if code, _, errs := bank.run("rack", "show", "b01"); code != exitNotFound || !strings.Contains(errs, `rack "b01" not found`) {
		t.Fatalf("tenant rack show b01: %d %s", code, errs)
	}
	if code, _, _ := bank.run("site", "list"); code != exitAuth {
		t.Fatalf("tenant site list: %d", code)
	}

	// Everything above is in the audit trail, with who did it.
	var events []struct{ Actor, Action, Subject, Outcome string }
	json.Unmarshal([]byte(admin.ok("audit", "list", "-o", "json")), &events)
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Action+" "+e.Outcome] = true
		if e.Action == "rack.import" && e.Actor != tech.ID {
			t.Errorf("import audited as %q, want %q", e.Actor, tech.ID)
		}
	}
	for _, want := range []string{"site.create ok", "rack.import ok", "tenant.assign ok", "tenant.create refused", "rack.show refused"} {
		if !seen[want] {
			t.Errorf("audit lacks %q", want)
		}
	}
	// Events of one machine.
	if ev := admin.ok("machine", "events", "gpu-a01-01"); !strings.Contains(ev, "ACTION") {
		t.Errorf("events: %s", ev)
	}
	// Backup while serving.
	bk := filepath.Join(t.TempDir(), "backup.db")
	if out := admin.ok("backup", "--out", bk); !strings.Contains(out, "backup written") {
		t.Fatal(out)
	}
	if fi, err := os.Stat(bk); err != nil || fi.Size() < 4096 {
		t.Fatalf("backup file: %v", err)
	}
}

func TestCLIErrorsAreOneClearLine(t *testing.T) {
	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"machine", "show"}, exitUsage, "which machine?"},
		{[]string{"rack", "show", "a01", "--output", "json"}, exitNotFound, `rack "a01" not found`}, // flags after the name are flags
		{[]string{"rack", "show", "a01", "--output", "yaml"}, exitUsage, `--output "yaml"`},
		{[]string{"--output", "yaml", "site", "list"}, exitUsage, `--output "yaml"`},
		{[]string{"machine", "show", "ghost"}, exitNotFound, `machine "ghost" not found`},
		{[]string{"hall", "create", "--site", "nowhere", "h"}, exitNotFound, `site "nowhere" not found`},
		{[]string{"rack", "import", "--file", "manifest.txt"}, exitUsage, ".yaml, .yml or .csv"},
		{[]string{"machine", "maintenance", "m"}, exitUsage, "exactly one of --on or --off"},
		{[]string{"completion", "tcsh"}, exitUsage, "bash, zsh or fish"},
	}
	for _, tc := range cases {
		code, _, errs := c.run(tc.args...)
		lines := strings.Split(strings.TrimSpace(errs), "\n")
		if code != tc.code || !strings.Contains(errs, tc.want) || len(lines) != 1 {
			t.Errorf("metalhall %s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	// No service at the URL: say so and how to start one.
	dead := cliRunner{t, "http://" + freeAddr(t), tok}
	code, _, errs := dead.run("site", "list")
	if code != exitUnreachable || !strings.Contains(errs, "no metalhall service answers") || !strings.Contains(errs, "metalhall serve") {
		t.Errorf("unreachable: %d %s", code, errs)
	}
	// Bad token.
	bad := cliRunner{t, url, "mh_0000000000000000_" + strings.Repeat("A", 43)}
	if code, _, errs := bad.run("site", "list"); code != exitAuth || !strings.Contains(errs, "METALHALL_TOKEN") {
		t.Errorf("bad token: %d %s", code, errs)
	}
	if out := c.ok("completion", "bash"); !strings.Contains(out, "--generate-bash-completion") {
		t.Error("bash completion script")
	}
}

func TestSecondServeOnSameDataDirFailsAtOnce(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int)
	var logs servicetest.SyncBuffer
	go func() {
		done <- run(ctx, []string{"metalhall", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0", "--power-sync-interval", "0"}, &logs, &logs)
	}()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(filepath.Join(dir, "admin.token")); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The first serve holds the data dir until the test cancels it, after
	// the second has answered: the second must give up on its own (after
	// the store's short lock wait), not wait for the first to end. The
	// failsafe only keeps a regression from hanging the whole run.
	var errb bytes.Buffer
	second := make(chan int, 1)
	go func() {
		second <- run(context.Background(), []string{"metalhall", "serve", "--data-dir", dir, "--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0"}, &errb, &errb)
	}()
	var code int
	select {
	case code = <-second:
	case <-time.After(2 * time.Minute):
		t.Fatal("the second serve is still waiting for the data dir: it must fail while the first holds it")
	}
	if code == 0 || !strings.Contains(errb.String(), "is already in use by another metalhall: stop it first") {
		t.Fatalf("second serve: exit %d: %s", code, errb.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("first serve: %d %s", code, logs.String())
	}
}

func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "metalhall.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("data-dir: %s\nlog-format: yaml-is-not-a-format\n", filepath.Join(dir, "from-file"))), 0o600)
	// The file's bad log format is used when nothing overrides it...
	var errb bytes.Buffer
	code := run(context.Background(), []string{"metalhall", "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0"}, &errb, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "--log-format") {
		t.Fatalf("config file not read: %d %s", code, errb.String())
	}
	// ...the environment overrides the file, and a flag overrides both.
	t.Setenv("METALHALL_LOG_FORMAT", "json")
	t.Setenv("METALHALL_DHCP_MODE", "bogus")
	errb.Reset()
	code = run(context.Background(), []string{"metalhall", "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0"}, &errb, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), `--dhcp-mode "bogus"`) {
		t.Fatalf("env over file: %d %s", code, errb.String())
	}
	errb.Reset()
	code = run(context.Background(), []string{"metalhall", "serve", "--config", cfg, "--dhcp-mode", "nonsense", "--listen", "127.0.0.1:0", "--provision-listen", "127.0.0.1:0"}, &errb, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), `--dhcp-mode "nonsense"`) {
		t.Fatalf("flag over env: %d %s", code, errb.String())
	}
}
