package agent

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/metalhall/metalhall/agent/wire"
)

// A healthy memory passes every pattern; each worker does at least one
// full pass even with no time at all.
func TestMemoryPatternTestPassesHealthyMemory(t *testing.T) {
	words := make([]uint64, 3<<20/8) // 3 MiB
	res := memoryTest(context.Background(), words, 3, 0, nil)
	if res.MismatchCount != 0 || len(res.Mismatches) != 0 || res.Error != "" {
		t.Fatalf("healthy memory: %+v", res)
	}
	if res.MiBTested != 3 || res.Workers != 3 || res.Passes < 3 {
		t.Errorf("result %+v: want 3 MiB by 3 workers, one full pass each", res)
	}
}

// A bit that flips between write and verify is reported with its
// address, the pattern, and what was written and read.
func TestMemoryPatternTestReportsTheBadWordsAddress(t *testing.T) {
	words := make([]uint64, 1<<20/8)
	target := &words[1000]
	flip := func(part []uint64) {
		for i := range part {
			if &part[i] == target {
				part[i] ^= 1 << 17
			}
		}
	}
	res := memoryTest(context.Background(), words, 2, 0, flip)
	if res.MismatchCount != 1 || len(res.Mismatches) != 1 {
		t.Fatalf("result %+v: want the one flipped word", res)
	}
	m := res.Mismatches[0]
	if m.Address != uint64(uintptr(unsafe.Pointer(target))) || m.Wrote^m.Read != 1<<17 || m.Pattern != "address" {
		t.Errorf("mismatch %+v, want address %#x, bit 17", m, uintptr(unsafe.Pointer(target)))
	}
}

// The memory test maps a share of MemAvailable from meminfo.
func TestMemoryTestTakesItsShareOfAvailableMemory(t *testing.T) {
	dir := t.TempDir()
	meminfo := filepath.Join(dir, "meminfo")
	os.WriteFile(meminfo, []byte("MemTotal:       16384 kB\nMemAvailable:    8192 kB\n"), 0o644)
	res := runMemoryTest(context.Background(), meminfo, 50, 0)
	if res.Error != "" || res.MiBTested != 4 || res.MismatchCount != 0 {
		t.Errorf("result %+v, want 4 MiB tested (50%% of 8 MiB)", res)
	}
	os.WriteFile(meminfo, []byte("MemTotal:       16384 kB\nMemFree:    4096 kB\n"), 0o644)
	if res := runMemoryTest(context.Background(), meminfo, 50, 0); res.Error != "" || res.MiBTested != 2 {
		t.Errorf("without MemAvailable: %+v, want half of MemFree", res)
	}
	os.WriteFile(meminfo, []byte("MemTotal:       16384 kB\n"), 0o644)
	if res := runMemoryTest(context.Background(), meminfo, 50, 0); !strings.Contains(res.Error, "no MemFree line") {
		t.Errorf("without MemAvailable or MemFree: %+v", res)
	}
}

func diskFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sdb")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func TestDiskTestWritesReadsAndComparesSpreadRegions(t *testing.T) {
	p := diskFile(t, 64<<20)
	res := diskTest(context.Background(), p, 16<<20, 0, nil)
	if res.Error != "" || res.MismatchAt != -1 || res.BytesTested != 1<<20 {
		// With no time, one block is written and verified.
		t.Fatalf("no time: %+v", res)
	}
	res = diskTest(context.Background(), p, 16<<20, 1<<62, nil)
	if res.Error != "" || res.MismatchAt != -1 || res.BytesTested != 16<<20 {
		t.Fatalf("result %+v", res)
	}
	// The regions reach the disk's last MiB.
	b, _ := os.ReadFile(p)
	if tail := b[len(b)-8:]; string(tail) == "\x00\x00\x00\x00\x00\x00\x00\x00" {
		t.Error("the last MiB was not written")
	}
}

// A block that reads back as zeros, or as another block's data, is
// reported at its byte offset with what came back.
func TestDiskTestReportsTheFirstBadByteAndWhatCameBack(t *testing.T) {
	p := diskFile(t, 32<<20)
	zero := func(f *os.File) { f.WriteAt(make([]byte, 4096), 5<<20+4096) }
	res := diskTest(context.Background(), p, 32<<20, 1<<62, zero)
	if res.MismatchAt != 5<<20+4096 || res.MismatchInfo != "read zeros (the write did not reach the disk)" {
		t.Errorf("zeroed block: %+v", res)
	}
	misdirect := func(f *os.File) {
		blk := make([]byte, 1<<20)
		f.ReadAt(blk, 7<<20)
		f.WriteAt(blk, 9<<20)
	}
	res = diskTest(context.Background(), p, 32<<20, 1<<62, misdirect)
	if res.MismatchAt != 9<<20 || res.MismatchInfo != "read the data written for byte "+strconv.Itoa(7<<20)+" (a misdirected write)" {
		t.Errorf("misdirected block: %+v", res)
	}
}

