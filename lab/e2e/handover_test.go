package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/lab/demoos"
)

// tenantDeployment is what one tenant gives a machine: its key and its
// user-data, each with a marker no other tenant's data contains, so that
// a leak is found by a plain substring search of the other OS's console.
type tenantDeployment struct {
	tenant   string
	key      string
	userData string
	secret   string // in userData only
	hostname string // in userData only
}

var (
	handoverA = tenantDeployment{
		tenant:   "handover-a",
		key:      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHandoverTenantAKeyMaterial0000000000000 alice@tenant-a",
		userData: "#cloud-config\nhostname: tenant-a-host\nruncmd:\n  - echo tenant-a-secret-7f3e\n",
		secret:   "tenant-a-secret-7f3e",
		hostname: "tenant-a-host",
	}
	handoverB = tenantDeployment{
		tenant:   "handover-b",
		key:      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHandoverTenantBKeyMaterial1111111111111 bob@tenant-b",
		userData: "#cloud-config\nhostname: tenant-b-host\nruncmd:\n  - echo tenant-b-secret-91c2\n",
		secret:   "tenant-b-secret-91c2",
		hostname: "tenant-b-host",
	}
)

// handover hands lab-m02 from tenant A to tenant B the way a cloud does:
// A deploys it with its key and user-data and its OS gets them; moving it
// to B is refused while A's deployment stands; A releases (certified
// erase); B deploys with its own key and user-data and its OS gets exactly
// those and nothing of A's; A's token no longer finds the machine, its
// jobs or its events; B sees only its own job and events.
func (e *env) handover(ctx context.Context, t *testing.T) {
	n := "lab-m02"
	if m, err := e.show(ctx, e.token, n); err != nil || m.State != "available" {
		t.Fatalf("%s is %s (%v), want available: an earlier scenario failed", n, m.State, err)
	}
	e.admin(t, ctx, "tenant", "create", handoverA.tenant)
	e.admin(t, ctx, "tenant", "create", handoverB.tenant)
	tokA := e.tenantToken(t, ctx, handoverA.tenant)
	tokB := e.tenantToken(t, ctx, handoverB.tenant)
	e.admin(t, ctx, "tenant", "assign", "--tenant", handoverA.tenant, "--machine", n)

	// Tenant A deploys; its OS gets A's key and user-data.
	jobA := e.deployAs(t, ctx, tokA, n, handoverA)
	e.checkOSGot(t, ctx, n, jobA.from, handoverA, handoverB)

	// B may not take the machine while A's deployment stands, and the
	// refusal changes nothing: A still has it, B still cannot see it.
	if _, err := e.cli(ctx, e.token, "tenant", "assign", "--tenant", handoverB.tenant, "--machine", n); err == nil {
		t.Fatalf("assigning %s (deployed for %s) to %s was accepted, want refused until released", n, handoverA.tenant, handoverB.tenant)
	} else if !strings.Contains(strings.ToLower(err.Error()), "release") {
		t.Errorf("assign before release: %v, want a refusal that says to release first", err)
	} else {
		t.Logf("assign before release refused as it should: %v", err)
	}
	if m, err := e.show(ctx, e.token, n); err != nil || m.Tenant != handoverA.tenant || m.State != "deployed" {
		t.Errorf("%s after the refused assign: tenant %q state %s (%v), want %s deployed", n, m.Tenant, m.State, err, handoverA.tenant)
	}
	if _, err := e.show(ctx, tokA, n); err != nil {
		t.Errorf("tenant A lost its machine to a refused assign: %v", err)
	}
	e.wantNotFound(t, ctx, tokB, "tenant B before the handover", "machine", "show", n)
	evsA := e.eventsOn(t, ctx, tokA, n)
	if len(evsA) == 0 {
		t.Errorf("tenant A sees no events of its own deployment of %s", n)
	}
	for _, ev := range evsA {
		if ev.Tenancy != jobA.tenancy {
			t.Errorf("A sees event %d %s (%s) of tenancy %q, want only its own %q", ev.Seq, ev.Action, ev.Detail, ev.Tenancy, jobA.tenancy)
		}
	}

	// A releases with its own token: certified erase, checked disk by disk.
	if _, err := e.cli(ctx, tokA, "machine", "release", n); err != nil {
		t.Fatal(err)
	}
	got := e.waitState(t, ctx, 8*time.Minute, []string{"available"}, n)
	if got[n].State != "available" {
		t.Fatalf("%s: %s (%s at %s) after A's release, want available", n, got[n].State, got[n].Reason, got[n].FailedStep)
	}
	e.checkEraseReport(t, ctx, n)
	if _, err := e.cli(ctx, tokA, "machine", "erase-report", n); err != nil {
		t.Errorf("tenant A cannot read the erase report of its own release: %v", err)
	}
	// Every job before the handover (staff's earlier ones too), and of
	// those A's own: at least its provision and its release.
	before := e.jobsOn(t, ctx, e.token, n)
	var jobsA []string
	for _, j := range before {
		if j.Tenancy == jobA.tenancy {
			jobsA = append(jobsA, j.ID)
		}
	}
	if len(jobsA) < 2 {
		t.Errorf("staff see %d jobs of A's tenancy on %s (%s), want at least its provision and its release", len(jobsA), n, jobSummary(before))
	}

	// Now the handover is accepted.
	e.admin(t, ctx, "tenant", "assign", "--tenant", handoverB.tenant, "--machine", n)
	for _, args := range [][]string{
		{"machine", "show", n},
		{"machine", "events", n},
		{"job", "list", "--state", "all", "--machine", n},
		{"machine", "erase-report", n},
	} {
		e.wantNotFound(t, ctx, tokA, "tenant A after the handover", args...)
	}

	// B deploys; its OS gets B's key and user-data, exactly, and nothing of A's.
	jobB := e.deployAs(t, ctx, tokB, n, handoverB)
	e.checkOSGot(t, ctx, n, jobB.from, handoverB, handoverA)

	// B sees its own provision job, and none of A's.
	bJobs := e.jobsOn(t, ctx, tokB, n)
	if len(bJobs) != 1 || bJobs[0].ID != jobB.id || bJobs[0].Kind != inventory.JobProvision {
		t.Errorf("B's jobs on %s: %s, want exactly its provision job %s", n, jobSummary(bJobs), jobB.id)
	}
	for _, j := range bJobs {
		if slices.ContainsFunc(before, func(o inventory.Job) bool { return o.ID == j.ID }) {
			t.Errorf("B sees job %s (%s, tenancy %q) from before the handover", j.ID, j.Kind, j.Tenancy)
		}
		if j.UserData != "" && j.UserData != handoverB.userData || slices.Contains(j.SSHKeys, handoverA.key) {
			t.Errorf("B's job %s carries user-data %q keys %q, want only B's", j.ID, j.UserData, j.SSHKeys)
		}
	}

	// B's events: all of B's tenancy, at least B's deployment's own
	// (the OS fetched its metadata), none of A's.
	evs := e.eventsOn(t, ctx, tokB, n)
	fetched := 0
	for _, ev := range evs {
		if ev.Tenancy != jobB.tenancy {
			t.Errorf("B sees event %d %s (%s) of tenancy %q, want only its own %q", ev.Seq, ev.Action, ev.Detail, ev.Tenancy, jobB.tenancy)
		}
		if ev.Tenant != "" && ev.Tenant != handoverB.tenant {
			t.Errorf("B sees event %d %s by tenant %q", ev.Seq, ev.Action, ev.Tenant)
		}
		for _, a := range append([]string{jobA.tenancy, handoverA.key, handoverA.secret}, jobsA...) {
			if a != "" && strings.Contains(ev.Detail+" "+ev.Subject+" "+ev.Actor, a) {
				t.Errorf("B's event %d %s mentions A's %q: %s", ev.Seq, ev.Action, a, ev.Detail)
			}
		}
		if ev.Action == "metadata.fetched" {
			fetched++
		}
	}
	if fetched < 1 {
		t.Errorf("B sees %d events, %d of them metadata.fetched: want at least one (its own OS's fetch)", len(evs), fetched)
	}
	t.Logf("handover of %s: A's jobs %v (tenancy %s), B's job %s (tenancy %s), B sees %d events", n, jobsA, jobA.tenancy, jobB.id, jobB.tenancy, len(evs))
}

