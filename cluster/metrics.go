package cluster

import "github.com/prometheus/client_golang/prometheus"

type schedMetrics struct {
	submitted  *prometheus.CounterVec
	dispatched *prometheus.CounterVec
	finished   *prometheus.CounterVec
	refused    *prometheus.CounterVec
	ignored    prometheus.Counter
	wait       *prometheus.HistogramVec
	queued     *prometheus.GaugeVec
	running    *prometheus.GaugeVec
	workers    *prometheus.GaugeVec
	affinity   *prometheus.GaugeVec
}

func newSchedMetrics(reg prometheus.Registerer) *schedMetrics {
	m := &schedMetrics{
		submitted:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_jobs_submitted_total", Help: "Jobs submitted, per pool."}, []string{"pool"}),
		dispatched: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_jobs_dispatched_total", Help: "Runs started on workers, per pool."}, []string{"pool"}),
		finished:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_jobs_finished_total", Help: "Jobs ended, per pool and outcome."}, []string{"pool", "outcome"}),
		refused:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_requests_refused_total", Help: "Requests refused (malformed, unknown pool, wrong token …), per kind."}, []string{"kind"}),
		ignored:    prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_fleet_completions_ignored_total", Help: "Late or duplicate completions ignored."}),
		wait:       prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_fleet_queue_wait_seconds", Help: "Time from submission to start.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 12)}, []string{"pool"}),
		queued:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_fleet_queue_jobs", Help: "Jobs waiting, per pool."}, []string{"pool"}),
		running:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_fleet_running_jobs", Help: "Jobs running, per pool."}, []string{"pool"}),
		workers:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_fleet_workers", Help: "Workers connected and usable, per pool."}, []string{"pool"}),
		affinity:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kiln_fleet_affinity_hit_ratio", Help: "Share of hinted jobs placed on a worker holding the hint."}, []string{"pool"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.submitted, m.dispatched, m.finished, m.refused, m.ignored, m.wait, m.queued, m.running, m.workers, m.affinity} {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *schedMetrics) observe(c *core) {
	for _, p := range c.poolInfos() {
		m.queued.WithLabelValues(p.Name).Set(float64(p.Queued))
		m.running.WithLabelValues(p.Name).Set(float64(p.Running))
		m.workers.WithLabelValues(p.Name).Set(float64(p.Active))
		m.affinity.WithLabelValues(p.Name).Set(p.AffinityHit)
	}
}

type workerMetrics struct {
	running      prometheus.Gauge
	healthy      prometheus.Gauge
	finished     *prometheus.CounterVec
	duration     prometheus.Histogram
	sourceCache  *prometheus.CounterVec
	beatFailures prometheus.Counter
	pruned       prometheus.Counter
}

func newWorkerMetrics(reg prometheus.Registerer, name string) *workerMetrics {
	l := prometheus.Labels{"worker": name}
	m := &workerMetrics{
		running:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_fleet_worker_running_jobs", Help: "Jobs running on this worker.", ConstLabels: l}),
		healthy:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_fleet_worker_healthy", Help: "1 when the builder health check passes.", ConstLabels: l}),
		finished:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_worker_jobs_total", Help: "Runs ended on this worker, per outcome.", ConstLabels: l}, []string{"outcome"}),
		duration:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kiln_fleet_worker_job_duration_seconds", Help: "Run durations.", ConstLabels: l, Buckets: prometheus.ExponentialBuckets(0.1, 3, 12)}),
		sourceCache:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_fleet_worker_source_cache_total", Help: "Source tree look-ups, per result (hit, miss).", ConstLabels: l}, []string{"result"}),
		beatFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_fleet_worker_heartbeat_failures_total", Help: "Heartbeats the scheduler did not answer.", ConstLabels: l}),
		pruned:       prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_fleet_worker_sources_pruned_total", Help: "Source trees removed from the cache.", ConstLabels: l}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.running, m.healthy, m.finished, m.duration, m.sourceCache, m.beatFailures, m.pruned} {
			_ = reg.Register(c)
		}
	}
	return m
}
