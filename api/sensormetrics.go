package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metalhall/metalhall/inventory"
)

// sensorCollector exports, at scrape time, the health the last power sync
// read from each machine's BMC. Labels are bounded by the hardware: one
// series per machine for the inlet, and per machine two kinds (fan, psu)
// by two states (ok, failed) — never one series per sensor name, which
// would grow with every vendor's naming.
type sensorCollector struct{ inv *inventory.Store }

var (
	inletDesc = prometheus.NewDesc("metalhall_machine_inlet_celsius",
		"A machine's inlet temperature as its BMC last reported it (machines whose BMC reports none are absent).",
		[]string{"machine"}, nil)
	healthSensorsDesc = prometheus.NewDesc("metalhall_machine_health_sensors",
		"A machine's fans and power supplies by state (ok, failed), as its BMC last reported them.",
		[]string{"machine", "kind", "state"}, nil)
	powerLimitDesc = prometheus.NewDesc("metalhall_machine_power_limit_watts",
		"The power cap of a machine's profile, where its BMC applied it.", []string{"machine"}, nil)
)

func (c *sensorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inletDesc
	ch <- healthSensorsDesc
	ch <- powerLimitDesc
}

func (c *sensorCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := c.inv.Machines(ctx, inventory.MachineFilter{})
	if err != nil {
		return
	}
	for i := range ms {
		m := &ms[i]
		if pl := m.PowerLimit; pl != nil && pl.State == "applied" {
			ch <- prometheus.MustNewConstMetric(powerLimitDesc, prometheus.GaugeValue, float64(pl.LimitW), m.Name)
		}
		s := m.BMCStatus.Sensors
		if s == nil {
			continue
		}
		if s.HasInlet {
			ch <- prometheus.MustNewConstMetric(inletDesc, prometheus.GaugeValue, s.InletC, m.Name)
		}
		for _, k := range []struct {
			kind    string
			all, ok int
		}{{"fan", s.Fans, s.FansOK}, {"psu", s.PSUs, s.PSUsOK}} {
			ch <- prometheus.MustNewConstMetric(healthSensorsDesc, prometheus.GaugeValue, float64(k.ok), m.Name, k.kind, "ok")
			ch <- prometheus.MustNewConstMetric(healthSensorsDesc, prometheus.GaugeValue, float64(k.all-k.ok), m.Name, k.kind, "failed")
		}
	}
}
