package current

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg          *prometheus.Registry
	nodes        prometheus.Gauge
	entries      prometheus.Gauge
	running      prometheus.Gauge
	confirmLevel prometheus.Gauge
	passSeconds  prometheus.Histogram
	jobsStarted  *prometheus.CounterVec
	jobsFinished *prometheus.CounterVec
	retries      *prometheus.CounterVec
	logsDeleted  prometheus.Counter
}

func newMetrics(e *Engine) *metrics {
	m := &metrics{
		reg:          prometheus.NewRegistry(),
		nodes:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_engine_nodes", Help: "Nodes in the live pipeline graph."}),
		entries:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_engine_cache_entries", Help: "Cached operation keys held in memory."}),
		running:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_engine_jobs_running", Help: "Jobs running now."}),
		confirmLevel: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_engine_confirm_level", Help: "Confirm level (1 harmless .. 5 dangerous)."}),
		passSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kiln_engine_pass_duration_seconds", Help: "Duration of evaluation passes.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		jobsStarted:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_engine_jobs_started_total", Help: "Jobs started."}, []string{"op", "lane"}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_engine_jobs_finished_total", Help: "Jobs finished."}, []string{"op", "state", "failure_kind"}),
		retries:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_engine_job_retries_total", Help: "Retries after infrastructure failures."}, []string{"op", "failure_kind"}),
		logsDeleted:  prometheus.NewCounter(prometheus.CounterOpts{Name: "kiln_engine_logs_deleted_total", Help: "Job logs deleted by retention."}),
	}
	m.confirmLevel.Set(float64(e.cfg.ConfirmLevel))
	m.reg.MustRegister(poolCollector{e})
	m.reg.MustRegister(m.nodes, m.entries, m.running, m.confirmLevel, m.passSeconds, m.jobsStarted, m.jobsFinished, m.retries, m.logsDeleted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kiln_engine_jobs_active", Help: "Jobs ready, waiting or running."}, func() float64 {
			e.jmu.Lock()
			defer e.jmu.Unlock()
			return float64(len(e.jobs))
		}))
	return m
}

var (
	poolSlotsDesc   = prometheus.NewDesc("kiln_engine_pool_slots", "Slots of a pool.", []string{"pool"}, nil)
	poolInUseDesc   = prometheus.NewDesc("kiln_engine_pool_slots_in_use", "Slots of a pool in use.", []string{"pool"}, nil)
	poolWaitingDesc = prometheus.NewDesc("kiln_engine_pool_waiting_jobs", "Jobs waiting for a slot, per lane.", []string{"pool", "lane"}, nil)
)

type poolCollector struct{ e *Engine }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- poolSlotsDesc
	ch <- poolInUseDesc
	ch <- poolWaitingDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.e.Status().Pools {
		ch <- prometheus.MustNewConstMetric(poolSlotsDesc, prometheus.GaugeValue, float64(p.Slots), p.Name)
		ch <- prometheus.MustNewConstMetric(poolInUseDesc, prometheus.GaugeValue, float64(p.InUse), p.Name)
		ch <- prometheus.MustNewConstMetric(poolWaitingDesc, prometheus.GaugeValue, float64(p.Urgent), p.Name, string(LaneUrgent))
		ch <- prometheus.MustNewConstMetric(poolWaitingDesc, prometheus.GaugeValue, float64(p.Background), p.Name, string(LaneBackground))
	}
}

// Metrics serves the engine's Prometheus metrics (kiln_engine_*).
func (e *Engine) Metrics() http.Handler {
	return promhttp.HandlerFor(e.metrics.reg, promhttp.HandlerOpts{})
}

// Registry is the Prometheus registry holding the engine's metrics, for serving them
// together with others.
func (e *Engine) Registry() *prometheus.Registry { return e.metrics.reg }
