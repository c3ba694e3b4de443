package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServiceKilledDuringImport runs the real binaries: a `metalhall serve`
// subprocess is killed with SIGKILL while `metalhall rack import` is
// sending a 64-machine manifest; after a restart the rack is entirely there
// or entirely absent.
func TestServiceKilledDuringImport(t *testing.T) {
	sp := newSubproc(t)
	cli := sp.cli
	for _, args := range [][]string{
		{"site", "create", "s1"}, {"hall", "create", "--site", "s1", "h1"},
		{"phase", "create", "--hall", "h1", "--number", "1", "--power-kw", "100000"},
	} {
		if out, err := cli(args...); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}

	for round, delay := range []time.Duration{0, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond} {
		rack := fmt.Sprintf("k%02d", round)
		manifest := filepath.Join(t.TempDir(), "rack.yaml")
		var b strings.Builder
		fmt.Fprintf(&b, "rack: {name: %s, hall: h1, phase: 1, units: 64, power_kw: 130}\nmachines:\n", rack)
		for i := 1; i <= 64; i++ {
			fmt.Fprintf(&b, "  - {name: %s-m%02d, unit: %d, macs: [\"52:54:%02x:00:00:%02x\"], power_w: 2000,\n"+
				"     bmc: {address: 127.%d.0.%d, protocol: ipmi, user: admin, password: pw}}\n", rack, i, i, round, i, round, i)
		}
		os.WriteFile(manifest, []byte(b.String()), 0o600)

		imp := exec.Command(sp.bin, "--server", sp.url, "--token", sp.token, "rack", "import", "--file", manifest)
		if err := imp.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		sp.kill()
		imp.Wait() // it fails or succeeds depending on when the kill landed

		sp.start()
		out, err := cli("rack", "show", "-o", "json", rack)
		if err != nil {
			if !strings.Contains(out, "not found") {
				t.Fatalf("round %d: rack show: %v %s", round, err, out)
			}
			if ms, _ := cli("machine", "list", "-o", "json", "--hall", "h1"); strings.Contains(ms, rack+"-m") {
				t.Fatalf("round %d: rack absent but some of its machines are there", round)
			}
			t.Logf("round %d (kill after %v): import absent", round, delay)
			continue
		}
		var detail struct {
			Machines []json.RawMessage `json:"machines"`
		}
		json.Unmarshal([]byte(out), &detail)
		if len(detail.Machines) != 64 {
			t.Fatalf("round %d: rack %s has %d of 64 machines after the crash", round, rack, len(detail.Machines))
		}
		t.Logf("round %d (kill after %v): import complete", round, delay)
	}
}
