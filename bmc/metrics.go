package bmc

import (
	"errors"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Controller's own counters, registered by whoever runs
// it (Collector). Labels are bounded: the operation's verb (the Op without
// its argument), the protocol, and ok or the error kind.
type metrics struct {
	ops      *prometheus.CounterVec
	inFlight prometheus.GaugeFunc
}

func newMetrics(c *Controller) *metrics {
	return &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metalhall_bmc_operations_total",
			Help: "BMC operations by operation, protocol and result (ok or the error kind), retries included once.",
		}, []string{"op", "protocol", "result"}),
		inFlight: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "metalhall_bmc_operations_in_flight",
			Help: "BMC operations holding one of the controller's concurrency slots.",
		}, func() float64 { return float64(len(c.sem)) }),
	}
}

func (m *metrics) observe(op string, p Protocol, err error) {
	verb, _, _ := strings.Cut(op, " ")
	proto := string(p)
	if p != IPMI && p != Redfish {
		proto = "other"
	}
	result := "ok"
	if err != nil {
		result = "protocol"
		var e *Error
		if errors.As(err, &e) {
			result = kindLabel[e.Kind]
		}
	}
	m.ops.WithLabelValues(verb, proto, result).Inc()
}

var kindLabel = map[ErrorKind]string{
	KindProtocol: "protocol", KindUnreachable: "unreachable", KindAuth: "auth",
	KindUnsupported: "unsupported", KindTimeout: "timeout",
}

// Collector returns the Controller's metrics for a Prometheus registry.
func (c *Controller) Collector() prometheus.Collector { return collector{c.metrics} }

type collector struct{ m *metrics }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.m.ops.Describe(ch)
	c.m.inFlight.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.ops.Collect(ch)
	c.m.inFlight.Collect(ch)
}
