package e2e

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/lab/demoos"
)

// The IPMI machine of the rack (lab-m03: BIOS, ipmi_sim) provisioned end
// to end, a hung ipmi_sim, and the energisation interlock refusing an API
// power-on and holding back an engine-driven one. They run last: they
// reuse lab-m03, which scenario 1 left failed (its profile asks for GPUs),
// and they change the rack's budget and the service's power sync.

const ipmiMachine = "lab-m03"

type bmcView struct {
	State     string `json:"state"`
	BMCStatus struct {
		Power   string `json:"power"`
		Outcome string `json:"outcome"`
	} `json:"bmc_status"`
}

func (e *env) bmcView(t *testing.T, ctx context.Context, n string) bmcView {
	t.Helper()
	return cliJSON[bmcView](t, ctx, e, e.token, "machine", "show", "-o", "json", n)
}

// ipmiProvision commissions lab-m03 with a profile it meets and images it.
func (e *env) ipmiProvision(ctx context.Context, t *testing.T) {
	n := ipmiMachine
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "failed" {
		t.Fatalf("%s is %s (%v), want failed (the profile mismatch of scenario 1)", n, m.State, err)
	}
	if !strings.Contains(e.admin(t, ctx, "image", "list"), "demo-v1") {
		e.admin(t, ctx, "image", "import", "--quiet", "--file", filepath.Join(e.dir, "demo-v1.img.gz"), "demo-v1")
	}
	e.admin(t, ctx, "machine", "update", "--profile", "lab-vm", n)
	e.admin(t, ctx, "machine", "commission", n)
	if m := e.waitState(t, ctx, 8*time.Minute, []string{"available"}, n)[n]; m.State != "available" {
		t.Fatalf("%s: %s (%s at %s), want available", n, m.State, m.Reason, m.FailedStep)
	}
	lm := e.r.Machine(n)
	from := lm.SerialSize()
	e.admin(t, ctx, "machine", "provision", "--image", "demo-v1", n)
	m := e.waitState(t, ctx, 10*time.Minute, []string{"deployed"}, n)[n]
	if m.State != "deployed" {
		t.Fatalf("%s: %s (%s at %s), want deployed", n, m.State, m.Reason, m.FailedStep)
	}
	want := e.images["demo-v1"]
	if head, err := lm.ReadDisk(len(want)); err != nil || !bytes.Equal(head, want) {
		t.Errorf("%s: the disk does not hold demo-v1 (%v)", n, err)
	}
	if !strings.Contains(lm.Serial(from), demoos.Marker+" demo OS v1") {
		t.Errorf("%s: deployed but the demo OS marker is not on its console", n)
	}
	if !lm.BMCPower() {
		t.Errorf("%s: ipmi_sim reads off after the provision", n)
	}
	if v := e.bmcView(t, ctx, n); v.BMCStatus.Outcome != "ok" || v.BMCStatus.Power != "on" {
		t.Errorf("%s: BMC status %+v after the provision, want ok and on", n, v.BMCStatus)
	}
}

