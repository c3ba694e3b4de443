package inventory

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// fill sets every field reachable from v to a value that is not zero:
// pointers point somewhere, slices have an element, maps an entry.
func fill(v reflect.Value, depth int) {
	if depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), depth+1)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, depth+1)
		fill(e, depth+1)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	}
}

// shared names the first memory a and b share (a pointer, a slice's
// array or a map), or "".
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), "(*"+path+")")
	case reflect.Struct:
		if a.Type() == reflect.TypeFor[time.Time]() {
			return "" // its *Location is immutable
		}
		for i := range a.NumField() {
			if a.Type().Field(i).IsExported() {
				if p := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); p != "" {
					return p
				}
			}
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), path+"[]"); p != "" {
				return p
			}
		}
	case reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
	}
	return ""
}

// A remembered record is handed out as a copy: a field added to Job or
// Machine that the clone would share fails here, before a caller's
// change could leak into the memo (and into every later read).
func TestDecodeMemoClonesShareNoMemory(t *testing.T) {
	var j Job
	fill(reflect.ValueOf(&j).Elem(), 0)
	if p := shared(reflect.ValueOf(&j).Elem(), reflect.ValueOf(cloneJob(&j)).Elem(), "Job"); p != "" {
		t.Errorf("cloneJob shares %s with the job it copies: copy it in cloneJob", p)
	}
	var m Machine
	fill(reflect.ValueOf(&m).Elem(), 0)
	if p := shared(reflect.ValueOf(&m).Elem(), reflect.ValueOf(deepCloneMachine(&m)).Elem(), "Machine"); p != "" {
		t.Errorf("deepCloneMachine shares %s with the machine it copies: copy it in deepCloneMachine", p)
	}
	if c := cloneJob(&j); !reflect.DeepEqual(c, &j) {
		t.Errorf("cloneJob's copy differs from the job:\n%+v\n%+v", c, &j)
	}
	if c := deepCloneMachine(&m); !reflect.DeepEqual(c, &m) {
		t.Errorf("deepCloneMachine's copy differs from the machine:\n%+v\n%+v", c, &m)
	}
}

// What the memo returns is what decoding the bytes returns, whether it
// remembered them or not, and a caller's change of it changes no later
// read.
func TestDecodeMemoReturnsWhatTheBytesSay(t *testing.T) {
	memo := newDecodeMemo(2, cloneJob)
	v1 := []byte(`{"id":"job-1","machine":"m1","state":"running","steps":[{"name":"a","state":"running"}],"ssh_keys":["k"]}`)
	v2 := []byte(`{"id":"job-1","machine":"m1","state":"running","steps":[{"name":"a","state":"done"}]}`)
	decoded := func(raw []byte) *Job {
		var j Job
		if err := json.Unmarshal(raw, &j); err != nil {
			t.Fatal(err)
		}
		return &j
	}
	read := func(raw []byte) *Job {
		t.Helper()
		j, err := memo.decode("job-1", raw)
		if err != nil {
			t.Fatal(err)
		}
		if want := decoded(raw); !reflect.DeepEqual(j, want) {
			t.Fatalf("memo gave\n%+v\nfor bytes that decode to\n%+v", j, want)
		}
		return j
	}
	first := read(v1)
	first.Steps[0].State, first.SSHKeys[0] = StepFailed, "changed"
	read(v1) // remembered, unchanged by the caller's change
	read(v2) // the record changed: decoded afresh
	read(v1)
	for i := range 5 { // past its bound, it keeps working
		if _, err := memo.decode(string(rune('a'+i)), v2); err != nil {
			t.Fatal(err)
		}
	}
	if len(memo.m) > 2 {
		t.Errorf("memo holds %d entries, bound 2", len(memo.m))
	}
	read(v1)
	if _, err := memo.decode("job-1", []byte(`{"id":`)); err == nil {
		t.Error("memo decoded bytes that are not JSON")
	}
}

