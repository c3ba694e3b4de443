package provisioner

import (
	"testing"

	"github.com/metalhall/metalhall/agent/wire"
)

// The check-profile step gets the report the agent sent, decoded once,
// only when what is stored is exactly what was sent; otherwise, and the
// second time, it gets a decode of what is stored.
func TestHandedInspectionOnlyForTheStoredBytes(t *testing.T) {
	var h inspections
	sent := []byte(`{"memory_bytes":1024,"cpu":{"model":"sent"}}`)
	stored := []byte(`{"memory_bytes":2048,"cpu":{"model":"stored"}}`)
	given := &wire.Inventory{MemoryBytes: 1024, CPU: wire.CPU{Model: "sent"}}

	h.give("m1", sent, given)
	if got, err := h.take("m1", sent); err != nil || got != given {
		t.Fatalf("take of the bytes given = %p, %v; want the report given (%p)", got, err, given)
	}
	got, err := h.take("m1", sent)
	if err != nil || got == given || got.MemoryBytes != 1024 {
		t.Fatalf("second take = %+v, %v; want a fresh decode: a handoff is given once", got, err)
	}

	h.give("m1", sent, given)
	got, err = h.take("m1", stored)
	if err != nil || got == given || got.CPU.Model != "stored" {
		t.Fatalf("take of other bytes = %+v, %v; want the stored bytes decoded", got, err)
	}
	if _, err := h.take("m2", []byte(`{`)); err == nil {
		t.Fatal("take decoded bytes that are not JSON")
	}
	for i := range maxHandedInspections + 10 {
		h.give(string(rune(i)), sent, given)
	}
	if len(h.m) > maxHandedInspections {
		t.Fatalf("%d reports wait, bound %d", len(h.m), maxHandedInspections)
	}
}