// hungIPMI stops lab-m03's ipmi_sim (SIGSTOP): a power job fails within
// its tries' bounds with the outcome recorded, a status read answers with
// an error instead of hanging, the machine stays deployed, and once
// ipmi_sim runs again the BMC answers at once (no lock left held).
func (e *env) hungIPMI(ctx context.Context, t *testing.T) {
	n := ipmiMachine
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "deployed" {
		t.Fatalf("%s is %s (%v), want deployed: an earlier scenario failed", n, m.State, err)
	}
	lm := e.r.Machine(n)
	if err := lm.HangBMC(true); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			lm.HangBMC(false)
		}
	}()
	_, err := e.cli(ctx, e.token, "machine", "power", "--action", "cycle", n)
	if err == nil {
		t.Fatal("a power cycle through a stopped ipmi_sim succeeded")
	}
	t.Logf("power cycle through the stopped BMC: %v", err)
	jobs := e.jobsOn(t, ctx, e.token, n)
	var j *inventory.Job
	for i := range jobs {
		if jobs[i].Kind == inventory.JobPower && (j == nil || jobs[i].CreatedAt.After(j.CreatedAt)) {
			j = &jobs[i]
		}
	}
	if j == nil || j.State != inventory.JobFailed || len(j.Steps) != 1 || j.Steps[0].State != inventory.StepFailed {
		t.Fatalf("the power job: %+v, want failed at its one step", j)
	}
	// The bound: three tries (two retries) of the per-try deadline of a
	// power command (30 s plus the 3 min power timeout), with backoffs.
	if d, bound := j.Steps[0].EndedAt.Sub(j.Steps[0].StartedAt), 3*(30*time.Second+3*time.Minute)+10*time.Second; d > bound {
		t.Errorf("the power step took %v, past the tries' bound of %v", d, bound)
	}
	v := e.bmcView(t, ctx, n)
	if v.BMCStatus.Outcome != "timeout" && v.BMCStatus.Outcome != "unreachable" {
		t.Errorf("%s: outcome %q recorded, want timeout or unreachable (%s)", n, v.BMCStatus.Outcome, j.Error)
	}
	if v.State != "deployed" {
		t.Errorf("%s: %s after a failed power job, want deployed", n, v.State)
	}
	if out, err := e.cli(ctx, e.token, "machine", "power", "--action", "status", n); err == nil {
		t.Errorf("a status read through a stopped ipmi_sim answered %q", out)
	}
	if err := lm.HangBMC(false); err != nil {
		t.Fatal(err)
	}
	resumed = true
	out, err := e.cli(ctx, e.token, "machine", "power", "--action", "status", n)
	if err != nil || !strings.Contains(out, n+" is on") {
		t.Fatalf("status after ipmi_sim resumed: %q %v", out, err)
	}
	if v := e.bmcView(t, ctx, n); v.BMCStatus.Outcome != "ok" {
		t.Errorf("%s: outcome %q after a good read, want ok", n, v.BMCStatus.Outcome)
	}
}

type rackPowerView struct {
	BudgetW    int64                `json:"budget_w"`
	PowerAlert bool                 `json:"power_alert"`
	Power      *inventory.PowerDraw `json:"power"`
}

