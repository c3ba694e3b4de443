package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

// newInv is a fresh store, closed when the test ends. The suite is
// written against Inventory; the engine under it is openTestStore's
// choice.
func newInv(t *testing.T) Inventory {
	t.Helper()
	inv := openTestStore(t, filepath.Join(t.TempDir(), "metalhall.db"), Options{})
	t.Cleanup(func() { inv.Close() })
	return inv
}

var ctx = context.Background()

// hallFixture makes site s1, hall h1 with phase 1 (1000 kW, commissioning)
// and phase 2 (100 kW, planned), and rack r1 (48U, 44 kW) in phase 1.
func hallFixture(t *testing.T, inv Inventory) {
	t.Helper()
	must(inv.CreateSite(ctx, Site{Name: "s1"}))
	must(inv.CreateHall(ctx, Hall{Name: "h1", Site: "s1"}))
	must(inv.CreatePhase(ctx, Phase{Hall: "h1", Number: 1, BudgetW: 1_000_000}))
	must(inv.CreatePhase(ctx, Phase{Hall: "h1", Number: 2, BudgetW: 100_000}))
	must(inv.SetPhaseState(ctx, "h1", 1, PhaseCommissioning))
	must(inv.CreateRack(ctx, Rack{Name: "r1", Hall: "h1", Phase: 1, Units: 48, BudgetW: 44_000}))
}

// must unwraps a (value, error) pair in test set-up; an error there panics,
// which fails the test with the message and the line.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func machine(name, rack string, unit int, mac string) Enrollment {
	return Enrollment{Machine: Machine{Name: name, Rack: rack, Unit: unit, Height: 1, MACs: []string{mac},
		BMC: BMC{Address: "10.1.0." + mac[len(mac)-2:], Protocol: ProtocolIPMI, Username: "admin"}, PowerW: 1000},
		SealedPassword: []byte("sealed")}
}

func macN(i int) string { return fmt.Sprintf("52:54:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff) }

func enrollN(t *testing.T, inv Inventory, rack string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		e := machine(fmt.Sprintf("%s-m%02d", rack, i), rack, i, macN(i))
		e.Machine.BMC.Address = fmt.Sprintf("%s-bmc-%d", rack, i)
		must(inv.EnrollMachine(ctx, e))
	}
}

func wantErr[E error](t *testing.T, err error, contains ...string) E {
	t.Helper()
	var target E
	if !errors.As(err, &target) {
		t.Fatalf("error %v (%T), want %T", err, err, target)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not mention %q", err, c)
		}
	}
	return target
}

func TestOpenInUseFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s := must(Open(path, Options{}))
	defer s.Close()
	_, err := Open(path, Options{LockTimeout: 100e6})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	if !strings.Contains(err.Error(), "already in use by another metalhall") {
		t.Errorf("message %q", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	inv := openTestStore(t, path, Options{})
	hallFixture(t, inv)
	enrollN(t, inv, "r1", 3)
	inv.Close()

	inv = openTestStore(t, path, Options{})
	defer inv.Close()
	ms := must(inv.Machines(ctx, MachineFilter{Rack: "r1"}))
	if len(ms) != 3 {
		t.Fatalf("after reopen: %d machines", len(ms))
	}
	// The in-memory MAC index is rebuilt from the stored one.
	e, ok := inv.LookupMAC(macKey(macN(2)))
	if !ok || e.Machine != "r1-m02" {
		t.Fatalf("LookupMAC after reopen = %+v %v", e, ok)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s := openTestStore(t, path, Options{})
	if err := s.update(func(tx kv.Tx) error {
		return tx.Bucket(bMeta).Put(keySchema, []byte{0, 0, 0, SchemaVersion + 1})
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := tryOpenTestStore(t, path, Options{})
	if !errors.Is(err, ErrNewerStore) || !strings.Contains(err.Error(), "upgrade metalhall") {
		t.Fatalf("open newer: %v", err)
	}
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, filepath.Join(dir, "db"), Options{})
	defer s.Close()
	hallFixture(t, s)
	enrollN(t, s, "r1", 5)
	must(s.AppendEvent(ctx, Event{Actor: "t", Subject: "machine/r1-m01", Action: "test"}))
	backup := filepath.Join(dir, "backup.db")
	if _, err := s.BackupFile(backup); err != nil {
		t.Fatal(err)
	}
	// Changes after the backup are not in it.
	must(s.EnrollMachine(ctx, machine("late", "r1", 40, macN(40))))

	// A backup is a bbolt file whatever the engine: open it as one.
	r := must(Open(backup, Options{}))
	defer r.Close()
	ms := must(r.Machines(ctx, MachineFilter{}))
	if len(ms) != 5 {
		t.Fatalf("restored %d machines, want 5", len(ms))
	}
	if ev := must(r.Events(ctx, EventFilter{Subject: "machine/r1-m01"})); len(ev) != 1 {
		t.Fatalf("restored events: %v", ev)
	}
	if _, ok := r.LookupMAC(macKey(macN(5))); !ok {
		t.Fatal("restored MAC index misses machine 5")
	}
	checkIndexes(t, r)
}

func TestSecretsAreNotInMachineRecords(t *testing.T) {
	s := newInv(t)
	hallFixture(t, s)
	e := machine("m1", "r1", 1, macN(1))
	e.SealedPassword = []byte("SEALED-BYTES")
	e.Machine.BMC.SecretRef = "bmc/someone-else" // callers cannot choose the ref
	m := must(s.EnrollMachine(ctx, e))
	if m.BMC.SecretRef != "bmc/m1" {
		t.Fatalf("secret ref %q", m.BMC.SecretRef)
	}
	if got := must(s.Secret(ctx, m.BMC.SecretRef)); !bytes.Equal(got, []byte("SEALED-BYTES")) {
		t.Fatalf("secret %q", got)
	}
}
