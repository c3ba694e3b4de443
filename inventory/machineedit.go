package inventory

import (
	"context"

	"github.com/metalhall/metalhall/inventory/kv"
)

// EditMachine changes what was entered for a machine — power, MACs,
// profile, BMC address, protocol and user — and, when sealed is not nil,
// replaces its sealed BMC password, all in one transaction. The change
// passes the same checks as an enrollment (placement, unique MACs and BMC
// addresses, the rack's power budget). A machine with a job in flight is
// refused: the job drives the BMC and waits for the MACs it started with.
func (s *Store) EditMachine(ctx context.Context, name string, fn func(*Machine) error, sealed []byte) (*Machine, error) {
	var out *Machine
	err := s.write(func(tx kv.Tx, vc *viewChanges) (err error) {
		if id := bkt(tx, bActiveJob).Get([]byte(name)); id != nil {
			j, err := get[Job](tx, bJobs, "job", string(id))
			if err != nil {
				return err
			}
			return &BusyError{Machine: name, Job: j}
		}
		out, err = s.updateMachine(tx, name, func(m *Machine) error {
			if err := fn(m); err != nil {
				return err
			}
			if len(sealed) > 0 {
				m.BMC.SecretRef = BMCCredential(m.Name).Ref
			}
			return nil
		}, vc)
		if err != nil {
			return err
		}
		if len(sealed) > 0 {
			return bkt(tx, bSecrets).Put([]byte(out.BMC.SecretRef), sealed)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
