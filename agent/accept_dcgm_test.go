package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"

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
	if res := runDCGM(context.Background(), 1); res.Ran || res.Reason != "no DCGM in the boot environment" {
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
	res := runDCGM(context.Background(), 2)
	if !res.Ran || len(res.Tests) != 12 || res.Tests[5].Result != "Fail" {
		t.Errorf("with dcgmi: %+v", res)
	}
}