// interlock lowers the rack's budget under what its machines draw (the
// Redfish emulators measure 1 kW each while on; machines are rated 500 W),
// then: an API power-on of lab-m03 is refused with the figures and the
// machine stays off; a reimage of lab-m03 waits at its power-cycle step,
// with the machine off, until lab-m01 is powered off, then deploys; the
// rack's power alert is raised once.
func (e *env) interlock(ctx context.Context, t *testing.T) {
	n := ipmiMachine
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "deployed" {
		t.Fatalf("%s is %s (%v), want deployed: an earlier scenario failed", n, m.State, err)
	}
	rackName := e.r.Rack
	e.admin(t, ctx, "machine", "power", "--action", "off", n)
	for _, o := range []string{"lab-m01", "lab-m02"} {
		e.admin(t, ctx, "machine", "power", "--action", "on", o)
	}
	// The power sync measures the draw: restart the service with it on.
	e.killService()
	e.serveArgs = []string{"--power-sync-interval", "2s", "--power-alert-share", "0.9"}
	defer func() { e.serveArgs = nil }()
	if err := e.startService(ctx); err != nil {
		t.Fatal(err)
	}
	defer e.cli(context.WithoutCancel(ctx), e.token, "rack", "update", "--power-kw", "20", rackName)
	var rp rackPowerView
	if err := e.until(ctx, 2*time.Minute, func() error {
		rp = cliJSON[rackPowerView](t, ctx, e, e.token, "rack", "show", "-o", "json", rackName)
		if rp.Power == nil || rp.Power.Measured != 2 || rp.Power.MeasuredW != 2000 || rp.Power.Off != 1 {
			return errors.New("not measured yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("rack power never showed lab-m01 and lab-m02 measured at 1 kW each and lab-m03 off: %+v", rp.Power)
	}
	if rp.Power.RatedW != 1500 {
		t.Fatalf("rated %d W, want 1500 (three machines of 500 W)", rp.Power.RatedW)
	}
	// Ratings (1.5 kW) fit 1.6 kW; the measured draw (2 kW) does not.
	e.admin(t, ctx, "rack", "update", "--power-kw", "1.6", rackName)

	// The API power-on: refused at once, nothing powered.
	_, err := e.cli(ctx, e.token, "machine", "power", "--action", "on", n)
	if err == nil || !strings.Contains(err.Error(), "rack "+rackName+" would draw 2.5 kW of its 1.6 kW budget (over by 0.9 kW)") {
		t.Fatalf("power on past the budget: %v", err)
	}
	if e.r.Machine(n).BMCPower() {
		t.Fatalf("%s: on after a refused power-on", n)
	}

	// The alert: raised once, seen on the rack, in the audit trail.
	if err := e.until(ctx, time.Minute, func() error {
		if !cliJSON[rackPowerView](t, ctx, e, e.token, "rack", "show", "-o", "json", rackName).PowerAlert {
			return errors.New("no alert yet")
		}
		return nil
	}); err != nil {
		t.Fatalf("rack %s: no power alert with 2 kW measured of 1.6 kW", rackName)
	}
	alerts := 0
	for _, ev := range cliJSON[[]inventory.Event](t, ctx, e, e.token, "audit", "list", "--since", "1h", "-o", "json") {
		if ev.Subject == "rack/"+rackName && ev.Action == "rack.power.over" {
			alerts++
		}
	}
	if alerts != 1 {
		t.Errorf("rack.power.over events: %d, want 1", alerts)
	}

	// The engine's power-on: the reimage waits at its power cycle.
	from := e.r.Machine(n).SerialSize()
	e.admin(t, ctx, "machine", "provision", "--image", "demo-v1", n)
	var waiting string
	if err := e.until(ctx, 2*time.Minute, func() error {
		for _, ev := range e.eventsOn(t, ctx, e.token, n) {
			if ev.Action == "step.waiting" {
				waiting = ev.Detail
				return nil
			}
		}
		return errors.New("not waiting")
	}); err != nil {
		t.Fatalf("%s: the reimage did not wait for the rack's budget", n)
	}
	if !strings.Contains(waiting, "power-cycle waits for the rack's power budget") || !strings.Contains(waiting, "would draw 2.5 kW of its 1.6 kW budget") {
		t.Errorf("waiting event %q", waiting)
	}
	if e.r.Machine(n).BMCPower() {
		t.Fatalf("%s: powered on while its job waits for the budget", n)
	}
	if m, _ := e.show(ctx, e.token, n); m.State != "provisioning" {
		t.Fatalf("%s: %s while waiting, want provisioning", n, m.State)
	}
	// lab-m01 goes off: 1 + 0.5 kW fits 1.6 kW, and the reimage goes on.
	e.admin(t, ctx, "machine", "power", "--action", "off", "lab-m01")
	m := e.waitState(t, ctx, 10*time.Minute, []string{"deployed"}, n)[n]
	if m.State != "deployed" {
		t.Fatalf("%s: %s (%s at %s), want deployed once the rack had room", n, m.State, m.Reason, m.FailedStep)
	}
	if !strings.Contains(e.r.Machine(n).Serial(from), demoos.Marker+" demo OS v1") {
		t.Errorf("%s: deployed but the demo OS marker is not on its console", n)
	}
	energised := false
	for _, ev := range e.eventsOn(t, ctx, e.token, n) {
		energised = energised || ev.Action == "step.energised"
	}
	if !energised {
		t.Errorf("%s: no step.energised event", n)
	}
	e.admin(t, ctx, "machine", "power", "--action", "off", "lab-m02")
}

// until calls check every 2 s until it returns nil or timeout passes: a
// wait for a condition, never an assertion on how long it took.
func (e *env) until(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Second):
		}
	}
}
