package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestServerAddressAcceptsHostPort(t *testing.T) {
	for _, tc := range []struct {
		in      string
		tls     bool
		want    string
		wantErr bool
	}{
		{in: "http://127.0.0.1:8280", want: "http://127.0.0.1:8280"},
		{in: "https://10.0.0.5:8280/", want: "https://10.0.0.5:8280"},
		{in: "127.0.0.1:18480", want: "http://127.0.0.1:18480"},
		{in: "localhost:18480", want: "http://localhost:18480"},
		{in: "[::1]:18480", want: "http://[::1]:18480"},
		{in: "::1", want: "http://[::1]:8280"},
		{in: "127.0.0.1", want: "http://127.0.0.1:8280"},
		// Off loopback the admin listener serves TLS; so does a pinned one.
		{in: "10.0.0.5:8280", want: "https://10.0.0.5:8280"},
		{in: "metalhall.example:8280", want: "https://metalhall.example:8280"},
		{in: "127.0.0.1:8280", tls: true, want: "https://127.0.0.1:8280"},
		{in: "", wantErr: true},
		{in: "ftp://127.0.0.1:8280", wantErr: true},
		{in: "http://", wantErr: true},
		{in: ":8280", wantErr: true},
		{in: "127.0.0.1:http-ish", wantErr: true},
		{in: "1.2.3.4:5:6", wantErr: true},
	} {
		got, err := serverURL(tc.in, tc.tls)
		if tc.wantErr {
			var ue usageError
			if err == nil || !reflect.TypeOf(err).AssignableTo(reflect.TypeOf(ue)) {
				t.Errorf("serverURL(%q) = %q, %v; want a usage error", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("serverURL(%q, tls=%v) = %q, %v; want %q", tc.in, tc.tls, got, err, tc.want)
		}
	}
}

func TestFlagsAfterTheNameAreMovedBeforeIt(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"rack show a01 -o json", "rack show -o json a01"},
		{"rack show a01 --output=json", "rack show --output=json a01"},
		{"-o json rack show a01", "-o json rack show a01"},
		// A flag's value that looks like a name stays its value.
		{"machine maintenance gpu-1 --reason down --on", "machine maintenance --reason down --on gpu-1"},
		{"machine maintenance --reason -x gpu-1", "machine maintenance --reason -x gpu-1"},
		// A global flag after the command goes to the app.
		{"rack show a01 --server 127.0.0.1:1", "--server 127.0.0.1:1 rack show a01"},
		// After "--" everything is a name, and one beginning with '-' keeps
		// its "--".
		{"machine show -o json -- -odd", "machine show -o json -- -odd"},
		{"machine show -- -odd -o json", "machine show -- -odd -o json"},
		// Unknown flags stay with the command, which names them.
		{"rack show a01 --bogus", "rack show --bogus a01"},
		// Not a subcommand: left for urfave/cli to refuse.
		{"rack bogus x -o json", "rack bogus x -o json"},
		{"lab bmc --help", "lab bmc --help"},
		{"rack show a01 --generate-bash-completion", "rack show a01 --generate-bash-completion"},
	} {
		got := strings.Join(reorderArgs(app, append([]string{"metalhall"}, strings.Fields(tc.in)...))[1:], " ")
		if got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

const exampleManifest = "../../docs/manifest-example.yaml"

// importExampleRack describes hall-a of site riyadh-1 with phase 1
// commissioning, and imports the example manifest's rack a01 into it (its
// BMCs are loopback emulators; nothing here talks to them).
func importExampleRack(r cliRunner) {
	r.t.Helper()
	r.ok("site", "create", "riyadh-1")
	r.ok("hall", "create", "--site", "riyadh-1", "hall-a")
	r.ok("phase", "create", "--hall", "hall-a", "--number", "1", "--power-kw", "12000")
	r.ok("phase", "set-state", "--hall", "hall-a", "--number", "1", "--to", "commissioning")
	r.ok("profile", "import", "--file", exampleProfile, "hgx-h100")
	r.ok("rack", "import", "--file", exampleManifest)
}

// exampleProfile is the profile the example manifest names.
const exampleProfile = "../../docs/profiles/hgx-h100.yaml"

// leafCommands are the full names of every command that runs something.
func leafCommands(cmds []*cli.Command, prefix string) []string {
	var out []string
	for _, c := range cmds {
		if len(c.Subcommands) == 0 {
			out = append(out, prefix+c.Name)
			continue
		}
		out = append(out, leafCommands(c.Subcommands, prefix+c.Name+" ")...)
	}
	return out
}

// TestEveryCommandExitsAsDocumented runs every command of the table the
// way scripts do — flags after the name included — and checks the exit
// status docs/cli.md promises and, for JSON, that arrays are never null. A
// command added without a row here fails the test.
func TestEveryCommandExitsAsDocumented(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	dir := t.TempDir()
	importExampleRack(r)
	manifest := exampleManifest
	r.ok("tenant", "create", "bank-x")
	badManifest := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badManifest, []byte("rack: {name: b9, hall: hall-a, phase: 1, units: 48, power_kw: 10}\nmachines:\n  - {name: m, unit: 0, height: 1, macs: [zz]}\n"), 0o600)
	badProfile := filepath.Join(dir, "hgx-b200.yaml") // GPUs, no os_disk
	os.WriteFile(badProfile, []byte("gpu_model: B200\ngpu_count: 8\n"), 0o600)
	keyFile := filepath.Join(dir, "pw")
	os.WriteFile(keyFile, []byte("pw\n"), 0o600)
	cables := filepath.Join(dir, "cables.csv")
	os.WriteFile(cables, []byte("side_a_device,side_a_name,side_b_device,side_b_name\ngpu-a01-01,ens3f0,leaf-01,Ethernet9\n"), 0o600)
	badCables := filepath.Join(dir, "bad-cables.csv")
	os.WriteFile(badCables, []byte("side_a_device,side_a_name,side_b_device,side_b_name\nnobody,ens3f0,leaf-01,Ethernet9\n"), 0o600)

	type c struct {
		args []string
		code int
	}
	const m = "gpu-a01-01"
	table := map[string][]c{
		"serve":               {{[]string{"serve", "--help"}, 0}},
		"site create":         {{[]string{"site", "create", "s2", "-o", "json"}, 0}, {[]string{"site", "create", "s2"}, exitConflict}, {[]string{"site", "create"}, exitUsage}},
		"site list":           {{[]string{"site", "list", "-o", "json"}, 0}, {[]string{"site", "list", "extra"}, exitUsage}},
		"hall create":         {{[]string{"hall", "create", "h2", "--site", "riyadh-1", "-o", "json"}, 0}, {[]string{"hall", "create", "h3", "--site", "zz"}, exitNotFound}},
		"hall list":           {{[]string{"hall", "list", "-o", "json"}, 0}, {[]string{"hall", "list", "--site", "riyadh-1", "-o", "json"}, 0}, {[]string{"hall", "list", "--site", "zz"}, exitNotFound}},
		"hall capacity":       {{[]string{"hall", "capacity", "hall-a", "-o", "json"}, 0}, {[]string{"hall", "capacity", "zz"}, exitNotFound}},
		"phase create":        {{[]string{"phase", "create", "--hall", "hall-a", "--number", "x", "--power-kw", "1"}, exitUsage}, {[]string{"phase", "create", "--hall", "zz", "--number", "3", "--power-kw", "100"}, exitNotFound}, {[]string{"phase", "create", "--hall", "hall-a", "--number", "2", "--power-kw", "100", "--target-date", "tomorrow"}, exitUsage}},
		"phase update":        {{[]string{"phase", "update", "--hall", "hall-a", "--number", "9", "--power-kw", "1"}, exitNotFound}, {[]string{"phase", "update", "--hall", "hall-a", "--number", "1", "--target-date", "bad"}, exitUsage}},
		"phase list":          {{[]string{"phase", "list", "--hall", "hall-a", "-o", "json"}, 0}, {[]string{"phase", "list", "--hall", "zz"}, exitNotFound}},
		"phase set-state":     {{[]string{"phase", "set-state", "--hall", "hall-a", "--number", "1", "--to", "bogus"}, exitUsage}, {[]string{"phase", "set-state", "--hall", "hall-a", "--number", "9", "--to", "commissioning"}, exitNotFound}},
		"rack create":         {{[]string{"rack", "create", "b01", "--hall", "hall-a", "--phase", "1", "--power-kw", "10", "-o", "json"}, 0}, {[]string{"rack", "create", "b02", "--hall", "hall-a", "--phase", "1", "--units", "abc"}, exitUsage}, {[]string{"rack", "create", "b03", "--hall", "hall-a", "--phase", "7"}, exitNotFound}},
		"rack list":           {{[]string{"rack", "list", "-o", "json"}, 0}, {[]string{"rack", "list", "--state", "bogus"}, exitUsage}},
		"rack show":           {{[]string{"rack", "show", "a01", "-o", "json"}, 0}, {[]string{"rack", "show", "zz"}, exitNotFound}, {[]string{"rack", "show", "a01", "b01"}, exitUsage}},
		"rack set-state":      {{[]string{"rack", "set-state", "zz", "--to", "installed"}, exitNotFound}, {[]string{"rack", "set-state", "a01", "--to", "bogus"}, exitUsage}},
		"rack import":         {{[]string{"rack", "import", "--file", manifest, "-o", "json"}, 0}, {[]string{"rack", "import", "--file", badManifest}, exitUsage}, {[]string{"rack", "import"}, exitUsage}},
		"rack commission":     {{[]string{"rack", "commission", "zz", "--wait"}, exitNotFound}},
		"rack update":         {{[]string{"rack", "update", "zz", "--row", "A"}, exitNotFound}, {[]string{"rack", "update", "a01"}, exitUsage}},
		"rack delete":         {{[]string{"rack", "delete", "zz"}, exitNotFound}},
		"machine enroll":      {{[]string{"machine", "enroll", "m9", "--rack", "zz", "--unit", "40", "--mac", "02:00:00:00:00:09", "--bmc-address", "127.0.0.1:1", "--bmc-protocol", "redfish", "--bmc-user", "u", "--bmc-password-file", keyFile}, exitNotFound}, {[]string{"machine", "enroll", "m9", "--rack", "a01", "--unit", "40", "--mac", "zz", "--bmc-address", "127.0.0.1:1", "--bmc-protocol", "redfish", "--bmc-user", "u", "--bmc-password-file", keyFile}, exitUsage}},
		"machine list":        {{[]string{"machine", "list", "-o", "json"}, 0}, {[]string{"machine", "list", "--tenant", "nobody"}, exitNotFound}, {[]string{"machine", "list", "--rack", "zz"}, exitNotFound}},
		"machine show":        {{[]string{"machine", "show", m, "-o", "json"}, 0}, {[]string{"machine", "show", "zz"}, exitNotFound}},
		"machine maintenance": {{[]string{"machine", "maintenance", "zz", "--on"}, exitNotFound}, {[]string{"machine", "maintenance", m, "--on", "--off"}, exitUsage}},
		"machine events":      {{[]string{"machine", "events", m, "-o", "json"}, 0}, {[]string{"machine", "events", "zz"}, exitNotFound}},
		"machine update":      {{[]string{"machine", "update", "zz", "--power-w", "1"}, exitNotFound}, {[]string{"machine", "update", m, "--power-w", "-5"}, exitUsage}, {[]string{"machine", "update", m}, exitUsage}},
		"machine delete":      {{[]string{"machine", "delete", "zz"}, exitNotFound}},
		// Only unknown machines: the example's BMCs are not to be driven here.
		"machine commission":   {{[]string{"machine", "commission", "zz"}, exitNotFound}},
		"machine provision":    {{[]string{"machine", "provision", "zz", "--image", "none"}, exitNotFound}, {[]string{"machine", "provision", "zz"}, exitUsage}},
		"machine release":      {{[]string{"machine", "release", "zz"}, exitNotFound}},
		"machine cancel":       {{[]string{"machine", "cancel", "zz"}, exitNotFound}},
		"machine power":        {{[]string{"machine", "power", "zz", "--action", "status"}, exitNotFound}, {[]string{"machine", "power", m, "--action", "explode"}, exitUsage}},
		"machine boot-device":  {{[]string{"machine", "boot-device", "zz", "--device", "pxe"}, exitNotFound}, {[]string{"machine", "boot-device", m, "--device", "floppy"}, exitUsage}},
		"machine erase-report": {{[]string{"machine", "erase-report", "zz"}, exitNotFound}},
		"machine sel":          {{[]string{"machine", "sel", "zz"}, exitNotFound}, {[]string{"machine", "sel"}, exitUsage}},
		"machine console":      {{[]string{"machine", "console", "zz"}, exitNotFound}, {[]string{"machine", "console"}, exitUsage}},
		"machine console-log":  {{[]string{"machine", "console-log", "zz"}, exitNotFound}, {[]string{"machine", "console-log", "zz", "--job", "job-000001"}, exitNotFound}, {[]string{"machine", "console-log"}, exitUsage}},
		"machine acceptance":   {{[]string{"machine", "acceptance", "zz"}, exitNotFound}, {[]string{"machine", "acceptance"}, exitUsage}},
		"rack acceptance":      {{[]string{"rack", "acceptance", "zz"}, exitNotFound}, {[]string{"rack", "acceptance"}, exitUsage}},
		"rack firmware":        {{[]string{"rack", "firmware", "zz"}, exitNotFound}, {[]string{"rack", "firmware"}, exitUsage}},
		"rack cabling":         {{[]string{"rack", "cabling", "zz"}, exitNotFound}, {[]string{"rack", "cabling"}, exitUsage}},
		"rack cabling-plan":    {{[]string{"rack", "cabling-plan", "a01", "--file", cables, "-o", "json"}, 0}, {[]string{"rack", "cabling-plan", "zz", "--file", cables}, exitNotFound}, {[]string{"rack", "cabling-plan", "a01", "--file", badCables}, exitUsage}, {[]string{"rack", "cabling-plan", "a01", "--file", manifest}, exitUsage}, {[]string{"rack", "cabling-plan", "a01"}, exitUsage}},
		"tenant unassign":      {{[]string{"tenant", "unassign", "--tenant", "zz", "--rack", "a01"}, exitNotFound}, {[]string{"tenant", "unassign", "--tenant", "bank-x"}, exitUsage}},
		"image import":         {{[]string{"image", "import", "img", "--file", filepath.Join(dir, "none.raw")}, exitUsage}},
		"image list":           {{[]string{"image", "list", "-o", "json"}, 0}},
		"image show":           {{[]string{"image", "show", "zz"}, exitNotFound}},
		"image delete":         {{[]string{"image", "delete", "zz"}, exitNotFound}},
		"subnet create":        {{[]string{"subnet", "create", "prov", "--cidr", "127.77.0.0/24", "--gateway", "127.77.0.1", "-o", "json"}, 0}, {[]string{"subnet", "create", "bad", "--cidr", "nope", "--gateway", "127.77.0.1"}, exitUsage}},
		"subnet list":          {{[]string{"subnet", "list", "-o", "json"}, 0}},
		"tenant create":        {{[]string{"tenant", "create", "telco-y", "-o", "json"}, 0}, {[]string{"tenant", "create", "bank-x"}, exitConflict}},
		"tenant list":          {{[]string{"tenant", "list", "-o", "json"}, 0}},
		"tenant assign":        {{[]string{"tenant", "assign", "--tenant", "zz", "--rack", "a01"}, exitNotFound}, {[]string{"tenant", "assign", "--tenant", "bank-x"}, exitUsage}},
		"token create":         {{[]string{"token", "create", "--role", "bogus"}, exitUsage}, {[]string{"token", "create", "--role", "technician", "-o", "json"}, 0}},
		"token list":           {{[]string{"token", "list", "-o", "json"}, 0}},
		"token revoke":         {{[]string{"token", "revoke", "zz"}, exitNotFound}},
		"audit list":           {{[]string{"audit", "list", "-o", "json"}, 0}, {[]string{"audit", "list", "--limit", "5", "--after", "1", "-o", "json"}, 0}, {[]string{"audit", "list", "--limit", "0"}, exitUsage}, {[]string{"audit", "list", "--after", "x"}, exitUsage}, {[]string{"audit", "list", "--after", "1", "--before", "9"}, exitUsage}},
		"backup":               {{[]string{"backup", "--out", filepath.Join(dir, "b.db"), "-o", "json"}, 0}, {[]string{"backup"}, exitUsage}},
		"restore": {{[]string{"restore", "--from", filepath.Join(dir, "b.db"), "--data-dir", filepath.Join(dir, "restored"), "-o", "json"}, 0},
			{[]string{"restore", "--from", filepath.Join(dir, "b.db"), "--data-dir", filepath.Join(dir, "restored")}, exitUsage}, // not empty now
			{[]string{"restore", "--from", filepath.Join(dir, "none.tar"), "--data-dir", filepath.Join(dir, "r2")}, exitUsage}, {[]string{"restore"}, exitUsage}},
		"store migrate": {{[]string{"store", "migrate", "--from", "bolt:" + filepath.Join(dir, "none.db"), "--to", "bolt:" + filepath.Join(dir, "moved.db"), "-o", "json"}, exitUsage},
			{[]string{"store", "migrate", "--from", "bolt:" + filepath.Join(dir, "b.db"), "--to", "bolt:" + filepath.Join(dir, "b.db")}, exitUsage}, {[]string{"store", "migrate"}, exitUsage}},
		"job resume":    {{[]string{"job", "resume", "-o", "json"}, exitConflict}, {[]string{"job", "resume", "x"}, exitUsage}},
		"bootenv build": {{[]string{"bootenv", "build"}, exitUsage}, {[]string{"bootenv", "build", "--kernel", "/nonexistent/vmlinuz-x", "--overlay", filepath.Join(dir, "no-such-overlay")}, exitUsage}, {[]string{"bootenv", "build", "--kernel", "/boot/vmlinuz-x", "--module-set", "gpu"}, exitUsage}},
		"lab":           {{[]string{"lab", "bmc", "--help"}, 0}, {[]string{"lab", "bmc"}, exitUsage}},
		"job list":      {{[]string{"job", "list", "-o", "json"}, 0}, {[]string{"job", "list", "--rack", "zz"}, exitNotFound}, {[]string{"job", "list", "--hall", "zz"}, exitNotFound}, {[]string{"job", "list", "--state", "bogus"}, exitUsage}, {[]string{"job", "list", "--kind", "bogus"}, exitUsage}},
		"completion":    {{[]string{"completion", "bash"}, 0}, {[]string{"completion", "tcsh"}, exitUsage}},
		// Leaves run in the command table's order: create before update
		// before delete.
		"site update":      {{[]string{"site", "update", "riyadh-1", "--description", "Riyadh campus", "-o", "json"}, 0}, {[]string{"site", "update", "zz", "--description", "x"}, exitNotFound}, {[]string{"site", "update", "riyadh-1"}, exitUsage}},
		"site delete":      {{[]string{"site", "delete", "riyadh-1"}, exitConflict}, {[]string{"site", "delete", "zz"}, exitNotFound}, {[]string{"site", "delete", "s2"}, 0}},
		"hall update":      {{[]string{"hall", "update", "h2", "--site", "riyadh-1", "-o", "json"}, 0}, {[]string{"hall", "update", "h2", "--site", "zz"}, exitNotFound}, {[]string{"hall", "update", "zz", "--site", "riyadh-1"}, exitNotFound}, {[]string{"hall", "update", "h2"}, exitUsage}},
		"hall delete":      {{[]string{"hall", "delete", "hall-a"}, exitConflict}, {[]string{"hall", "delete", "zz"}, exitNotFound}, {[]string{"hall", "delete", "h2"}, 0}},
		"phase delete":     {{[]string{"phase", "delete", "--hall", "hall-a", "--number", "1"}, exitConflict}, {[]string{"phase", "delete", "--hall", "hall-a", "--number", "9"}, exitNotFound}, {[]string{"phase", "delete", "--hall", "hall-a", "--number", "x"}, exitUsage}},
		"subnet update":    {{[]string{"subnet", "update", "prov", "--range", "127.77.0.100-127.77.0.150", "--dns", "127.0.0.53", "-o", "json"}, 0}, {[]string{"subnet", "update", "prov", "--gateway", "127.78.0.1"}, exitUsage}, {[]string{"subnet", "update", "zz", "--dns", ""}, exitNotFound}, {[]string{"subnet", "update", "prov"}, exitUsage}},
		"subnet delete":    {{[]string{"subnet", "delete", "zz"}, exitNotFound}, {[]string{"subnet", "delete", "prov"}, 0}},
		"tenant update":    {{[]string{"tenant", "update", "bank-x", "--description", "Bank X", "-o", "json"}, 0}, {[]string{"tenant", "update", "zz", "--description", "x"}, exitNotFound}, {[]string{"tenant", "update", "bank-x"}, exitUsage}},
		"profile list":     {{[]string{"profile", "list", "-o", "json"}, 0}, {[]string{"profile", "list", "extra"}, exitUsage}},
		"profile show":     {{[]string{"profile", "show", "hgx-h100", "-o", "json"}, 0}, {[]string{"profile", "show", "zz"}, exitNotFound}},
		"profile validate": {{[]string{"profile", "validate", exampleProfile, "-o", "json"}, 0}, {[]string{"profile", "validate", badProfile}, exitUsage}, {[]string{"profile", "validate", filepath.Join(dir, "none.yaml")}, exitUsage}},
		"profile import":   {{[]string{"profile", "import", "hgx-h100", "--file", exampleProfile, "-o", "json"}, 0}, {[]string{"profile", "import", "hgx-b200", "--file", badProfile}, exitUsage}, {[]string{"profile", "import", "hgx-b200"}, exitUsage}},
		"profile delete":   {{[]string{"profile", "delete", "hgx-h100"}, exitConflict}, {[]string{"profile", "delete", "zz"}, exitNotFound}},
		"tenant delete":    {{[]string{"tenant", "delete", "zz"}, exitNotFound}, {[]string{"tenant", "delete", "telco-y"}, 0}},
	}
	leaves := leafCommands(newApp(io.Discard, io.Discard).Commands, "")
	for _, l := range leaves {
		if _, ok := table[l]; !ok {
			t.Errorf("command %q has no row in this table: add its exit statuses", l)
		}
		// Every command: help is not an error, an unknown flag is a bad
		// command line wherever it is.
		args := strings.Fields(l)
		if code, _, errs := r.run(append(slices.Clone(args), "--help")...); code != 0 {
			t.Errorf("%s --help: exit %d: %s", l, code, errs)
		}
		if code, _, errs := r.run(append(slices.Clone(args), "x", "--no-such-flag")...); code != exitUsage {
			t.Errorf("%s x --no-such-flag: exit %d, want %d: %s", l, code, exitUsage, errs)
		}
	}
	for _, l := range leaves {
		for _, tc := range table[l] {
			code, out, errs := r.run(tc.args...)
			if code != tc.code {
				t.Errorf("metalhall %s: exit %d, want %d (stderr %q)", strings.Join(tc.args, " "), code, tc.code, errs)
				continue
			}
			if code != 0 && (out != "" || strings.Count(strings.TrimSpace(errs), "\n") != 0) {
				t.Errorf("metalhall %s: a failure is one line on stderr and nothing on stdout; got %q / %q", strings.Join(tc.args, " "), out, errs)
			}
			if code == 0 && slices.Contains(tc.args, "json") {
				var v any
				if err := json.Unmarshal([]byte(out), &v); err != nil {
					t.Errorf("metalhall %s: not JSON: %v\n%s", strings.Join(tc.args, " "), err, out)
				}
				if strings.Contains(out, ": null") || strings.TrimSpace(out) == "null" {
					t.Errorf("metalhall %s: null in JSON:\n%s", strings.Join(tc.args, " "), out)
				}
			}
		}
	}
}

func TestServerGivenAsHostPortReachesTheService(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, strings.TrimPrefix(url, "http://"), tok}
	r.ok("site", "create", "riyadh-1")
	if out := r.ok("site", "list", "-o", "json"); !strings.Contains(out, `"riyadh-1"`) {
		t.Fatalf("site list: %s", out)
	}
	if code, _, errs := (cliRunner{t, "ftp://" + r.server, tok}).run("site", "list"); code != exitUsage || !strings.Contains(errs, "http or https") {
		t.Fatalf("ftp:// server: exit %d %s", code, errs)
	}
}

