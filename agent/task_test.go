package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images/imagefmt"
)

// fakeService implements the service side of the wire protocol.
type fakeService struct {
	*httptest.Server
	task wire.Task
	img  []byte

	mu       sync.Mutex
	inv      *wire.Inventory
	progress []wire.Progress
	done     *wire.Done
	taskHits int
	// restartBeforeDone makes the first done meet a service that lost
	// the progress written behind, as after a kill -9: it refuses done
	// until a report arrives again, as the real one does.
	restartBeforeDone bool
	doneTries         int
}

func newFakeService(t *testing.T, task wire.Task, img []byte) *fakeService {
	s := &fakeService{task: task, img: img}
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(http.StatusUnauthorized)
				json.NewEncoder(w).Encode(wire.Error{Error: "bad token"})
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET /agent/v1/task", auth(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.taskHits++
		first := s.taskHits == 1
		s.mu.Unlock()
		if first { // the service is still starting: the agent must retry
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(s.task)
	}))
	decode := func(r *http.Request, v any) {
		if err := json.NewDecoder(r.Body).Decode(v); err != nil {
			t.Error(err)
		}
	}
	mux.HandleFunc("POST /agent/v1/inspection", auth(func(w http.ResponseWriter, r *http.Request) {
		var inv wire.Inventory
		decode(r, &inv)
		s.mu.Lock()
		s.inv = &inv
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.HandleFunc("POST /agent/v1/progress", auth(func(w http.ResponseWriter, r *http.Request) {
		var p wire.Progress
		decode(r, &p)
		s.mu.Lock()
		s.progress = append(s.progress, p)
		s.mu.Unlock()
	}))
	mux.HandleFunc("POST /agent/v1/done", auth(func(w http.ResponseWriter, r *http.Request) {
		var d wire.Done
		decode(r, &d)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.doneTries++
		if s.restartBeforeDone && s.doneTries == 1 {
			s.progress = nil
		}
		if s.restartBeforeDone && d.OK && len(s.progress) == 0 {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(wire.Error{Error: "done refused: the agent has reported no bytes written"})
			return
		}
		s.done = &d
	}))
	mux.HandleFunc("GET /agent/v1/"+wire.EndpointBurninStream, auth(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("bytes"), 10, 64)
		pat := wire.BurninPattern()
		for sent := int64(0); sent < n; sent += int64(len(pat)) {
			w.Write(pat[:min(int64(len(pat)), n-sent)])
		}
	}))
	mux.HandleFunc("GET /images/test.zst", auth(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "img", time.Unix(0, 0), bytes.NewReader(s.img))
	}))
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// devDir makes files standing in for the qemu fixture's disk (vda).
func devDir(t *testing.T, size int) string {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "vda"), bytes.Repeat([]byte{1}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRunnerProvision(t *testing.T) {
	img, data := testImage(t)
	task := wire.Task{JobID: "job-1", Kind: wire.KindProvision, After: wire.AfterReboot, Image: &wire.ImageSpec{
		URL: "images/test.zst", Format: string(imagefmt.Zstd), SHA256: sum(img), UncompressedSize: int64(len(img)), BlockMap: data}}
	svc := newFakeService(t, task, compress(t, imagefmt.Zstd, img))
	dev := devDir(t, 32*MiB)
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: dev, ProgressEvery: time.Nanosecond}
	after, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after != wire.AfterReboot {
		t.Errorf("after = %q", after)
	}
	got, _ := os.ReadFile(filepath.Join(dev, "vda"))
	// A bigger file keeps its size; the image is at the start.
	if len(got) != 32*MiB || !bytes.Equal(got[:len(img)], img) {
		t.Error("disk content differs")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.inv == nil || svc.inv.JobID != "job-1" || svc.inv.CPU.Model != "QEMU Virtual CPU version 2.5+" {
		t.Errorf("inventory %+v", svc.inv)
	}
	if svc.done == nil || !svc.done.OK || svc.done.Step != wire.StepVerify || !strings.Contains(svc.done.Detail, "verified") {
		t.Errorf("done %+v", svc.done)
	}
	if svc.taskHits != 2 {
		t.Errorf("task fetched %d times, want 2 (one 503, one retry)", svc.taskHits)
	}
}

// A service restarted between the write's last progress report and the
// agent's done has lost the reports it wrote behind: the agent says its
// newest report again and the done lands.
func TestRunnerProvisionDoneAfterAServiceRestart(t *testing.T) {
	img, data := testImage(t)
	task := wire.Task{JobID: "job-r", Kind: wire.KindProvision, After: wire.AfterNone, Image: &wire.ImageSpec{
		URL: svcPath, Format: string(imagefmt.Zstd), SHA256: sum(img), UncompressedSize: int64(len(img)), BlockMap: data}}
	svc := newFakeService(t, task, compress(t, imagefmt.Zstd, img))
	svc.restartBeforeDone = true
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: devDir(t, 32*MiB), ProgressEvery: time.Hour}
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.done == nil || !svc.done.OK || svc.doneTries != 2 {
		t.Fatalf("done %+v after %d tries, want accepted on the second", svc.done, svc.doneTries)
	}
	// The background poster's own send may land after the first done:
	// what counts is that the newest report came after the refusal.
	if n := len(svc.progress); n == 0 || svc.progress[n-1].JobID != "job-r" || svc.progress[n-1].Bytes != int64(len(img)) {
		t.Errorf("progress after the refused done: %+v, want the newest report (all %d bytes)", svc.progress, len(img))
	}
}

