package provisioner

import (
	"bytes"
	"encoding/json"
	"sync"

	"github.com/metalhall/metalhall/agent/wire"
)

// inspections hands the inspection an agent just sent, decoded, to the
// check-profile step that follows it, so that step does not decode the
// same several KiB again. It is a handoff, not a cache: take gives the
// decoded report away (nobody else holds it, so the step may use it as
// its own), and only when the stored bytes are exactly the bytes it was
// decoded from; anything else (another instance took the report, a newer
// one replaced it, the service restarted) decodes what is stored.
type inspections struct {
	mu sync.Mutex
	m  map[string]handedInspection // machine → its last report
}

type handedInspection struct {
	raw []byte
	inv *wire.Inventory
}

// maxHandedInspections bounds what waits for its check-profile step
// (each some 100 KiB decoded): about as many as jobs run at once (the
// scheduler's max jobs, 64 by default). A report whose job never gets
// there is dropped when room is needed; one dropped early only costs its
// step a decode.
const maxHandedInspections = 128

// give keeps machine's report raw, decoded as inv, for take. Neither may
// be changed afterwards.
func (h *inspections) give(machine string, raw []byte, inv *wire.Inventory) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = make(map[string]handedInspection)
	}
	if _, had := h.m[machine]; !had && len(h.m) >= maxHandedInspections {
		for k := range h.m {
			delete(h.m, k)
			break
		}
	}
	h.m[machine] = handedInspection{raw: raw, inv: inv}
}

// take returns the decoded report of machine whose stored bytes are
// raw: the one given, when it was given for exactly these bytes, or else
// a decode of raw.
func (h *inspections) take(machine string, raw []byte) (*wire.Inventory, error) {
	h.mu.Lock()
	e, ok := h.m[machine]
	delete(h.m, machine)
	h.mu.Unlock()
	if ok && bytes.Equal(e.raw, raw) {
		return e.inv, nil
	}
	var inv wire.Inventory
	if err := json.Unmarshal(raw, &inv); err != nil {
		return nil, err
	}
	return &inv, nil
}
