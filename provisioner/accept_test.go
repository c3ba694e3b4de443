package provisioner

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

// hgxProfile is an HGX H100 profile with every acceptance check, as an
// operator would write it.
const hgxProfile = `gpu_model: H100 SXM5
gpu_count: 8
ib_count: 8
cpu_sockets: 2
os_disk: nvme0n1
acceptance:
  pcie: {}
  memory: {dimms: 16, min_gib: 1800}
  ecc: {max_corrected: 0}
  cpu: {sockets: 2, min_cores: 112, model: "8480+"}
  nvme: {count: 10, max_percentage_used: 80}
  ethernet: {ports: [eno1], min_speed_mbps: 10000}
  infiniband: {ports: 8, min_rate_gbps: 400}
  gpu_diagnostics: {level: 1}
  firmware: {bios: "2.1", nvme: GDC7302Q, infiniband: 28.39.1002}
  optional: [gpu_diagnostics]
`

func loadProfile(t *testing.T, yaml string) *Profile {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hgx-h100.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := ProfileDir(dir).Profile(context.Background(), "hgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// agentInventory reads what the agent reported from a fixture tree: the
// agent's tests keep these golden files current (agent/accept_test.go).
func agentInventory(t *testing.T, name string) *wire.Inventory {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "agent", "testdata", name+".inventory.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inv wire.Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		t.Fatal(err)
	}
	return &inv
}

func TestHealthyHGXPassesEveryCheck(t *testing.T) {
	r := Accept(loadProfile(t, hgxProfile), agentInventory(t, "hgx-h100"))
	if !r.Passed || len(r.Failures()) > 0 {
		t.Fatalf("healthy machine failed: %v", r.Failures())
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name+"="+string(c.Result))
	}
	want := "inventory=pass pcie=pass memory=pass ecc=pass cpu=pass nvme=pass ethernet=pass infiniband=pass gpu_diagnostics=not-run firmware=pass"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("checks:\n got %s\nwant %s", got, want)
	}
	for _, c := range r.Checks {
		if c.Name == checkGPUDiag && (c.Required || c.Summary != "not run: no DCGM in the boot environment") {
			t.Errorf("gpu diagnostics: %+v", c)
		}
		if c.Name == checkPCIe && c.Summary != "28 of 28 links at their maximum speed and width" {
			t.Errorf("pcie summary %q", c.Summary)
		}
	}
}

