package inventory

import (
	"context"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// BMCFirmware is the firmware inventory a machine's BMC reported
// (Redfish FirmwareInventory; IPMI gives the BMC's own revision only).
// Error says why it could not be read; Components is then what an
// earlier read found, if anything.
type BMCFirmware struct {
	Components []FirmwareComponent `json:"components"`
	Error      string              `json:"error,omitempty"`
	ReadAt     time.Time           `json:"read_at"`
}

// FirmwareComponent is one component's firmware: the BMC, the BIOS, a
// CPLD, a PSU, a NIC, a GPU...
type FirmwareComponent struct {
	ID         string `json:"id"`
	Name       string `json:"name,omitempty"`
	Version    string `json:"version"`
	Updateable bool   `json:"updateable,omitempty"`
}

// RecordBMCFirmware stores what the BMC reported. A failed read (fw.Error
// set, no components) keeps the components of the last good one, so the
// drift report still has them, with the error beside them.
func (s *Store) RecordBMCFirmware(ctx context.Context, name string, fw BMCFirmware) error {
	return s.batch(s.putBMCFirmware(name, fw))
}

// RecordBMCFirmwareBehind is RecordBMCFirmware written behind (see
// UpdateJobBehind): a commission reads the firmware in its bmc-check
// step, whose end, written next, carries it. A crash may lose it; the
// step, run again, reads it again.
func (s *Store) RecordBMCFirmwareBehind(name string, fw BMCFirmware) {
	s.batchBehind(s.putBMCFirmware(name, fw))
}

func (s *Store) putBMCFirmware(name string, fw BMCFirmware) func(tx kv.Tx) error {
	return func(tx kv.Tx) error {
		fw := fw // a retry keeps the components it reads, not the last run's
		m, err := s.getMachine(tx, name)
		if err != nil {
			return &NotFoundError{Kind: "machine", Name: name}
		}
		if fw.Components == nil && m.BMCFirmware != nil {
			fw.Components = m.BMCFirmware.Components
		}
		if fw.Components == nil {
			fw.Components = []FirmwareComponent{}
		}
		m.BMCFirmware = &fw
		// Only the firmware changes: no index or usage is touched.
		return s.putMachineRecord(tx, m)
	}
}
