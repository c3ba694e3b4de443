package bmc

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/stmcginnis/gofish/redfish"
)

// Severity is how bad a system event log entry is: OK, Warning or
// Critical; empty where the BMC gives nothing to judge by (IPMI OEM
// records).
type Severity string

// Severities, spelled as Redfish spells them.
const (
	SeverityOK       Severity = "OK"
	SeverityWarning  Severity = "Warning"
	SeverityCritical Severity = "Critical"
)

// Critical says whether the entry reports a hardware failure: what
// commissioning refuses a machine for.
func (e Event) Critical() bool { return e.Severity == SeverityCritical }

// eventLog reads the log for EventLog. Redfish: every LogService of the
// managers (where BMCs keep the SEL), through gofish, because bmclib drops
// each entry's Severity. IPMI: bmclib's `sel list` for the text, and the
// raw records (`sel writeraw`) for what the text does not say precisely:
// the sensor type, event type and offset each entry is judged by.
func (s *session) eventLog(ctx context.Context) ([]Event, error) {
	var out []Event
	switch {
	case s.ep.Protocol == Redfish && s.c.cfg.registry == nil:
		services, err := s.redfishLogServices(ctx)
		if err != nil {
			return nil, err
		}
		for _, ls := range services {
			entries, err := ls.Entries()
			if err != nil {
				return nil, fmt.Errorf("read log %s: %w", ls.ID, err)
			}
			for _, e := range entries {
				out = append(out, redfishEvent(e))
			}
		}
	default:
		cl, err := s.client(ctx)
		if err != nil {
			return nil, err
		}
		entries, err := cl.GetSystemEventLog(ctx)
		if err != nil {
			if strings.Contains(err.Error(), "not a SystemEventLog") {
				return nil, fmt.Errorf("event log: %w", errUnsupported)
			}
			return nil, fmt.Errorf("read event log: %w", err)
		}
		for _, e := range entries {
			var ev Event
			for i, f := range e {
				switch i {
				case 0:
					ev.ID = f
				case 1:
					ev.Time = f
				case 2:
					ev.Description = f
				case 3:
					ev.Message = f
				}
			}
			out = append(out, ev)
		}
		if s.ep.Protocol == IPMI && s.c.cfg.registry == nil && len(out) > 0 {
			if err := s.c.classifyIPMISEL(ctx, s.ep, out); err != nil {
				return nil, err
			}
		}
	}
	slices.SortFunc(out, func(a, b Event) int { return cmpID(a.ID, b.ID) })
	return out, nil
}

func redfishEvent(e *redfish.LogEntry) Event {
	ev := Event{ID: e.ID, Time: e.Created, Description: e.Description, Message: e.Message, Severity: Severity(e.Severity)}
	switch ev.Severity {
	case SeverityOK, SeverityWarning, SeverityCritical:
	default:
		ev.Severity = ""
	}
	// A BMC that marks a condition resolved (LogEntry v1.15) says the
	// failure is over: it stays in the log as a warning, not a failure.
	if e.Resolved && ev.Severity == SeverityCritical {
		ev.Severity, ev.Reason = SeverityWarning, "resolved"
	}
	if ev.Severity == SeverityCritical {
		ev.Reason = "Redfish Severity Critical"
		if e.MessageID != "" {
			ev.Reason += " (" + e.MessageID + ")"
		}
	}
	return ev
}

// redfishLogServices lists the managers' log services, as bmclib reads
// them for the SEL.
func (s *session) redfishLogServices(ctx context.Context) ([]*redfish.LogService, error) {
	if _, err := s.redfishTarget(ctx); err != nil {
		return nil, err
	}
	gf, _, err := s.openGofish(ctx)
	if err != nil {
		return nil, err
	}
	managers, err := gf.Service.Managers()
	if err != nil {
		return nil, fmt.Errorf("list managers: %w", err)
	}
	var out []*redfish.LogService
	for _, m := range managers {
		ls, err := m.LogServices()
		if err != nil {
			return nil, fmt.Errorf("list log services of manager %s: %w", m.ID, err)
		}
		out = append(out, ls...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the BMC's managers list no log service: %w", errUnsupported)
	}
	return out, nil
}

// ClearEventLog empties the system event log: on Redfish every log
// service of the managers (the ones EventLog reads; bmclib's own clear
// empties the chassis' instead), on IPMI with `sel clear`.
func (c *Controller) ClearEventLog(ctx context.Context, ep Endpoint) error {
	return c.run(ctx, ep, "clear-event-log", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		// Clearing twice is harmless, but a clear that half happened
		// must be seen: not retried after the first request went out.
		s.committed = true
		if ep.Protocol == Redfish && c.cfg.registry == nil {
			services, err := s.redfishLogServices(ctx)
			if err != nil {
				return err
			}
			for _, ls := range services {
				if err := ls.ClearLog(); err != nil {
					return fmt.Errorf("clear log %s: %w", ls.ID, err)
				}
			}
			return nil
		}
		cl, err := s.client(ctx)
		if err != nil {
			return err
		}
		if err := cl.ClearSystemEventLog(ctx); err != nil {
			return fmt.Errorf("clear event log: %w", err)
		}
		return nil
	})
}