// deployed is one tenant's finished provision.
type deployed struct {
	id, tenancy string
	from        int64 // the console offset before the provision
}

// deployAs provisions machine n with tenant d's key and user-data through
// token tok and waits for it to be deployed.
func (e *env) deployAs(t *testing.T, ctx context.Context, tok, n string, d tenantDeployment) deployed {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "keys.pub")
	udFile := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(keyFile, []byte(d.key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(udFile, []byte(d.userData), 0o600); err != nil {
		t.Fatal(err)
	}
	from := e.r.Machine(n).SerialSize()
	if _, err := e.cli(ctx, tok, "machine", "provision", "--image", "demo-v1", "--ssh-key-file", keyFile, "--user-data-file", udFile, n); err != nil {
		t.Fatal(err)
	}
	got := e.waitState(t, ctx, 10*time.Minute, []string{"deployed"}, n)
	if m := got[n]; m.State != "deployed" {
		t.Fatalf("%s for %s: %s (%s at %s), want deployed", n, d.tenant, m.State, m.Reason, m.FailedStep)
	}
	jobs := cliJSON[[]inventory.Job](t, ctx, e, e.token, "job", "list", "--state", "succeeded", "--kind", "provision", "--machine", n, "-o", "json")
	if len(jobs) == 0 {
		t.Fatalf("%s: no succeeded provision job after %s's deployment", n, d.tenant)
	}
	// The newest succeeded provision is this one.
	j := slices.MaxFunc(jobs, func(a, b inventory.Job) int { return a.CreatedAt.Compare(b.CreatedAt) })
	if j.Tenancy == "" {
		t.Fatalf("%s: %s's provision job %s has no tenancy", n, d.tenant, j.ID)
	}
	return deployed{id: j.ID, tenancy: j.Tenancy, from: from}
}

// jobsOn lists every job on machine n that token tok sees.
func (e *env) jobsOn(t *testing.T, ctx context.Context, tok, n string) []inventory.Job {
	t.Helper()
	return cliJSON[[]inventory.Job](t, ctx, e, tok, "job", "list", "--state", "all", "--machine", n, "-o", "json")
}

// eventsOn lists machine n's events that token tok sees (up to 1000).
func (e *env) eventsOn(t *testing.T, ctx context.Context, tok, n string) []inventory.Event {
	t.Helper()
	return cliJSON[[]inventory.Event](t, ctx, e, tok, "machine", "events", "--limit", "1000", "-o", "json", n)
}

// cliJSON runs the CLI with tok and decodes its -o json output.
func cliJSON[T any](t *testing.T, ctx context.Context, e *env, tok string, args ...string) T {
	t.Helper()
	var v T
	out, err := e.cli(ctx, tok, args...)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("metalhall %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return v
}

func jobSummary(jobs []inventory.Job) string {
	var parts []string
	for _, j := range jobs {
		parts = append(parts, fmt.Sprintf("%s %s %s (tenancy %q)", j.ID, j.Kind, j.State, j.Tenancy))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// checkOSGot reads, from machine n's console since from, what its demo OS
// printed of the metadata it fetched, and wants exactly tenant d's key and
// user-data, and nothing of other's anywhere on that console.
func (e *env) checkOSGot(t *testing.T, ctx context.Context, n string, from int64, d, other tenantDeployment) {
	t.Helper()
	m, err := e.show(ctx, e.token, n)
	if err != nil {
		t.Fatal(err)
	}
	console := strings.ReplaceAll(e.r.Machine(n).Serial(from), "\r", "")
	meta, ud, err := osMetadata(console)
	if err != nil {
		t.Fatalf("%s (%s): %v\nconsole tail:\n%s", n, d.tenant, err, tail(console, 2000))
	}
	wantMeta := fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\nlocal-ipv4: %s\npublic-keys:\n  - %q\n", n, n, m.IP, d.key)
	if meta != wantMeta {
		t.Errorf("%s: %s's OS got meta-data\n%q\nwant\n%q", n, d.tenant, meta, wantMeta)
	}
	if ud != d.userData {
		t.Errorf("%s: %s's OS got user-data\n%q\nwant\n%q", n, d.tenant, ud, d.userData)
	}
	for _, leak := range []string{other.key, other.secret, other.hostname} {
		if strings.Contains(console, leak) {
			t.Errorf("%s: %s's OS console shows %q of %s", n, d.tenant, leak, other.tenant)
		}
	}
	t.Logf("%s: %s's OS got its own key and %d bytes of user-data", n, d.tenant, len(ud))
}

// osMetadata cuts, from a demo OS console, the last meta-data and
// user-data it printed before its boot marker.
func osMetadata(console string) (meta, userData string, err error) {
	const head, udHead, end = "----- metadata from ", "----- user-data -----\n", "\n------------------------------\n" + demoos.Marker
	i := strings.LastIndex(console, head)
	if i < 0 {
		return "", "", fmt.Errorf("the demo OS printed no metadata (no %q on its console)", head)
	}
	rest := console[i:]
	nl := strings.IndexByte(rest, '\n')
	j := strings.Index(rest, end)
	if nl < 0 || j < nl {
		return "", "", fmt.Errorf("the demo OS's metadata block is not closed by its boot marker")
	}
	block := rest[nl+1 : j+1]
	meta, userData, _ = strings.Cut(block, udHead)
	return meta, strings.TrimSuffix(userData, "\n"), nil
}

// wantNotFound runs the CLI with tok and wants a not-found refusal.
func (e *env) wantNotFound(t *testing.T, ctx context.Context, tok, who string, args ...string) {
	t.Helper()
	out, err := e.cli(ctx, tok, args...)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not found") {
		t.Errorf("%s: metalhall %s: %v (output %q), want not found (404)", who, strings.Join(args, " "), err, tail(out, 300))
	}
}
