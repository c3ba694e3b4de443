package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/service"
	"github.com/metalhall/metalhall/service/servicetest"
)

// TestRackCommissionProgressIsOneLinePerChangeOffATerminal commissions a
// rack whose machines never boot (their BMCs are loopback emulators with
// nothing behind them), with a short boot timeout, and reads what a script
// reads: NDJSON with -o json and plain lines without, ending in each
// machine's failure; every step's start and end is in machine events.
func TestRackCommissionProgressIsOneLinePerChangeOffATerminal(t *testing.T) {
	rs := servicetest.Start(t, "", func(c *service.Config) {
		// Not a timed assertion: how soon the machines give up, so the
		// test ends.
		c.Engine.BootTimeout = 50 * time.Millisecond
		c.Engine.PollInterval = 10 * time.Millisecond
	})
	r := cliRunner{t, rs.AdminURL(), rs.Token}
	rackInCommissioningHall(r, "40")
	fleet, pw := bmcFleet(t, 2)
	for i, b := range fleet.BMCs {
		r.ok("machine", "enroll", fmt.Sprintf("m%d", i+1), "--rack", "r1", "--unit", fmt.Sprint(i+1), "--mac", fmt.Sprintf("52:54:00:00:01:%02x", i+1),
			"--bmc-address", "http://"+b.Addr, "--bmc-protocol", "redfish", "--bmc-user", "admin", "--bmc-password-file", pw)
	}
	r.ok("rack", "set-state", "r1", "--to", "installed")

	code, out, errs := r.run("rack", "commission", "r1", "--wait", "-o", "json")
	if code != exitError || !strings.Contains(errs, "2 of 2 machines failed commissioning") {
		t.Fatalf("rack commission --wait: exit %d, stderr %q\n%s", code, errs, out)
	}
	final := map[string]rackProgress{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var p rackProgress
		if err := json.Unmarshal([]byte(l), &p); err != nil || p.Machine == "" || p.Job == "" || p.Time.IsZero() {
			t.Fatalf("not one progress object a line: %q (%v)\n%s", l, err, out)
		}
		if prev, ok := final[p.Machine]; ok && prev.State == p.State && prev.Step == p.Step && prev.Error == p.Error {
			t.Errorf("a line without a change: %q", l)
		}
		final[p.Machine] = p
	}
	for _, m := range []string{"m1", "m2"} {
		if p := final[m]; p.State != "failed" || p.Error == "" {
			t.Errorf("%s ends %+v, want failed with its reason", m, p)
		}
	}

	var evs []struct{ Action, Detail string }
	if err := json.Unmarshal([]byte(r.ok("machine", "events", "m1", "-o", "json")), &evs); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range evs {
		actions = append(actions, e.Action+" "+e.Detail)
	}
	all := strings.Join(actions, "\n")
	for _, want := range []string{"step.started commission job", ": bmc-check (attempt 1)", "step.done commission job", ": bmc-check done in", "step.failed commission job", "job.failed"} {
		if !strings.Contains(all, want) {
			t.Errorf("machine events lack %q:\n%s", want, all)
		}
	}

	// Without -o json, off a terminal: one plain line per change and the
	// summary at the end.
	code, out, errs = r.run("rack", "commission", "r1", "--wait")
	if code == 0 || strings.Contains(out, "\033[") {
		t.Fatalf("second commission: exit %d\n%q", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "rack r1 commissioning: 0 running, 2 failed") {
		t.Errorf("no summary at the end (stderr %q):\n%s", errs, out)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.Contains(l, "  m1  ") && !strings.Contains(l, "  m2  ") {
			t.Errorf("line without a machine: %q", l)
		}
	}
}
