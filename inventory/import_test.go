package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func rackImport(rack string, n int, macBase int) RackImport {
	in := RackImport{Rack: Rack{Name: rack, Hall: "h1", Phase: 1, Units: 48, BudgetW: 44_000}}
	for i := 1; i <= n; i++ {
		e := machine(fmt.Sprintf("%s-m%02d", rack, i), rack, i, macN(macBase+i))
		e.Machine.BMC.Address = fmt.Sprintf("%s-bmc-%02d", rack, i)
		in.Machines = append(in.Machines, e)
	}
	return in
}

func TestImportIsAllOrNothingAndIdempotent(t *testing.T) {
	inv := newInv(t)
	hallFixture(t, inv)
	in := rackImport("a01", 4, 0)
	res := must(inv.ImportRack(ctx, in))
	if !res.RackCreated || len(res.Created) != 4 {
		t.Fatalf("first import: %+v", res)
	}
	// Same manifest again: nothing new.
	res = must(inv.ImportRack(ctx, rackImport("a01", 4, 0)))
	if res.RackCreated || len(res.Created) != 0 || len(res.Unchanged) != 4 {
		t.Fatalf("re-import: %+v", res)
	}
	// A manifest with a changed machine is refused naming the field.
	changed := rackImport("a01", 4, 0)
	changed.Machines[2].Machine.Unit = 30
	err := must2(inv.ImportRack(ctx, changed))
	wantErr[*ConflictError](t, err, "machines[2]", "a01-m03", "unit (stored 3, manifest 30)")

	// A new rack whose last machine is bad: nothing of it lands.
	bad := rackImport("a02", 5, 100)
	bad.Machines[4].Machine.MACs = []string{macN(1)} // belongs to a01-m01
	wantErr[*PlacementError](t, must2(inv.ImportRack(ctx, bad)), "machines[4]", "a02-m05", "a01-m01")
	wantErr[*NotFoundError](t, must2(inv.Rack(ctx, "a02")))
	for i := 1; i <= 4; i++ {
		if _, ok := inv.LookupMAC(macKey(macN(100 + i))); ok {
			t.Fatalf("refused import left MAC %d in the in-memory index", i)
		}
	}
	// Validation errors name the entry before anything is written.
	bad = rackImport("a03", 2, 200)
	bad.Machines[1].Machine.MACs = []string{"nope"}
	wantErr[*ValidationError](t, must2(inv.ImportRack(ctx, bad)), "machines[1]", "a03-m02", "nope")
	// Machines over the rack's power budget.
	heavy := rackImport("a04", 5, 300)
	for i := range heavy.Machines {
		heavy.Machines[i].Machine.PowerW = 10_200
	}
	wantErr[*PlacementError](t, must2(inv.ImportRack(ctx, heavy)), "machines[4]", "44 kW", "by 7 kW")
	if rs := must(inv.Racks(ctx, RackFilter{})); len(rs) != 2 { // r1 and a01
		t.Fatalf("racks after refused imports: %v", rs)
	}
	checkIndexes(t, inv.(*Store))
}

const crashChildEnv = "METALHALL_INVENTORY_CRASH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		crashChild(path)
		return
	}
	code := m.Run()
	stopTestEtcd()
	os.Exit(code)
}

// crashChild imports racks of 40 machines one after another and says so
// after each commit, until its parent kills it.
func crashChild(path string) {
	s, err := Open(path, Options{gate: fifoGate})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		in := rackImport(fmt.Sprintf("c%03d", i), 40, i*100)
		in.Rack.BudgetW = 0
		for j := range in.Machines {
			in.Machines[j].Machine.PowerW = 0
		}
		if _, err := s.ImportRack(ctx, in); err != nil {
			fmt.Println("import:", err)
			os.Exit(1)
		}
		fmt.Println("committed", i)
	}
}

// TestCrashDuringImport kills a process with SIGKILL while it is inside an
// import's write transaction (every machine written, nothing committed:
// the test gate holds it there) after a given number of committed imports,
// and checks that exactly the committed racks are there, each entire.
func TestCrashDuringImport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes; skipped in -short")
	}
	// bbolt's own crash, whatever engine the suite runs on: the child
	// holds the file inside a write transaction. (etcd's all-or-nothing
	// under a killed writer is its engine's test: an intent rolled
	// forward.)
	path := filepath.Join(t.TempDir(), "db")
	inv, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	hallFixture(t, inv)
	inv.Close()

	for round, committed := range []int{0, 2} {
		gates := t.TempDir()
		for _, f := range []string{"import-commit.reached", "import-commit.release"} {
			if err := syscall.Mkfifo(filepath.Join(gates, f), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// reached returns once the child is held at the gate; the limit
		// only keeps a broken child from hanging the run.
		reached := func() {
			t.Helper()
			done := make(chan error, 1)
			go func() { _, err := os.ReadFile(filepath.Join(gates, "import-commit.reached")); done <- err }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("round %d: the child never reached the import gate", round)
			}
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "METALHALL_TEST_GATE_DIR="+gates)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for i := 0; i < committed; i++ {
			reached()
			if err := os.WriteFile(filepath.Join(gates, "import-commit.release"), []byte("go\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if !sc.Scan() || sc.Text() != fmt.Sprint("committed ", i) {
				t.Fatalf("round %d: child: %q, want committed %d", round, sc.Text(), i)
			}
		}
		reached() // inside the next import's transaction
		cmd.Process.Signal(syscall.SIGKILL)
		go func() {
			for sc.Scan() {
			}
		}()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, want killed", round, err)
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		var got []string
		racks := must(s.Racks(ctx, RackFilter{}))
		for _, r := range racks {
			if r.Name == "r1" {
				continue
			}
			got = append(got, r.Name)
			if u := must(s.RackUsage(ctx, r.Name)); u.Machines != 40 {
				t.Errorf("round %d: rack %s has %d of 40 machines", round, r.Name, u.Machines)
			}
			if ms := must(s.Machines(ctx, MachineFilter{Rack: r.Name})); len(ms) != 40 {
				t.Errorf("round %d: rack %s lists %d of 40 machines", round, r.Name, len(ms))
			}
		}
		var want []string
		for i := 0; i < committed; i++ {
			want = append(want, fmt.Sprintf("c%03d", i))
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("round %d: racks %v after the kill, want exactly the committed %v", round, got, want)
		}
		checkIndexes(t, s)
		// The next child starts again at rack c000: clear what landed.
		for _, r := range got {
			for _, m := range must(s.Machines(ctx, MachineFilter{Rack: r})) {
				if err := s.DeleteMachine(ctx, m.Name); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.DeleteRack(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
}
