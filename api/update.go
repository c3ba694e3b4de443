package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/metalhall/metalhall/inventory"
)

// operatorRoutes are the routes for work in flight and for edits of what
// was entered.
func (s *Server) operatorRoutes() []route {
	return append(s.jobListRoutes(),
		route{method: "PATCH", pattern: "/api/v1/racks/{name}", action: "rack.update", summary: "Change a rack's units, power budget or row (checked against its machines and its phase)", roles: staff, scope: scopeRack, body: RackUpdate{}, reply: inventory.Rack{}, handle: s.updateRack},
		route{method: "PATCH", pattern: "/api/v1/halls/{name}/phases/{number}", action: "phase.update", summary: "Change a phase's power budget or target date (checked against its racks' budgets)", roles: staff, body: PhaseUpdate{}, reply: inventory.Phase{}, handle: s.updatePhase},
		route{method: "PATCH", pattern: "/api/v1/machines/{name}", action: "machine.update", summary: "Change a machine's power, MACs, profile or BMC (address, protocol, user; a new password is sealed)", roles: staff, scope: scopeMachine, body: MachineUpdate{}, reply: Machine{}, handle: s.updateMachine},
	)
}

// MachineUpdate changes what was entered for a machine; a field left out
// is kept. MACs, when given, replace the list.
type MachineUpdate struct {
	PowerW      *int64   `json:"power_w,omitempty"`
	MACs        []string `json:"macs,omitempty"`
	Profile     *string  `json:"profile,omitempty"`
	BMCAddress  *string  `json:"bmc_address,omitempty"`
	BMCProtocol *string  `json:"bmc_protocol,omitempty"`
	BMCUser     *string  `json:"bmc_user,omitempty"`
	BMCPassword *string  `json:"bmc_password,omitempty"`
}

func (s *Server) updateMachine(c *call) (int, any, error) {
	var in MachineUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	name := c.r.PathValue("name")
	if in.Profile != nil {
		if err := s.checkMachineProfile(c.ctx(), name, *in.Profile); err != nil {
			return 0, nil, err
		}
	}
	var changed []string // for the audit trail: which fields, never values of secrets
	var sealed []byte
	if in.BMCPassword != nil {
		if *in.BMCPassword == "" || len(*in.BMCPassword) > maxBMCPassword {
			return 0, nil, &inventory.ValidationError{Field: "bmc_password", Msg: fmt.Sprintf("must be 1 to %d bytes long: check the password file", maxBMCPassword)}
		}
		var err error
		if sealed, err = inventory.BMCCredential(name).Seal(s.sealer, []byte(*in.BMCPassword)); err != nil {
			return 0, nil, err
		}
		changed = append(changed, "bmc_password")
	}
	m, err := s.inv.EditMachine(c.ctx(), name, func(m *inventory.Machine) error {
		if in.PowerW != nil {
			m.PowerW = *in.PowerW
			changed = append(changed, "power_w")
		}
		if in.MACs != nil {
			m.MACs = in.MACs
			changed = append(changed, "macs")
		}
		if in.Profile != nil {
			m.Profile = *in.Profile
			changed = append(changed, "profile")
		}
		if in.BMCAddress != nil {
			m.BMC.Address = *in.BMCAddress
			changed = append(changed, "bmc_address")
		}
		if in.BMCProtocol != nil {
			m.BMC.Protocol = inventory.BMCProtocol(*in.BMCProtocol)
			changed = append(changed, "bmc_protocol")
		}
		if in.BMCUser != nil {
			m.BMC.Username = *in.BMCUser
			changed = append(changed, "bmc_user")
		}
		if len(changed) == 0 {
			return &inventory.ValidationError{Field: "body", Msg: "names nothing to change: give at least one field"}
		}
		return nil // the store checks the result as it checks an enrollment
	}, sealed)
	c.detail = strings.Join(changed, ",")
	if err != nil {
		return 0, nil, err
	}
	out := []Machine{machineView(*m)}
	if err := s.withInspections(c.ctx(), out); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, out[0], nil
}

// RackUpdate changes what was entered for a rack; a field left out is kept.
type RackUpdate struct {
	Units   *int     `json:"units,omitempty"`
	PowerKW *float64 `json:"power_kw,omitempty"`
	Row     *string  `json:"row,omitempty"`
}

func (s *Server) updateRack(c *call) (int, any, error) {
	var in RackUpdate
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	e := inventory.RackEdit{Units: in.Units, Row: in.Row}
	var changed []string
	if in.Units != nil {
		changed = append(changed, fmt.Sprintf("units=%d", *in.Units))
	}
	w, err := budgetW(in.PowerKW, &changed)
	if err != nil {
		return 0, nil, err
	}
	e.BudgetW = w
	if in.Row != nil {
		changed = append(changed, "row="+*in.Row)
	}
	c.detail = strings.Join(changed, " ")
	r, err := s.inv.EditRack(c.ctx(), c.r.PathValue("name"), e)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, r, nil
}

// PhaseUpdate changes a phase; a field left out is kept, an empty
// target_date removes it.
type PhaseUpdate struct {
	PowerKW    *float64 `json:"power_kw,omitempty"`
	TargetDate *string  `json:"target_date,omitempty"`
}

func (s *Server) updatePhase(c *call) (int, any, error) {
	hall := c.r.PathValue("name")
	n, err := strconv.Atoi(c.r.PathValue("number"))
	if err != nil {
		return 0, nil, badRequest("phase number %q is not a number", c.r.PathValue("number"))
	}
	c.subject = fmt.Sprintf("hall/%s/phase/%d", hall, n)
	var in PhaseUpdate
	if err = c.decode(&in); err != nil {
		return 0, nil, err
	}
	e := inventory.PhaseEdit{TargetDate: in.TargetDate}
	var changed []string
	w, err := budgetW(in.PowerKW, &changed)
	if err != nil {
		return 0, nil, err
	}
	e.BudgetW = w
	if in.TargetDate != nil {
		changed = append(changed, "target_date="+*in.TargetDate)
	}
	c.detail = strings.Join(changed, " ")
	p, err := s.inv.EditPhase(c.ctx(), hall, n, e)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

// budgetW turns an optional budget in kW into watts, noting the change for
// the audit trail.
func budgetW(kw *float64, changed *[]string) (*int64, error) {
	if kw == nil {
		return nil, nil
	}
	w, err := inventory.KWToW("power_kw", *kw)
	if err != nil {
		return nil, err
	}
	*changed = append(*changed, "power_kw="+inventory.FormatKW(w))
	return &w, nil
}
