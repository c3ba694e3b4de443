package provisioner

import "github.com/prometheus/client_golang/prometheus"

var (
	jobsRunningDesc  = prometheus.NewDesc("metalhall_jobs_running", "Jobs with a worker running them now.", nil, nil)
	imageStreamsDesc = prometheus.NewDesc("metalhall_jobs_image_streams", "Provision jobs running now, each streaming or about to stream an image (bounded by the engine's image-stream limit).", nil, nil)
	jobLimitDesc     = prometheus.NewDesc("metalhall_jobs_running_limit", "Jobs the engine runs at once at most.", nil, nil)
	heldRoundsDesc   = prometheus.NewDesc("metalhall_jobs_held_rounds_total", "Scheduling rounds that started no job because the service is on hold (a restored copy not yet resumed).", nil, nil)
	elsewhereDesc    = prometheus.NewDesc("metalhall_jobs_held_elsewhere", "Unfinished jobs this instance leaves to the other instance that holds them (several instances sharing the work).", nil, nil)
	claimsLostDesc   = prometheus.NewDesc("metalhall_jobs_claims_lost_total", "Times this instance lost its job claims (its session with etcd ended) and stopped every job it ran.", nil, nil)
)

// Collector returns the engine's scheduling gauges, read at scrape time
// from what the scheduler itself keeps.
func (e *Engine) Collector() prometheus.Collector { return engineCollector{e} }

type engineCollector struct{ e *Engine }

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsRunningDesc
	ch <- imageStreamsDesc
	ch <- jobLimitDesc
	ch <- heldRoundsDesc
	ch <- elsewhereDesc
	ch <- claimsLostDesc
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	c.e.mu.Lock()
	running, streams, elsewhere := len(c.e.running), c.e.streams, len(c.e.foreign)
	c.e.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(jobsRunningDesc, prometheus.GaugeValue, float64(running))
	ch <- prometheus.MustNewConstMetric(imageStreamsDesc, prometheus.GaugeValue, float64(streams))
	ch <- prometheus.MustNewConstMetric(jobLimitDesc, prometheus.GaugeValue, float64(c.e.cfg.MaxJobs))
	ch <- prometheus.MustNewConstMetric(heldRoundsDesc, prometheus.CounterValue, float64(c.e.heldRounds.Load()))
	ch <- prometheus.MustNewConstMetric(elsewhereDesc, prometheus.GaugeValue, float64(elsewhere))
	ch <- prometheus.MustNewConstMetric(claimsLostDesc, prometheus.CounterValue, float64(c.e.claimsLost.Load()))
}
