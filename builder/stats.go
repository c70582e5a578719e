package builder

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts the steps a builder has handled since it was made.
type Stats struct {
	// Run is the number of steps executed (successfully or not).
	Run int64
	// Cached is the number of steps served from the store.
	Cached int64
	// Failed is the number of executed steps that failed.
	Failed int64
}

type counters struct{ run, cached, failed atomic.Int64 }

// Stats returns the builder's step counts.
func (b *Builder) Stats() Stats {
	return Stats{Run: b.counts.run.Load(), Cached: b.counts.cached.Load(), Failed: b.counts.failed.Load()}
}

var stepsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kiln_builder_steps_total",
	Help: "Build steps handled by the builder, by result (run, cached, failed).",
}, []string{"result"})

var stepSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "kiln_builder_step_duration_seconds",
	Help:    "Time taken by executed build steps.",
	Buckets: prometheus.ExponentialBuckets(0.05, 3, 10),
})

// Collectors are the builder's Prometheus metrics, for registration by the program.
func Collectors() []prometheus.Collector { return []prometheus.Collector{stepsTotal, stepSeconds} }