func TestRunnerProvisionBadChecksum(t *testing.T) {
	img, _ := testImage(t)
	task := wire.Task{JobID: "job-2", Kind: wire.KindProvision, Image: &wire.ImageSpec{
		URL: svcPath, Format: string(imagefmt.Zstd), SHA256: strings.Repeat("0", 64), UncompressedSize: int64(len(img))}}
	svc := newFakeService(t, task, compress(t, imagefmt.Zstd, img))
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: devDir(t, MiB)}
	after, err := r.Run(context.Background())
	if err == nil || after != wire.AfterPoweroff {
		t.Fatalf("after %q err %v", after, err)
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.done == nil || svc.done.OK || svc.done.Step != wire.StepWrite || !strings.Contains(svc.done.Error, "sha256 mismatch") {
		t.Errorf("done %+v", svc.done)
	}
}

const svcPath = "/images/test.zst"

func TestRunnerWipe(t *testing.T) {
	svc := newFakeService(t, wire.Task{JobID: "job-3", Kind: wire.KindWipe, WipeMode: wire.WipeFull}, nil)
	dev := devDir(t, 3*MiB)
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: dev}
	if _, err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dev, "vda"))
	if !bytes.Equal(got, make([]byte, 3*MiB)) {
		t.Error("disk not zeroed")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.done == nil || !svc.done.OK || len(svc.done.Erase) != 1 {
		t.Fatalf("done %+v", svc.done)
	}
	if r := svc.done.Erase[0]; r.Disk != "vda" || r.Method != wire.EraseOverwrite || r.Result != wire.ErasePassed {
		t.Errorf("erase record %+v", r)
	}
}

// TestRunnerEraseFailureFailsTheTaskNamingTheDisk: the disk cannot be
// opened; done says so, with a failed record for it.
func TestRunnerEraseFailureFailsTheTaskNamingTheDisk(t *testing.T) {
	svc := newFakeService(t, wire.Task{JobID: "job-4", Kind: wire.KindWipe, WipeMode: wire.WipeCertified}, nil)
	dev := devDir(t, 3*MiB)
	os.Remove(filepath.Join(dev, "vda"))
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "tok"}, Root: "testdata/qemu", DevDir: dev}
	if _, err := r.Run(context.Background()); err == nil {
		t.Fatal("no error")
	}
	svc.mu.Lock()
	defer svc.mu.Unlock()
	if svc.done == nil || svc.done.OK || !strings.Contains(svc.done.Error, "vda:") || len(svc.done.Erase) != 1 ||
		svc.done.Erase[0].Result != wire.EraseFailed {
		t.Errorf("done %+v", svc.done)
	}
}

func TestRunnerBadToken(t *testing.T) {
	svc := newFakeService(t, wire.Task{Kind: wire.KindInspect}, nil)
	r := &Runner{Client: &Client{BaseURL: svc.URL, Token: "nope"}, Root: "testdata/qemu"}
	_, err := r.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refused the agent token") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseCmdline(t *testing.T) {
	p := ParseCmdline("console=ttyS0 metalhall.url=http://10.0.0.1:8080/ metalhall.token=abc.def metalhall.mac=52-54-00-AB-CD-EF metalhall.timeout=20 quiet\n")
	if p != (Params{URL: "http://10.0.0.1:8080", Token: "abc.def", MAC: "52:54:00:ab:cd:ef", Timeout: 20 * time.Second}) {
		t.Errorf("%+v", p)
	}
	if p := ParseCmdline("BOOT_IMAGE=x metalhall.mac=01-52-54-00-ab-cd-ef"); p.MAC != "52:54:00:ab:cd:ef" {
		t.Errorf("BOOTIF form: %+v", p)
	}
}

func TestSelectTarget(t *testing.T) {
	inv, err := Inspect("testdata/hgx-h100")
	if err != nil {
		t.Fatal(err)
	}
	d, err := SelectTarget(inv.Disks, "")
	if err != nil || d.Name != "nvme2n1" {
		t.Errorf("largest = %q, %v; want nvme2n1 (first of the 7.68 TB)", d.Name, err)
	}
	d, err = SelectTarget(inv.Disks, "/dev/nvme1n1")
	if err != nil || d.Name != "nvme1n1" {
		t.Errorf("named = %q, %v", d.Name, err)
	}
	if _, err := SelectTarget(inv.Disks, "sda"); err == nil || !strings.Contains(err.Error(), "nvme0n1, nvme1n1") {
		t.Errorf("missing disk err = %v", err)
	}
	if _, err := SelectTarget([]wire.Disk{{Name: "sdb", SizeBytes: 8 << 30, Removable: true}}, ""); err == nil {
		t.Error("a removable disk was selected")
	}
}
