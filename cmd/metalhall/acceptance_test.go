package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/inventory"
)

func failedReport(job string) inventory.AcceptanceReport {
	at := time.Date(2026, 11, 29, 20, 0, 0, 0, time.UTC)
	r := inventory.AcceptanceReport{Machine: "gpu-a01-05", Job: job, Profile: "hgx-h100", Reported: at, Checks: []inventory.Check{
		{Name: "pcie", Required: true, Result: inventory.CheckFailed, Summary: "27 of 28 links at their maximum speed and width",
			Findings: []inventory.Finding{{Subject: "GPU 0000:9b:00.0", Problem: "at PCIe Gen4 x8, expected Gen5 x16", Fix: "reseat"}}},
		{Name: "gpu_diagnostics", Result: inventory.CheckNotRun, Summary: "not run: no DCGM in the boot environment"},
	}}
	r.Settle()
	return r
}

func TestRackAcceptanceTableEndsWithTheFixList(t *testing.T) {
	ra := api.RackAcceptance{Rack: "a01", Passed: 1, Failed: 1, NotRun: 1,
		Machines: []api.MachineAcceptRow{
			{Machine: "gpu-a01-05", Unit: 17, State: inventory.MachineFailed, Profile: "hgx-h100", Result: "failed", Job: "job-000007"},
			{Machine: "gpu-a01-04", Unit: 9, State: inventory.MachineAvailable, Profile: "hgx-h100", Result: "passed", Job: "job-000006"},
			{Machine: "gpu-a01-03", Unit: 1, State: inventory.MachineEnrolled, Result: "none"}},
		FixList: []string{"U17 gpu-a01-05: GPU 0000:9b:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat"}}
	var b bytes.Buffer
	printRackAcceptance(&b, ra)
	out := b.String()
	for _, want := range []string{"U17", "gpu-a01-05", "failed", "job-000007", "1 passed, 1 failed, 1 without a report",
		"to fix:\n  U17 gpu-a01-05: GPU 0000:9b:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestMachineAcceptanceShowsChecksAndFindings(t *testing.T) {
	ma := api.MachineAcceptance{Machine: "gpu-a01-05", Reports: []inventory.AcceptanceReport{failedReport("job-000003"), failedReport("job-000007")}}
	var b bytes.Buffer
	printMachineAcceptance(&b, ma, false)
	out := b.String()
	for _, want := range []string{"job-000007", "FAILED, 1 to fix", "optional", "not run: no DCGM in the boot environment",
		"pcie: GPU 0000:9b:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "job-000003") {
		t.Errorf("without --all, an older report is shown:\n%s", out)
	}
	r := failedReport("job-000007")
	if got := acceptanceLine(&r); !strings.HasPrefix(got, "FAILED, 1 to fix (job-000007, ") || !strings.HasSuffix(got, "): GPU 0000:9b:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat") {
		t.Errorf("machine show line %q", got)
	}
}

func TestAcceptanceCommandsAgainstTheService(t *testing.T) {
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
	admin.ok("machine", "enroll", "--rack", "r1", "--unit", "17", "--mac", "52:54:00:00:00:01", "--bmc-address", "127.0.0.1:1",
		"--bmc-protocol", "ipmi", "--bmc-user", "u", "--bmc-password-file", pw, "m1")
	if out := admin.ok("machine", "acceptance", "m1"); !strings.Contains(out, "m1 has no acceptance report") {
		t.Errorf("empty report: %s", out)
	}
	if out := admin.ok("rack", "acceptance", "r1"); !strings.Contains(out, "U17") || !strings.Contains(out, "0 passed, 0 failed, 1 without a report") {
		t.Errorf("rack: %s", out)
	}
	if out := admin.ok("rack", "acceptance", "-o", "json", "r1"); !strings.Contains(out, `"fix_list": []`) || !strings.Contains(out, `"result": "none"`) {
		t.Errorf("json: %s", out)
	}
	if out := admin.ok("rack", "firmware", "r1"); !strings.Contains(out, "not inspected yet") || !strings.Contains(out, "no drift") {
		t.Errorf("rack firmware: %s", out)
	}
	if out := admin.ok("rack", "cabling", "--csv", "r1"); out != "side_a_device,side_a_type,side_a_name,side_b_device,side_b_type,side_b_name,status\n" {
		t.Errorf("rack cabling --csv: %q", out)
	}
	if code, _, errs := admin.run("rack", "acceptance", "nosuch"); code != exitNotFound || !strings.Contains(errs, `"nosuch" not found`) {
		t.Errorf("unknown rack: %d %s", code, errs)
	}
}

func TestRackFirmwareTableShowsDriftAndBaseline(t *testing.T) {
	rf := api.RackFirmware{Rack: "a01", Drift: []string{"BIOS: 2.1 on 3 machines; 2.0 on U17 gpu-a01-05"}, Machines: []api.MachineFirmware{
		{Machine: "gpu-a01-05", Unit: 17, Inspected: true, BIOS: "2.0", NVMe: []string{"GDC7302Q"}, InfiniBand: []string{"28.39.1002"},
			BMCReported:   []api.BMCFirmwareVersion{{Component: "BMC", Version: "3.1"}, {Component: "CPLD_0", Version: "1.0.1"}},
			BelowBaseline: []string{"BIOS firmware 2.0 below baseline 2.1 — update the BIOS to 2.1 or later"}}}}
	var b bytes.Buffer
	printRackFirmware(&b, rf)
	for _, want := range []string{"GDC7302Q", "28.39.1002", "BMC 3.1, CPLD_0 1.0.1", "drift:\n  BIOS: 2.1 on 3 machines; 2.0 on U17 gpu-a01-05",
		"U17 gpu-a01-05: BIOS firmware 2.0 below baseline 2.1 — update the BIOS to 2.1 or later"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestRackCablingCSVHasNetBoxColumns(t *testing.T) {
	rc := api.RackCabling{Rack: "a01", Ports: []api.Cable{
		{Machine: "gpu-a01-05", Unit: 17, Interface: "eno1", Status: "connected", Switch: "leaf-03", SwitchPort: "Ethernet12"},
		{Machine: "gpu-a01-05", Unit: 17, Interface: "eno2", Status: "no-link"}}}
	var b bytes.Buffer
	if err := writeNetBoxCables(&b, rc); err != nil {
		t.Fatal(err)
	}
	want := "side_a_device,side_a_type,side_a_name,side_b_device,side_b_type,side_b_name,status\n" +
		"gpu-a01-05,dcim.interface,eno1,leaf-03,dcim.interface,Ethernet12,connected\n"
	if b.String() != want {
		t.Errorf("csv:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printRackCabling(&b, rc)
	if !strings.Contains(b.String(), "no-link") || !strings.Contains(b.String(), "leaf-03") {
		t.Errorf("table:\n%s", b.String())
	}
}
