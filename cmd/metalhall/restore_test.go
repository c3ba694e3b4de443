package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/lab/redfish"
)

// TestRestoredCopyTouchesNoBMCUntilResumed is the restore scenario with
// real processes: the original service has a commission job in flight
// against a Redfish BMC emulator on loopback; it is backed up, the backup
// is restored into a new data dir, and the copy is started beside the
// original, on the same BMC. The emulator receives no request from the
// copy — not from the job, not from the power sync, not from a command —
// until an admin runs `job resume`; then the copy's job runs again.
func TestRestoredCopyTouchesNoBMCUntilResumed(t *testing.T) {
	// The original waits for its agent half an hour: while it waits it
	// sends the BMC nothing, so every request the emulator counts from
	// the copy's start on is the copy's.
	orig := newSubproc(t, "--boot-timeout", "30m")
	rf := redfish.NewServer(redfish.Config{Username: "root", Password: "pw"})
	bmc := httptest.NewServer(rf)
	t.Cleanup(bmc.Close)
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("pw"), 0o600)
	// Commission netboots: the engine wants a boot environment, and no
	// machine reads it here.
	os.MkdirAll(filepath.Join(orig.dir, "bootenv"), 0o755)
	for _, f := range []string{bootenvKernel, bootenvInitrd} {
		os.WriteFile(filepath.Join(orig.dir, "bootenv", f), []byte("boot"), 0o644)
	}
	img := filepath.Join(dir, "os.raw")
	os.WriteFile(img, []byte(strings.Repeat("metalhall demo os ", 30_000)), 0o600)
	for _, args := range [][]string{
		{"site", "create", "s1"}, {"hall", "create", "--site", "s1", "h1"},
		{"phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "1000"},
		{"phase", "set-state", "--hall", "h1", "--number", "1", "--to", "commissioning"},
		{"rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "44", "r1"},
		{"machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:42:00:11",
			"--bmc-address", bmc.URL, "--bmc-protocol", "redfish", "--bmc-user", "root", "--bmc-password-file", pw, "m1"},
		{"image", "import", "--file", img, "demo"},
		{"profile", "import", "--file", exampleProfile, "hgx-h100"},
		{"machine", "commission", "m1"},
	} {
		orig.mustCLI(args...)
	}
	// In flight: the BMC was driven (PXE, power cycle), the agent is
	// awaited.
	waitUntil(t, "the commission job to wait for its agent", func() bool {
		jobs := jobList(t, orig)
		return len(jobs) == 1 && jobs[0].StepName() == "wait-agent"
	})

	if rf.Requests() == 0 {
		t.Fatal("the original's job has not driven the BMC")
	}
	pf := filepath.Join(dir, "passphrase")
	os.WriteFile(pf, []byte("a long passphrase for the seal key\n"), 0o600)
	arc := filepath.Join(dir, "metalhall-backup.tar")
	if out := orig.mustCLI("backup", "--out", arc, "--passphrase-file", pf); !strings.Contains(out, "1 of 1 image blobs, seal key encrypted") ||
		!strings.Contains(out, "1 profile(s)") {
		t.Fatalf("backup: %s", out)
	}

	// Refusals first: each writes nothing.
	restore := func(args ...string) (string, int) {
		cmd := exec.Command(orig.bin, append([]string{"restore", "--from", arc}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	copyDir := filepath.Join(t.TempDir(), "copy")
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not the passphrase it was\n"), 0o600)
	if out, code := restore("--data-dir", copyDir, "--passphrase-file", wrong); code != exitError || !strings.Contains(out, "passphrase does not open the seal key") {
		t.Fatalf("wrong passphrase: exit %d: %s", code, out)
	}
	if _, err := os.Stat(copyDir); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s: %v", copyDir, err)
	}
	if out, code := restore("--data-dir", orig.dir, "--passphrase-file", pf); code != exitUsage || !strings.Contains(out, "not empty") {
		t.Fatalf("restore over a data dir in use, not forced: exit %d: %s", code, out)
	}
	if out, code := restore("--data-dir", orig.dir, "--passphrase-file", pf, "--force"); code != exitError || !strings.Contains(out, "in use by a running metalhall") {
		t.Fatalf("restore over a data dir in use, forced: exit %d: %s", code, out)
	}

	out, code := restore("--data-dir", copyDir, "--passphrase-file", pf)
	if code != 0 || !strings.Contains(out, "1 unfinished job(s) paused") || !strings.Contains(out, "seal key restored") ||
		!strings.Contains(out, "1 profile(s)") || !strings.Contains(out, "lacks the boot environment the backed-up service had (initrd.img, vmlinuz)") {
		t.Fatalf("restore: exit %d: %s", code, out)
	}
	if a, b := readFile(t, filepath.Join(orig.dir, "seal.key")), readFile(t, filepath.Join(copyDir, "seal.key")); a != b {
		t.Fatal("the copy's seal key is not the original's")
	}

	// The copy, beside the original, with a power sync every second and
	// a boot timeout long past: anything not held would reach the BMC.
	before := rf.Requests()
	cp := &subproc{t: t, bin: orig.bin, dir: copyDir, token: orig.token,
		flags: append(slices.Clone(orig.flags), "--power-sync-interval", "1s", "--boot-timeout", "1s")}
	// Its own held listeners, handed over by socket activation as every
	// subproc start does (start sets LISTEN_FDS).
	admin, prov := holdListener(t), holdListener(t)
	cp.addr, cp.prov = admin.Addr().String(), prov.Addr().String()
	cp.url, cp.provURL = "http://"+cp.addr, "http://"+cp.prov
	cp.listeners = []*os.File{listenerFile(t, admin), listenerFile(t, prov)}
	cp.start()
	t.Cleanup(cp.kill)
	// The barrier: the copy's scheduler has looked at its queue three
	// times (a second apart) and started nothing; its power sync ran as
	// long.
	waitUntil(t, "the copy's scheduler to pass over the paused job", func() bool { return metric(t, cp.url, "metalhall_jobs_held_rounds_total") >= 3 })
	// The profiles came back with the database: its machines commission.
	if out := cp.mustCLI("profile", "show", "hgx-h100"); !strings.Contains(out, "os_disk") {
		t.Errorf("the copy's profile: %s", out)
	}
	if out, err := cp.cli("machine", "power", "--action", "status", "m1"); err == nil || !strings.Contains(out, "on hold") || !strings.Contains(out, "job resume") {
		t.Fatalf("a BMC command on the copy before resume: %v %s", err, out)
	}
	if out, err := cp.cli("machine", "commission", "m1"); err == nil || !strings.Contains(out, "on hold") {
		t.Fatalf("a new job on the copy before resume: %v %s", err, out)
	}
	jobs := jobList(t, cp)
	if len(jobs) != 1 || !jobs[0].Paused || jobs[0].StepName() != "wait-agent" {
		t.Fatalf("the copy's jobs before resume: %+v", jobs)
	}
	if out := cp.mustCLI("job", "list"); !strings.Contains(out, "paused") {
		t.Fatalf("job list does not say paused: %s", out)
	}
	if n := rf.Requests(); n != before {
		t.Fatalf("the BMC received %d request(s) from the copy before resume", n-before)
	}
	// The original is not on hold: resuming there is refused.
	if out, err := orig.cli("job", "resume"); err == nil || !strings.Contains(out, "not on hold") {
		t.Fatalf("resume on the original: %v %s", err, out)
	}

	if out := cp.mustCLI("job", "resume"); !strings.Contains(out, "1 job(s) run again") {
		t.Fatalf("resume: %s", out)
	}
	// Resumed, the job's wait is long over: it tries PXE again, through
	// the BMC.
	waitUntil(t, "the resumed copy to drive the BMC", func() bool { return rf.Requests() > before })
	if jobs := jobList(t, cp); len(jobs) == 1 && jobs[0].Paused {
		t.Fatalf("still paused after resume: %+v", jobs)
	}
	if out := cp.mustCLI("audit", "list", "--action", "job.resume"); !strings.Contains(out, "ok") {
		t.Fatalf("the resume is not audited: %s", out)
	}
}

func TestRestoreOfACorruptArchiveWritesNothing(t *testing.T) {
	url, tok := startService(t)
	r := cliRunner{t, url, tok}
	r.ok("site", "create", "riyadh-1")
	dir := t.TempDir()
	arc := filepath.Join(dir, "b.tar")
	if out := r.ok("backup", "--out", arc); !strings.Contains(out, "NO seal key") || !strings.Contains(out, "seal.key") {
		t.Fatalf("a backup without a passphrase does not say the key is left out: %s", out)
	}
	data := []byte(readFile(t, arc))
	// Flip a byte in the database member (it follows the manifest).
	i := strings.Index(string(data), "riyadh-1")
	if i < 0 {
		t.Fatal("no site name in the archive")
	}
	data[i] ^= 0xff
	bad := filepath.Join(dir, "bad.tar")
	os.WriteFile(bad, data, 0o600)
	dst := filepath.Join(dir, "copy")
	code, out, errs := r.run("restore", "--from", bad, "--data-dir", dst)
	if code != exitError || !strings.Contains(errs, "corrupt") || !strings.Contains(errs, "metalhall.db") || out != "" {
		t.Fatalf("restore of a corrupt archive: exit %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s: %v", dst, err)
	}
	// Restored as it is, the copy has no key: it says so.
	out = r.ok("restore", "--from", arc, "--data-dir", dst)
	if !strings.Contains(out, "NO seal key") || !strings.Contains(out, "0 unfinished job(s) paused") {
		t.Fatalf("restore without a key: %s", out)
	}
}

// waitUntil is waitFor (console_test.go) with a 2-minute bound.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	waitFor(t, ctx, what, ok)
}

func jobList(t *testing.T, s *subproc) []api.Job {
	t.Helper()
	out := s.mustCLI("job", "list", "-o", "json")
	var jobs []api.Job
	if err := json.Unmarshal([]byte(out), &jobs); err != nil {
		t.Fatalf("job list: %v: %s", err, out)
	}
	return jobs
}

// metric reads one unlabelled sample from the service's /metrics.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
