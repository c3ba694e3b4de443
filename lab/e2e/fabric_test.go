package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/rack"
)

// TestFabricCabling commissions a rack of two machines, each with a boot
// NIC and two fabric NICs cabled rail by rail to two leaves (lldpd),
// whose manifest carries the cabling plan, under a profile that requires
// the cabling check. lab-m02's two fabric cables are swapped at the
// leaves: its report names both ports with the exact mismatch and it is
// left failed, while lab-m01, cabled as planned, becomes available.
func TestFabricCabling(t *testing.T) {
	kernel := prereqs(t)
	cfg := rack.Config{Machines: 2, Firmware: "mixed", BMC: "redfish", FabricNICs: 2, Miscabled: []string{"lab-m02"},
		Profile: "lab-fabric"}
	if err := rack.Available(cfg); err != nil {
		t.Skip("e2e: skipped: ", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	e := &env{t: t, dir: t.TempDir(), kernel: kernel}
	defer e.printTimings()
	e.data = filepath.Join(e.dir, "data")
	e.srvLog = filepath.Join(e.dir, "serve.log")
	e.step("setup: build, bootenv, rack with fabric, service", func() error {
		if err := e.build(ctx); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(e.data, "profiles"), 0o700); err != nil {
			return err
		}
		// The leaves announce every second: a few seconds of listening
		// hear them (a real fabric needs 35, its switches' 30 s interval).
		prof := "min_disks: 1\nacceptance:\n  cabling: {listen_seconds: 5}\n"
		if err := os.WriteFile(filepath.Join(e.data, "profiles", "lab-fabric.yaml"), []byte(prof), 0o644); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, e.bin, "bootenv", "build", "--kernel", e.kernel, "--data-dir", e.data, "--agent", e.agent).CombinedOutput(); err != nil {
			return fmt.Errorf("bootenv build: %v\n%s", err, out)
		}
		cfg.Dir, cfg.Log = filepath.Join(e.dir, "rack"), &testLog{t: t}
		r, err := rack.Up(ctx, cfg)
		if err != nil {
			return err
		}
		e.r = r
		return e.startService(ctx)
	})
	defer e.teardown()
	if t.Failed() {
		return
	}
	e.scenario(t, "F cabling: one machine's fabric cables swapped", func(t *testing.T) { e.fabricCabling(ctx, t) })
}

func (e *env) fabricCabling(ctx context.Context, t *testing.T) {
	e.admin(t, ctx, "site", "create", "lab-site")
	e.admin(t, ctx, "hall", "create", "--site", "lab-site", "lab-hall")
	e.admin(t, ctx, "phase", "create", "--hall", "lab-hall", "--number", "1", "--power-kw", "100")
	e.admin(t, ctx, "phase", "set-state", "--hall", "lab-hall", "--number", "1", "--to", "commissioning")
	e.admin(t, ctx, "subnet", "create", "--cidr", e.r.Subnet.String(), "--gateway", e.r.Server.String(), "lab-net")
	e.admin(t, ctx, "rack", "import", "--file", e.r.Manifest)
	e.admin(t, ctx, "rack", "set-state", "--to", "installed", e.r.Rack)
	e.admin(t, ctx, "rack", "commission", e.r.Rack)
	got := e.waitState(t, ctx, 12*time.Minute, []string{"available"}, "lab-m01", "lab-m02")

	if m := got["lab-m01"]; m.State != "available" {
		t.Errorf("lab-m01 (cabled as planned): %s (%s at %s), want available", m.State, m.Reason, m.FailedStep)
	}
	// The plan puts fabric NIC 0000:00:10.0 of machine N on leaf-01
	// EthernetN and 0000:00:11.0 on leaf-02 EthernetN; lab-m02's cables
	// are swapped.
	want := []string{
		"(0000:00:10.0) sees leaf-02 Ethernet2; plan: leaf-01 Ethernet2 — move the cable to leaf-01 Ethernet2 (leaf-02 Ethernet2 is planned for 0000:00:11.0)",
		"(0000:00:11.0) sees leaf-01 Ethernet2; plan: leaf-02 Ethernet2 — move the cable to leaf-02 Ethernet2 (leaf-01 Ethernet2 is planned for 0000:00:10.0)",
	}
	m := got["lab-m02"]
	if m.State != "failed" || m.FailedStep != "check-profile" {
		t.Errorf("lab-m02 (cables swapped): %s at %q, want failed at check-profile", m.State, m.FailedStep)
	}
	for _, w := range want {
		if !strings.Contains(m.Reason, w) {
			t.Errorf("lab-m02's reason lacks %q:\n%s", w, m.Reason)
		}
	}

	var ra struct {
		Passed  int      `json:"passed"`
		Failed  int      `json:"failed"`
		FixList []string `json:"fix_list"`
	}
	if err := json.Unmarshal([]byte(e.admin(t, ctx, "rack", "acceptance", "-o", "json", e.r.Rack)), &ra); err != nil {
		t.Fatal(err)
	}
	if ra.Passed != 1 || ra.Failed != 1 || len(ra.FixList) != 2 {
		t.Errorf("rack acceptance: %d passed, %d failed, fix list %q; want 1, 1 and lab-m02's two cables", ra.Passed, ra.Failed, ra.FixList)
	}
	for i, w := range want {
		if i < len(ra.FixList) && (!strings.HasPrefix(ra.FixList[i], "U2 lab-m02: ") || !strings.HasSuffix(ra.FixList[i], w)) {
			t.Errorf("fix list line %d: %q, want U2 lab-m02: ... %s", i+1, ra.FixList[i], w)
		}
	}
	t.Logf("rack acceptance fix list:\n%s", strings.Join(ra.FixList, "\n"))
	t.Logf("rack cabling:\n%s", e.admin(t, ctx, "rack", "cabling", e.r.Rack))
}
