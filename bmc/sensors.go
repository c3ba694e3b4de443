package bmc

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
	"slices"
	"strings"
)

// Sensors is what a BMC reports about its machine's health and draw.
type Sensors struct {
	Temperatures []Temperature
	Fans         []Fan
	PSUs         []PSU
	// ConsumedWatts is what the machine draws now (Redfish PowerControl
	// PowerConsumedWatts); meaningful only when PowerMeasured.
	ConsumedWatts float64
	PowerMeasured bool
	// WattsUnsupported: the BMC offers no power reading (IPMI without
	// DCMI power management, as ipmi_sim).
	WattsUnsupported bool
}

// Temperature is one temperature sensor. Inlet marks the air intake.
type Temperature struct {
	Name    string
	Celsius float64
	Inlet   bool
	Health  string // OK, Warning, Critical, or empty when not reported
}

// Fan is one fan's reading.
type Fan struct {
	Name    string
	Reading int
	Units   string // RPM or Percent
	Health  string
}

// PSU is one power supply's state.
type PSU struct {
	Name   string
	State  string // Enabled, Absent, ...
	Health string
}

// Inlet is the inlet temperature, if the BMC reports one.
func (s Sensors) Inlet() (float64, bool) {
	for _, t := range s.Temperatures {
		if t.Inlet {
			return t.Celsius, true
		}
	}
	return 0, false
}

// Sensors reads temperatures, fans, power supplies and the consumed power
// of the machine's chassis: Redfish Thermal and Power; IPMI sensors (SDR)
// and DCMI power reading where the BMC offers it.
func (c *Controller) Sensors(ctx context.Context, ep Endpoint) (Sensors, error) {
	var out Sensors
	err := c.run(ctx, ep, "sensors", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		if ep.Protocol == IPMI {
			if c.cfg.registry != nil {
				return fmt.Errorf("sensors over %s: %w", protoName(ep.Protocol), errUnsupported)
			}
			out, err = c.ipmiSensors(ctx, ep)
			return err
		}
		out, err = s.redfishSensors(ctx)
		return err
	})
	return out, err
}

// redfishPowerAndSensors reads the driven system's power state and its
// chassis' sensors in one session. A BMC without Thermal or Power still
// gives the state.
func (s *session) redfishPowerAndSensors(ctx context.Context) (PowerState, Sensors, error) {
	gf, sys, err := s.gofishSystem(ctx)
	if err != nil {
		return PowerUnknown, Sensors{}, err
	}
	st := normalisePower(string(sys.PowerState))
	ch, err := systemChassis(gf, sys)
	if err != nil {
		return st, Sensors{}, nil
	}
	return st, chassisSensors(ch), nil
}

func (s *session) redfishSensors(ctx context.Context) (Sensors, error) {
	var out Sensors
	gf, sys, err := s.gofishSystem(ctx)
	if err != nil {
		return out, err
	}
	ch, err := systemChassis(gf, sys)
	if err != nil {
		return out, err
	}
	return chassisSensors(ch), nil
}

// chassisSensors reads a chassis' Thermal and Power resources; either may
// be missing.
func chassisSensors(ch *redfish.Chassis) Sensors {
	var out Sensors
	if th, err := ch.Thermal(); err == nil && th != nil {
		for _, t := range th.Temperatures {
			ctxName := string(t.PhysicalContext)
			out.Temperatures = append(out.Temperatures, Temperature{Name: t.Name, Celsius: float64(t.ReadingCelsius),
				Inlet:  strings.EqualFold(ctxName, "Intake") || strings.Contains(strings.ToLower(t.Name), "inlet"),
				Health: string(t.Status.Health)})
		}
		for _, f := range th.Fans {
			out.Fans = append(out.Fans, Fan{Name: f.Name, Reading: f.Reading, Units: string(f.ReadingUnits), Health: string(f.Status.Health)})
		}
	}
	if pw, err := ch.Power(); err == nil && pw != nil {
		for _, pc := range pw.PowerControl {
			out.ConsumedWatts += float64(pc.PowerConsumedWatts)
			out.PowerMeasured = true
		}
		for _, p := range pw.PowerSupplies {
			out.PSUs = append(out.PSUs, PSU{Name: p.Name, State: string(p.Status.State), Health: string(p.Status.Health)})
		}
	}
	return out
}

// systemChassis is the chassis the system links first: GPU servers list
// dozens (baseboards, trays, GPUs), each with its own sensors, so the
// machine's own is fetched directly rather than by listing them all.
func systemChassis(gf *gofish.APIClient, sys *redfish.ComputerSystem) (*redfish.Chassis, error) {
	var links struct {
		Links struct {
			Chassis []struct {
				ID string `json:"@odata.id"`
			}
		}
	}
	_ = json.Unmarshal(sys.RawData, &links)
	if len(links.Links.Chassis) > 0 && links.Links.Chassis[0].ID != "" {
		ch, err := redfish.GetChassis(gf, links.Links.Chassis[0].ID)
		if err != nil {
			return nil, fmt.Errorf("the system's chassis: %w", err)
		}
		return ch, nil
	}
	chassis, err := gf.Service.Chassis()
	if err != nil {
		return nil, fmt.Errorf("list chassis: %w", err)
	}
	if len(chassis) == 0 {
		return nil, fmt.Errorf("the BMC lists no chassis: %w", errUnsupported)
	}
	slices.SortFunc(chassis, func(a, b *redfish.Chassis) int { return cmpID(a.ID, b.ID) })
	return chassis[0], nil
}
