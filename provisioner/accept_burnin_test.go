package provisioner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory"
)

const burninProfile = `acceptance:
  burnin:
    seconds: 600
    disks: {mib: 4096}
    throughput: {mib: 2048, min_mbps: 1000}
`

func TestBurninFailuresNameTheAddressTheDiskAndTheRate(t *testing.T) {
	p := loadProfile(t, burninProfile)
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.Burnin = &wire.BurninResult{
		Memory: &wire.MemoryTest{MiBTested: 1536000, Workers: 224, Passes: 1120, Seconds: 601, MismatchCount: 3,
			Mismatches: []wire.MemoryMismatch{{Address: 0x7f3a12345678, Pattern: "walking-ones", Wrote: 1 << 17, Read: 0}}},
		Disks: []wire.DiskTest{
			{Disk: "nvme0n1", MismatchAt: -1, Skipped: "the OS disk (the profile does not include it)"},
			{Disk: "nvme1n1", BytesTested: 4 << 30, MismatchAt: -1},
			{Disk: "nvme2n1", BytesTested: 4 << 30, MismatchAt: 5246976, MismatchInfo: "read zeros (the write did not reach the disk)"}},
		Throughput: &wire.ThroughputTest{Bytes: 2 << 30, Seconds: 22.5, MBps: 95.4},
	}
	r := Accept(p, inv)
	want := []string{
		"memory at 0x7f3a12345678 read 0x0000000000000000 after 0x0000000000020000 was written (pattern walking-ones) — replace the DIMM the ECC counters name; without them, run the burn-in again and halve the DIMMs",
		"memory 2 more words read back wrong — as above",
		"disk nvme2n1 byte 5246976 read back wrong: read zeros (the write did not reach the disk) — replace the drive",
		"throughput from the service 95 MB/s, expected at least 1000 MB/s — check the provisioning NIC's link speed, cable and switch port",
	}
	if r.Passed || !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list:\n%s", strings.Join(r.Failures(), "\n"))
	}
	c := r.Checks[len(r.Checks)-1]
	if c.Name != "burnin" || c.Summary != "memory 1536000 MiB × 1120 passes on 224 CPUs in 601 s, 3 bad words; 1 disks verified, 1 skipped; 95 MB/s from the service" {
		t.Errorf("check %+v", c)
	}
	inv.Hardware.Burnin = nil
	if r := Accept(p, inv); r.Passed || r.Checks[len(r.Checks)-1].Result != inventory.CheckNotRun {
		t.Errorf("no burn-in reported must not pass: %+v", r.Checks)
	}
}

func TestBadBurninProfileIsRefusedWithTheReason(t *testing.T) {
	for yaml, want := range map[string]string{
		"acceptance:\n  burnin: {}\n":                                   "burnin: names no test",
		"acceptance:\n  burnin: {seconds: -1}\n":                        "burnin.seconds: -1; 0 (no memory test) to 18000",
		"acceptance:\n  burnin: {seconds: 60, memory_percent: 99}\n":    "burnin.memory_percent: 99; 1 to 90",
		"acceptance:\n  burnin: {disks: {mib: 0}}\n":                    "burnin.disks.mib: 0; 1 to",
		"acceptance:\n  burnin: {throughput: {mib: 99999999}}\n":        "burnin.throughput.mib: 99999999; 1 to 65536",
		"acceptance:\n  burnin: {throughput: {mib: 1, min_mbps: -3}}\n": "burnin.throughput.min_mbps must not be negative",
	} {
		if err := loadProfileErr(t, yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to say %q", yaml, err, want)
		}
	}
}