// Each fault fixture fails the machine with exactly its own line of the
// fix list, and nothing else.
func TestEachFaultGivesItsFixLine(t *testing.T) {
	p := loadProfile(t, hgxProfile)
	for fault, want := range map[string]string{
		"gpu-x8":       "GPU 0000:9a:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat",
		"ib-down":      "InfiniBand mlx5_3 port 1 (0000:5e:00.0) is DOWN (Polling), expected ACTIVE (LinkUp) — check the cable at both ends and the switch port",
		"dimm-missing": "DIMM slot P2-DIMMC1 is empty (15 of 16 DIMMs found) — reseat or replace the DIMM",
		"ecc-errors":   "DIMM CPU_SrcID#1_MC#2_Chan#1_DIMM#0 (mc1) has 1342 corrected ECC errors since boot (at most 0 allowed) — replace the DIMM",
		"nvme-failing": "NVMe nvme5n1 (serial Z1E0A013T7H8) critical warning 0x04 (reliability degraded), 37 media errors, 104% of rated endurance used (at most 80%) — replace the drive",
	} {
		t.Run(fault, func(t *testing.T) {
			r := Accept(p, agentInventory(t, "hgx-h100-"+fault))
			if r.Passed {
				t.Fatal("passed")
			}
			if got := r.Failures(); !reflect.DeepEqual(got, []string{want}) {
				t.Errorf("fix list:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// A required diagnostic that could not run fails the machine: never a
// silent pass.
func TestRequiredGPUDiagnosticsNotRunFails(t *testing.T) {
	p := loadProfile(t, strings.Replace(hgxProfile, "  optional: [gpu_diagnostics]\n", "", 1))
	r := Accept(p, agentInventory(t, "hgx-h100"))
	if r.Passed || !reflect.DeepEqual(r.Failures(), []string{"gpu_diagnostics: not run: no DCGM in the boot environment"}) {
		t.Fatalf("passed %v, fix list %q", r.Passed, r.Failures())
	}
}

func TestDegradedLinksNeedSomethingToJudge(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  pcie: {}\n  ecc: {}\n")
	r := Accept(p, agentInventory(t, "qemu"))
	if r.Passed {
		t.Fatal("a VM with no PCIe link attributes and no EDAC passed a suite that checks them")
	}
	want := []string{"pcie: not run: the inspection has no PCIe link attributes for GPUs, NICs or NVMe",
		"ecc: not run: no EDAC memory controller in the inspection (EDAC driver not loaded in the boot environment?)"}
	if !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list %q", r.Failures())
	}
}

func TestBadAcceptanceProfileIsRefusedWithTheReason(t *testing.T) {
	for yaml, want := range map[string]string{
		"acceptance:\n  optional: [pci]\n":                                                              `optional: "pci" is not a check`,
		"acceptance:\n  pcie: {kinds: [gpu, fpga]}\n":                                                   `pcie.kinds: "fpga" is not gpu, nic or nvme`,
		"acceptance:\n  gpu_diagnostics: {level: 9}\n":                                                  "gpu_diagnostics.level: 9; DCGM has levels 1 to 4",
		"acceptance:\n  gpu_diagnostics: {level: 4, timeout_minutes: 1000}\n":                           "gpu_diagnostics.timeout_minutes: 1000; 0 (the level's default) to 300",
		"acceptance:\n  gpu_diagnostics: {level: 4, timeout_minutes: 240}\n  burnin: {seconds: 7200}\n": "the suite may keep the agent 6h1m0s (DCGM, LLDP and burn-in at their bounds); at most 5h0m0s fits a commissioning",
		"acceptance:\n  infiniband: {port: 8}\n":                                                        "field port not found",
		"acceptance:\n  memory: {dimms: -1}\n":                                                          "memory: dimms and min_gib must not be negative",
		"acceptance:\n  cabling: {}\n":                                                                  "cabling.listen_seconds: 0; 1 to 120",
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(yaml), 0o644)
		_, err := ProfileDir(dir).Profile(context.Background(), "p")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to say %q", yaml, err, want)
		}
	}
}

func TestVersionsCompareByParts(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"2.10", "2.9", 1}, {"2.1", "2.1", 0}, {"28.39.1002", "28.40.1000", -1}, {"GDC7302Q", "GDC7201Q", 1}, {"1.0", "1.0.1", -1},
		{"1.2.3", "1.2.3", 0}, {"1.2.10", "1.2.9", 1},
		// Product prefixes and build dates: the baseline's shape decides.
		{"U50 v2.10 (04/10/2024)", "2.10", 0}, {"U50 v2.9 (04/10/2024)", "2.10", -1}, {"U50 v2.10 (04/10/2024)", "U50 v2.9", 1},
		{"U50 v2.11 (01/01/2023)", "U50 v2.10 (04/10/2024)", 1},
		// Release candidates come before their release, after the one before.
		{"GB300.1.4.0-rc2", "GB300.1.4.0", -1}, {"GB300.1.4.0-rc2", "GB300.1.3.9", 1}, {"GB300.1.4.0-rc2", "GB300.1.4.0-rc1", 1},
		{"GB300.1.4.0", "GB300.1.4.0-rc2", 1}, {"gb300.1.4.0", "GB300.1.4.0", 0},
		{"1.4.0.1", "1.4.0-rc2", 1}} {
		if got := compareVersions(c.a, c.b); (got > 0) != (c.want > 0) || (got < 0) != (c.want < 0) {
			t.Errorf("compare(%q, %q) = %d, want sign of %d", c.a, c.b, got, c.want)
		}
	}
}

// A commissioning whose acceptance fails leaves the machine failed with
// the fix list as its reason and the report kept; once fixed, the same
// command commissions it, and the history has both reports.
func TestFailedAcceptanceKeepsTheMachineFromAvailable(t *testing.T) {
	ctx := context.Background()
	bad := agentInventory(t, "hgx-h100-gpu-x8")
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": loadProfile(t, hgxProfile)}})
	send := bad
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		a.call("POST", wire.EndpointInspection, send, nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m := must(l.inv.Machine(ctx, "m1"))
	line := "GPU 0000:9a:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat"
	if j.State != inventory.JobFailed || m.State != inventory.MachineFailed || m.FailedStep != stepCheckProfile || !strings.Contains(m.Reason, line) {
		t.Fatalf("job %s, machine %s at %q: %q", j.State, m.State, m.FailedStep, m.Reason)
	}
	reps := must(l.inv.AcceptanceReports(ctx, "m1"))
	if len(reps) != 1 || reps[0].Passed || reps[0].Job != j.ID || reps[0].Profile != "hgx-h100" || reps[0].Failures()[0] != line {
		t.Fatalf("reports = %+v", reps)
	}

	send = agentInventory(t, "hgx-h100") // reseated
	j2 := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	m = must(l.inv.Machine(ctx, "m1"))
	if j2.State != inventory.JobSucceeded || m.State != inventory.MachineAvailable {
		t.Fatalf("after the fix: job %s (%s), machine %s", j2.State, j2.Error, m.State)
	}
	reps = must(l.inv.AcceptanceReports(ctx, "m1"))
	if len(reps) != 2 || reps[0].Passed || !reps[1].Passed {
		t.Fatalf("history: %+v", reps)
	}
	latest := must(l.inv.LatestAcceptance(ctx, []string{"m1"}))
	if latest["m1"] == nil || latest["m1"].Job != j2.ID {
		t.Errorf("latest = %+v", latest["m1"])
	}
}

func TestFailedGPUDiagnosticNamesTheGPUAndDCGMsWords(t *testing.T) {
	p := loadProfile(t, strings.Replace(hgxProfile, "  gpu_diagnostics: {level: 1}\n  firmware", "  gpu_diagnostics: {level: 2}\n  firmware", 1))
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.DCGM = &wire.DCGMResult{Ran: true, Level: 2, Tests: []wire.DCGMTest{
		{Category: "Deployment", Name: "Denylist", GPU: -1, Result: "Pass"},
		{Category: "Hardware", Name: "GPU Memory", GPU: 3, Result: "Fail", Info: "Pending page retirements together with a DBE were detected on GPU 3."},
		{Category: "Integration", Name: "PCIe", GPU: 0, Result: "Warn", Info: "PCIe replay rate high on GPU 0."}}}
	p.Acceptance.Optional = nil
	r := Accept(p, inv)
	want := []string{`GPU 3 failed DCGM test "GPU Memory": Pending page retirements together with a DBE were detected on GPU 3. — see DCGM's advice; replace the GPU if it fails again`}
	if r.Passed || !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list %q", r.Failures())
	}
}

func TestCommissionAsksTheAgentForTheProfilesGPUDiagnostic(t *testing.T) {
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": loadProfile(t, hgxProfile)}})
	got := make(chan *wire.AcceptanceTask, 1)
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		select {
		case got <- task.Acceptance:
		default:
		}
		a.call("POST", wire.EndpointInspection, agentInventory(t, "hgx-h100"), nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if a := <-got; a == nil || a.DCGMLevel != 1 {
		t.Errorf("task acceptance = %+v, want DCGM level 1", a)
	}
}

func TestCablingRecordsNeighboursAndNamesDeadPorts(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  cabling: {listen_seconds: 35, ports: [eno1, eno2]}\n")
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.LLDP = []wire.LLDPPort{
		{Interface: "eno1", PCIAddress: "0000:c1:00.0", MAC: "3c:ec:ef:8a:2b:10", Carrier: true,
			Neighbor: &wire.LLDPNeighbor{ChassisID: "0c:42:a1:00:00:00", PortID: "Ethernet12", SystemName: "leaf-03"}},
		{Interface: "eno2", PCIAddress: "0000:c1:00.1", MAC: "3c:ec:ef:8a:2b:11"}}
	r := Accept(p, inv)
	want := []string{"eno2 (0000:c1:00.1) has no link — check the cable and the switch port"}
	if r.Passed || !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list %q", r.Failures())
	}
	if s := r.Checks[1].Summary; s != "1 of 2 Ethernet ports heard a neighbour: eno1 sees leaf-03 Ethernet12" {
		t.Errorf("summary %q", s)
	}
	inv.Hardware.LLDP[1].Carrier = true
	r = Accept(p, inv)
	if got := r.Failures(); !reflect.DeepEqual(got, []string{"eno2 (0000:c1:00.1) heard no LLDP within 35 s — check LLDP is enabled on the switch port"}) {
		t.Errorf("silent port: %q", got)
	}
	if task := (&Engine{}).acceptanceTaskFor(p); task == nil || task.LLDPSeconds != 35 || task.DCGMLevel != 0 {
		t.Errorf("task = %+v", task)
	}
}

// Levels 3 and 4 are long: the agent is told the profile's bound, and the
// inspection step waits that much longer than a plain inspection.
func TestLongDCGMLevelsAreBoundedAndWaitedFor(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  gpu_diagnostics: {level: 4, timeout_minutes: 120}\n  cabling: {listen_seconds: 35}\n")
	task := (&Engine{}).acceptanceTaskFor(p)
	if task == nil || task.DCGMLevel != 4 || task.DCGMTimeoutSeconds != 7200 {
		t.Fatalf("task = %+v", task)
	}
	if d := p.Acceptance.agentTime(); d != 2*time.Hour+35*time.Second {
		t.Errorf("agent time %v", d)
	}
	p = loadProfile(t, "acceptance:\n  gpu_diagnostics: {level: 3}\n")
	if d := p.Acceptance.agentTime(); d != 45*time.Minute {
		t.Errorf("level 3 default: agent time %v", d)
	}
}

// A DCGM 4.x result about a CPU names the CPU.
func TestDCGMResultOnAnotherEntityNamesIt(t *testing.T) {
	p := loadProfile(t, "acceptance:\n  gpu_diagnostics: {level: 3}\n")
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.DCGM = &wire.DCGMResult{Ran: true, Level: 3, Version: "4.2.3", Tests: []wire.DCGMTest{
		{Category: "Stress", Name: "cpu_eud", GPU: -1, Entity: "CPU 1", Result: "Fail", Info: "CPU EUD test failed"}}}
	r := Accept(p, inv)
	want := []string{`CPU 1 failed DCGM test "cpu_eud": CPU EUD test failed — see DCGM's advice; replace the CPU if it fails again`}
	if !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list %q", r.Failures())
	}
}
