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
