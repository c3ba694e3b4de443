package inventory

import (
	"bytes"
	"encoding/json"
	"slices"
	"sync"
)

// decodeMemo remembers, for each record it decoded, the decoded value and
// the exact bytes it came from: a later read that finds the same bytes
// gets a copy of that value instead of decoding them again. A running job
// is read far more often than it is written (its worker's loop and waits,
// every agent call, the next update's transaction), and so is its
// machine, so most reads on the job path are copies, not decodes.
//
// It needs no invalidation: whatever wrote the record (this store, or
// another instance on a shared engine), a read compares the bytes the
// engine holds now with the remembered ones, and any difference decodes
// afresh. What it returns is always a decode of the bytes read, copied
// deeply (clone), so a caller that changes it changes nothing remembered.
type decodeMemo[T any] struct {
	clone func(*T) *T
	max   int // entries kept; one is dropped to make room past it

	mu sync.Mutex
	m  map[string]memoEntry[T]
}

type memoEntry[T any] struct {
	raw []byte // owned: a copy of the bytes read
	v   *T     // never changed once remembered
}

func newDecodeMemo[T any](max int, clone func(*T) *T) *decodeMemo[T] {
	return &decodeMemo[T]{clone: clone, max: max, m: make(map[string]memoEntry[T])}
}

// decode returns the value of raw, the stored bytes of record key.
func (d *decodeMemo[T]) decode(key string, raw []byte) (*T, error) {
	d.mu.Lock()
	e, ok := d.m[key]
	d.mu.Unlock()
	if ok && bytes.Equal(e.raw, raw) {
		return d.clone(e.v), nil
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	e = memoEntry[T]{raw: bytes.Clone(raw), v: d.clone(&v)}
	d.mu.Lock()
	if _, had := d.m[key]; !had && len(d.m) >= d.max {
		for k := range d.m { // any one: a dropped entry only costs a decode
			delete(d.m, k)
			break
		}
	}
	d.m[key] = e
	d.mu.Unlock()
	return &v, nil
}

// memoEntries bound the decode memos. Each entry is a record's bytes and
// its decoded copy, a few KiB: a hall's worth of machines and the jobs
// running on them.
const memoEntries = 16384

// cloneJob copies a job deeply: it shares no memory with j.
func cloneJob(j *Job) *Job {
	c := *j
	c.Steps = slices.Clone(j.Steps)
	c.SSHKeys = slices.Clone(j.SSHKeys)
	c.Sealed = bytes.Clone(j.Sealed)
	return &c
}

// deepCloneMachine copies a machine deeply, unlike cloneMachine, which
// shares what the pointers point at (a write replaces those, it never
// changes them in place).
func deepCloneMachine(m *Machine) *Machine {
	c := cloneMachine(m)
	if m.BMCStatus.Sensors != nil {
		s := *m.BMCStatus.Sensors
		c.BMCStatus.Sensors = &s
	}
	if m.BMCFirmware != nil {
		f := *m.BMCFirmware
		f.Components = slices.Clone(m.BMCFirmware.Components)
		c.BMCFirmware = &f
	}
	if m.PowerLimit != nil {
		p := *m.PowerLimit
		c.PowerLimit = &p
	}
	return c
}
