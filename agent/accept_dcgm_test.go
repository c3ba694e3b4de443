package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

func TestDCGMDiagJSONIsFoldedPerGPU(t *testing.T) {
	out, err := os.ReadFile("testdata/dcgm/level2-memory-fail.json")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseDCGMDiag(out, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ran || res.Level != 2 || len(res.Tests) != 12 {
		t.Fatalf("result = %+v", res)
	}
	want := wire.DCGMTest{Category: "Hardware", Name: "GPU Memory", GPU: 3, Result: "Fail",
		Info: "Pending page retirements together with a DBE were detected on GPU 3.; Allocated 80471473766 bytes (98.6%)"}
	if res.Tests[5] != want {
		t.Errorf("memory test on GPU 3 = %+v, want %+v", res.Tests[5], want)
	}
	if d := res.Tests[0]; d.GPU != -1 || d.Result != "Pass" || d.Name != "Denylist" {
		t.Errorf("deployment test = %+v", d)
	}
	if p := res.Tests[10]; p.Result != "Warn" || p.Info != "PCIe replay rate high on GPU 0." {
		t.Errorf("pcie warn = %+v", p)
	}
	if s := res.Tests[11]; s.Result != "Skip" {
		t.Errorf("skipped = %+v", s)
	}
}

func TestDCGMWithoutResultsIsNotAPass(t *testing.T) {
	for _, out := range []string{"", "Error: unable to connect to host engine", `{"DCGM GPU Diagnostic":{"version":"3.3.7"}}`} {
		if res, err := parseDCGMDiag([]byte(out), 1); err == nil {
			t.Errorf("%q parsed as %+v", out, res)
		}
	}
}

// A dcgmi on PATH (here a script printing a failing run and exiting 226,
// as dcgmi does when a test fails) is run and its JSON kept; without one
// the result says DCGM is not in the boot environment.
func TestRunDCGMRunsTheBinaryOrSaysWhyNot(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	if res := runDCGM(context.Background(), 1, 0); res.Ran || res.Reason != "no DCGM in the boot environment" {
		t.Errorf("without dcgmi: %+v", res)
	}
	fixture, err := filepath.Abs("testdata/dcgm/level2-memory-fail.json")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"diag -r 2 -j\" ] || { echo \"bad args: $*\" >&2; exit 2; }\nwhile IFS= read -r l; do printf '%s\\n' \"$l\"; done < '" + fixture + "'\nexit 226\n"
	if err := os.WriteFile(filepath.Join(bin, "dcgmi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res := runDCGM(context.Background(), 2, 0)
	if !res.Ran || len(res.Tests) != 12 || res.Tests[5].Result != "Fail" {
		t.Errorf("with dcgmi: %+v", res)
	}
}

// With nv-hostengine in the boot environment, it is started before dcgmi
// (which needs it); here a stand-in leaves a mark dcgmi checks for.
func TestRunDCGMStartsTheHostEngineFirst(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	mark := filepath.Join(bin, "engine-up")
	fixture, err := filepath.Abs("testdata/dcgm/level2-memory-fail.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(bin, "nv-hostengine"), []byte("#!/bin/sh\n: > '"+mark+"'\n"), 0o755)
	dcgmi := "#!/bin/sh\n[ -e '" + mark + "' ] || { echo '{\"runtime_error\": \"Unable to connect to host engine\"}'; exit 1; }\nwhile IFS= read -r l; do printf '%s\\n' \"$l\"; done < '" + fixture + "'\nexit 226\n"
	os.WriteFile(filepath.Join(bin, "dcgmi"), []byte(dcgmi), 0o755)
	if res := runDCGM(context.Background(), 2, 0); !res.Ran || len(res.Tests) != 12 {
		t.Errorf("with nv-hostengine and dcgmi: %+v", res)
	}
}

// DCGM 4.x prints results per entity under "DCGM Diagnostic": each is
// folded by GPU (or named entity), and a test's error that belongs to no
// entity is kept from its summary.
func TestDCGM4DiagJSONIsFoldedPerEntity(t *testing.T) {
	out, err := os.ReadFile("testdata/dcgm/dcgm4-level3-memory-fail.json")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseDCGMDiag(out, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Ran || res.Level != 3 || res.Version != "4.2.3" || len(res.Tests) != 10 {
		t.Fatalf("result = %+v", res)
	}
	want := []wire.DCGMTest{
		{Category: "Deployment", Name: "software", GPU: 0, Result: "Pass"},
		{Category: "Deployment", Name: "software", GPU: 1, Result: "Pass"},
		{Category: "Hardware", Name: "memory", GPU: 0, Result: "Pass", Info: "Allocated 80471473766 bytes (98.6%)"},
		{Category: "Hardware", Name: "memory", GPU: 1, Result: "Fail", Info: "Pending page retirements together with a DBE were detected on GPU 1.; Allocated 80471473766 bytes (98.6%)"},
		{Category: "Stress", Name: "targeted_stress", GPU: 0, Result: "Warn", Info: "GPU 0 clocks throttled by HW slowdown."},
		{Category: "Stress", Name: "targeted_stress", GPU: 1, Result: "Skip"},
		{Category: "Stress", Name: "cpu_eud", GPU: -1, Entity: "CPU 0", Result: "Pass"},
		{Category: "Stress", Name: "pcie", GPU: 0, Result: "Pass"},
		{Category: "Stress", Name: "pcie", GPU: 1, Result: "Pass"},
		{Category: "Stress", Name: "pcie", GPU: -1, Result: "Fail", Info: "Error: MPI job exited with code 1"},
	}
	for i := range want {
		if res.Tests[i] != want[i] {
			t.Errorf("test %d = %+v, want %+v", i, res.Tests[i], want[i])
		}
	}
}

// A run that could not start says why, in DCGM's words: not a pass.
func TestDCGMRuntimeErrorIsNotRunWithDCGMsReason(t *testing.T) {
	out, err := os.ReadFile("testdata/dcgm/dcgm4-runtime-error.json")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseDCGMDiag(out, 1)
	if err == nil || err.Error() != "dcgmi diag could not run: Error: unable to establish a connection to the specified host: localhost" {
		t.Fatalf("parse = %+v, %v", res, err)
	}
	v3 := `{"DCGM GPU Diagnostic": {"runtime_error": "The GPU is in use"}}`
	if _, err := parseDCGMDiag([]byte(v3), 1); err == nil || err.Error() != "dcgmi diag could not run: The GPU is in use" {
		t.Errorf("3.x runtime error: %v", err)
	}
}

// The profile's bound replaces the level's default; levels 3 and 4 have
// defaults long enough for them.
func TestDCGMDeadlineIsTheProfilesOrTheLevels(t *testing.T) {
	for _, c := range []struct {
		level   int
		timeout time.Duration
		want    time.Duration
	}{{1, 0, 3 * time.Minute}, {2, 0, 7 * time.Minute}, {3, 0, 45 * time.Minute}, {4, 0, 150 * time.Minute}, {4, time.Hour, time.Hour}} {
		if got := dcgmDeadline(c.level, c.timeout); got != c.want {
			t.Errorf("dcgmDeadline(%d, %v) = %v, want %v", c.level, c.timeout, got, c.want)
		}
	}
}

// A dcgmi that exits non-zero with a runtime error in its JSON is
// reported in DCGM's words, not by its exit status.
func TestRunDCGMKeepsDCGMsRuntimeError(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	fixture, err := filepath.Abs("testdata/dcgm/dcgm4-runtime-error.json")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nwhile IFS= read -r l; do printf '%s\\n' \"$l\"; done < '" + fixture + "'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "dcgmi"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	res := runDCGM(context.Background(), 3, time.Minute)
	if res.Ran || res.Reason != "dcgmi diag could not run: Error: unable to establish a connection to the specified host: localhost" {
		t.Errorf("result %+v", res)
	}
}
