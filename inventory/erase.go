package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/inventory/kv"
)

// bErase keeps the erase certificates: machine \x00 job id → EraseReport.
// They outlive jobs and tenancies on purpose: they are the evidence that
// a tenant's data was destroyed before the machine moved on.
var bErase = []byte("erase_reports")

func init() { extraBuckets = append(extraBuckets, bErase) }

// EraseReport is what one release's agent reported erasing, disk by disk.
type EraseReport struct {
	Machine  string             `json:"machine"`
	Job      string             `json:"job"`
	Tenant   string             `json:"tenant,omitempty"` // the machine's tenant when it was erased
	Reported time.Time          `json:"reported"`
	Disks    []wire.EraseRecord `json:"disks"`
}

// Passed reports whether every disk was erased and verified, and there
// was at least one.
func (r *EraseReport) Passed() bool {
	for _, d := range r.Disks {
		if d.Result != wire.ErasePassed {
			return false
		}
	}
	return len(r.Disks) > 0
}

func eraseKey(machine, job string) []byte { return []byte(machine + "\x00" + job) }

// RecordErase stores a job's erase report. The job must exist and belong
// to the machine; a second report for the same job (an agent retrying
// done) replaces the first.
func (s *Store) RecordErase(ctx context.Context, r EraseReport) (*EraseReport, error) {
	if len(r.Disks) > 1024 {
		return nil, invalid("erase report", "has %d disks; at most 1024", len(r.Disks))
	}
	err := s.update(func(tx kv.Tx) error {
		j, err := get[Job](tx, bJobs, "job", r.Job)
		if err != nil {
			return err
		}
		m, err := get[Machine](tx, bMachines, "machine", j.Machine)
		if err != nil {
			return err
		}
		r.Machine, r.Tenant = j.Machine, m.Tenant
		if r.Reported.IsZero() {
			r.Reported = s.now().UTC()
		}
		return putJSON(bkt(tx, bErase), eraseKey(r.Machine, r.Job), &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// EraseReports lists a machine's erase reports, oldest first.
func (s *Store) EraseReports(ctx context.Context, machine string) ([]EraseReport, error) {
	var out []EraseReport
	err := s.view(func(tx kv.Tx) error {
		if _, err := get[Machine](tx, bMachines, "machine", machine); err != nil {
			return err
		}
		prefix := []byte(machine + "\x00")
		c := bkt(tx, bErase).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var r EraseReport
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("erase report %q: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// EraseReport returns the erase report of one job.
func (s *Store) EraseReport(ctx context.Context, machine, job string) (*EraseReport, error) {
	var out EraseReport
	err := s.view(func(tx kv.Tx) error {
		err := getJSON(bkt(tx, bErase), eraseKey(machine, job), &out)
		if errors.Is(err, ErrNotFound) {
			return &NotFoundError{Kind: "erase report of job", Name: job}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
