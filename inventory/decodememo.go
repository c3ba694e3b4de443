package inventory

import (
	"bytes"
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
	d.put(key, memoEntry[T]{raw: bytes.Clone(raw), v: d.clone(&v)})
	return &v, nil
}

// remember keeps v as the value of raw, the bytes just written for key
// (json.Marshal of v, never changed afterwards), when decoding raw gives
// back exactly v (roundTrips): the first read after a write, the
// worker's, is then a copy too. A write whose transaction does not commit
// leaves an entry no read's bytes match.
func (d *decodeMemo[T]) remember(key string, raw []byte, v *T) {
	if roundTrips(reflect.ValueOf(v).Elem()) {
		d.put(key, memoEntry[T]{raw: raw, v: d.clone(v)})
	}
}

// forget drops what is remembered of key.
func (d *decodeMemo[T]) forget(key string) {
	d.mu.Lock()
	delete(d.m, key)
	d.mu.Unlock()
}

func (d *decodeMemo[T]) put(key string, e memoEntry[T]) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, had := d.m[key]; !had && len(d.m) >= d.max {
		for k := range d.m { // any one: a dropped entry only costs a decode
			delete(d.m, k)
			break
		}
	}
	d.m[key] = e
}

var (
	timeType          = reflect.TypeFor[time.Time]()
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// roundTrips reports whether json.Unmarshal of json.Marshal(v) into a
// zero value gives back a value deeply equal to v. It vouches only for
// what it knows: strings of valid UTF-8, numbers, booleans, UTC times
// without a monotonic reading, structs, pointers and slices of those,
// nil maps and byte slices; empty slices only where no omitempty turns
// them into nil. Anything else (a custom marshaller, an interface, a
// field JSON skips that is not zero) says false.
func roundTrips(v reflect.Value) bool {
	t := v.Type()
	if t == timeType {
		tm, _ := reflect.TypeAssert[time.Time](v)
		return tm == tm.Round(0) && tm.Location() == time.UTC
	}
	if t.Implements(marshalerType) || t.Implements(textMarshalerType) ||
		reflect.PointerTo(t).Implements(marshalerType) || reflect.PointerTo(t).Implements(textMarshalerType) {
		return false
	}
	switch v.Kind() {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	case reflect.Float32, reflect.Float64:
		return !math.IsNaN(v.Float()) && !math.IsInf(v.Float(), 0)
	case reflect.Pointer:
		return v.IsNil() || roundTrips(v.Elem())
	case reflect.Map:
		return v.IsNil()
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return v.IsNil() // base64: only nil is vouched for
		}
		for i := range v.Len() {
			if !roundTrips(v.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range t.NumField() {
			f, fv := t.Field(i), v.Field(i)
			tag := f.Tag.Get("json")
			switch {
			case f.Anonymous:
				return false
			case !f.IsExported() || tag == "-":
				if !fv.IsZero() { // a decode leaves it zero
					return false
				}
				continue
			}
			_, opts, _ := strings.Cut(tag, ",")
			if strings.Contains(opts, "string") {
				return false
			}
			if strings.Contains(opts, "omitempty") && fv.Kind() == reflect.Slice && fv.Len() == 0 && !fv.IsNil() {
				return false // omitted, it decodes as nil
			}
			if !roundTrips(fv) {
				return false
			}
		}
		return true
	}
	return false
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