// The OS disk is left alone unless the profile includes it; removable
// disks always are.
func TestDiskBurninSkipsTheOSDisk(t *testing.T) {
	dev := t.TempDir()
	for _, n := range []string{"nvme0n1", "nvme1n1"} {
		f, _ := os.Create(filepath.Join(dev, n))
		f.Truncate(8 << 20)
		f.Close()
	}
	r := &Runner{DevDir: dev}
	disks := []wire.Disk{{Name: "nvme0n1", SizeBytes: 8 << 20}, {Name: "nvme1n1", SizeBytes: 4 << 20}, {Name: "sda", Removable: true}}
	log := slog.New(slog.DiscardHandler)
	got := r.diskTests(context.Background(), &wire.BurninTask{DiskMiB: 2, DiskSeconds: 60}, disks, log)
	if len(got) != 2 || got[0].Disk != "nvme0n1" || got[0].Skipped == "" || got[1].Disk != "nvme1n1" || got[1].BytesTested != 2<<20 || got[1].MismatchAt != -1 {
		t.Errorf("tests %+v: want the largest disk (the OS disk) skipped, nvme1n1 tested", got)
	}
	got = r.diskTests(context.Background(), &wire.BurninTask{DiskMiB: 2, DiskSeconds: 60, OSDisk: "nvme1n1", IncludeOSDisk: true}, disks, log)
	if len(got) != 2 || got[0].BytesTested != 2<<20 || got[1].BytesTested != 2<<20 {
		t.Errorf("including the OS disk: %+v", got)
	}
}

func streamServer(t *testing.T, corruptAt int64) *Client {
	t.Helper()
	pat := wire.BurninPattern()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathPrefix+wire.EndpointBurninStream, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		for sent := int64(0); sent < n; {
			b := pat[:min(int64(len(pat)), n-sent)]
			if corruptAt >= sent && corruptAt < sent+int64(len(b)) {
				b = append([]byte(nil), b...)
				b[corruptAt-sent] ^= 0xff
			}
			w.Write(b)
			sent += int64(len(b))
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Token: "tok"}
}

func TestThroughputTestVerifiesTheStreamAndMeasuresIt(t *testing.T) {
	c := streamServer(t, -1)
	res := throughputTest(context.Background(), c, 5<<20+123, 0)
	if res.Error != "" || res.Bytes != 5<<20+123 || res.MBps <= 0 {
		t.Errorf("result %+v", res)
	}
	c = streamServer(t, 3<<20+7)
	res = throughputTest(context.Background(), c, 5<<20, 0)
	if res.Error != "the stream's bytes differ from the pattern at byte "+strconv.Itoa(3<<20+7) {
		t.Errorf("corrupt stream: %+v", res)
	}
	c.Token = "wrong"
	if res := throughputTest(context.Background(), c, 1<<20, 0); !strings.HasPrefix(res.Error, "HTTP 401") {
		t.Errorf("refused: %+v", res)
	}
}

// The runner runs the task's burn-in after the inspection and sends its
// results with it: here against the qemu fixture, a file for its disk
// (the OS disk, included by the task) and the fake service's stream.
func TestRunnerSendsTheBurninWithTheInspection(t *testing.T) {
	task := wire.Task{JobID: "job-b", Kind: wire.KindInspect, Acceptance: &wire.AcceptanceTask{Burnin: &wire.BurninTask{
		MemorySeconds: 1, MemoryPercent: 1, DiskMiB: 2, DiskSeconds: 60, IncludeOSDisk: true, ThroughputMiB: 3, ThroughputSeconds: 60}}}
	svc := newFakeService(t, task, nil)
	dev := devDir(t, 8<<20)
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: dev}
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.inv == nil || svc.inv.Hardware == nil || svc.inv.Hardware.Burnin == nil {
		t.Fatalf("inventory without a burn-in: %+v", svc.inv)
	}
	b := svc.inv.Hardware.Burnin
	if m := b.Memory; m == nil || m.Error != "" || m.MiBTested != 4 || m.MismatchCount != 0 {
		t.Errorf("memory %+v, want 4 MiB (1%% of the fixture's MemFree) without errors", m)
	}
	if len(b.Disks) != 1 || b.Disks[0].Disk != "vda" || b.Disks[0].BytesTested != 2<<20 || b.Disks[0].MismatchAt != -1 {
		t.Errorf("disks %+v", b.Disks)
	}
	if tp := b.Throughput; tp == nil || tp.Error != "" || tp.Bytes != 3<<20 {
		t.Errorf("throughput %+v", tp)
	}
}

// On a real block device (a loop device over a file) the size comes from
// the kernel and the read-back from the device, after the buffer cache
// is dropped.
func TestDiskTestOnABlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("attaches a loop device: root only")
	}
	backing := diskFile(t, 64<<20)
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if err := exec.Command("losetup", "-d", dev).Run(); err != nil {
			t.Errorf("detaching %s: %v", dev, err)
		}
	})
	res := diskTest(context.Background(), dev, 16<<20, 1<<62, nil)
	if res.Error != "" || res.MismatchAt != -1 || res.BytesTested != 16<<20 {
		t.Fatalf("healthy loop device: %+v", res)
	}
	// Damage the backing file behind the device's back: only a read from
	// the device, not from its cache, sees it.
	damage := func(*os.File) {
		f, err := os.OpenFile(backing, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteAt(make([]byte, 4096), 63<<20)
		f.Sync()
	}
	res = diskTest(context.Background(), dev, 16<<20, 1<<62, damage)
	if res.MismatchAt != 63<<20 || res.MismatchInfo != "read zeros (the write did not reach the disk)" {
		t.Errorf("damaged block: %+v", res)
	}
}

// A test stopped before every word was tested once says so.
func TestMemoryPatternTestStoppedEarlyIsNotAResult(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := memoryTest(ctx, make([]uint64, 4<<20/8), 2, 0, nil)
	if !strings.HasPrefix(res.Error, "interrupted before one full pass") {
		t.Errorf("result %+v", res)
	}
}
