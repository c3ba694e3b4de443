package provisioner

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/netboot"
)

// metadata fetches a metadata path as the machine itself would.
func (l *lab) metadata(machine, path string) string {
	m := must(l.inv.Machine(context.Background(), machine))
	req := httptest.NewRequest("GET", "/metadata/"+path, nil)
	req.RemoteAddr = m.IP + ":40000"
	rec := httptest.NewRecorder()
	l.eng.MetadataHandler().ServeHTTP(rec, req)
	return rec.Body.String()
}

// agentCall calls an agent endpoint with a job's token from addr.
func (l *lab) agentCall(jobID, from, endpoint string, body string) int {
	method := "POST"
	if endpoint == wire.EndpointTask {
		method = "GET"
	}
	req := httptest.NewRequest(method, wire.PathPrefix+endpoint, strings.NewReader(body))
	req.RemoteAddr = from + ":40000"
	req.Header.Set("Authorization", "Bearer "+l.eng.AgentToken(jobID))
	rec := httptest.NewRecorder()
	l.eng.AgentHandler().ServeHTTP(rec, req)
	return rec.Code
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMetadataServesOnlyTheCurrentTenancysDeployment(t *testing.T) {
	l := newLab(t, Config{})
	ctx := context.Background()
	must(l.inv.CreateTenant(ctx, inventory.Tenant{Name: "ta"}))
	must(l.inv.CreateTenant(ctx, inventory.Tenant{Name: "tb"}))
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	must(l.inv.AssignMachineTenant(ctx, "m1", "ta"))

	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu", UserData: "secret-of-a", SSHKeys: []string{"key-of-a"}}).ID)
	if j.State != inventory.JobSucceeded || l.metadata("m1", "user-data") != "secret-of-a" {
		t.Fatalf("deployed for ta: job %s %s, user-data %q", j.State, j.Error, l.metadata("m1", "user-data"))
	}

	// During the wipe, and after it, nothing of A's.
	l.bmc.mu.Lock()
	p := newPause(l.bmc.seen["agent task"] + 1) // the release's agent, not the provision's
	l.bmc.pauses["agent task"] = p
	l.bmc.mu.Unlock()
	rel := l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"})
	<-p.reached
	for _, path := range []string{"user-data", "public-keys", "meta-data"} {
		if got := l.metadata("m1", path); strings.Contains(got, "of-a") {
			t.Errorf("during the release, metadata %s serves %q", path, got)
		}
	}
	close(p.released)
	if j := l.waitJob(rel.ID); j.State != inventory.JobSucceeded {
		t.Fatalf("release: %s %s", j.State, j.Error)
	}
	for _, path := range []string{"user-data", "public-keys", "meta-data"} {
		if got := l.metadata("m1", path); strings.Contains(got, "of-a") {
			t.Errorf("after the release, metadata %s serves %q", path, got)
		}
	}

	// B's provision fails before its metadata step: B's OS — or whatever
	// boots — gets neither A's data nor B's.
	must(l.inv.AssignMachineTenant(ctx, "m1", "tb"))
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, hgx(8), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: false, Step: wire.StepWrite, Error: "disk gone"}, nil)
	}
	if j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu", UserData: "secret-of-b"}).ID); j.State != inventory.JobFailed {
		t.Fatalf("B's provision: %s", j.State)
	}
	for _, path := range []string{"user-data", "public-keys", "meta-data"} {
		if got := l.metadata("m1", path); strings.Contains(got, "of-a") || strings.Contains(got, "of-b") {
			t.Errorf("after B's failed provision, metadata %s serves %q", path, got)
		}
	}
}

func TestAgentTokenIsUsableOnlyFromItsMachine(t *testing.T) {
	owned := map[netip.Addr]string{} // address → MAC, as the DHCP view would say
	owner := func(ctx context.Context, ip netip.Addr) (net.HardwareAddr, bool) {
		mac, ok := owned[ip]
		if !ok {
			return nil, false
		}
		return must(net.ParseMAC(mac)), true
	}
	l := newLab(t, Config{AgentSource: MachineAddress(owner)})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.bmc.silent["m1"] = true
	j := l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"})
	m := must(l.inv.Machine(ctx, "m1"))

	if code := l.agentCall(j.ID, "10.7.0.250", wire.EndpointTask, ""); code != http.StatusForbidden {
		t.Fatalf("token used from another address: %d, want 403", code)
	}
	if got := must(l.inv.Job(ctx, j.ID)); !got.AgentSeenAt.IsZero() {
		t.Fatal("a refused call was recorded as the agent calling home")
	}
	if code := l.agentCall(j.ID, m.IP, wire.EndpointTask, ""); code != http.StatusOK {
		t.Fatalf("token from the machine's reserved address: %d", code)
	}
	// An address the DHCP view gave one of its MACs is the machine's too.
	owned[netip.MustParseAddr("10.7.0.200")] = m.MACs[0]
	if code := l.agentCall(j.ID, "10.7.0.200", wire.EndpointInspection, `{"system":{"vendor":"x"}}`); code != http.StatusNoContent {
		t.Fatalf("token from the machine's leased address: %d", code)
	}
	if err := MachineAddress(nil)(ctx, m, netip.MustParseAddr("10.7.0.200")); !errors.Is(err, ErrWrongSource) {
		t.Fatalf("without a DHCP view, only the reservation counts: %v", err)
	}
}

