package api

import (
	"context"
	"net/http"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
)

// BMCHealth is what the API reads from a machine's BMC on demand. The
// provisioner's BMC adapter implements it; a BMC given to the API without
// it makes these routes answer 503.
type BMCHealth interface {
	EventLog(ctx context.Context, m *inventory.Machine) ([]bmc.Event, error)
}

// SEL is a machine's system event log as its BMC reports it.
type SEL struct {
	Machine string     `json:"machine"`
	Entries []SELEntry `json:"entries"`
}

// SELEntry is one event log entry. Time is as the BMC wrote it.
type SELEntry struct {
	ID          string `json:"id"`
	Time        string `json:"time,omitempty"`
	Description string `json:"description,omitempty"`
	Message     string `json:"message,omitempty"`
}

func (s *Server) healthRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/machines/{name}/sel", action: "machine.sel",
			summary: "Read a machine's system event log from its BMC", roles: staff, scope: scopeMachine, audited: true,
			reply: SEL{}, handle: s.machineSEL},
	}
}

var errNoBMCHealth = &httpError{http.StatusServiceUnavailable, "unavailable",
	"this service cannot read BMC event logs: its BMC control is not running"}

func (s *Server) machineSEL(c *call) (int, any, error) {
	h, ok := s.bmc.(BMCHealth)
	if !ok {
		return 0, nil, errNoBMCHealth
	}
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	events, err := h.EventLog(c.ctx(), m)
	if err != nil {
		return 0, nil, &httpError{http.StatusBadGateway, "bmc_error", err.Error()}
	}
	out := SEL{Machine: m.Name, Entries: make([]SELEntry, 0, len(events))}
	for _, e := range events {
		out.Entries = append(out.Entries, SELEntry{ID: e.ID, Time: e.Time, Description: e.Description, Message: e.Message})
	}
	return http.StatusOK, out, nil
}
