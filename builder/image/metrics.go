package image

import "github.com/prometheus/client_golang/prometheus"

var fetchesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "kiln_builder_image_fetches_total",
	Help: "Base images fetched into the store, by source (registry, tarball, import) and result (ok, error).",
}, []string{"source", "result"})

var unpackedBytes = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "kiln_builder_image_unpacked_bytes_total",
	Help: "Bytes of regular files written while unpacking base images.",
})

var fetchSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "kiln_builder_image_fetch_duration_seconds",
	Help:    "Time taken to fetch and unpack a base image, by source.",
	Buckets: prometheus.ExponentialBuckets(0.1, 3, 10),
}, []string{"source"})

// Collectors are the image store's Prometheus metrics, for registration by the program.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{fetchesTotal, unpackedBytes, fetchSeconds}
}
