package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

// TestInspectionIsKeptApartFromTheMachineRecord: the report is read
// through Inspection and Inspections, the machine record (what every
// list, job step and change feed decodes) holds only when it came, and
// removing the machine removes its report.
func TestInspectionIsKeptApartFromTheMachineRecord(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "db"), Options{})
	defer s.Close()
	hallFixture(t, s)
	must(s.EnrollMachine(ctx, machine("m1", "r1", 1, "02:00:00:00:00:01")))
	must(s.EnrollMachine(ctx, machine("m2", "r1", 2, "02:00:00:00:00:02")))
	report := []byte(`{"gpus": [{"model": "H100", "count": 8}]}`)
	m := must(s.RecordInspection(ctx, "m2", report))
	if m.InspectedAt.IsZero() || m.NewInspection != nil {
		t.Fatalf("RecordInspection returned InspectedAt %v, NewInspection %q", m.InspectedAt, m.NewInspection)
	}
	got, at, err := s.Inspection(ctx, "m2")
	if err != nil || !bytes.Equal(got, report) || !at.Equal(m.InspectedAt) {
		t.Fatalf("Inspection(m2) = %s, %v, %v; want the report at %v", got, at, err, m.InspectedAt)
	}
	if got, at, err := s.Inspection(ctx, "m1"); err != nil || got != nil || !at.IsZero() {
		t.Fatalf("Inspection(m1), never inspected = %s, %v, %v; want nothing", got, at, err)
	}
	wantErr[*NotFoundError](t, func() error { _, _, err := s.Inspection(ctx, "nope"); return err }(), "nope")
	all := must(s.Inspections(ctx, []string{"m1", "m2", "nope"}))
	if len(all) != 1 || !bytes.Equal(all["m2"], report) {
		t.Fatalf("Inspections = %q; want only m2's report", all)
	}
	if err := s.view(func(tx kv.Tx) error {
		if v := bkt(tx, bMachines).Get([]byte("m2")); bytes.Contains(v, legacyInspection) {
			return fmt.Errorf("m2's record holds its report: %s", v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A list carries no inspection: it is stored apart from the record.
	for _, f := range []MachineFilter{{}, {Rack: "r1"}, {Hall: "h1"}, {State: MachineEnrolled}} {
		ms := must(s.Machines(ctx, f))
		if len(ms) != 2 {
			t.Errorf("%+v: list %+v", f, ms)
		}
	}
	if _, err := s.RecordInspection(ctx, "m2", []byte(`{"gpus"`)); err == nil {
		t.Fatal("a report that is not JSON was stored")
	}
	if got, _, _ := s.Inspection(ctx, "m2"); !bytes.Equal(got, report) {
		t.Fatalf("after a refused report: %s", got)
	}
	if err := s.DeleteMachine(ctx, "m2"); err != nil {
		t.Fatal(err)
	}
	if all := must(s.Inspections(ctx, []string{"m2"})); len(all) != 0 {
		t.Fatalf("a removed machine's report is left: %q", all)
	}
}

// schema1 turns the store back into what metalhall wrote before schema 2
// for the named machines: each report inside its machine record, none
// apart, and the schema version 1.
func schema1(t *testing.T, s *Store, names ...string) {
	t.Helper()
	err := s.update(func(tx kv.Tx) error {
		for _, n := range names {
			rec := map[string]json.RawMessage{}
			if err := json.Unmarshal(bkt(tx, bMachines).Get([]byte(n)), &rec); err != nil {
				return err
			}
			rec["inspection"] = bytes.Clone(bkt(tx, bInspections).Get([]byte(n)))
			if err := putJSON(bkt(tx, bMachines), []byte(n), rec); err != nil {
				return err
			}
			if err := bkt(tx, bInspections).Delete([]byte(n)); err != nil {
				return err
			}
		}
		return bkt(tx, bMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// recordSizes is the size of every machine record, and whether any still
// holds a report.
func recordSizes(t *testing.T, s *Store) (sizes map[string]int, legacy []string) {
	t.Helper()
	sizes = map[string]int{}
	if err := s.view(func(tx kv.Tx) error {
		return bkt(tx, bMachines).ForEach(func(k, v []byte) error {
			sizes[string(k)] = len(v)
			if bytes.Contains(v, legacyInspection) {
				legacy = append(legacy, string(k))
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return sizes, legacy
}

// TestOpenMovesSchema1InspectionsOutOfTheRecords: a database written
// before schema 2, its reports inside the machine records, opens with
// every report apart, the records smaller, the rest of each record and
// what the store shows unchanged; the move went a few machines per
// transaction; an open with nothing left to move writes no record.
func TestOpenMovesSchema1InspectionsOutOfTheRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s := openTestStore(t, path, Options{})
	hallFixture(t, s)
	const n = 40
	enrollN(t, s, "r1", n)
	// 20 KiB a report: more than one transaction's worth of bytes moves.
	reports := map[string][]byte{}
	var names []string
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("r1-m%02d", i)
		names = append(names, name)
		if i%10 == 0 {
			continue // never inspected
		}
		reports[name] = []byte(fmt.Sprintf(`{"name":%q,"pad":%q}`, name, strings.Repeat("x", 20<<10)))
		must(s.RecordInspection(ctx, name, reports[name]))
	}
	before := must(s.Machines(ctx, MachineFilter{}))
	movedSizes, _ := recordSizes(t, s)
	var inspected []string
	for name := range reports {
		inspected = append(inspected, name)
	}
	schema1(t, s, inspected...)
	if _, legacy := recordSizes(t, s); len(legacy) != len(reports) {
		t.Fatalf("the schema 1 database has %d records with a report, want %d", len(legacy), len(reports))
	}
	s.Close()

	s = openTestStore(t, path, Options{})
	sizes, legacy := recordSizes(t, s)
	if len(legacy) > 0 {
		t.Fatalf("after open, records still hold reports: %v", legacy)
	}
	for name, size := range sizes {
		if size != movedSizes[name] || size > 4<<10 {
			t.Errorf("record %s: %d bytes after the move, %d as schema 2 writes it", name, size, movedSizes[name])
		}
	}
	moving := s.db.WriteTransactions()
	if after := must(s.Machines(ctx, MachineFilter{})); !reflect.DeepEqual(after, before) {
		t.Errorf("machines after the move\n%+v\nwant\n%+v", after, before)
	}
	all := must(s.Inspections(ctx, names))
	if len(all) != len(reports) {
		t.Errorf("%d reports after the move, want %d", len(all), len(reports))
	}
	for name, want := range reports {
		if !bytes.Equal(all[name], want) {
			t.Errorf("%s's report after the move: %.40s…", name, all[name])
		}
	}
	if err := s.view(func(tx kv.Tx) error {
		if v := binary.BigEndian.Uint32(bkt(tx, bMeta).Get(keySchema)); v != SchemaVersion {
			return fmt.Errorf("schema version %d after the move, want %d", v, SchemaVersion)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// Nothing left to move: the open writes only its schema and
	// migration checks, whatever the number of machines.
	s = openTestStore(t, path, Options{})
	defer s.Close()
	idle := s.db.WriteTransactions()
	if idle > 2 {
		t.Errorf("an open with nothing to move wrote %d transactions", idle)
	}
	if moving < idle+3 {
		t.Errorf("the open that moved %d reports of 20 KiB wrote %d transactions, one with nothing to move %d; want the move in at least 3 (%d bytes a transaction)",
			len(reports), moving, idle, moveBytes)
	}
}

// TestOpenFinishesAnInspectionMoveCutShort: a crash between two of the
// move's transactions leaves some machines moved and some not (each
// transaction is whole); the next open moves the rest, and a report an
// older instance wrote into a moved record meanwhile wins over the one
// kept apart, being newer.
func TestOpenFinishesAnInspectionMoveCutShort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	s := openTestStore(t, path, Options{})
	hallFixture(t, s)
	enrollN(t, s, "r1", 6)
	for i := 1; i <= 6; i++ {
		name := fmt.Sprintf("r1-m%02d", i)
		must(s.RecordInspection(ctx, name, []byte(fmt.Sprintf(`{"n":%d}`, i))))
	}
	// m01–m03 not moved yet; m04's record holds a newer report than the
	// one apart; m05 and m06 moved.
	schema1(t, s, "r1-m01", "r1-m02", "r1-m03")
	must(s.RecordInspection(ctx, "r1-m04", []byte(`{"n":4}`)))
	if err := s.update(func(tx kv.Tx) error {
		rec := map[string]json.RawMessage{}
		if err := json.Unmarshal(bkt(tx, bMachines).Get([]byte("r1-m04")), &rec); err != nil {
			return err
		}
		rec["inspection"] = json.RawMessage(`{"n":44}`)
		return putJSON(bkt(tx, bMachines), []byte("r1-m04"), rec)
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openTestStore(t, path, Options{})
	defer s.Close()
	if _, legacy := recordSizes(t, s); len(legacy) > 0 {
		t.Fatalf("after the second open, records still hold reports: %v", legacy)
	}
	want := map[string]string{"r1-m01": `{"n":1}`, "r1-m02": `{"n":2}`, "r1-m03": `{"n":3}`,
		"r1-m04": `{"n":44}`, "r1-m05": `{"n":5}`, "r1-m06": `{"n":6}`}
	for name, w := range want {
		got, at, err := s.Inspection(ctx, name)
		if err != nil || string(got) != w || at.IsZero() {
			t.Errorf("Inspection(%s) = %s, %v, %v; want %s", name, got, at, err, w)
		}
	}
}
