package bmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/redfish"
)

// PowerLimit is a power cap as the BMC reported it after it was set.
type PowerLimit struct {
	Watts float64
	// Via names the resource that holds it: "PowerControl" (the chassis'
	// Power resource, what most shipping BMCs serve), "Control" (the
	// chassis' Controls collection, Redfish 2020.4 and later) or "DCMI".
	Via string
}

// SetPowerLimit caps what the machine may draw and reads the cap back: on
// Redfish PowerControl[0].PowerLimit.LimitInWatts of the system's chassis,
// or, where the chassis has no PowerControl, the SetPoint of its Power
// Control resource (found through EnvironmentMetrics or Controls); on IPMI DCMI's power limit, activated. A BMC that
// offers neither is an error of kind Unsupported; one that reads back
// another limit than it accepted, of kind Protocol.
func (c *Controller) SetPowerLimit(ctx context.Context, ep Endpoint, watts int) (PowerLimit, error) {
	var out PowerLimit
	if watts <= 0 {
		return out, &Error{Kind: KindUnsupported, Address: ep.Address, Protocol: ep.Protocol, Op: "power-limit",
			Err: fmt.Errorf("power limit %d W: want a positive number of watts", watts)}
	}
	err := c.run(ctx, ep, "power-limit", c.cfg.OpTimeout, func(ctx context.Context, s *session) error {
		var err error
		if ep.Protocol == IPMI {
			if c.cfg.registry != nil {
				return fmt.Errorf("power limit over IPMI: %w", errUnsupported)
			}
			out, err = c.ipmiPowerLimit(ctx, ep, watts)
			return err
		}
		out, err = s.redfishPowerLimit(ctx, watts)
		return err
	})
	return out, err
}

func (s *session) redfishPowerLimit(ctx context.Context, watts int) (PowerLimit, error) {
	gf, sys, err := s.gofishSystem(ctx)
	if err != nil {
		return PowerLimit{}, err
	}
	ch, err := systemChassis(gf, sys)
	if err != nil {
		return PowerLimit{}, err
	}
	if pw, err := ch.Power(); err == nil && pw != nil && len(pw.PowerControl) > 0 {
		body := map[string]any{"PowerControl": []any{map[string]any{"PowerLimit": map[string]any{"LimitInWatts": watts}}}}
		if err := patch(gf, pw.ODataID, body); err != nil {
			return PowerLimit{}, fmt.Errorf("set PowerControl power limit: %w", err)
		}
		back, err := ch.Power()
		if err != nil || back == nil || len(back.PowerControl) == 0 {
			return PowerLimit{}, fmt.Errorf("read back the power limit: %w", errors.Join(err, errors.New("no PowerControl")))
		}
		got := float64(back.PowerControl[0].PowerLimit.LimitInWatts)
		return PowerLimit{Watts: got, Via: "PowerControl"}, checkLimit(s.ep, watts, got)
	}
	ctl, err := powerControl(gf, ch)
	if err != nil {
		return PowerLimit{}, err
	}
	if err := patch(gf, ctl, map[string]any{"SetPoint": watts, "ControlMode": "Automatic"}); err != nil {
		return PowerLimit{}, fmt.Errorf("set the Power control's SetPoint: %w", err)
	}
	var back struct{ SetPoint *float64 }
	if err := getJSON(gf, ctl, &back); err != nil {
		return PowerLimit{}, fmt.Errorf("read back the power limit: %w", err)
	}
	if back.SetPoint == nil {
		return PowerLimit{}, errors.New("the Power control reports no SetPoint after it was set")
	}
	return PowerLimit{Watts: *back.SetPoint, Via: "Control"}, checkLimit(s.ep, watts, *back.SetPoint)
}

// checkLimit: a BMC that accepted a limit and reports another answered
// wrongly, as a reverted boot override does.
func checkLimit(ep Endpoint, want int, got float64) error {
	if math.Abs(got-float64(want)) >= 1 {
		return &Error{Kind: KindProtocol, Address: ep.Address, Protocol: ep.Protocol,
			Err: fmt.Errorf("BMC accepted a power limit of %d W but reports %.0f W", want, got)}
	}
	return nil
}

// powerControl finds the chassis' Control of ControlType Power: the one
// its EnvironmentMetrics names as PowerLimitWatts' data source (how
// Redfish 2021 and later ties the chassis power limit to its control),
// else the first Power control of its Controls collection.
func powerControl(gf *gofish.APIClient, ch *redfish.Chassis) (string, error) {
	var links struct {
		Controls, EnvironmentMetrics struct {
			ID string `json:"@odata.id"`
		}
	}
	_ = json.Unmarshal(ch.RawData, &links)
	if links.EnvironmentMetrics.ID != "" {
		var em struct {
			PowerLimitWatts *struct{ DataSourceUri string }
		}
		if err := getJSON(gf, links.EnvironmentMetrics.ID, &em); err == nil && em.PowerLimitWatts != nil && em.PowerLimitWatts.DataSourceUri != "" {
			return em.PowerLimitWatts.DataSourceUri, nil
		}
	}
	if links.Controls.ID == "" {
		return "", fmt.Errorf("the chassis has neither PowerControl nor Controls: no power limit offered by this BMC: %w", errUnsupported)
	}
	var coll struct {
		Members []struct {
			ID string `json:"@odata.id"`
		}
	}
	if err := getJSON(gf, links.Controls.ID, &coll); err != nil {
		return "", fmt.Errorf("list the chassis' controls: %w", err)
	}
	for _, m := range coll.Members {
		var ctl struct{ ControlType string }
		if err := getJSON(gf, m.ID, &ctl); err == nil && ctl.ControlType == "Power" {
			return m.ID, nil
		}
	}
	return "", fmt.Errorf("the chassis lists no Power control: no power limit offered by this BMC: %w", errUnsupported)
}

func patch(gf *gofish.APIClient, uri string, body any) error {
	resp, err := gf.Patch(uri, body)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.Body.Close()
}

func getJSON(gf *gofish.APIClient, uri string, v any) error {
	resp, err := gf.Get(uri)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(v)
}

var dcmiLimit = regexp.MustCompile(`(?i)power limit:\s*([0-9.]+)\s*watts`)

// ipmiPowerLimit sets DCMI's power limit, activates it and reads it back.
func (c *Controller) ipmiPowerLimit(ctx context.Context, ep Endpoint, watts int) (PowerLimit, error) {
	unsupported := func(out string, err error) error {
		if dcmiUnsupported(out + " " + err.Error()) {
			return fmt.Errorf("DCMI power limit not offered by this BMC: %w", errUnsupported)
		}
		return err
	}
	if out, err := c.ipmitoolRun(ctx, ep, nil, "dcmi", "power", "set_limit", "limit", strconv.Itoa(watts)); err != nil {
		return PowerLimit{}, unsupported(out, err)
	}
	if out, err := c.ipmitoolRun(ctx, ep, nil, "dcmi", "power", "activate"); err != nil {
		return PowerLimit{}, unsupported(out, err)
	}
	out, err := c.ipmitoolRun(ctx, ep, nil, "dcmi", "power", "get_limit")
	if err != nil {
		return PowerLimit{}, unsupported(out, err)
	}
	m := dcmiLimit.FindStringSubmatch(out)
	if m == nil {
		return PowerLimit{}, fmt.Errorf("no power limit in `ipmitool dcmi power get_limit` output: %q", oneLine(out))
	}
	got, _ := strconv.ParseFloat(strings.TrimSpace(m[1]), 64)
	return PowerLimit{Watts: got, Via: "DCMI"}, checkLimit(ep, watts, got)
}
