package images

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// storeMetrics are the store's own counters: blob requests by status code
// across its blob handlers (promhttp's wrapper keeps sendfile), and imports
// in flight read at scrape time.
//
// With peers, also the blobs fetched from them (on request or by the
// replicator) and those the catalogue names that are not here yet.
type storeMetrics struct {
	blobRequests *prometheus.CounterVec
	importing    prometheus.GaugeFunc

	fetches                *prometheus.CounterVec
	fetchDone, fetchFailed prometheus.Counter
	missing                prometheus.GaugeFunc
}

func newStoreMetrics(s *Store) *storeMetrics {
	m := &storeMetrics{
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
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "metalhall_image_blob_fetches_total",
			Help: "Image blobs fetched from other instances, by outcome (done: verified and stored; failed: no peer served the right bytes).",
		}, []string{"outcome"}),
		// Read at scrape time from the catalogue (in memory) and the blob
		// directory: right whether or not a replicator runs.
		missing: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "metalhall_image_blobs_missing",
			Help: "Image blobs the catalogue names that are not on this instance (-1: the catalogue could not be read).",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			miss, _, err := s.missingBlobs(ctx)
			if err != nil {
				return -1
			}
			return float64(len(miss))
		}),
	}
	// Both outcomes show from the start, at zero.
	m.fetchDone, m.fetchFailed = m.fetches.WithLabelValues("done"), m.fetches.WithLabelValues("failed")
	return m
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
	c.m.fetches.Describe(ch)
	c.m.missing.Describe(ch)
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.blobRequests.Collect(ch)
	c.m.importing.Collect(ch)
	c.m.fetches.Collect(ch)
	c.m.missing.Collect(ch)
}
