package images

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// storeMetrics are the store's own counters: blob requests by status code
// across its blob handlers (promhttp's wrapper keeps sendfile), and imports
// in flight read at scrape time.
type storeMetrics struct {
	blobRequests *prometheus.CounterVec
	importing    prometheus.GaugeFunc
}

func newStoreMetrics(s *Store) *storeMetrics {
	return &storeMetrics{
		blobRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metalhall_image_blob_requests_total",
			Help: "Image blob and block map requests by status code.",
		}, []string{"code"}),
		importing: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "metalhall_image_imports_in_flight",
			Help: "Image imports streaming now.",
		}, func() float64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return float64(len(s.importing))
		}),
	}
}

func (m *storeMetrics) counted(h http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.blobRequests, h)
}

// Collector returns the store's metrics for a Prometheus registry.
func (s *Store) Collector() prometheus.Collector { return storeCollector{s.metrics} }

type storeCollector struct{ m *storeMetrics }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	c.m.blobRequests.Describe(ch)
	c.m.importing.Describe(ch)
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.blobRequests.Collect(ch)
	c.m.importing.Collect(ch)
}
