package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/metalhall/metalhall/inventory"
)

// MachineAcceptance is a machine's acceptance reports, oldest first: one
// per commissioning whose profile has an acceptance suite.
type MachineAcceptance struct {
	Machine string                       `json:"machine"`
	Reports []inventory.AcceptanceReport `json:"reports"`
}

// RackAcceptance is every machine of a rack with its latest acceptance
// result, top of the rack first, and the fix list a technician works
// through: one line per thing to fix, each naming the unit and machine.
type RackAcceptance struct {
	Rack     string             `json:"rack"`
	Machines []MachineAcceptRow `json:"machines"`
	Passed   int                `json:"passed"`
	Failed   int                `json:"failed"`
	NotRun   int                `json:"not_run"` // no report yet (never commissioned with an acceptance suite)
	FixList  []string           `json:"fix_list"`
}

// MachineAcceptRow is one machine's latest acceptance result.
type MachineAcceptRow struct {
	Machine  string                 `json:"machine"`
	Unit     int                    `json:"unit"`
	State    inventory.MachineState `json:"state"`
	Profile  string                 `json:"profile,omitempty"`
	Result   string                 `json:"result"` // passed, failed, none
	Job      string                 `json:"job,omitempty"`
	Reported time.Time              `json:"reported,omitzero"`
	Failures []string               `json:"failures,omitempty"`
}

func (s *Server) acceptanceRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/machines/{name}/acceptance", action: "machine.acceptance",
			summary: "A machine's acceptance reports (hardware checks at commissioning), oldest first",
			roles:   staff, scope: scopeMachine, reply: MachineAcceptance{}, handle: s.machineAcceptance},
		{method: "GET", pattern: "/api/v1/racks/{name}/acceptance", action: "rack.acceptance",
			summary: "Every machine of a rack with its latest acceptance result, and the fix list",
			roles:   staff, scope: scopeRack, reply: RackAcceptance{}, handle: s.rackAcceptance},
	}
}

func (s *Server) machineAcceptance(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	reps, err := s.inv.AcceptanceReports(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, MachineAcceptance{Machine: name, Reports: reps}, nil
}

// rackReports reads a rack's machines, top of the rack first (as a
// technician walks it with the list), and each one's latest acceptance
// report.
func (s *Server) rackReports(c *call, rack string) ([]inventory.Machine, map[string]*inventory.AcceptanceReport, error) {
	if _, err := s.inv.Rack(c.ctx(), rack); err != nil {
		return nil, nil, err
	}
	ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Rack: rack})
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Unit > ms[j].Unit })
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	latest, err := s.inv.LatestAcceptance(c.ctx(), names)
	if err != nil {
		return nil, nil, err
	}
	return ms, latest, nil
}

// rackInspections is the last inspection of each of a rack's machines
// (rackReports) that has one.
func (s *Server) rackInspections(c *call, ms []inventory.Machine) (map[string]json.RawMessage, error) {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return s.inv.Inspections(c.ctx(), names)
}

func (s *Server) rackAcceptance(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	ms, latest, err := s.rackReports(c, name)
	if err != nil {
		return 0, nil, err
	}
	out := RackAcceptance{Rack: name, Machines: []MachineAcceptRow{}, FixList: []string{}}
	for _, m := range ms {
		row := MachineAcceptRow{Machine: m.Name, Unit: m.Unit, State: m.State, Profile: m.Profile, Result: "none"}
		r := latest[m.Name]
		switch {
		case r == nil:
			out.NotRun++
		case r.Passed:
			row.Result, row.Job, row.Reported = "passed", r.Job, r.Reported
			out.Passed++
		default:
			row.Result, row.Job, row.Reported, row.Failures = "failed", r.Job, r.Reported, r.Failures()
			out.Failed++
			for _, f := range row.Failures {
				out.FixList = append(out.FixList, fixLine(m.Unit, m.Name, f))
			}
		}
		out.Machines = append(out.Machines, row)
	}
	return http.StatusOK, out, nil
}

// fixLine is one line of a rack's fix list: "U17 gpu-a01-05: GPU
// 0000:9b:00.0 at PCIe Gen4 x8, expected Gen5 x16 — reseat".
func fixLine(unit int, machine, finding string) string {
	return fmt.Sprintf("U%d %s: %s", unit, machine, finding)
}
