package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
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

// BMCEventLogClearer empties a machine's system event log on its BMC.
type BMCEventLogClearer interface {
	ClearEventLog(ctx context.Context, m *inventory.Machine) error
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
	// Severity is OK, Warning or Critical (Redfish's, or judged from the
	// IPMI record); empty when unknown. Critical entries fail
	// commissioning.
	Severity string `json:"severity,omitempty"`
	// Reason says what the severity was judged by.
	Reason string `json:"reason,omitempty"`
}

// SELCleared is what a clear of the event log removed.
type SELCleared struct {
	Machine string     `json:"machine"`
	Cleared []SELEntry `json:"cleared"`
}

func (s *Server) healthRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/machines/{name}/sel", action: "machine.sel",
			summary: "Read a machine's system event log from its BMC", roles: staff, scope: scopeMachine, audited: true,
			reply: SEL{}, handle: s.machineSEL},
		{method: "POST", pattern: "/api/v1/machines/{name}/sel/clear", action: "machine.sel-clear",
			summary: "Clear a machine's system event log on its BMC (after the cause of its critical entries is fixed)", roles: staff, scope: scopeMachine,
			reply: SELCleared{}, handle: s.clearMachineSEL},
	}
}

var errNoBMCHealth = &httpError{http.StatusServiceUnavailable, "unavailable",
	"this service cannot read BMC event logs: its BMC control is not running"}

func (s *Server) machineSEL(c *call) (int, any, error) {
	m, events, err := s.readSEL(c)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, SEL{Machine: m.Name, Entries: selEntries(events)}, nil
}

// readSEL reads the event log of the machine the route names.
func (s *Server) readSEL(c *call) (*inventory.Machine, []bmc.Event, error) {
	h, ok := s.bmc.(BMCHealth)
	if !ok {
		return nil, nil, errNoBMCHealth
	}
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return nil, nil, err
	}
	events, err := h.EventLog(c.ctx(), m)
	if err != nil {
		return nil, nil, bmcFailure(err)
	}
	return m, events, nil
}

func selEntries(events []bmc.Event) []SELEntry {
	out := make([]SELEntry, 0, len(events))
	for _, e := range events {
		out = append(out, SELEntry{ID: e.ID, Time: e.Time, Description: e.Description, Message: e.Message,
			Severity: string(e.Severity), Reason: e.Reason})
	}
	return out
}

// clearMachineSEL reads the log, then clears it: the audit event keeps
// what was cleared (its critical entries in full), so clearing a log to
// get a machine through commissioning leaves a trace of why it failed.
func (s *Server) clearMachineSEL(c *call) (int, any, error) {
	cl, ok := s.bmc.(BMCEventLogClearer)
	if !ok {
		return 0, nil, errNoBMCHealth
	}
	m, events, err := s.readSEL(c)
	if err != nil {
		return 0, nil, err
	}
	if err := cl.ClearEventLog(c.ctx(), m); err != nil {
		return 0, nil, bmcFailure(err)
	}
	c.detail = selClearDetail(events)
	return http.StatusOK, SELCleared{Machine: m.Name, Cleared: selEntries(events)}, nil
}

// selClearDetail names every critical entry cleared (up to a bound) and
// counts the rest.
func selClearDetail(events []bmc.Event) string {
	var b strings.Builder
	crit := 0
	for _, e := range events {
		if !e.Critical() {
			continue
		}
		crit++
		if b.Len() < 1500 {
			fmt.Fprintf(&b, "; #%s %s %s %s", e.ID, e.Time, e.Description, e.Message)
		}
	}
	return fmt.Sprintf("cleared %d entries, %d critical%s", len(events), crit, b.String())
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
