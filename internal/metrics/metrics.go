// Package metrics defines build-fn's Prometheus metrics on a registry of
// its own, so that tests and several handlers in one process never clash.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are build-fn's collectors. Names are documented in README.md.
type Metrics struct {
	registry      *prometheus.Registry
	Inflight      prometheus.Gauge
	BuildDuration *prometheus.HistogramVec
	Requests      *prometheus.CounterVec
	BytesReceived prometheus.Counter
	// ReceiveDuration is the part of a build that is build-fn's own work
	// on the body (receiving it while verifying and indexing it), which
	// buildctl has no counterpart of.
	ReceiveDuration prometheus.Histogram
	QueueWait       prometheus.Histogram
}

// New registers the collectors.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		Inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fnbuilder_builds_inflight",
			Help: "Builds accepted and not yet finished.",
		}),
		BuildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fnbuilder_build_duration_seconds",
			Help:    "Time from an accepted request to the build's end, by final status.",
			Buckets: []float64{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800},
		}, []string{"status"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fnbuilder_http_requests_total",
			Help: "Build requests by HTTP status code.",
		}, []string{"code"}),
		BytesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fnbuilder_request_bytes_total",
			Help: "Request body bytes read by build-fn.",
		}),
		ReceiveDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fnbuilder_request_receive_seconds",
			Help:    "Time to receive a request body while verifying its signature, for bodies that verified.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		QueueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fnbuilder_queue_wait_seconds",
			Help:    "Time a build waited in the queue for its slot.",
			Buckets: []float64{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600},
		}),
	}
	m.registry.MustRegister(m.Inflight, m.BuildDuration, m.Requests, m.BytesReceived, m.ReceiveDuration, m.QueueWait,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// CountRequest records one answered request.
func (m *Metrics) CountRequest(code int) {
	m.Requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

// Queue is what the queue metrics read: how many builds wait, and a hook
// for each wait that ended in a slot.
type Queue interface {
	Queued() int
	ObserveWaits(func(time.Duration))
}

// WatchQueue reports q's length and wait times.
func (m *Metrics) WatchQueue(q Queue) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fnbuilder_queue_length",
		Help: "Builds waiting for a slot.",
	}, func() float64 { return float64(q.Queued()) }))
	q.ObserveWaits(func(d time.Duration) { m.QueueWait.Observe(d.Seconds()) })
}
