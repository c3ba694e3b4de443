package provisioner

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/inventory/seal"
	"github.com/metalhall/metalhall/lab/ipmisim"
)

func TestARingKeepsTheLastBytes(t *testing.T) {
	r := &ring{max: 8}
	for _, s := range []string{"0123", "456789", "abc"} {
		r.Write([]byte(s))
	}
	data, total := r.snapshot()
	if string(data) != "56789abc" || total != 13 {
		t.Fatalf("ring holds %q of %d bytes, want the last 8 (56789abc) of 13", data, total)
	}
}

// TestAJobsConsoleIsCapturedAndKeptWithTheJob runs against a real IPMI BMC
// (ipmi_sim, its Serial-over-LAN wired to a loopback socket standing for
// the machine's serial port): what the machine prints while its job runs
// is kept with the job, without the job's agent token; an operator
// attached at the same time shares the one SOL session and sees it too.
func TestAJobsConsoleIsCapturedAndKeptWithTheJob(t *testing.T) {
	serial := ipmisim.NewSerialPort(t)
	sim := ipmisim.ForTest(t, ipmisim.Config{User: "admin", Password: "ipmi-pw", SOL: serial.Device()})

	ctx := context.Background()
	inv := must(inventory.Open(filepath.Join(t.TempDir(), "db"), inventory.Options{}))
	t.Cleanup(func() { inv.Close() })
	must(inv.CreateSite(ctx, inventory.Site{Name: "s"}))
	must(inv.CreateHall(ctx, inventory.Hall{Name: "h", Site: "s"}))
	must(inv.CreatePhase(ctx, inventory.Phase{Hall: "h", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreateRack(ctx, inventory.Rack{Name: "r", Hall: "h", Phase: 1, BudgetW: 44_000}))
	sealer := must(seal.New([]byte("0123456789abcdef0123456789abcdef")))
	must(inv.EnrollMachine(ctx, inventory.Enrollment{
		Machine: inventory.Machine{Name: "m1", Rack: "r", Unit: 1, MACs: []string{"52:54:00:00:00:01"}, PowerW: 10_000,
			BMC: inventory.BMC{Address: sim.Addr(), Protocol: inventory.ProtocolIPMI, Username: "admin"}},
		SealedPassword: must(sealer.Seal([]byte("ipmi-pw"), []byte("bmc/m1"))),
	}))
	a := &Machines{Inv: inv, Sealer: sealer, Ctl: bmc.New(bmc.Config{OpTimeout: 20 * time.Second})}
	t.Cleanup(a.CloseConsoles)
	e := must(New(inv, a, Config{TokenKey: []byte("0123456789abcdef0123456789abcdef")}))
	j := must(inv.StartJob(ctx, inventory.Job{Machine: "m1", Kind: inventory.JobCommission,
		Steps: []inventory.JobStep{{Name: stepBMCCheck}}}, inventory.MachineCommissioning))

	e.startCapture(ctx, j)
	m := must(inv.Machine(ctx, "m1"))
	op := must(a.AttachConsole(ctx, m, "tok-1", false))
	defer op.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	machine, err := serial.Conn(cctx)
	if err != nil {
		t.Fatal(err)
	}
	// The capture holds the session already; wait until it is registered
	// before the machine prints (what comes before is not anyone's).
	waitFor(t, "the capture on the session", func() bool {
		a.consoles.mu.Lock()
		defer a.consoles.mu.Unlock()
		h := a.consoles.hubs["m1"]
		if h == nil {
			return false
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.captures) == 1
	})
	printed := "Command line: console=ttyS0,115200 metalhall.token=" + e.AgentToken(j.ID) + " metalhall.mac=52:54:00:00:00:01\r\n" +
		"metalhall-agent: inspecting\r\n"
	if _, err := machine.Write([]byte(printed)); err != nil {
		t.Fatal(err)
	}
	// The operator sees it...
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), "metalhall-agent: inspecting") {
		n, err := op.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("the operator read %q, then %v", seen.String(), err)
		}
	}
	// ...and so does the capture, kept with the job when the job ends.
	waitFor(t, "the capture", func() bool {
		e.captures.mu.Lock()
		c := e.captures.m[j.ID]
		e.captures.mu.Unlock()
		data, _ := c.r.snapshot()
		return bytes.Contains(data, []byte("metalhall-agent: inspecting"))
	})
	e.saveConsole(ctx, j.ID, true)
	l := must(inv.ConsoleLog(ctx, "m1", j.ID))
	if !bytes.Contains(l.Data, []byte("metalhall-agent: inspecting")) || bytes.Contains(l.Data, []byte(e.AgentToken(j.ID))) ||
		!bytes.Contains(l.Data, []byte("metalhall.token=[agent token]")) || l.Kind != inventory.JobCommission || l.Captured != int64(len(printed)) {
		t.Fatalf("console log %+v: %q", l, l.Data)
	}

	// The capture let go; the operator still has the session.
	if _, err := machine.Write([]byte("login: ")); err != nil {
		t.Fatal(err)
	}
	seen.Reset()
	for !strings.Contains(seen.String(), "login: ") {
		n, err := op.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("the operator read %q, then %v", seen.String(), err)
		}
	}
}
