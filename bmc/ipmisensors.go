package bmc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// IPMI sensors are read with `ipmitool -v sdr list`: one session walks the
// SDR repository and reads every sensor, and the verbose form names each
// sensor's type by its number (0x01 temperature, 0x04 fan, 0x08 power
// supply), which the short form does not. The draw comes from DCMI's
// power reading, which many BMCs (and ipmi_sim) do not offer.

// ipmiSensors reads temperatures, fans, PSUs and, where DCMI is offered,
// the consumed power.
func (c *Controller) ipmiSensors(ctx context.Context, ep Endpoint) (Sensors, error) {
	out, err := c.ipmitoolRun(ctx, ep, []string{"-v"}, "sdr", "list")
	if err != nil {
		return Sensors{}, fmt.Errorf("read sensors: %w", err)
	}
	s := parseIPMISDR(out)
	w, err := c.ipmiPowerReading(ctx, ep)
	switch {
	case err == nil:
		s.ConsumedWatts, s.PowerMeasured = w, true
	case errors.Is(err, errUnsupported):
		s.WattsUnsupported = true
	case ctx.Err() != nil:
		return s, err
	default:
		// The sensors were read; a failed power reading is logged, not
		// fatal: the next read tries again.
		c.log.Debug("dcmi power reading failed", "bmc", ep, "err", err)
	}
	return s, nil
}

var dcmiWatts = regexp.MustCompile(`(?i)instantaneous power reading:\s*([0-9.]+)\s*watts`)

// ipmiPowerReading is DCMI's instantaneous power reading, in watts; an
// error wrapping errUnsupported when the BMC does not speak DCMI.
func (c *Controller) ipmiPowerReading(ctx context.Context, ep Endpoint) (float64, error) {
	out, err := c.ipmitoolRun(ctx, ep, nil, "dcmi", "power", "reading")
	if err != nil {
		if dcmiUnsupported(out + " " + err.Error()) {
			return 0, fmt.Errorf("DCMI power reading not offered by this BMC: %w", errUnsupported)
		}
		return 0, err
	}
	m := dcmiWatts.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no power reading in `ipmitool dcmi power reading` output: %q", oneLine(out))
	}
	return strconv.ParseFloat(m[1], 64)
}

// dcmiUnsupported: ipmitool says "DCMI request failed because: Invalid
// command (c1)" when the BMC lacks the command (ipmi_sim), and "Invalid
// data field" or "not supported" on BMCs that have DCMI without power
// management.
func dcmiUnsupported(msg string) bool {
	msg = strings.ToLower(msg)
	for _, t := range []string{"invalid command", "not supported", "invalid data field", "error discovering platform capabilities"} {
		if strings.Contains(msg, t) {
			return true
		}
	}
	return false
}

var (
	sdrID      = regexp.MustCompile(`^Sensor ID\s*:\s*(.*?)\s*\(0x[0-9a-fA-F]+\)\s*$`)
	sdrType    = regexp.MustCompile(`\((0x[0-9a-fA-F]{2})\)\s*$`)
	sdrReading = regexp.MustCompile(`^([-0-9.]+)\s*(?:\(\+/-\s*[-0-9.]+\))?\s*(.*)$`)
)

type sdrRecord struct {
	name, entity, units, status string
	typ                         int64
	reading                     float64
	hasReading                  bool
	states                      []string
}

// parseIPMISDR turns `ipmitool -v sdr list` into Sensors: temperature
// (type 0x01), fan (0x04) and power supply (0x08) sensors; others are
// skipped.
func parseIPMISDR(out string) Sensors {
	var recs []sdrRecord
	var cur *sdrRecord
	inStates := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if m := sdrID.FindStringSubmatch(t); m != nil {
			recs = append(recs, sdrRecord{name: m[1], typ: -1})
			cur, inStates = &recs[len(recs)-1], false
			continue
		}
		if cur == nil || t == "" {
			continue
		}
		if strings.HasPrefix(t, "[") && inStates {
			cur.states = append(cur.states, strings.ToLower(strings.Trim(t, "[]")))
			continue
		}
		inStates = false
		k, v, ok := strings.Cut(t, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case strings.HasPrefix(k, "Sensor Type"):
			if m := sdrType.FindStringSubmatch(v); m != nil {
				cur.typ, _ = strconv.ParseInt(m[1], 0, 64)
			}
		case k == "Entity ID":
			cur.entity, _, _ = strings.Cut(v, " ")
		case k == "Sensor Reading":
			if m := sdrReading.FindStringSubmatch(v); m != nil {
				if f, err := strconv.ParseFloat(m[1], 64); err == nil {
					cur.reading, cur.hasReading, cur.units = f, true, strings.TrimSpace(m[2])
				}
			}
		case k == "Status":
			cur.status = strings.ToLower(v)
		case k == "States Asserted":
			inStates = true
		}
	}
	var s Sensors
	for _, r := range recs {
		switch r.typ {
		case 0x01:
			if !r.hasReading {
				continue
			}
			name := strings.ToLower(r.name)
			s.Temperatures = append(s.Temperatures, Temperature{Name: r.name, Celsius: r.reading,
				// Entity 55 (0x37) is the air inlet (IPMI v2.0 table 43-13).
				Inlet:  strings.HasPrefix(r.entity, "55.") || strings.Contains(name, "inlet") || strings.Contains(name, "ambient"),
				Health: thresholdHealth(r.status)})
		case 0x04:
			units := "RPM"
			if strings.Contains(strings.ToLower(r.units), "percent") {
				units = "Percent"
			}
			s.Fans = append(s.Fans, Fan{Name: r.name, Reading: int(math.Round(r.reading)), Units: units, Health: thresholdHealth(r.status)})
		case 0x08:
			p := PSU{Name: r.name, State: "Absent", Health: "OK"}
			for _, st := range r.states {
				switch {
				case st == "presence detected":
					p.State = "Enabled"
				case st == "failure detected", st == "config error":
					p.Health = "Critical"
				case p.Health == "OK" && (strings.Contains(st, "predictive") || strings.Contains(st, "ac lost") || strings.Contains(st, "out-of-range")):
					p.Health = "Warning"
				}
			}
			s.PSUs = append(s.PSUs, p)
		}
	}
	return s
}

// thresholdHealth maps ipmitool's threshold status to Redfish's health
// words: critical and non-recoverable are Critical, non-critical Warning.
func thresholdHealth(status string) string {
	switch {
	case status == "" || status == "ok":
		return "OK"
	case strings.Contains(status, "non-critical"):
		return "Warning"
	case strings.Contains(status, "critical"), strings.Contains(status, "non-recoverable"):
		return "Critical"
	}
	return ""
}
