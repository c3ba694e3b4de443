package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestJobListShowsWorkAcrossAHallWithFilters(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	importExampleRack(r) // rack a01: its BMCs are not driven here
	fleet, pw := bmcFleet(t, 1)
	r.ok("rack", "create", "b01", "--hall", "hall-a", "--phase", "1", "--power-kw", "20")
	r.ok("machine", "enroll", "m1", "--rack", "b01", "--unit", "1", "--mac", "52:54:00:00:00:01", "--bmc-address", "http://"+fleet.BMCs[0].Addr,
		"--bmc-protocol", "redfish", "--bmc-user", "admin", "--bmc-password-file", pw, "--power-w", "1000")
	r.ok("rack", "set-state", "b01", "--to", "installed") // a planned rack has no power yet
	r.ok("machine", "power", "m1", "--action", "on")      // waits for its job

	jobs := func(args ...string) []map[string]any {
		t.Helper()
		var out []map[string]any
		if err := json.Unmarshal([]byte(r.ok(append([]string{"job", "list", "-o", "json"}, args...)...)), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if js := jobs(); len(js) != 0 {
		t.Errorf("nothing is in flight, yet job list shows %v", js)
	}
	all := jobs("--state", "all", "--hall", "hall-a")
	if len(all) != 1 || all[0]["machine"] != "m1" || all[0]["kind"] != "power" || all[0]["state"] != "succeeded" || all[0]["rack"] != "b01" {
		t.Fatalf("job list --state all --hall hall-a: %v", all)
	}
	for _, f := range [][]string{{"--machine", "m1", "--state", "succeeded"}, {"--rack", "b01", "--state", "all", "--kind", "power"}} {
		if js := jobs(f...); len(js) != 1 {
			t.Errorf("job list %v: %d jobs, want 1", f, len(js))
		}
	}
	for _, f := range [][]string{{"--rack", "a01", "--state", "all"}, {"--kind", "commission", "--state", "all"}, {"--state", "failed"}} {
		if js := jobs(f...); len(js) != 0 {
			t.Errorf("job list %v: %v, want none", f, js)
		}
	}
	if out := r.ok("job", "list", "--state", "all"); !strings.Contains(out, "m1") || !strings.Contains(out, "succeeded") {
		t.Errorf("table:\n%s", out)
	}

	// A tenant sees only its own machines' jobs, and another's machine
	// does not exist for it.
	r.ok("tenant", "create", "bank-x")
	r.ok("tenant", "assign", "--tenant", "bank-x", "--rack", "a01")
	var tt struct{ Token string }
	json.Unmarshal([]byte(r.ok("token", "create", "--role", "tenant", "--tenant", "bank-x", "-o", "json")), &tt)
	bank := cliRunner{t, url, tt.Token}
	if out := bank.ok("job", "list", "--state", "all", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("tenant sees %s", out)
	}
	if code, _, errs := bank.run("job", "list", "--machine", "m1"); code != exitNotFound {
		t.Errorf("tenant job list --machine of another's machine: exit %d %s", code, errs)
	}
}
