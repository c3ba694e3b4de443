package main

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/lab/ipmisim"
	"github.com/metalhall/metalhall/lab/redfish"
)

// TestTechnicianPowersRealBMCs drives real BMC peers from the CLI: an
// emulated Redfish BMC (bmclib's gofish provider, unmodified) and Debian's
// ipmi_sim (bmclib's ipmitool provider). Power on and off and PXE boot
// really change their state; wrong credentials are classified and shown
// on the machine.
func TestTechnicianPowersRealBMCs(t *testing.T) {
	sim := ipmisim.ForTest(t, ipmisim.Config{User: "admin", Password: "ipmi-pw"})
	rf := redfish.NewServer(redfish.Config{Username: "root", Password: "rf-pw"})
	hs := httptest.NewServer(rf)
	t.Cleanup(hs.Close)
	hs2 := httptest.NewServer(redfish.NewServer(redfish.Config{Username: "root", Password: "rf-pw"}))
	t.Cleanup(hs2.Close)
	bios := redfish.NewServer(redfish.Config{Username: "root", Password: "rf-pw"})
	hs3 := httptest.NewServer(bios)
	t.Cleanup(hs3.Close)

	url, tok := startService(t)
	c := cliRunner{t, url, tok}
	c.ok("site", "create", "s1")
	c.ok("hall", "create", "--site", "s1", "h1")
	c.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000")
	c.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1")
	dir := t.TempDir()
	pw := func(name, secret string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(secret+"\n"), 0o600)
		return p
	}
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:00:aa:01", "--bmc-address", hs.URL,
		"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("rf", "rf-pw"), "rf-1")
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "2", "--mac", "52:54:00:00:aa:02", "--bmc-address", sim.Addr(),
		"--bmc-protocol", "ipmi", "--bmc-user", "admin", "--bmc-password-file", pw("ipmi", "ipmi-pw"), "ipmi-1")
	// The same BMC spelled another way is the same BMC.
	for _, addr := range []string{hs.URL + "/", strings.TrimPrefix(hs.URL, "http://"), "HTTP://" + strings.TrimPrefix(hs.URL, "http://")} {
		code, _, errs := c.run("machine", "enroll", "--rack", "r1", "--unit", "3", "--mac", "52:54:00:00:aa:03", "--bmc-address", addr,
			"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("rf", "rf-pw"), "rf-again")
		if code == 0 || !strings.Contains(errs, `already belongs to machine "rf-1"`) {
			t.Fatalf("enrolling %s again: exit %d %s", addr, code, errs)
		}
	}
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "3", "--mac", "52:54:00:00:aa:03", "--bmc-address", hs2.URL+"/",
		"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("bad", "wrong"), "rf-badpw")
	// A BIOS machine gets legacy boot overrides.
	c.ok("machine", "enroll", "--rack", "r1", "--unit", "4", "--mac", "52:54:00:00:aa:04", "--bmc-address", hs3.URL,
		"--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw("rf", "rf-pw"), "--bmc-boot-mode", "legacy", "rf-bios")
	c.ok("machine", "boot-device", "--device", "pxe", "rf-bios")
	if b := bios.Boot(); b.Target != "Pxe" || b.Mode != "Legacy" {
		t.Fatalf("BIOS machine's boot override %+v, want Pxe in Legacy mode", b)
	}

	// A planned rack in a planned phase has no power: nothing is switched on.
	if code, _, errs := c.run("machine", "power", "--action", "on", "rf-1"); code != exitConflict || !strings.Contains(errs, "planned") || rf.Power() {
		t.Fatalf("power on in a planned rack: exit %d %s (BMC power %v)", code, errs, rf.Power())
	}
	c.ok("phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning")
	c.ok("rack", "set-state", "--to", "installed", "r1")

	// Redfish.
	c.ok("machine", "power", "--action", "on", "rf-1")
	if !rf.Power() {
		t.Fatal("power on did not reach the Redfish BMC")
	}
	if out := c.ok("machine", "power", "--action", "status", "rf-1"); !strings.Contains(out, "rf-1 is on") {
		t.Fatalf("status: %s", out)
	}
	// A status read is recorded: the list shows it at once, not "-" until
	// the next power sync (which the tests run without).
	c.ok("machine", "power", "--action", "status", "rf-bios")
	if out := c.ok("machine", "list", "--rack", "r1"); !regexp.MustCompile(`(?m)^rf-bios\s.*\soff\s`).MatchString(out) {
		t.Fatalf("power state after a status read:\n%s", out)
	}
	c.ok("machine", "boot-device", "--device", "pxe", "rf-1")
	if b := rf.Boot(); !strings.EqualFold(b.Target, "Pxe") {
		t.Fatalf("Redfish boot override %+v", b)
	}
	c.ok("machine", "power", "--action", "off", "rf-1")
	if rf.Power() {
		t.Fatal("power off did not reach the Redfish BMC")
	}
	// The event log, read on demand, shows what the BMC did.
	if out := c.ok("machine", "sel", "rf-1"); !strings.Contains(out, "ComputerSystem.Reset On") || !strings.Contains(out, "ComputerSystem.Reset ForceOff") {
		t.Fatalf("machine sel:\n%s", out)
	}

	// IPMI.
	c.ok("machine", "power", "--action", "on", "ipmi-1")
	if on, err := sim.Power(); err != nil || !on {
		t.Fatalf("ipmi_sim power after on: %v %v", on, err)
	}
	c.ok("machine", "boot-device", "--device", "pxe", "ipmi-1")
	if dev, err := sim.Boot(); err != nil || dev != "pxe" {
		t.Fatalf("ipmi_sim boot device %q %v", dev, err)
	}
	c.ok("machine", "power", "--action", "off", "ipmi-1")
	if on, _ := sim.Power(); on {
		t.Fatal("ipmi_sim still on after off")
	}

	// Wrong credentials: the job fails, the reason is classified and on the machine.
	code, _, errs := c.run("machine", "power", "--action", "on", "rf-badpw")
	if code == 0 || !strings.Contains(errs, "wrong credentials") {
		t.Fatalf("bad password: exit %d %s", code, errs)
	}
	var m struct {
		BMCStatus struct {
			LastError string `json:"last_error"`
			Outcome   string `json:"outcome"`
			Reachable bool   `json:"reachable"`
			Power     string `json:"power"`
		} `json:"bmc_status"`
	}
	json.Unmarshal([]byte(c.ok("machine", "show", "-o", "json", "rf-badpw")), &m)
	if !strings.Contains(m.BMCStatus.LastError, "wrong credentials (Redfish)") || m.BMCStatus.Outcome != "auth" || !m.BMCStatus.Reachable {
		t.Fatalf("machine's BMC status: %+v", m.BMCStatus)
	}
	// Success is recorded too, with what was read.
	c.ok("machine", "power", "--action", "status", "rf-1")
	m.BMCStatus.LastError = ""
	json.Unmarshal([]byte(c.ok("machine", "show", "-o", "json", "rf-1")), &m)
	if m.BMCStatus.Outcome != "ok" || !m.BMCStatus.Reachable || m.BMCStatus.Power != "off" || m.BMCStatus.LastError != "" {
		t.Fatalf("machine's BMC status after a good read: %+v", m.BMCStatus)
	}
	// Every power action is audited.
	if out := c.ok("audit", "list"); strings.Count(out, "machine.power") < 6 {
		t.Fatalf("audit:\n%s", out)
	}
}
