package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMachineUpdateCorrectsWhatWasEnteredAndRotatesTheBMCPassword(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	rackInCommissioningHall(r, "10")
	fleet, right := bmcFleet(t, 2)
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.ok("machine", "enroll", "m1", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:00:02:01", "--bmc-address", "http://"+fleet.BMCs[0].Addr,
		"--bmc-protocol", "redfish", "--bmc-user", "admin", "--bmc-password-file", wrong, "--power-w", "1000")
	r.ok("machine", "enroll", "m2", "--rack", "r1", "--unit", "2", "--mac", "52:54:00:00:02:02", "--bmc-address", "http://"+fleet.BMCs[1].Addr,
		"--bmc-protocol", "redfish", "--bmc-user", "admin", "--bmc-password-file", right, "--power-w", "1000")
	show := func() map[string]any {
		var m map[string]any
		json.Unmarshal([]byte(r.ok("machine", "show", "m1", "-o", "json")), &m)
		return m
	}
	before := show()

	// Refusals name the rule and change nothing.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--power-w", "9500"}, exitConflict, "power"},                      // 9.5 + 1 kW over the rack's 10
		{[]string{"--mac", "52:54:00:00:02:02"}, exitConflict, "52:54:00:00:02:02"}, // m2's
		{[]string{"--bmc-address", "http://" + fleet.BMCs[1].Addr}, exitConflict, fleet.BMCs[1].Addr},
		{[]string{"--mac", "zz"}, exitUsage, "zz"},
		{[]string{"--bmc-protocol", "snmp"}, exitUsage, "snmp"},
		{nil, exitUsage, "nothing to change"},
		{[]string{"--profile", "hgx-h10O"}, exitUsage, `profile "hgx-h10O" is not defined`},
	} {
		code, _, errs := r.run(append([]string{"machine", "update", "m1"}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("machine update m1 %v: exit %d %q; want %d mentioning %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
	after := show()
	delete(before, "updated_at")
	delete(after, "updated_at")
	if b, _ := json.Marshal(before); string(b) != func() string { a, _ := json.Marshal(after); return string(a) }() {
		t.Errorf("a refused update changed the machine:\n%s\n%s", b, func() string { a, _ := json.Marshal(after); return string(a) }())
	}

	r.ok("profile", "import", "--file", exampleProfile, "hgx-h100")
	r.ok("machine", "update", "m1", "--power-w", "2000", "--mac", "52:54:00:00:02:11,52:54:00:00:02:12", "--profile", "hgx-h100")
	m := show()
	if m["power_w"] != float64(2000) || m["profile"] != "hgx-h100" || len(m["macs"].([]any)) != 2 {
		t.Errorf("after update: %v", m)
	}

	// A wrong password is fixed without re-enrolling.
	if code, _, errs := r.run("machine", "power", "m1", "--action", "status"); code == 0 {
		t.Fatalf("power status with the wrong BMC password worked: %s", errs)
	}
	out := r.ok("machine", "update", "m1", "--bmc-password-file", right)
	if strings.Contains(out, "admin\n") || !strings.Contains(out, "password was replaced") {
		t.Errorf("update output: %q", out)
	}
	if out := r.ok("machine", "power", "m1", "--action", "status"); !strings.Contains(out, "m1 is off") {
		t.Errorf("power status after rotation: %q", out)
	}
	if audit := r.ok("audit", "list"); strings.Contains(audit, "not-the-password") || !strings.Contains(audit, "bmc_password") {
		t.Errorf("audit trail:\n%s", audit)
	}
}

func TestRackAndPhaseUpdatesKeepPlacementAndBudgets(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	rackInCommissioningHall(r, "10") // phase 1: 100 kW; rack r1: 10 kW
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its BMC is never contacted: no job runs here.
	r.ok("machine", "enroll", "m1", "--rack", "r1", "--unit", "20", "--height", "2", "--mac", "52:54:00:00:03:01", "--bmc-address", "127.0.0.1:1",
		"--bmc-protocol", "ipmi", "--bmc-user", "u", "--bmc-password-file", pw, "--power-w", "5000")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rack", "update", "r1", "--units", "20"}, exitConflict, "U20-U21"},
		{[]string{"rack", "update", "r1", "--power-kw", "4"}, exitConflict, "1 kW short"},
		{[]string{"rack", "update", "r1", "--power-kw", "200"}, exitConflict, "exceed it by 100 kW"},
		{[]string{"rack", "update", "r1", "--units", "99"}, exitUsage, "units"},
		{[]string{"rack", "update", "r1"}, exitUsage, "nothing to change"},
		{[]string{"phase", "update", "--hall", "h1", "--number", "1", "--power-kw", "5"}, exitConflict, "5 kW short"},
		{[]string{"phase", "update", "--hall", "h1", "--number", "1", "--target-date", "soon"}, exitUsage, "YYYY-MM-DD"},
		{[]string{"phase", "update", "--hall", "h1", "--number", "9", "--power-kw", "5"}, exitNotFound, "not found"},
	} {
		code, _, errs := r.run(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("metalhall %s: exit %d %q; want %d mentioning %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
	var rack struct {
		Units   int    `json:"units"`
		BudgetW int64  `json:"budget_w"`
		Row     string `json:"row"`
	}
	if err := json.Unmarshal([]byte(r.ok("rack", "show", "r1", "-o", "json")), &rack); err != nil || rack.Units != 48 || rack.BudgetW != 10000 {
		t.Fatalf("refusals changed the rack: %+v %v", rack, err)
	}

	r.ok("rack", "update", "r1", "--units", "42", "--power-kw", "60", "--row", "C")
	json.Unmarshal([]byte(r.ok("rack", "show", "r1", "-o", "json")), &rack)
	if rack.Units != 42 || rack.BudgetW != 60000 || rack.Row != "C" {
		t.Errorf("after rack update: %+v", rack)
	}
	out := r.ok("phase", "update", "--hall", "h1", "--number", "1", "--power-kw", "80", "--target-date", "2027-06-01", "-o", "json")
	var p struct {
		BudgetW    int64  `json:"budget_w"`
		TargetDate string `json:"target_date"`
	}
	if json.Unmarshal([]byte(out), &p); p.BudgetW != 80000 || p.TargetDate != "2027-06-01" {
		t.Errorf("after phase update: %s", out)
	}
	// A lower phase budget that no longer covers the rack is refused.
	if code, _, errs := r.run("phase", "update", "--hall", "h1", "--number", "1", "--power-kw", "50"); code != exitConflict || !strings.Contains(errs, "60 kW is allocated") {
		t.Errorf("phase below its racks: %d %s", code, errs)
	}
}
