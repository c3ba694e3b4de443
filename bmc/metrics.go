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
	dials    prometheus.Counter
	conns    prometheus.GaugeFunc
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
		// Beside operations_total, it shows whether connections are
		// reused: with reuse a burst of operations on one BMC opens one.
		dials: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "metalhall_bmc_connections_opened_total",
			Help: "TCP connections opened to Redfish BMCs (each with its TLS handshake on HTTPS); kept open for the next operation on the same BMC for a few seconds.",
		}),
		conns: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "metalhall_bmc_connections_open",
			Help: "TCP connections to Redfish BMCs open now, in use or idle.",
		}, func() float64 { return float64(c.conns.size()) }),
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
	c.m.dials.Describe(ch)
	c.m.conns.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.m.ops.Collect(ch)
	c.m.inFlight.Collect(ch)
	c.m.dials.Collect(ch)
	c.m.conns.Collect(ch)
}