// classifyIPMISEL fills in the Severity of each entry from the raw SEL
// records, matched by record ID (ipmitool prints it in hex).
func (c *Controller) classifyIPMISEL(ctx context.Context, ep Endpoint, events []Event) error {
	f, err := os.CreateTemp("", "metalhall-sel-*.raw")
	if err != nil {
		return fmt.Errorf("raw SEL: %w", err)
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	if _, err := c.ipmitoolRun(ctx, ep, nil, "sel", "writeraw", path); err != nil {
		return fmt.Errorf("read raw SEL: %w", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("raw SEL: %w", err)
	}
	byID := map[uint16][16]byte{}
	for len(raw) >= 16 {
		var rec [16]byte
		copy(rec[:], raw[:16])
		byID[binary.LittleEndian.Uint16(rec[:2])] = rec
		raw = raw[16:]
	}
	for i := range events {
		id, err := strconv.ParseUint(strings.TrimSpace(events[i].ID), 16, 16)
		if err != nil {
			continue
		}
		if rec, ok := byID[uint16(id)]; ok {
			events[i].Severity, events[i].Reason = ClassifyIPMIRecord(rec)
		}
	}
	return nil
}

// ClassifyIPMIRecord judges one 16-byte SEL record (IPMI v2.0 §32.1) and
// says why. Only system event records (type 0x02) that assert a
// condition are judged; deassertions are OK, OEM records unknown ("").
//
// Critical are the events that report failed hardware:
//   - any threshold sensor (event type 0x01) crossing a critical or
//     non-recoverable threshold (offsets 0x02, 0x04, 0x09, 0x0B): a fan
//     below its lower critical speed, an inlet above its upper critical
//     temperature, a voltage out of range;
//   - a generic severity sensor (event type 0x07) entering Critical or
//     Non-recoverable (offsets 0x02, 0x03, 0x05, 0x06);
//   - the sensor-specific offsets of ipmiCritical (event type 0x6F):
//     processor IERR, thermal trip, FRB and machine-check failures;
//     power supply failure or configuration error; power unit failure;
//     memory uncorrectable ECC, parity, scrub failure, device disabled,
//     configuration error, critical overtemperature; drive fault; POST
//     (system firmware) error; bus timeouts, PCI PERR/SERR, bus
//     uncorrectable and fatal errors, fatal NMI; chipset thermal trip.
//
// Warnings are the lesser threshold crossings and predictive failures;
// an OS stop (kernel panic) is a software event, a warning too.
func ClassifyIPMIRecord(rec [16]byte) (Severity, string) {
	if rec[2] != 0x02 {
		return "", fmt.Sprintf("OEM record type 0x%02X", rec[2])
	}
	sensorType, evType := rec[10], rec[12]
	deassert := evType&0x80 != 0
	evType &= 0x7f
	offset := rec[13] & 0x0f
	what := fmt.Sprintf("sensor type 0x%02X, event type 0x%02X, offset 0x%X", sensorType, evType, offset)
	if deassert {
		return SeverityOK, what + ", deasserted"
	}
	switch evType {
	case 0x01: // threshold
		switch offset {
		case 0x02, 0x04, 0x09, 0x0B:
			return SeverityCritical, what + " (critical threshold crossed)"
		case 0x00, 0x07:
			return SeverityWarning, what + " (non-critical threshold crossed)"
		}
		return SeverityOK, what
	case 0x07: // generic severity
		switch offset {
		case 0x02, 0x03, 0x05, 0x06:
			return SeverityCritical, what + " (entered critical state)"
		case 0x01, 0x04:
			return SeverityWarning, what
		}
		return SeverityOK, what
	case 0x6f: // sensor-specific
		if slices.Contains(ipmiCritical[sensorType], offset) {
			return SeverityCritical, what
		}
		if slices.Contains(ipmiWarning[sensorType], offset) {
			return SeverityWarning, what
		}
	}
	return SeverityOK, what
}

// ipmiCritical and ipmiWarning are the sensor-specific offsets (IPMI v2.0
// table 42-3) by sensor type.
var (
	ipmiCritical = map[byte][]byte{
		0x07: {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0B}, // processor: IERR, thermal trip, FRB1-3, config error, uncorrectable CPU-complex error, uncorrectable machine check
		0x08: {0x01, 0x06},                                     // power supply: failure detected, configuration error
		0x09: {0x05, 0x06},                                     // power unit: soft power control failure, failure detected
		0x0C: {0x01, 0x02, 0x03, 0x04, 0x07, 0x0A},             // memory: uncorrectable ECC, parity, scrub failed, device disabled, configuration error, critical overtemperature
		0x0D: {0x01},                                           // drive slot: drive fault
		0x0F: {0x00},                                           // system firmware progress: POST error
		0x13: {0x01, 0x02, 0x04, 0x05, 0x08, 0x09, 0x0A},       // critical interrupt: bus timeout, I/O channel check, PCI PERR, PCI SERR, bus uncorrectable, fatal NMI, bus fatal
		0x19: {0x00, 0x01},                                     // chipset: soft power control failure, thermal trip
	}
	ipmiWarning = map[byte][]byte{
		0x07: {0x0A},             // processor throttled
		0x08: {0x02, 0x03, 0x04}, // power supply: predictive failure, input lost
		0x0C: {0x00, 0x05},       // memory: correctable ECC, correctable ECC logging limit
		0x0D: {0x02},             // drive slot: predictive failure
		0x20: {0x00, 0x01},       // OS stop: critical stop during load, run-time critical stop
	}
)
