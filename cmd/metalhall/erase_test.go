package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/api"
)

func TestEraseReportTableShowsEachDiskAndWhyOneFailed(t *testing.T) {
	at := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	rep := api.EraseReport{Machine: "gpu-a01-01", Reports: []api.EraseRelease{
		{Job: "job-000003", Reported: at, Passed: true, Disks: []wire.EraseRecord{{Disk: "nvme0n1", SizeBytes: 7680 << 30,
			Method: wire.EraseNVMeSanitizeCrypto, Level: wire.LevelPurge, Result: wire.ErasePassed, Verification: wire.EraseVerification{Samples: 66}}}},
		{Job: "job-000009", Tenant: "bank-x", Reported: at, Disks: []wire.EraseRecord{
			{Disk: "nvme0n1", Model: "QEMU NVMe Ctrl", Serial: "MHNVME0001", SizeBytes: 32 << 30, Method: wire.EraseNVMeFormatUserData,
				Level: wire.LevelPurge, Result: wire.ErasePassed, Verification: wire.EraseVerification{Samples: 66}},
			{Disk: "vda", SizeBytes: 64 << 30, Result: wire.EraseFailed, Error: "verify: 3 of 66 sample blocks still hold the data"}}}}}
	var b bytes.Buffer
	printEraseReport(&b, rep, false)
	out := b.String()
	for _, want := range []string{"release job-000009, tenant bank-x", "FAILED", "nvme-format-user-data", "purge", "MHNVME0001", "32.0 GiB",
		"66/66 samples clean", "vda: verify: 3 of 66 sample blocks still hold the data"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "job-000003") {
		t.Errorf("without --all, an older report is shown:\n%s", out)
	}
	b.Reset()
	printEraseReport(&b, rep, true)
	if !strings.Contains(b.String(), "job-000003") || !strings.Contains(b.String(), "PASSED") {
		t.Errorf("--all:\n%s", b.String())
	}
}

func TestEraseReportCommandAgainstTheService(t *testing.T) {
	url, adminTok := startService(t)
	admin := cliRunner{t, url, adminTok}
	admin.ok("site", "create", "s1")
	admin.ok("hall", "create", "--site", "s1", "h1")
	admin.ok("phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "100")
	admin.ok("rack", "create", "--hall", "h1", "--phase", "1", "--power-kw", "40", "r1")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	admin.ok("machine", "enroll", "--rack", "r1", "--unit", "1", "--mac", "52:54:00:00:00:01", "--bmc-address", "127.0.0.1:1",
		"--bmc-protocol", "ipmi", "--bmc-user", "u", "--bmc-password-file", pw, "m1")
	if out := admin.ok("machine", "erase-report", "m1"); !strings.Contains(out, "m1 has no erase report yet") {
		t.Errorf("empty report: %s", out)
	}
	if out := admin.ok("machine", "erase-report", "-o", "json", "m1"); !strings.Contains(out, `"reports": []`) {
		t.Errorf("json: %s", out)
	}
	if code, _, errs := admin.run("machine", "erase-report", "nosuch"); code != exitNotFound || !strings.Contains(errs, `"nosuch" not found`) {
		t.Errorf("unknown machine: %d %s", code, errs)
	}
}
