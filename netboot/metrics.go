package netboot

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Each part of netboot counts where it works and describes its counters
// here; the service registers the collectors (CoreDNS style: the plugin
// owns its metrics, the server only mounts them). Every label takes a
// fixed, small set of values.

var (
	dhcpReceivedDesc = prometheus.NewDesc("metalhall_dhcp_packets_received_total", "DHCP packets received.", nil, nil)
	dhcpRepliedDesc  = prometheus.NewDesc("metalhall_dhcp_replies_total", "DHCP replies built (a failed send is also counted as dropped with reason send_error).", nil, nil)
	dhcpDroppedDesc  = prometheus.NewDesc("metalhall_dhcp_packets_dropped_total", "DHCP packets that got no reply, by reason.", []string{"reason"}, nil)
	tftpDesc         = prometheus.NewDesc("metalhall_tftp_requests_total", "TFTP read requests by result.", []string{"result"}, nil)
)

// Collector returns the DHCP and TFTP counters of s.
func (s *Server) Collector() prometheus.Collector { return serverCollector{s} }

type serverCollector struct{ s *Server }

func (c serverCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dhcpReceivedDesc
	ch <- dhcpRepliedDesc
	ch <- dhcpDroppedDesc
	ch <- tftpDesc
}

func (c serverCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	if c.s.dhcp != nil {
		ch <- prometheus.MustNewConstMetric(dhcpReceivedDesc, prometheus.CounterValue, float64(st.DHCP.Received))
		ch <- prometheus.MustNewConstMetric(dhcpRepliedDesc, prometheus.CounterValue, float64(st.DHCP.Replied))
		for _, reason := range dropNames {
			ch <- prometheus.MustNewConstMetric(dhcpDroppedDesc, prometheus.CounterValue, float64(st.DHCP.Dropped[reason]), reason)
		}
	}
	if c.s.tftp != nil {
		for _, r := range []struct {
			name string
			n    uint64
		}{{"served", st.TFTP.Served}, {"denied", st.TFTP.Denied}, {"busy", st.TFTP.Busy}, {"failed", st.TFTP.Failed}} {
			ch <- prometheus.MustNewConstMetric(tftpDesc, prometheus.CounterValue, float64(r.n), r.name)
		}
	}
}

var recorderDesc = prometheus.NewDesc("metalhall_boot_recorder_dropped_total",
	"Boot events and leases the recorder could not persist, by kind (event, lease: queue full; write_error: the store refused a batch).", []string{"kind"}, nil)

var recorderUnchangedDesc = prometheus.NewDesc("metalhall_boot_recorder_leases_unchanged_total",
	"Lease renewals not written again: same address, and the stored lease runs for more than half of the new one.", nil, nil)

// Collector returns the recorder's counters.
func (r *AsyncRecorder) Collector() prometheus.Collector { return recorderCollector{r} }

type recorderCollector struct{ r *AsyncRecorder }

func (c recorderCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- recorderDesc
	ch <- recorderUnchangedDesc
}

func (c recorderCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Stats()
	ch <- prometheus.MustNewConstMetric(recorderDesc, prometheus.CounterValue, float64(st.DroppedEvents), "event")
	ch <- prometheus.MustNewConstMetric(recorderDesc, prometheus.CounterValue, float64(st.DroppedLeases), "lease")
	ch <- prometheus.MustNewConstMetric(recorderDesc, prometheus.CounterValue, float64(st.WriteErrors), "write_error")
	ch <- prometheus.MustNewConstMetric(recorderUnchangedDesc, prometheus.CounterValue, float64(st.UnchangedLeases))
}

// HTTP boot requests are counted by what was asked for (script, ipxe,
// file) and the status code the handler answered with; promhttp's wrapper
// keeps the writer's sendfile path for kernels and initrds.
var httpBootKinds = [...]string{"script", "ipxe", "file"}

type httpMetrics struct {
	requests *prometheus.CounterVec
	byKind   [len(httpBootKinds)]http.Handler
}

func newHTTPMetrics(next http.Handler) *httpMetrics {
	m := &httpMetrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "metalhall_http_boot_requests_total",
		Help: "HTTP boot requests by kind (script, ipxe, file) and status code.",
	}, []string{"kind", "code"})}
	for i, kind := range httpBootKinds {
		m.byKind[i] = promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"kind": kind}), next)
	}
	return m
}

func (m *httpMetrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := 0
	switch {
	case strings.HasPrefix(r.URL.Path, "/boot/ipxe/"):
		kind = 1
	case strings.HasPrefix(r.URL.Path, "/boot/files/"):
		kind = 2
	}
	m.byKind[kind].ServeHTTP(w, r)
}

// Collector returns the HTTP boot request counters.
func (h *HTTPHandler) Collector() prometheus.Collector { return h.counted.requests }
