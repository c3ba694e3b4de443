package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductBinaryLinksNoLabOrBench keeps the QEMU rack builder, the BMC
// emulators and the benchmarks out of what operators run.
func TestProductBinaryLinksNoLabOrBench(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	const module = "github.com/metalhall/metalhall/"
	var bad []string
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, module)
		if ok && (rest == "lab" || rest == "bench" || strings.HasPrefix(rest, "lab/") || strings.HasPrefix(rest, "bench/")) {
			bad = append(bad, pkg)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("the metalhall binary links %s", strings.Join(bad, ", "))
	}
}
