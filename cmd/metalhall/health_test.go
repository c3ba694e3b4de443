package main

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/redfish"
)

// TestCriticalSELFailsCommissioningUntilStaffClearIt runs the whole path
// through real BMC peers: ipmi_sim with an uncorrectable ECC record added
// over its LAN interface, and the Redfish emulator with a Critical entry.
// Commissioning fails at check-sel with each entry's words; `machine sel`
// shows them Critical; `machine sel --clear` empties the log and the audit
// trail keeps what it removed.
func TestCriticalSELFailsCommissioningUntilStaffClearIt(t *testing.T) {
	sim := ipmisim.ForTest(t, ipmisim.Config{User: "admin", Password: "ipmi-pw"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sim.AddSEL(ctx, [7]byte{0x04, 0x0c, 0x01, 0x6f, 0x01, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	rf := redfish.NewServer(redfish.Config{Username: "root", Password: "rf-pw"})
	rf.AddSEL("Critical", "PSU 1 failure detected")
	hs := httptest.NewServer(rf)
	t.Cleanup(hs.Close)

	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	c.ok("site", "create", "s1")
	c.ok("hall", "create", "--site", "s1", "h1")
	c.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000")
	c.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1")
	c.ok("phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning")
	c.ok("rack", "set-state", "--to", "installed", "r1")
	dir := t.TempDir()
	pw := func(name, secret string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(secret+"\n"), 0o600)
		return p
	}
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:00:ab:01", "--bmc-address", sim.Addr(),
		"--bmc-protocol", "ipmi", "--bmc-user", "admin", "--bmc-password-file", pw("ipmi", "ipmi-pw"), "ipmi-1")
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "2", "--mac", "52:54:00:00:ab:02", "--bmc-address", hs.URL,
		"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("rf", "rf-pw"), "rf-1")

	for name, words := range map[string]string{"ipmi-1": "Uncorrectable ECC", "rf-1": "PSU 1 failure detected"} {
		if code, _, _ := c.run("machine", "commission", "--wait", name); code == 0 {
			t.Fatalf("%s: commissioning passed with a critical SEL entry", name)
		}
		var m struct {
			State      string `json:"state"`
			FailedStep string `json:"failed_step"`
			Reason     string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(c.ok("machine", "show", "-o", "json", name)), &m); err != nil {
			t.Fatal(err)
		}
		if m.State != "failed" || m.FailedStep != "check-sel" || !strings.Contains(m.Reason, words) || !strings.Contains(m.Reason, "1 critical entry") {
			t.Fatalf("%s: %+v", name, m)
		}
		if out := c.ok("machine", "sel", name); !strings.Contains(out, "Critical") || !strings.Contains(out, words) {
			t.Fatalf("%s: machine sel:\n%s", name, out)
		}
		if out := c.ok("machine", "sel", "--clear", name); !strings.Contains(out, "1 critical") {
			t.Fatalf("%s: machine sel --clear: %s", name, out)
		}
		var sel struct {
			Entries []struct{ Severity string } `json:"entries"`
		}
		json.Unmarshal([]byte(c.ok("machine", "sel", "-o", "json", name)), &sel)
		for _, e := range sel.Entries {
			if e.Severity == "Critical" {
				t.Fatalf("%s: critical entry left after the clear: %+v", name, sel)
			}
		}
	}
	if out := c.ok("audit", "list", "-o", "json"); strings.Count(out, `"machine.sel-clear"`) != 2 || !strings.Contains(out, "Uncorrectable ECC") ||
		!strings.Contains(out, "PSU 1 failure detected") {
		t.Fatalf("audit list:\n%s", out)
	}
}

func TestMachineShowSaysWhatTheBMCDoesNotOffer(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	if got := powerLimitLine(&inventory.PowerLimitRecord{LimitW: 9000, State: "applied", Via: "PowerControl", At: at}); !strings.HasPrefix(got, "9000 W, applied via PowerControl") {
		t.Errorf("applied: %q", got)
	}
	if got := powerLimitLine(&inventory.PowerLimitRecord{LimitW: 9000, State: "unsupported", At: at}); !strings.Contains(got, "not applied: the BMC offers no power cap") {
		t.Errorf("unsupported: %q", got)
	}
	if got := powerLimitLine(nil); got != "" {
		t.Errorf("no limit: %q", got)
	}
	got := sensorLine(&inventory.SensorSummary{InletC: 24, HasInlet: true, Fans: 2, FansOK: 2, PSUs: 2, PSUsOK: 1, WattsNotOffered: true})
	if got != "inlet 24.0 °C, fans 2/2 OK, PSUs 1/2 OK; power reading not offered by this BMC" {
		t.Errorf("sensors: %q", got)
	}
}
