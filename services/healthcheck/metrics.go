package healthcheck

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the health check's: builds by state and kind, the steps builds
// shared, and the progress of the runs going on.
type Metrics struct {
	builds   *prometheus.CounterVec
	retries  *prometheus.CounterVec
	steps    *prometheus.CounterVec
	progress *prometheus.GaugeVec
	eta      *prometheus.GaugeVec
}

// NewMetrics registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_healthcheck_builds_total",
			Help: "Builds of the health check that ended, by switch, state and failure kind.",
		}, []string{"switch", "state", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_healthcheck_retries_total",
			Help: "Builds tried again after a failure of the infrastructure, by kind.",
		}, []string{"kind"}),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_healthcheck_steps_total",
			Help: "Builder steps of the health check's builds, by result: built, or cached (shared with an earlier build).",
		}, []string{"result"}),
		progress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_healthcheck_run_results",
			Help: "Results of the runs going on, by run and state (pending: not built yet).",
		}, []string{"run", "state"}),
		eta: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kiln_healthcheck_run_eta_seconds",
			Help: "When a run going on should end (Unix time), at its rate so far.",
		}, []string{"run"}),
	}
	if reg != nil {
		reg.MustRegister(m.builds, m.retries, m.steps, m.progress, m.eta)
	}
	return m
}

func (m *Metrics) built(sw string, v Verdict) {
	m.builds.WithLabelValues(sw, string(v.State), string(v.Kind)).Inc()
}

func (m *Metrics) stepsOf(s Scan) {
	m.steps.WithLabelValues("built").Add(float64(s.Built))
	m.steps.WithLabelValues("cached").Add(float64(s.Cached))
}

func (m *Metrics) retried(k Kind) { m.retries.WithLabelValues(string(k)).Inc() }

// runProgress shows a run's counts, or forgets them once it is finished.
func (m *Metrics) runProgress(r *Run) {
	id := strconv.FormatInt(r.ID, 10)
	if r.Status.Finished() {
		for _, st := range States {
			m.progress.DeleteLabelValues(id, string(st))
		}
		m.eta.DeleteLabelValues(id)
		return
	}
	for _, st := range States {
		m.progress.WithLabelValues(id, string(st)).Set(float64(r.Counts[st]))
	}
	if !r.Progress.ETA.IsZero() {
		m.eta.WithLabelValues(id).Set(float64(r.Progress.ETA.Unix()))
	}
}
