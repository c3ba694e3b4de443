package cluster

import "github.com/prometheus/client_golang/prometheus"

var (
	sessionUpDesc    = prometheus.NewDesc("metalhall_cluster_session_up", "1 while this instance holds a live session with etcd (it may claim jobs), 0 while it has none.", nil, nil)
	sessionsLostDesc = prometheus.NewDesc("metalhall_cluster_sessions_lost_total", "Sessions with etcd this instance lost (its lease expired or was revoked): each time, its jobs stopped and its claims went.", nil, nil)
	orphanedDesc     = prometheus.NewDesc("metalhall_cluster_owner_deletions_total", "Job owner keys deleted, seen through the watch (a job released, or an instance's lease gone).", nil, nil)
)

// Collector returns the member's session and watch counters, read at
// scrape time; it asks etcd nothing.
func (m *Member) Collector() prometheus.Collector { return memberCollector{m} }

type memberCollector struct{ m *Member }

func (c memberCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionUpDesc
	ch <- sessionsLostDesc
	ch <- orphanedDesc
}

func (c memberCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	up := 0.0
	if c.m.sess != nil {
		up = 1
	}
	c.m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(sessionUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(sessionsLostDesc, prometheus.CounterValue, float64(c.m.sessionsLost.Load()))
	ch <- prometheus.MustNewConstMetric(orphanedDesc, prometheus.CounterValue, float64(c.m.deletions.Load()))
}