// The agent is told the burn-in with the profile's OS disk; the service
// streams the pattern to that commissioning's agent, refuses a bad size,
// and waits for the inspection as long as the burn-in takes.
func TestCommissionRunsTheProfilesBurninAndStreamsToItsAgent(t *testing.T) {
	p := loadProfile(t, "os_disk: nvme0n1\n"+burninProfile)
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": p}})
	got := make(chan *wire.AcceptanceTask, 1)
	streamed := make(chan error, 1)
	l.script = func(t *testing.T, a *fakeAgent, task wire.Task) {
		select {
		case got <- task.Acceptance:
		default:
		}
		streamed <- fetchStream(a, 3<<20+5)
		inv := agentInventory(t, "hgx-h100")
		inv.Hardware.Burnin = &wire.BurninResult{Memory: &wire.MemoryTest{MiBTested: 100, Workers: 2, Passes: 4},
			Disks: []wire.DiskTest{{Disk: "nvme1n1", BytesTested: 1 << 30, MismatchAt: -1}}, Throughput: &wire.ThroughputTest{MBps: 1200}}
		a.call("POST", wire.EndpointInspection, inv, nil)
		a.call("POST", wire.EndpointDone, wire.Done{JobID: task.JobID, OK: true}, nil)
	}
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	j := l.waitJob(l.submit(Request{Kind: inventory.JobCommission, Machine: "m1"}).ID)
	if j.State != inventory.JobSucceeded {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	if err := <-streamed; err != nil {
		t.Error(err)
	}
	a := <-got
	if a == nil || a.Burnin == nil || *a.Burnin != (wire.BurninTask{MemorySeconds: 600, DiskMiB: 4096, DiskSeconds: 120, OSDisk: "nvme0n1", ThroughputMiB: 2048, ThroughputSeconds: 120}) {
		t.Errorf("task acceptance = %+v", a)
	}
}

func fetchStream(a *fakeAgent, n int64) error {
	get := func(q string) (*http.Response, error) {
		req, _ := http.NewRequest("GET", a.l.srv.URL+wire.PathPrefix+wire.EndpointBurninStream+"?bytes="+q, nil)
		req.Header.Set("Authorization", "Bearer "+a.token)
		return http.DefaultClient.Do(req)
	}
	resp, err := get("0")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		return fmt.Errorf("bytes=0: HTTP %d, want 400", resp.StatusCode)
	}
	resp, err = get(strconv.FormatInt(n, 10))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	want := bytes.Repeat(wire.BurninPattern(), int(n/wire.BurninPatternBytes)+1)[:n]
	if !bytes.Equal(body, want) {
		return fmt.Errorf("stream of %d bytes differs from the pattern (got %d bytes)", n, len(body))
	}
	return nil
}

func loadProfileErr(t *testing.T, yaml string) error {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ProfileDir(dir).Profile(context.Background(), "p")
	return err
}

// Disks that may hold a tenant's data (an image written since the last
// erase) are not burnt in: the agent is not asked to, and the check says
// why.
func TestDiskBurninIsNeverAskedOfDisksWithTenantData(t *testing.T) {
	p := loadProfile(t, burninProfile)
	l := newLab(t, Config{Profiles: profiles{"hgx-h100": p}})
	l.machine("m1", "r0", 1, inventory.MachineEnrolled)
	ctx := context.Background()
	if _, err := l.inv.UpdateMachine(ctx, "m1", func(m *inventory.Machine) error { m.NeedsErase = true; return nil }); err != nil {
		t.Fatal(err)
	}
	task := l.eng.acceptanceTask(ctx, "m1")
	if task == nil || task.Burnin == nil || task.Burnin.DiskMiB != 0 || task.Burnin.MemorySeconds != 600 {
		t.Fatalf("task %+v", task)
	}
	if p.Acceptance.Burnin.Disks.MiB != 4096 {
		t.Error("the profile was changed")
	}
	inv := agentInventory(t, "hgx-h100")
	inv.Hardware.Burnin = &wire.BurninResult{Memory: &wire.MemoryTest{MiBTested: 1}, Throughput: &wire.ThroughputTest{MBps: 2000}}
	r := AcceptMachine(p, inv, &inventory.Machine{NeedsErase: true})
	want := []string{"disk test not run: the disks may hold a tenant's data (an image was written since the last erase) — release the machine (certified erase), then commission it again"}
	if !reflect.DeepEqual(r.Failures(), want) {
		t.Errorf("fix list %q", r.Failures())
	}
}