// roundTrips vouches for a value only when decoding its encoding gives it
// back exactly: a job the service writes (UTC times without a monotonic
// reading) is vouched for; what the encoding would change is not.
func TestRoundTripsVouchesOnlyForWhatDecodesBackTheSame(t *testing.T) {
	at := time.Date(2026, 11, 30, 8, 14, 1, 748577010, time.UTC)
	job := func() Job {
		return Job{ID: "job-000001", Machine: "m1", Kind: JobCommission, State: JobRunning, CreatedAt: at, UpdatedAt: at,
			Steps:    []JobStep{{Name: "bmc-check", State: StepDone, Attempts: 1, StartedAt: at, EndedAt: at}, {Name: "set-pxe", State: StepRunning}},
			SSHKeys:  []string{"ssh-ed25519 AAAA"},
			Progress: JobProgress{Step: "write", Bytes: 1 << 20, At: at}}
	}
	for _, c := range []struct {
		name   string
		change func(*Job)
		vouch  bool
	}{
		{"as the service writes it", func(*Job) {}, true},
		{"no steps (nil)", func(j *Job) { j.Steps = nil }, true},
		{"no steps (empty)", func(j *Job) { j.Steps = []JobStep{} }, true},
		{"a time with a monotonic reading", func(j *Job) { j.UpdatedAt = time.Now() }, false},
		{"a time in another zone", func(j *Job) { j.Steps[0].EndedAt = at.In(time.FixedZone("X", 3600)) }, false},
		{"a string that is not UTF-8", func(j *Job) { j.Error = "\xff" }, false},
		{"empty keys, omitted", func(j *Job) { j.SSHKeys = []string{} }, false},
		{"empty sealed bytes, omitted", func(j *Job) { j.Sealed = []byte{} }, false},
		{"sealed bytes", func(j *Job) { j.Sealed = []byte{1, 2} }, false},
	} {
		j := job()
		c.change(&j)
		if got := roundTrips(reflect.ValueOf(&j).Elem()); got != c.vouch {
			t.Errorf("%s: roundTrips = %v, want %v", c.name, got, c.vouch)
		}
		raw, err := json.Marshal(&j)
		if err != nil {
			t.Fatal(err)
		}
		var back Job
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		if same := reflect.DeepEqual(back, j); c.vouch && !same {
			t.Errorf("%s: vouched for, but it decodes as\n%+v\nnot\n%+v", c.name, back, j)
		}
	}
	m := Machine{Name: "m1", MACs: []string{"52:54:00:00:00:01"}, NewInspection: []byte(`{}`)}
	if roundTrips(reflect.ValueOf(&m).Elem()) {
		t.Error("roundTrips vouched for a machine whose json:\"-\" field is set")
	}
}

// A job read right after its write is the value written, not one the
// memo kept from before, on the write path the worker takes.
func TestJobReadAfterWriteIsTheWrite(t *testing.T) {
	s := newInv(t).(*Store)
	hallFixture(t, s)
	enrollN(t, s, "r1", 1)
	j := must(s.StartJob(ctx, Job{Machine: "r1-m01", Kind: JobCommission, Steps: []JobStep{{Name: "a"}, {Name: "b"}}}, MachineCommissioning))
	for i, st := range []StepState{StepRunning, StepDone} {
		must(s.UpdateJobOnly(ctx, j.ID, func(j *Job) error { j.Steps[i].State = st; j.Error = string(st); return nil }))
		got := must(s.Job(ctx, j.ID))
		if got.Steps[i].State != st || got.Error != string(st) {
			t.Fatalf("after write %d: read %+v", i, got)
		}
		got.Steps[i].State = StepFailed // the reader's own copy
		if again := must(s.Job(ctx, j.ID)); again.Steps[i].State != st {
			t.Fatalf("a reader's change of its copy reached the next read: %+v", again)
		}
	}
}

// The service's own writes of a running job and of its machine are
// remembered with the bytes stored: the worker's next read of either is
// a copy, not a decode. (A time or string roundTrips cannot vouch for
// would silently cost every such read a decode again.)
func TestWritesOfTheJobPathAreRemembered(t *testing.T) {
	s := newInv(t).(*Store)
	hallFixture(t, s)
	enrollN(t, s, "r1", 1)
	j := must(s.StartJob(ctx, Job{Machine: "r1-m01", Kind: JobCommission, Steps: []JobStep{{Name: "a"}, {Name: "b"}}}, MachineCommissioning))
	must(s.UpdateJobOnly(ctx, j.ID, func(j *Job) error {
		j.Steps[0].State, j.Steps[0].StartedAt, j.State = StepRunning, time.Now().UTC(), JobRunning
		return nil
	}))
	if err := s.RecordBMCStatus(ctx, "r1-m01", BMCStatus{Power: "on", Reachable: true, ReadAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	stored := func(bucket []byte, key string) (out []byte) {
		if err := s.view(func(tx kv.Tx) error { out = bytes.Clone(bkt(tx, bucket).Get([]byte(key))); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if e, ok := s.jobs.m[j.ID]; !ok || !bytes.Equal(e.raw, stored(bJobs, j.ID)) {
		t.Errorf("the job's write is not remembered with its stored bytes (remembered: %v)", ok)
	}
	if e, ok := s.machines.m["r1-m01"]; !ok || !bytes.Equal(e.raw, stored(bMachines, "r1-m01")) {
		t.Errorf("the machine's write is not remembered with its stored bytes (remembered: %v)", ok)
	}
}

type alwaysZero struct{ N int }

func (alwaysZero) IsZero() bool { return true }

// omitzero on a type with its own IsZero may drop a value a decode does
// not give back: roundTrips does not vouch for such a type.
func TestRoundTripsRefusesOmitzeroWithItsOwnIsZero(t *testing.T) {
	type record struct {
		Z alwaysZero `json:"z,omitzero"`
	}
	if roundTrips(reflect.ValueOf(record{Z: alwaysZero{N: 1}})) {
		t.Error("roundTrips vouched for a field omitzero drops though it is not zero")
	}
}
