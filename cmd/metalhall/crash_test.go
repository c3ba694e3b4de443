package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gateDir arms the service's test gate at point (inventory/testgate.go):
// two FIFOs the service writes to when it gets there and reads from to go
// on.
type gateDir struct {
	t          *testing.T
	dir, point string
}

func newGateDir(t *testing.T, point string) *gateDir {
	g := &gateDir{t: t, dir: t.TempDir(), point: point}
	for _, f := range []string{".reached", ".release"} {
		if err := syscall.Mkfifo(filepath.Join(g.dir, point+f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

func (g *gateDir) env() []string { return []string{"METALHALL_TEST_GATE_DIR=" + g.dir} }

// waitReached returns once the service is held at the gate. The limit only
// keeps a broken service from hanging the run; nothing is timed.
func (g *gateDir) waitReached() {
	g.t.Helper()
	got := make(chan error, 1)
	go func() {
		data, err := os.ReadFile(filepath.Join(g.dir, g.point+".reached"))
		if err == nil && strings.TrimSpace(string(data)) != g.point {
			err = fmt.Errorf("gate said %q", data)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			g.t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		g.t.Fatalf("the service never reached the %s gate", g.point)
	}
}

// release lets the held service go on.
func (g *gateDir) release() {
	g.t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, g.point+".release"), []byte("go\n"), 0o600); err != nil {
		g.t.Fatal(err)
	}
}

// TestServiceKilledDuringImport runs the real binaries: `metalhall serve`
// is held inside the import's write transaction (every machine written,
// nothing committed) and killed there with SIGKILL; after a restart
// nothing of the 64-machine manifest is there. Then the same gate is
// released and the service killed right after the import answered: all of
// it is there.
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
	manifest := func(rack string, round int) string {
		path := filepath.Join(t.TempDir(), "rack.yaml")
		var b strings.Builder
		fmt.Fprintf(&b, "rack: {name: %s, hall: h1, phase: 1, units: 64, power_kw: 130}\nmachines:\n", rack)
		for i := 1; i <= 64; i++ {
			fmt.Fprintf(&b, "  - {name: %s-m%02d, unit: %d, macs: [\"52:54:%02x:00:00:%02x\"], power_w: 2000,\n"+
				"     bmc: {address: 127.%d.0.%d, protocol: ipmi, user: admin, password: pw}}\n", rack, i, i, round, i, round, i)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	machinesOf := func(rack string) int {
		out, err := cli("machine", "list", "-o", "json", "--hall", "h1")
		if err != nil {
			t.Fatalf("machine list: %v %s", err, out)
		}
		var ms []struct{ Name, Rack string }
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			t.Fatalf("machine list: %v %s", err, out)
		}
		n := 0
		for _, m := range ms {
			if m.Rack == rack || strings.HasPrefix(m.Name, rack+"-") {
				n++
			}
		}
		return n
	}

	t.Run("killed inside the transaction", func(t *testing.T) {
		g := newGateDir(t, "import-commit")
		sp.kill()
		sp.env = g.env()
		sp.start()
		imp := exec.Command(sp.bin, "--server", sp.url, "--token", sp.token, "rack", "import", "--file", manifest("k01", 1))
		if err := imp.Start(); err != nil {
			t.Fatal(err)
		}
		g.waitReached()
		sp.kill()
		if err := imp.Wait(); err == nil {
			t.Fatal("rack import succeeded although the service was killed before it committed")
		}
		sp.env = nil
		sp.start()
		if out, err := cli("rack", "show", "k01"); err == nil || !strings.Contains(out, "not found") {
			t.Fatalf("rack k01 after a kill inside its import: %v\n%s", err, out)
		}
		if n := machinesOf("k01"); n != 0 {
			t.Fatalf("%d machines of an import killed before its commit are there", n)
		}
	})

	t.Run("killed after the commit", func(t *testing.T) {
		g := newGateDir(t, "import-commit")
		sp.kill()
		sp.env = g.env()
		sp.start()
		imp := exec.Command(sp.bin, "--server", sp.url, "--token", sp.token, "rack", "import", "--file", manifest("k02", 2))
		if err := imp.Start(); err != nil {
			t.Fatal(err)
		}
		g.waitReached()
		g.release()
		if err := imp.Wait(); err != nil {
			t.Fatalf("rack import with the gate released: %v", err)
		}
		sp.kill()
		sp.env = nil
		sp.start()
		if n := machinesOf("k02"); n != 64 {
			t.Fatalf("rack k02 has %d of 64 machines after a kill following its commit", n)
		}
		if n := machinesOf("k01"); n != 0 {
			t.Fatalf("%d machines of k01 appeared", n)
		}
	})
}
