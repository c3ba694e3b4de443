package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// bAcceptance keeps acceptance reports: machine \x00 job id → report.
// Every commissioning adds one, so a machine's history of passes and
// failures (a DIMM replaced, then its slot failing again) stays readable.
var bAcceptance = []byte("acceptance_reports")

func init() { extraBuckets = append(extraBuckets, bAcceptance) }

// CheckResult is the outcome of one acceptance check.
type CheckResult string

const (
	CheckPassed CheckResult = "pass"
	CheckFailed CheckResult = "fail"
	// CheckNotRun: the check could not run (nothing to run it with); a
	// required check that did not run fails the machine.
	CheckNotRun CheckResult = "not-run"
)

// AcceptanceReport is one run of a profile's acceptance suite on a machine.
type AcceptanceReport struct {
	Machine  string    `json:"machine"`
	Job      string    `json:"job"`
	Profile  string    `json:"profile"`
	Reported time.Time `json:"reported"`
	Passed   bool      `json:"passed"` // every required check passed
	Checks   []Check   `json:"checks"`
}

// Check is one check's result and what it found.
type Check struct {
	Name     string      `json:"name"` // pcie, memory, ecc, cpu, nvme, ethernet, infiniband, gpu-diagnostics, firmware
	Required bool        `json:"required"`
	Result   CheckResult `json:"result"`
	Summary  string      `json:"summary"` // one line: "28 links at their maximum"
	Findings []Finding   `json:"findings,omitempty"`
}

// Finding is one thing wrong, in the words a technician acts on.
type Finding struct {
	Subject string `json:"subject"` // "GPU 0000:9a:00.0"
	Problem string `json:"problem"` // "at PCIe Gen4 x8, expected Gen5 x16"
	Fix     string `json:"fix"`     // "reseat"
}

// Line is the finding as one line: "GPU 0000:9a:00.0 at PCIe Gen4 x8,
// expected Gen5 x16 — reseat".
func (f Finding) Line() string {
	s := f.Subject + " " + f.Problem
	if f.Fix != "" {
		s += " — " + f.Fix
	}
	return s
}

// Failures lists the lines of every finding of every required check that
// did not pass, in check order: the fix list.
func (r *AcceptanceReport) Failures() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.Required || c.Result == CheckPassed {
			continue
		}
		if len(c.Findings) == 0 {
			out = append(out, c.Name+": "+c.Summary)
		}
		for _, f := range c.Findings {
			out = append(out, f.Line())
		}
	}
	return out
}

// Settle sets Passed from the checks: every required one passed.
func (r *AcceptanceReport) Settle() {
	r.Passed = true
	for _, c := range r.Checks {
		if c.Required && c.Result != CheckPassed {
			r.Passed = false
		}
	}
}

func acceptanceKey(machine, job string) []byte { return []byte(machine + "\x00" + job) }

// RecordAcceptance stores a job's acceptance report. The job must exist
// and belong to the machine; running the suite again in the same job (a
// resumed step) replaces the report.
func (s *Store) RecordAcceptance(ctx context.Context, r AcceptanceReport) (*AcceptanceReport, error) {
	if len(r.Checks) > 64 {
		return nil, invalid("acceptance report", "has %d checks; at most 64", len(r.Checks))
	}
	r.Settle()
	err := s.update(func(tx kv.Tx) error {
		j, err := get[Job](tx, bJobs, "job", r.Job)
		if err != nil {
			return err
		}
		if r.Machine != "" && r.Machine != j.Machine {
			return invalid("acceptance report", "job %s is for machine %q, not %q", j.ID, j.Machine, r.Machine)
		}
		r.Machine = j.Machine
		if r.Reported.IsZero() {
			r.Reported = s.now().UTC()
		}
		return putJSON(bkt(tx, bAcceptance), acceptanceKey(r.Machine, r.Job), &r)
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// AcceptanceReports lists a machine's acceptance reports, oldest first.
func (s *Store) AcceptanceReports(ctx context.Context, machine string) ([]AcceptanceReport, error) {
	var out []AcceptanceReport
	err := s.view(func(tx kv.Tx) error {
		if _, err := get[Machine](tx, bMachines, "machine", machine); err != nil {
			return err
		}
		var err error
		out, err = acceptanceOf(tx, machine)
		return err
	})
	return out, err
}

func acceptanceOf(tx kv.Tx, machine string) ([]AcceptanceReport, error) {
	out := []AcceptanceReport{}
	prefix := []byte(machine + "\x00")
	c := bkt(tx, bAcceptance).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var r AcceptanceReport
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("acceptance report %q: %w", k, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// LatestAcceptance returns each named machine's newest acceptance report
// (nil for a machine that has none), read in one transaction so a rack's
// listing is one consistent picture.
func (s *Store) LatestAcceptance(ctx context.Context, machines []string) (map[string]*AcceptanceReport, error) {
	out := make(map[string]*AcceptanceReport, len(machines))
	names := append([]string(nil), machines...)
	sort.Strings(names)
	err := s.view(func(tx kv.Tx) error {
		for _, m := range names {
			rs, err := acceptanceOf(tx, m)
			if err != nil {
				return err
			}
			out[m] = nil
			if len(rs) > 0 {
				out[m] = &rs[len(rs)-1]
			}
		}
		return nil
	})
	return out, err
}