func TestImportJSONListsAreNeverNull(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)
	// The second import creates nothing: "created" is [], not null.
	var res map[string]any
	out := r.ok("rack", "import", "--file", exampleManifest, "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err, out)
	}
	for k, v := range res {
		if v == nil {
			t.Errorf("%q is null in %s", k, out)
		}
	}
	if c, ok := res["created"].([]any); !ok || len(c) != 0 {
		t.Errorf("created = %#v, want []", res["created"])
	}
}

// firstWrite is a writer that closes wrote after its first write: a gate
// for a test to wait on a streaming command's output.
type firstWrite struct {
	mu    sync.Mutex
	b     bytes.Buffer
	once  sync.Once
	wrote chan struct{}
}

func (w *firstWrite) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.once.Do(func() { close(w.wrote) })
	return w.b.Write(p)
}

func TestFollowedEventsAreOneJSONObjectALine(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r)
	r.ok("machine", "maintenance", "--on", "--reason", "fan", "gpu-a01-01")

	ctx, cancel := context.WithCancel(context.Background())
	out := &firstWrite{wrote: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"metalhall", "--server", url, "--token", tok, "machine", "events", "gpu-a01-01", "--follow", "-o", "json"}, out, io.Discard)
	}()
	<-out.wrote
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("events --follow: exit %d", code)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(out.b.String()), "\n")
	if len(lines) == 0 {
		t.Fatal("no output")
	}
	for _, l := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["action"] == nil {
			t.Errorf("not one event a line: %q (%v)", l, err)
		}
	}
}
