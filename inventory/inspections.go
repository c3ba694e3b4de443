package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// bInspections holds each machine's last hardware report as the agent
// sent it (machine → report), apart from the machine record since schema
// 2: a report is several KiB, and the record is read and written on every
// step of every job, decoded by every instance's change feed and by every
// metrics scrape; the report is read only where it is shown or compared.
var bInspections = []byte("inspections")

func init() { extraBuckets = append(extraBuckets, bInspections) }

// Inspection returns the machine's last hardware report and when it
// came; a machine never inspected has none (nil, zero time).
func (s *Store) Inspection(ctx context.Context, name string) (json.RawMessage, time.Time, error) {
	var (
		report json.RawMessage
		at     time.Time
	)
	err := s.view(func(tx kv.Tx) error {
		m, err := get[Machine](tx, bMachines, "machine", name)
		if err != nil {
			return err
		}
		report, at = bytes.Clone(bkt(tx, bInspections).Get([]byte(name))), m.InspectedAt
		return nil
	})
	return report, at, err
}

// Inspections returns the last hardware report of each named machine
// that has one, read together: for a list that shows them.
func (s *Store) Inspections(ctx context.Context, names []string) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(names))
	err := s.view(func(tx kv.Tx) error {
		b := bkt(tx, bInspections)
		for _, n := range names {
			if v := b.Get([]byte(n)); v != nil {
				out[n] = bytes.Clone(v)
			}
		}
		return nil
	})
	return out, err
}

// The bounds of one transaction of moveInspections: 2 puts a machine
// keeps it under etcd's 128 operations a transaction, and the bytes under
// its 1.5 MiB request (a single record over it still moves, alone).
const (
	moveBatch = 50
	moveBytes = 512 << 10
)

// legacyInspection is how a schema 1 record holds its report: the key
// as encoding/json writes it. Inside a string value a quote is escaped,
// so only the field itself matches.
var legacyInspection = []byte(`"inspection":`)

// moveInspections takes every report still inside a machine record (a
// schema 1 database, or a record an older instance wrote during a rolling
// upgrade) out into bInspections, a few machines per transaction. Each
// transaction moves its machines whole, so a crash between two leaves
// every machine either moved or not, and the next open carries on; with
// nothing left to move it writes nothing. It runs at every open: the
// scan reads what loading the boot view reads anyway.
func (s *Store) moveInspections() error {
	var after []byte
	for {
		var (
			names [][]byte
			done  bool
		)
		err := s.view(func(tx kv.Tx) error {
			names, done = nil, false
			size := 0
			c := bkt(tx, bMachines).Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				if !bytes.Contains(v, legacyInspection) {
					continue
				}
				names = append(names, bytes.Clone(k))
				if size += 2 * len(v); len(names) == moveBatch || size >= moveBytes {
					return nil
				}
			}
			done = true
			return nil
		})
		if err != nil {
			return err
		}
		if len(names) > 0 {
			if err := s.db.Update(func(tx kv.Tx) error { return moveInspectionsOf(tx, names) }); err != nil {
				return err
			}
			after = names[len(names)-1]
		}
		if done {
			return nil
		}
	}
}

// moveInspectionsOf moves the named machines' reports out of their
// records. A machine already moved (or deleted) since the scan is left
// as it is.
func moveInspectionsOf(tx kv.Tx, names [][]byte) error {
	machines, reports := bkt(tx, bMachines), bkt(tx, bInspections)
	for _, name := range names {
		v := machines.Get(name)
		if v == nil {
			continue
		}
		var legacy struct {
			Inspection json.RawMessage `json:"inspection"`
		}
		if err := json.Unmarshal(v, &legacy); err != nil {
			return fmt.Errorf("machine %q: %w", name, err)
		}
		if len(legacy.Inspection) > 0 && !bytes.Equal(legacy.Inspection, []byte("null")) {
			// The record's report is the newest: a record keeps one only
			// when written by a metalhall that stores it nowhere else.
			if err := reports.Put(name, bytes.Clone(legacy.Inspection)); err != nil {
				return err
			}
		}
		var m Machine
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("machine %q: %w", name, err)
		}
		// Only the report leaves: no index or usage is touched.
		if err := putJSON(machines, name, &m); err != nil {
			return err
		}
	}
	return nil
}
