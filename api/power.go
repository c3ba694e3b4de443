package api

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metalhall/metalhall/inventory"
)

// powerCollector exports, at scrape time, each rack's measured draw as a
// share of its budget and whether the rack is over the service's alert
// share (the mark the power alert keeps on the rack). One series per rack
// with a budget: the labels are bounded by the inventory.
type powerCollector struct{ inv *inventory.Store }

var (
	rackShareDesc = prometheus.NewDesc("metalhall_rack_power_share",
		"A rack's measured draw (machines not known to be off) as a share of its power budget; racks without a budget have no series.",
		[]string{"rack"}, nil)
	rackOverDesc = prometheus.NewDesc("metalhall_rack_power_over_threshold",
		"1 while a rack's measured draw is over the service's power alert share of its budget (--power-alert-share), else 0.",
		[]string{"rack"}, nil)
)

func (c *powerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- rackShareDesc
	ch <- rackOverDesc
}

func (c *powerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	racks, err := c.inv.Racks(ctx, inventory.RackFilter{})
	if err != nil {
		return
	}
	draws, err := c.inv.RackPowers(ctx)
	if err != nil {
		return
	}
	for _, r := range racks {
		if r.BudgetW <= 0 {
			continue
		}
		over := 0.0
		if r.PowerAlert {
			over = 1
		}
		ch <- prometheus.MustNewConstMetric(rackShareDesc, prometheus.GaugeValue, float64(draws[r.Name].MeasuredW)/float64(r.BudgetW), r.Name)
		ch <- prometheus.MustNewConstMetric(rackOverDesc, prometheus.GaugeValue, over, r.Name)
	}
}