func TestBootScriptOnlyOnceTheMachineNetboots(t *testing.T) {
	l := newLab(t, Config{ScriptAfterDHCP: true})
	ctx := context.Background()
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	l.bmc.silent["m1"] = true
	setPXE := newPause(1)
	l.bmc.pauses["boot pxe"] = setPXE
	j := l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"})
	m := must(l.inv.Machine(ctx, "m1"))
	mac := must(net.ParseMAC(m.MACs[0]))
	dhcp := netboot.Client{MAC: mac, Arch: netboot.ArchEFIx64, VendorClass: "PXEClient:Arch:00007:UNDI:003016"}
	script := netboot.Client{MAC: mac, UserClass: "iPXE", IP: netip.MustParseAddr(m.IP)}
	tok := l.eng.AgentToken(j.ID)

	// set-pxe: the old OS is still up. Even a PXE-looking DHCP request
	// from it does not open the script.
	<-setPXE.reached
	must(l.eng.Boot(ctx, dhcp))
	if b := must(l.eng.Boot(ctx, script)); b.Kind != netboot.BootNone || strings.Contains(b.Cmdline, "token") {
		t.Fatalf("script during set-pxe: %+v", b)
	}
	if l.eng.CheckBootToken(ctx, mac, tok) {
		t.Fatal("the token opens the script during set-pxe")
	}
	close(setPXE.released)
	waitFor(t, "the power cycle", func() bool { return l.bmc.count("m1", "power cycle") > 0 })
	if b := must(l.eng.Boot(ctx, script)); b.Kind != netboot.BootNone {
		t.Fatalf("script after the power cycle but before any DHCP: %+v", b)
	}
	// The machine's firmware asks for an address: now it netboots.
	if b := must(l.eng.Boot(ctx, dhcp)); b.Kind != netboot.BootProvision {
		t.Fatalf("DHCP answer after the power cycle: %+v", b)
	}
	if b := must(l.eng.Boot(ctx, script)); b.Kind != netboot.BootProvision || !strings.Contains(b.Cmdline, "metalhall.token="+tok) {
		t.Fatalf("script once netbooting: %+v", b)
	}
	if !l.eng.CheckBootToken(ctx, mac, tok) {
		t.Fatal("the token does not open the script once the machine netboots")
	}
}

func TestAgentDoneNeedsTheWorkBehindIt(t *testing.T) {
	l := newLab(t, Config{})
	l.machine("m1", "r0", 1, inventory.MachineDeployed)
	refused := make(chan error, 2)
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		// "Wiped" at once, with no inspection of the disks it wiped.
		refused <- a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepWipe}, nil)
		a.call("POST", wire.EndpointInspection, hgx(8), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepWipe, Erase: []wire.EraseRecord{passedErase("nvme0n1")}}, nil)
	}
	j := l.waitJob(l.submit(Request{Kind: inventory.JobRelease, Machine: "m1"}).ID)
	if err := <-refused; err == nil || !strings.Contains(err.Error(), "no inspection") {
		t.Fatalf("done with no work behind it: %v", err)
	}
	if j.State != inventory.JobSucceeded {
		t.Fatalf("release after a proper report: %s %s", j.State, j.Error)
	}

	// An image write "done" with no byte written is refused as well.
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, hgx(8), nil)
		refused <- a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepVerify}, nil)
		a.call("POST", wire.EndpointProgress, wire.Progress{JobID: task.JobID, Step: wire.StepWrite, Bytes: 2 << 20, Total: 2 << 20}, nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true, Step: wire.StepVerify}, nil)
	}
	j = l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu"}).ID)
	if err := <-refused; err == nil || !strings.Contains(err.Error(), "no bytes written") {
		t.Fatalf("image done with nothing written: %v", err)
	}
	if j.State != inventory.JobSucceeded {
		t.Fatalf("provision after a proper report: %s %s", j.State, j.Error)
	}
}

func TestUserDataAndKeysAreSealedAtRest(t *testing.T) {
	sealer := must(seal.New([]byte("0123456789abcdef0123456789abcdef")))
	l := newLab(t, Config{Sealer: sealer})
	l.machine("m1", "r0", 1, inventory.MachineAvailable)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobProvision, Machine: "m1", Image: "ubuntu", UserData: "password: hunter2", SSHKeys: []string{"ssh-ed25519 AAAAsecretkey"}}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("provision: %s %s", j.State, j.Error)
	}
	if j.UserData != "" || len(j.SSHKeys) != 0 || len(j.Sealed) == 0 {
		t.Fatalf("stored job holds keys %v, user data %q, sealed %d bytes", j.SSHKeys, j.UserData, len(j.Sealed))
	}
	var db bytes.Buffer
	must(l.inv.Backup(&db))
	for _, secret := range []string{"hunter2", "AAAAsecretkey"} {
		if bytes.Contains(db.Bytes(), []byte(secret)) {
			t.Errorf("%q is in the database file in clear", secret)
		}
	}
	// The machine itself still gets them.
	if got := l.metadata("m1", "user-data"); got != "password: hunter2" {
		t.Errorf("metadata user-data %q", got)
	}
	if got := l.metadata("m1", "public-keys"); got != "ssh-ed25519 AAAAsecretkey" {
		t.Errorf("metadata public-keys %q", got)
	}
	// Sealed for this machine: the blob opens for no other.
	moved := *j
	moved.Machine = "m2"
	if _, _, err := OpenSecrets(sealer, &moved); err == nil {
		t.Error("a job's sealed secrets open for another machine")
	}
}
