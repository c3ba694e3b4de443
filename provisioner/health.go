package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
)

// The BMC's word on a machine's health, at commissioning: its system
// event log, and the power cap its profile asks for. Both are optional
// parts of a BMC: a BMC adapter without them skips the steps.

// EventLogReader reads a machine's system event log from its BMC.
type EventLogReader interface {
	EventLog(ctx context.Context, m *inventory.Machine) ([]bmc.Event, error)
}

// PowerLimiter caps a machine's draw through its BMC and reads the cap
// back.
type PowerLimiter interface {
	SetPowerLimit(ctx context.Context, m *inventory.Machine, watts int) (bmc.PowerLimit, error)
}

// maxSELInReason bounds how many critical entries a failure reason quotes.
const maxSELInReason = 5

// checkSEL fails commissioning when the BMC's event log has critical
// entries (bmc.Event.Critical: Redfish Severity Critical; on IPMI the
// failures ClassifyIPMIRecord lists), quoting them. A technician fixes
// the hardware, clears the log and commissions again. A BMC that cannot
// read its log passes, with an event that says it was not checked.
func (e *Engine) checkSEL(ctx context.Context, j *inventory.Job, m *inventory.Machine) error {
	r, ok := e.bmc.(EventLogReader)
	if !ok {
		return nil
	}
	events, err := r.EventLog(ctx, m)
	if err != nil {
		var be *bmc.Error
		if errors.As(err, &be) && be.Kind == bmc.KindUnsupported {
			e.event(ctx, j, "sel.unchecked", fmt.Sprintf("%s job %s: the BMC's event log cannot be read (%v); not checked", j.Kind, j.ID, err))
			return nil
		}
		return failf("reading the BMC's event log: %v", err)
	}
	var crit []string
	n := 0
	for _, ev := range events {
		if !ev.Critical() {
			continue
		}
		n++
		if len(crit) < maxSELInReason {
			crit = append(crit, fmt.Sprintf("#%s %s%s (%s)", ev.ID, selWhen(ev.Time), selText(ev), ev.Reason))
		}
	}
	if n == 0 {
		return nil
	}
	more := ""
	if n > len(crit) {
		more = fmt.Sprintf("; and %d more", n-len(crit))
	}
	return failf("the BMC's event log has %d critical %s: %s%s — fix the hardware, then clear the BMC's event log and commission again",
		n, plural(n, "entry", "entries"), strings.Join(crit, "; "), more)
}

func selWhen(t string) string {
	if t == "" {
		return ""
	}
	return t + " "
}

// selText is an entry's words: Redfish puts them in Message, ipmitool's
// list in Description (the sensor) and Message (the event).
func selText(ev bmc.Event) string {
	switch {
	case ev.Description != "" && ev.Message != "" && !strings.EqualFold(ev.Description, "System Event Log entry"):
		return ev.Description + ": " + ev.Message
	case ev.Message != "":
		return ev.Message
	}
	return ev.Description
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// applyPowerLimit sets the cap the machine's profile asks for
// (power_limit_w) and records what the BMC did with it: applied (read
// back) or unsupported. A BMC that cannot cap passes; one that fails to,
// or reads back another limit, fails the step.
func (e *Engine) applyPowerLimit(ctx context.Context, j *inventory.Job, m *inventory.Machine) error {
	pl, ok := e.bmc.(PowerLimiter)
	if !ok || m.Profile == "" || e.cfg.Profiles == nil {
		return nil
	}
	p, err := e.cfg.Profiles.Profile(ctx, m.Profile)
	if err != nil {
		return failf("%v", err)
	}
	if p.PowerLimitW <= 0 {
		return nil
	}
	got, err := pl.SetPowerLimit(ctx, m, p.PowerLimitW)
	rec := inventory.PowerLimitRecord{LimitW: int64(p.PowerLimitW), At: e.cfg.Now().UTC()}
	var be *bmc.Error
	switch {
	case err == nil:
		rec.State, rec.Via = "applied", got.Via
	case errors.As(err, &be) && be.Kind == bmc.KindUnsupported:
		rec.State, rec.Detail = "unsupported", oneLine(err.Error())
	default:
		return failf("power limit %d W of profile %q: %v", p.PowerLimitW, p.Name, err)
	}
	if _, err := e.inv.UpdateMachine(ctx, m.Name, func(m *inventory.Machine) error {
		m.PowerLimit = &rec
		return nil
	}); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s job %s: power limit %d W applied (%s)", j.Kind, j.ID, p.PowerLimitW, rec.Via)
	if rec.State != "applied" {
		msg = fmt.Sprintf("%s job %s: power limit %d W not applied: the BMC offers no power cap (%s)", j.Kind, j.ID, p.PowerLimitW, rec.Detail)
	}
	e.event(ctx, j, "power-limit."+rec.State, msg)
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
