package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// The authorization matrix over time: machines and racks change hands, and
// at every point each tenant sees exactly its own tenancy — nothing of the
// machine's earlier tenants, and nothing of staff.

// endJob ends a job as the engine would (this fixture runs no engine):
// every step done, the job in state st, the machine where it leaves it.
func (f *fixture) endJob(id string, st inventory.JobState) {
	f.t.Helper()
	_, _, err := f.inv.UpdateJob(context.Background(), id, func(j *inventory.Job, m *inventory.Machine) error {
		for i := range j.Steps {
			j.Steps[i].State = inventory.StepDone
		}
		j.State = st
		switch {
		case st == inventory.JobSucceeded && j.Kind == inventory.JobProvision:
			m.State = inventory.MachineDeployed
		case st == inventory.JobSucceeded && j.Kind == inventory.JobRelease:
			m.State, m.Image, m.NeedsErase = inventory.MachineAvailable, "", false
		case st != inventory.JobSucceeded && j.Kind != inventory.JobPower:
			m.State, m.Reason, m.FailedStep = inventory.MachineFailed, string(st), "write-image"
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// job asks for a job through the API and returns its ID.
func (f *fixture) job(who, machine, verb string, body any) string {
	f.t.Helper()
	status, data := f.do(who, "POST", "/api/v1/machines/"+machine+"/"+verb, body)
	if status != http.StatusAccepted {
		f.t.Fatalf("%s %s %s: %d %s", who, verb, machine, status, data)
	}
	var j Job
	if err := json.Unmarshal(data, &j); err != nil {
		f.t.Fatal(err)
	}
	return j.ID
}

// deploy images a machine for a tenant with user data and a key, and
// lets the job succeed.
func (f *fixture) deploy(who, machine, secret string) {
	f.t.Helper()
	f.endJob(f.job(who, machine, "provision", ProvisionRequest{Image: "ubuntu-24.04", UserData: "#cloud-config " + secret, SSHKeys: []string{"ssh-ed25519 AAAA " + secret}}), inventory.JobSucceeded)
}

func (f *fixture) release(who, machine string) {
	f.t.Helper()
	f.endJob(f.job(who, machine, "release", ReleaseRequest{}), inventory.JobSucceeded)
}

func (f *fixture) tokenID(who string) string {
	id, _, ok := parseToken(f.tokens[who])
	if !ok {
		f.t.Fatalf("no token %s", who)
	}
	return id
}

// metadata fetches a metadata path as the machine at ip would.
func (f *fixture) metadata(ip, path string) (int, string) {
	eng := f.srv.prov.(*provisioner.Engine)
	req := httptest.NewRequest("GET", "/metadata/"+path, nil)
	req.RemoteAddr = ip + ":40000"
	rec := httptest.NewRecorder()
	eng.MetadataHandler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// reserve gives machine an address, so that the metadata service knows it.
func (f *fixture) reserve(machine, ip string) {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.inv.CreateSubnet(ctx, inventory.Subnet{Name: "prov", CIDR: "10.60.0.0/24", Gateway: "10.60.0.1"}); err != nil && !errors.Is(err, inventory.ErrExists) {
		f.t.Fatal(err)
	}
	if _, err := f.inv.UpdateMachine(ctx, machine, func(m *inventory.Machine) error { m.IP = ip; return nil }); err != nil {
		f.t.Fatal(err)
	}
}

// leaks fails the test when a response to tenant who carries anything of
// another tenancy or of staff.
func (f *fixture) leaks(who string, data []byte, forbidden ...string) {
	f.t.Helper()
	for _, s := range forbidden {
		if s != "" && strings.Contains(string(data), s) {
			f.t.Errorf("%s sees %q in %s", who, s, data)
		}
	}
}

// machineRoutes are every route a tenant may call about one machine.
func (f *fixture) machineRoutes() []route {
	var out []route
	for _, rt := range f.srv.routes {
		if rt.scope == scopeMachine && rt.roles.has(inventory.RoleTenant) {
			out = append(out, rt)
		}
	}
	return out
}

// checkOwner checks every machine route for two tenants: the owner reads
// the machine, its job and events; the other is told none of them exist,
// whatever it asks.
func (f *fixture) checkOwner(machine, owner, other string) {
	f.t.Helper()
	for _, rt := range f.machineRoutes() {
		_, body := example(rt.action)
		path := fill(rt.pattern, map[string]string{"name": machine})
		if status, data := f.do(other, rt.method, path, body); status != http.StatusNotFound {
			f.t.Errorf("%s %s %s as %s (not its machine): %d %s, want 404", rt.method, rt.pattern, machine, other, status, data)
		}
		if rt.method == "GET" && owner != "" {
			if status, data := f.do(owner, rt.method, path, nil); status != http.StatusOK && !((rt.action == "machine.job" || rt.action == "machine.console-log") && status == http.StatusNotFound) {
				f.t.Errorf("%s %s as %s (its machine): %d %s", rt.method, path, owner, status, data)
			}
		}
	}
}

func TestHandoverAfterReleaseShowsTheNewTenantNothingOfTheOld(t *testing.T) {
	f := newFixture(t)
	f.reserve("ma", "10.60.0.10")
	f.checkOwner("ma", "tenant-a", "tenant-b")
	f.deploy("tenant-a", "ma", "secret-of-a")
	if _, body := f.metadata("10.60.0.10", "user-data"); !strings.Contains(body, "secret-of-a") {
		t.Fatalf("the deployed machine's own metadata: %q", body)
	}
	// What A's machine printed during A's job is A's.
	var jobsOfA []string
	for _, j := range must(f.inv.MachineJobs(context.Background(), "ma")) {
		jobsOfA = append(jobsOfA, j.ID)
		if err := f.inv.PutConsoleLog(context.Background(), inventory.ConsoleLog{Job: j.ID, Data: []byte("secret-of-a on the console\r\n"), Captured: 28}); err != nil {
			t.Fatal(err)
		}
	}
	if status, data := f.do("tenant-a", "GET", "/api/v1/machines/ma/console-log", nil); status != http.StatusOK || !strings.Contains(string(data), "secret-of-a on the console") {
		t.Fatalf("tenant A's own console log: %d %s", status, data)
	}

	// Deployed for ta: neither machine nor rack assignment may move it.
	if status, data := f.do("admin", "POST", "/api/v1/tenants/tb/assign", TenantAssign{Machine: "ma"}); status != http.StatusConflict {
		t.Fatalf("machine assignment of a deployed machine: %d %s", status, data)
	}
	if status, data := f.do("technician", "POST", "/api/v1/tenants/tb/assign", TenantAssign{Rack: "ra"}); status != http.StatusConflict || !strings.Contains(string(data), "release it") {
		t.Fatalf("rack assignment over a deployed machine: %d %s", status, data)
	}
	if status, data := f.do("admin", "POST", "/api/v1/tenants/ta/unassign", TenantAssign{Machine: "ma"}); status != http.StatusConflict {
		t.Fatalf("unassigning a deployed machine: %d %s", status, data)
	}
	f.checkOwner("ma", "tenant-a", "tenant-b")

	// Released (wiped): the metadata service serves nothing any more.
	f.release("tenant-a", "ma")
	for _, p := range []string{"user-data", "public-keys", "meta-data"} {
		if _, body := f.metadata("10.60.0.10", p); strings.Contains(body, "secret-of-a") {
			t.Errorf("after the release, metadata %s still serves %q", p, body)
		}
	}

	if status, data := f.do("technician", "POST", "/api/v1/tenants/tb/assign", TenantAssign{Rack: "ra"}); status != http.StatusOK {
		t.Fatalf("rack assignment after the release: %d %s", status, data)
	}
	f.checkOwner("ma", "tenant-b", "tenant-a")
	for _, p := range []string{"/api/v1/machines/ma", "/api/v1/machines/ma/events", "/api/v1/machines/ma/job", "/api/v1/audit", "/api/v1/racks/ra", "/api/v1/machines",
		"/api/v1/jobs?state=all", "/api/v1/jobs?state=all&machine=ma", "/api/v1/jobs?state=all&rack=ra", "/api/v1/events?after=0"} {
		_, data := f.do("tenant-b", "GET", p, nil)
		f.leaks("tenant-b", data, "secret-of-a", f.tokenID("tenant-a"), f.tokenID("admin"), f.tokenID("technician"), "10.0.0.1", `"ta"`)
	}
	// Nor the console of A's jobs, asked for by ID or not.
	for _, q := range append([]string{""}, jobsOfA...) {
		if q != "" {
			q = "?job=" + q
		}
		if status, data := f.do("tenant-b", "GET", "/api/v1/machines/ma/console-log"+q, nil); status != http.StatusNotFound {
			t.Errorf("the new tenant reads the old tenancy's console log%s: %d %s", q, status, data)
		}
	}
	if status, data := f.do("tenant-b", "GET", "/api/v1/machines/ma/job", nil); status != http.StatusNotFound {
		t.Errorf("the new tenant reads the old tenancy's job: %d %s", status, data)
	}

	// B provisions; the job is cancelled while B's OS (or A's, were it
	// there) could ask for metadata: it gets nothing of A's, and B's own
	// user data only from B's running job.
	id := f.job("tenant-b", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04", UserData: "#cloud-config secret-of-b"})
	if _, body := f.metadata("10.60.0.10", "user-data"); strings.Contains(body, "secret-of-a") {
		t.Errorf("during B's provision, metadata serves A's user data: %q", body)
	}
	if status, data := f.do("tenant-b", "POST", "/api/v1/machines/ma/cancel", nil); status != http.StatusAccepted {
		t.Fatalf("the tenant cancels its own provision: %d %s", status, data)
	}
	f.endJob(id, inventory.JobCancelled)
	for _, p := range []string{"user-data", "public-keys", "meta-data"} {
		if _, body := f.metadata("10.60.0.10", p); strings.Contains(body, "secret-of-a") || strings.Contains(body, "secret-of-b") {
			t.Errorf("after a cancelled provision, metadata %s serves %q", p, body)
		}
	}
}

func TestFailedReimageCannotChangeHands(t *testing.T) {
	f := newFixture(t)
	f.deploy("tenant-a", "ma", "secret-of-a")
	f.endJob(f.job("tenant-a", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04", UserData: "again secret-of-a"}), inventory.JobFailed)
	for _, in := range []TenantAssign{{Machine: "ma"}, {Rack: "ra"}} {
		if status, data := f.do("technician", "POST", "/api/v1/tenants/tb/assign", in); status != http.StatusConflict {
			t.Errorf("assigning %+v after a failed reimage: %d %s", in, status, data)
		}
	}
	m := must(f.inv.Machine(context.Background(), "ma"))
	if m.Tenant != "ta" {
		t.Fatalf("a refused assignment changed the tenant to %q", m.Tenant)
	}
	// A tenant may not image a failed machine (commissioning checks it
	// first), but may release it; staff may image it.
	if status, data := f.do("tenant-a", "POST", "/api/v1/machines/ma/provision", ProvisionRequest{Image: "ubuntu-24.04"}); status != http.StatusConflict || !strings.Contains(string(data), "commissioned again") {
		t.Fatalf("tenant provisions a failed machine: %d %s", status, data)
	}
	f.release("tenant-a", "ma")
	if status, data := f.do("technician", "POST", "/api/v1/tenants/tb/assign", TenantAssign{Machine: "ma"}); status != http.StatusOK {
		t.Fatalf("assignment after the release: %d %s", status, data)
	}
}

func TestTenantCannotCancelStaffJobs(t *testing.T) {
	f := newFixture(t)
	f.job("technician", "ma", "commission", nil)
	status, data := f.do("tenant-a", "POST", "/api/v1/machines/ma/cancel", nil)
	if status != http.StatusForbidden || strings.Contains(string(data), "started") && !strings.Contains(string(data), "operator") {
		t.Fatalf("tenant cancels a commission job: %d %s", status, data)
	}
	j := must(f.inv.ActiveJob(context.Background(), "ma"))
	if j.CancelRequested {
		t.Fatal("a refused cancel asked the job to stop")
	}
	if status, data := f.do("technician", "POST", "/api/v1/machines/ma/cancel", nil); status != http.StatusAccepted {
		t.Fatalf("staff cancel: %d %s", status, data)
	}
}

func TestMachineWithARunningJobCannotChangeHands(t *testing.T) {
	f := newFixture(t)
	f.job("technician", "mb", "commission", nil)
	for _, in := range []TenantAssign{{Machine: "mb"}, {Rack: "rb"}} {
		if status, data := f.do("admin", "POST", "/api/v1/tenants/ta/assign", in); status != http.StatusConflict || !strings.Contains(string(data), "is running") {
			t.Errorf("assigning %+v with a job running: %d %s", in, status, data)
		}
	}
	if status, data := f.do("admin", "POST", "/api/v1/tenants/tb/unassign", TenantAssign{Machine: "mb"}); status != http.StatusConflict {
		t.Errorf("unassigning with a job running: %d %s", status, data)
	}
}

func TestUnassignTakesAReleasedMachineBack(t *testing.T) {
	f := newFixture(t)
	if status, data := f.do("admin", "POST", "/api/v1/tenants/tb/unassign", TenantAssign{Machine: "ma"}); status != http.StatusConflict || !strings.Contains(string(data), "not assigned to tenant") {
		t.Fatalf("unassigning from the wrong tenant: %d %s", status, data)
	}
	if status, data := f.do("admin", "POST", "/api/v1/tenants/ta/unassign", TenantAssign{Rack: "ra"}); status != http.StatusOK {
		t.Fatalf("unassign: %d %s", status, data)
	}
	f.checkOwner("ma", "", "tenant-a")
	if m := must(f.inv.Machine(context.Background(), "ma")); m.Tenant != "" {
		t.Fatalf("machine still with %q", m.Tenant)
	}
}

func TestTenantSeesNoStaffDetails(t *testing.T) {
	f := newFixture(t)
	// A BMC failure quotes the BMC's address; the tenant reads the
	// failure, not the address.
	id := f.job("tenant-a", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04"})
	bmcErr := "BMC 10.0.0.1 refused the credentials (IPMI)"
	must2(f.inv.UpdateJob(context.Background(), id, func(j *inventory.Job, m *inventory.Machine) error {
		j.State, j.Error, j.Steps[0].State, j.Steps[0].Error = inventory.JobFailed, bmcErr, inventory.StepFailed, bmcErr
		m.State, m.Reason, m.FailedStep = inventory.MachineFailed, bmcErr, "set-pxe"
		return nil
	}))
	must(f.inv.AppendEvent(context.Background(), inventory.Event{Actor: "provisioner", Subject: "machine/ma", Action: "job.failed", Detail: bmcErr}))
	f.job("technician", "ma", "power", PowerRequest{Action: "on"})
	f.do("tenant-b", "GET", "/api/v1/machines/ma", nil) // another tenant's probe, audited
	staff := []string{f.tokenID("admin"), f.tokenID("technician"), f.tokenID("tenant-b"), "10.0.0.1", `"tb"`}
	for _, p := range []string{"/api/v1/machines/ma", "/api/v1/machines", "/api/v1/racks/ra", "/api/v1/machines/ma/events", "/api/v1/machines/ma/job", "/api/v1/audit"} {
		status, data := f.do("tenant-a", "GET", p, nil)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, status, data)
		}
		f.leaks("tenant-a", data, staff...)
	}
	// Its audit view has its own requests and staff's on its machines.
	f.do("tenant-a", "POST", "/api/v1/machines/ma/power", PowerRequest{Action: "status"})
	_, data := f.do("tenant-a", "GET", "/api/v1/audit", nil)
	var evs []inventory.Event
	if err := json.Unmarshal(data, &evs); err != nil {
		t.Fatal(err)
	}
	var saw []string
	for _, e := range evs {
		saw = append(saw, e.Actor+" "+e.Action)
	}
	all := strings.Join(saw, ", ")
	for _, want := range []string{f.tokenID("tenant-a") + " machine.power", staffActor + " machine.power"} {
		if !strings.Contains(all, want) {
			t.Errorf("tenant audit view lacks %q: %s", want, all)
		}
	}
	// Staff still see everything.
	_, data = f.do("admin", "GET", "/api/v1/machines/ma/events", nil)
	if !strings.Contains(string(data), f.tokenID("technician")) {
		t.Errorf("staff lost the technician's token ID in the events: %s", data)
	}
}

// A job taken over between instances names them, by their control nodes'
// host names, in its events and its record: staff read them, a tenant
// reads the story without the names.
func TestTenantSeesNoControlInstanceNames(t *testing.T) {
	f := newFixture(t)
	id := f.job("tenant-a", "ma", "provision", ProvisionRequest{Image: "ubuntu-24.04"})
	must2(f.inv.UpdateJob(context.Background(), id, func(j *inventory.Job, m *inventory.Machine) error {
		j.Instance = "cp-east-2-7f3a"
		return nil
	}))
	// The provisioner's own wording (provisioner/steps.go, takeOver and
	// startStep).
	taken := "provision job " + id + " taken over from instance cp-west-1-09bc by instance cp-east-2-7f3a after cp-west-1-09bc stopped answering; " +
		"it was at write-image, and the machine's agent may be calling home to cp-west-1-09bc: instance cp-east-2-7f3a boots the machine again (set-pxe, power-cycle) and runs the job on from there"
	resumed := "provision job " + id + ": power-cycle again after instance cp-east-2-7f3a restarted (attempt 2)"
	for _, d := range []struct{ action, detail string }{{"job.taken-over", taken}, {"step.resumed", resumed}} {
		must(f.inv.AppendEvent(context.Background(), inventory.Event{Actor: "provisioner", Subject: "machine/ma", Tenancy: "", Action: d.action, Detail: d.detail}))
	}
	names := []string{"cp-west-1-09bc", "cp-east-2-7f3a"}
	for _, p := range []string{"/api/v1/machines/ma/events", "/api/v1/machines/ma/job", "/api/v1/jobs?state=all"} {
		status, data := f.do("tenant-a", "GET", p, nil)
		if status != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, status, data)
		}
		f.leaks("tenant-a", data, names...)
	}
	_, data := f.do("tenant-a", "GET", "/api/v1/machines/ma/events", nil)
	for _, want := range []string{"taken over from instance #1 by instance #2 after #1 stopped answering", "calling home to #1: instance #2 boots", "after instance #1 restarted"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("tenant's events lack %q: %s", want, data)
		}
	}
	_, data = f.do("admin", "GET", "/api/v1/machines/ma/events", nil)
	if !strings.Contains(string(data), "from instance cp-west-1-09bc by instance cp-east-2-7f3a") {
		t.Errorf("staff lost the instance names: %s", data)
	}
}

func TestHideInstancesReplacesWholeIDsOnly(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"no instance", "no instance"},
		{"instance a by instance b after a a stopped", "instance #1 by instance #2 after #1 #1 stopped"},
		{"instance cp1: cp1x and xcp1 stay, (cp1) goes", "instance #1: cp1x and xcp1 stay, (#1) goes"},
		{"instance node.1 restarted", "instance #1 restarted"},
	} {
		if got := hideInstances(c.in); got != c.want {
			t.Errorf("hideInstances(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
