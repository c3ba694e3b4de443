package api

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// CablingPlanResult says what a cable schedule import changed.
type CablingPlanResult struct {
	Rack string `json:"rack"`
	// Cables is how many cables the schedule planned, Updated the
	// machines whose plan it changed.
	Cables  int      `json:"cables"`
	Updated []string `json:"updated"`
}

// cablesColumns are the columns of NetBox's cable import that a plan
// needs (the ones `rack cabling --csv` writes); NetBox's other columns
// (type, status, label, color, length...) may be there and are ignored.
var cablesColumns = []string{"side_a_device", "side_a_name", "side_b_device", "side_b_name"}

// plannedRow is one cable of a schedule and the line it came from.
type plannedRow struct {
	line  int
	cable inventory.PlannedCable
}

// parseCableSchedule reads a NetBox cable CSV for a rack: on each line one
// end is a machine of the rack (its interface the NIC) and the other a
// switch port. machines are the rack's machine names.
func parseCableSchedule(data []byte, rack string, machines []string) (map[string][]plannedRow, int, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	rows, err := r.ReadAll()
	if err != nil {
		return nil, 0, badRequest("cable schedule: %v", err)
	}
	if len(rows) < 2 {
		return nil, 0, badRequest("cable schedule: expected a header line and at least one cable")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	for _, c := range cablesColumns {
		if _, ok := col[c]; !ok {
			return nil, 0, badRequest("cable schedule line 1: missing column %q (NetBox's cable import columns: %s)", c, strings.Join(cablesColumns, ","))
		}
	}
	out := map[string][]plannedRow{}
	for i, row := range rows[1:] {
		line := i + 2
		get := func(c string) string {
			if j, ok := col[c]; ok && j < len(row) {
				return strings.TrimSpace(row[j])
			}
			return ""
		}
		for _, side := range []string{"side_a_type", "side_b_type"} {
			if t := get(side); t != "" && t != "dcim.interface" {
				return nil, 0, badRequest("cable schedule line %d, column %s: %q; a planned cable joins two interfaces (dcim.interface)", line, side, t)
			}
		}
		a, b := get("side_a_device"), get("side_b_device")
		aIn, bIn := slices.Contains(machines, a), slices.Contains(machines, b)
		var m string
		var c inventory.PlannedCable
		switch {
		case aIn && bIn:
			return nil, 0, badRequest("cable schedule line %d: both ends (%q, %q) are machines of rack %q; a planned cable goes from a machine to a switch", line, a, b, rack)
		case aIn:
			m, c = a, inventory.PlannedCable{NIC: get("side_a_name"), Switch: b, Port: get("side_b_name")}
		case bIn:
			m, c = b, inventory.PlannedCable{NIC: get("side_b_name"), Switch: a, Port: get("side_a_name")}
		default:
			return nil, 0, badRequest("cable schedule line %d: neither %q nor %q is a machine of rack %q", line, a, b, rack)
		}
		out[m] = append(out[m], plannedRow{line, c})
	}
	return out, len(rows) - 1, nil
}

// setCablingPlan sets the plans of a rack's machines from a NetBox cable
// CSV, all or nothing; machines it does not name keep their plans.
func (s *Server) setCablingPlan(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	if ct, _, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type")); ct != "text/csv" {
		return 0, nil, &httpError{http.StatusUnsupportedMediaType, "unsupported_media_type",
			fmt.Sprintf("content type %q is not a cable schedule: send text/csv (NetBox's cable import columns)", ct)}
	}
	data, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, c.s.maxBody))
	if err != nil {
		return 0, nil, err
	}
	if _, err := s.inv.Rack(c.ctx(), name); err != nil {
		return 0, nil, err
	}
	ms, err := s.inv.Machines(c.ctx(), inventory.MachineFilter{Rack: name})
	if err != nil {
		return 0, nil, err
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	rows, n, err := parseCableSchedule(data, name, names)
	if err != nil {
		return 0, nil, err
	}
	plans := map[string][]inventory.PlannedCable{}
	for m, rs := range rows {
		for _, r := range rs {
			plans[m] = append(plans[m], r.cable)
		}
	}
	updated, err := s.inv.SetCablingPlans(c.ctx(), name, plans)
	var pe *inventory.PlanError
	var ce *inventory.CableError
	if errors.As(err, &pe) && errors.As(err, &ce) && ce.Index < len(rows[pe.Machine]) {
		return 0, nil, fmt.Errorf("cable schedule line %d, machine %q: %w", rows[pe.Machine][ce.Index].line, pe.Machine, ce.Err)
	}
	if err != nil {
		return 0, nil, err
	}
	if updated == nil {
		updated = []string{}
	}
	c.detail = fmt.Sprintf("%d cables, %d machines updated", n, len(updated))
	return http.StatusOK, CablingPlanResult{Rack: name, Cables: n, Updated: updated}, nil
}
