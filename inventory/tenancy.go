package inventory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/metalhall/metalhall/inventory/kv"
)

// A tenancy is one span of time in which a machine belongs to one tenant
// (or to nobody). Every change of a machine's tenant opens a new tenancy
// with a new ID; jobs and machine events carry the tenancy they were made
// in, so a later tenant of the same machine never sees them, and the
// metadata service serves only the current tenancy's deployment.
var (
	bTenancies  = []byte("tenancies")   // only its sequence is used: the next tenancy ID
	bIdxTenancy = []byte("idx_tenancy") // machine → its current tenancy ID
)

func init() { extraBuckets = append(extraBuckets, bTenancies, bIdxTenancy) }

func newTenancy(tx kv.Tx) (string, error) {
	seq, err := bkt(tx, bTenancies).NextSequence()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("tncy-%06d", seq), nil
}

// stampTenancy sets the tenancy of a machine event that has none: the
// machine's current one, read from a small index so that batches of boot
// events do not decode a machine each.
func stampTenancy(tx kv.Tx, e *Event) {
	if e.Tenancy != "" {
		return
	}
	if name, ok := strings.CutPrefix(e.Subject, "machine/"); ok {
		e.Tenancy = string(bkt(tx, bIdxTenancy).Get([]byte(name)))
	}
}

// HandoverError is a change of tenant refused because the machine still
// holds, or is working on, the current tenant's data.
type HandoverError struct {
	Machine string
	Reason  string
}

func (e *HandoverError) Error() string {
	return fmt.Sprintf("machine %q cannot change tenant: %s", e.Machine, e.Reason)
}
func (e *HandoverError) Unwrap() error { return ErrConflict }

// checkHandover refuses to move m to tenant unless nothing of its current
// tenancy is left on it: no job running, and — when a tenant had it — it
// was released (wiped) since it was last imaged. A machine nobody had
// (staff's) may be handed over as it is: staff deploy machines for tenants.
func checkHandover(tx kv.Tx, m *Machine, tenant string) error {
	if m.Tenant == tenant {
		return nil
	}
	if id := bkt(tx, bActiveJob).Get([]byte(m.Name)); id != nil {
		return &HandoverError{Machine: m.Name, Reason: fmt.Sprintf("job %s is running on it; wait for it to end or cancel it", id)}
	}
	if m.Tenant == "" {
		return nil
	}
	switch {
	case m.NeedsErase:
		return &HandoverError{Machine: m.Name, Reason: fmt.Sprintf("it may still hold tenant %q's data (it is %s, and no certified erase has run since it was imaged); release it with a certified erase first", m.Tenant, m.State)}
	case m.State == MachineEnrolled, m.State == MachineAvailable, m.State == MachineRetired:
		return nil
	}
	return &HandoverError{Machine: m.Name, Reason: fmt.Sprintf("it is %s for tenant %q; release it (a wipe) first", m.State, m.Tenant)}
}

// CheckSubject refuses event subjects that cannot be stored and read back
// safely: control characters (a NUL breaks the subject index) and more
// than MaxSubjectLen bytes.
func CheckSubject(subject string) error {
	if len(subject) > MaxSubjectLen {
		return invalid("subject", "is %d bytes long; at most %d are allowed", len(subject), MaxSubjectLen)
	}
	for i := 0; i < len(subject); i++ {
		if c := subject[i]; c < 0x20 || c == 0x7f {
			return invalid("subject", "contains the control character %#02x at byte %d", c, i)
		}
	}
	return nil
}

// MaxSubjectLen bounds an event's subject: a kind, '/', and a name.
const MaxSubjectLen = 256

// repairEventIndex drops subject index entries that do not point at an
// event by the index's own layout (subject, NUL, 8-byte sequence): a NUL
// inside a subject, written before subjects were checked, made such
// entries and broke that machine's event history.
func repairEventIndex(tx kv.Tx) (int, error) {
	idx, events := bkt(tx, bIdxSubject), bkt(tx, bEvents)
	var bad [][]byte
	c := idx.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) < 9 || k[len(k)-9] != 0 || bytes.IndexByte(k[:len(k)-9], 0) >= 0 || events.Get(k[len(k)-8:]) == nil {
			bad = append(bad, bytes.Clone(k))
		}
	}
	// Deleting while a cursor walks can skip keys: collect, then delete.
	for _, k := range bad {
		if err := idx.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(bad), nil
}

// migrateTenancies gives every machine of a database written before
// tenancies its first one. A deployed machine's newest successful
// provision job joins it, so that the installed OS keeps getting its
// metadata; every other earlier job and event stays outside any tenancy,
// where no tenant sees it.
func (s *Store) migrateTenancies(tx kv.Tx) error {
	var legacy []*Machine
	if err := bkt(tx, bMachines).ForEach(func(k, v []byte) error {
		var m Machine
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("machine %q: %w", k, err)
		}
		if m.Tenancy == "" {
			legacy = append(legacy, &m)
		}
		return nil
	}); err != nil || len(legacy) == 0 {
		return err
	}
	deployed := map[string]string{} // machine → its newest succeeded provision job
	if err := bkt(tx, bJobs).ForEach(func(k, v []byte) error {
		var j Job
		if err := json.Unmarshal(v, &j); err != nil {
			return fmt.Errorf("job %q: %w", k, err)
		}
		if j.Kind == JobProvision && j.State == JobSucceeded {
			deployed[j.Machine] = j.ID // keys are in order: the last one wins
		}
		return nil
	}); err != nil {
		return err
	}
	for _, m := range legacy {
		id, err := newTenancy(tx)
		if err != nil {
			return err
		}
		m.Tenancy = id
		// Only the tenancy changes: no index or usage is touched.
		if err := putJSON(bkt(tx, bMachines), []byte(m.Name), m); err != nil {
			return err
		}
		if err := bkt(tx, bIdxTenancy).Put([]byte(m.Name), []byte(id)); err != nil {
			return err
		}
		if jobID, ok := deployed[m.Name]; ok && m.State == MachineDeployed {
			j, err := get[Job](tx, bJobs, "job", jobID)
			if err != nil {
				return err
			}
			j.Tenancy = id
			if err := putJSON(bkt(tx, bJobs), []byte(j.ID), j); err != nil {
				return err
			}
		}
	}
	return nil
}
