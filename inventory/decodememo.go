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
	max   int     // entries kept; one is dropped to make room past it
	plan  *rtPlan // of T: what remember checks

	mu sync.Mutex
	m  map[string]memoEntry[T]
}

type memoEntry[T any] struct {
	raw []byte // owned: a copy of the bytes read
	v   *T     // never changed once remembered
}

func newDecodeMemo[T any](max int, clone func(*T) *T) *decodeMemo[T] {
	return &decodeMemo[T]{clone: clone, max: max, m: make(map[string]memoEntry[T]),
		plan: planRoundTrip(reflect.TypeFor[T](), map[reflect.Type]*rtPlan{})}
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
	if d.plan.check(reflect.ValueOf(v).Elem()) {
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
// zero value gives back a value deeply equal to v (see rtPlan).
func roundTrips(v reflect.Value) bool {
	return planRoundTrip(v.Type(), map[reflect.Type]*rtPlan{}).check(v)
}

// rtPlan is what roundTrips checks of a value of one type, worked out
// once from the type (its kinds, JSON tags and marshallers), so that the
// check of each write walks only the value. It vouches only for what it
// knows: strings of valid UTF-8, numbers, booleans, UTC times without a
// monotonic reading, structs, pointers and slices of those, nil maps and
// byte slices; empty slices only where no omitempty turns them into nil.
// Anything else (a custom marshaller, an interface, an embedded struct,
// the ",string" option, omitzero on a type with its own IsZero, a field
// JSON skips that is not zero) says false.
type rtPlan struct {
	kind   reflect.Kind
	never  bool    // no value of this type is vouched for
	time   bool    // time.Time
	bytes  bool    // []byte: only nil is vouched for (base64)
	elem   *rtPlan // of a pointer or slice
	fields []rtField
}

type rtField struct {
	index          int
	zeroOnly       bool // JSON skips it: a decode leaves it zero
	omitEmptySlice bool // omitted when empty: a decode makes it nil
	plan           *rtPlan
}

func planRoundTrip(t reflect.Type, seen map[reflect.Type]*rtPlan) *rtPlan {
	if p, ok := seen[t]; ok {
		return p
	}
	p := &rtPlan{kind: t.Kind()}
	seen[t] = p
	switch {
	case t == timeType:
		p.time = true
		return p
	case t.Implements(marshalerType) || t.Implements(textMarshalerType) ||
		reflect.PointerTo(t).Implements(marshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		p.never = true
		return p
	}
	switch t.Kind() {
	case reflect.Pointer:
		p.elem = planRoundTrip(t.Elem(), seen)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			p.bytes = true
		} else {
			p.elem = planRoundTrip(t.Elem(), seen)
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			_, opts, _ := strings.Cut(tag, ",")
			switch {
			case f.Anonymous || strings.Contains(opts, "string"),
				// omitzero asks an IsZero method, which may call a value
				// zero that a decode does not give back (time.Time's is
				// checked above: UTC, no monotonic reading).
				strings.Contains(opts, "omitzero") && f.Type != timeType && hasIsZero(f.Type):
				p.never = true
				return p
			case !f.IsExported() || tag == "-":
				p.fields = append(p.fields, rtField{index: i, zeroOnly: true})
			default:
				p.fields = append(p.fields, rtField{index: i, plan: planRoundTrip(f.Type, seen),
					omitEmptySlice: f.Type.Kind() == reflect.Slice && strings.Contains(opts, "omitempty")})
			}
		}
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64, reflect.Map:
	default:
		p.never = true
	}
	return p
}

func hasIsZero(t reflect.Type) bool {
	_, ok := t.MethodByName("IsZero")
	_, okPtr := reflect.PointerTo(t).MethodByName("IsZero")
	return ok || okPtr
}

// check reports whether v, of the plan's type, round-trips.
func (p *rtPlan) check(v reflect.Value) bool {
	switch {
	case p.never:
		return false
	case p.time:
		tm, _ := reflect.TypeAssert[time.Time](v)
		return tm == tm.Round(0) && tm.Location() == time.UTC
	}
	switch p.kind {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Float32, reflect.Float64:
		return !math.IsNaN(v.Float()) && !math.IsInf(v.Float(), 0)
	case reflect.Pointer:
		return v.IsNil() || p.elem.check(v.Elem())
	case reflect.Map:
		return v.IsNil()
	case reflect.Slice:
		if p.bytes {
			return v.IsNil()
		}
		for i := range v.Len() {
			if !p.elem.check(v.Index(i)) {
				return false
			}
		}
	case reflect.Struct:
		for _, f := range p.fields {
			fv := v.Field(f.index)
			switch {
			case f.zeroOnly:
				if !fv.IsZero() {
					return false
				}
			case f.omitEmptySlice && fv.Len() == 0 && !fv.IsNil():
				return false
			case !f.plan.check(fv):
				return false
			}
		}
	}
	return true
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
