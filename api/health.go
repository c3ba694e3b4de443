package api

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
		return 0, nil, bmcFailure(err)
	}
	out := SEL{Machine: m.Name, Entries: make([]SELEntry, 0, len(events))}
	for _, e := range events {
		out.Entries = append(out.Entries, SELEntry{ID: e.ID, Time: e.Time, Description: e.Description, Message: e.Message})
	}
	return http.StatusOK, out, nil
}

// bmcCollector exports, at scrape time, what the last contact with each
// machine's BMC said: machines by outcome, and each rack's measured draw
// next to its budget. Labels are bounded: seven outcomes, and one series
// per rack in the inventory.
type bmcCollector struct{ inv *inventory.Store }

var (
	bmcOutcomeDesc = prometheus.NewDesc("metalhall_machines_bmc_outcome",
		"Machines by the outcome of the last contact with their BMC (ok, auth, unreachable, timeout, unsupported, protocol, unknown).",
		[]string{"outcome"}, nil)
	rackMeasuredDesc = prometheus.NewDesc("metalhall_rack_measured_watts",
		"A rack's draw as its BMCs last measured it (machines not measured count 0).", []string{"rack"}, nil)
	rackBudgetDesc = prometheus.NewDesc("metalhall_rack_budget_watts", "A rack's power budget.", []string{"rack"}, nil)
)

var bmcOutcomes = []string{"ok", "auth", "unreachable", "timeout", "unsupported", "protocol", "unknown"}

func (c *bmcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bmcOutcomeDesc
	ch <- rackMeasuredDesc
	ch <- rackBudgetDesc
}

func (c *bmcCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := c.inv.Machines(ctx, inventory.MachineFilter{})
	if err != nil {
		return
	}
	racks, err := c.inv.Racks(ctx, inventory.RackFilter{})
	if err != nil {
		return
	}
	outcomes := map[string]int{}
	drawW := map[string]int64{}
	for i := range ms {
		o := ms[i].BMCStatus.Outcome
		if !slices.Contains(bmcOutcomes, o) {
			o = "unknown"
		}
		outcomes[o]++
		drawW[ms[i].Rack] += ms[i].BMCStatus.ConsumedW
	}
	for _, o := range bmcOutcomes {
		ch <- prometheus.MustNewConstMetric(bmcOutcomeDesc, prometheus.GaugeValue, float64(outcomes[o]), o)
	}
	for _, r := range racks {
		ch <- prometheus.MustNewConstMetric(rackMeasuredDesc, prometheus.GaugeValue, float64(drawW[r.Name]), r.Name)
		ch <- prometheus.MustNewConstMetric(rackBudgetDesc, prometheus.GaugeValue, float64(r.BudgetW), r.Name)
	}
}
