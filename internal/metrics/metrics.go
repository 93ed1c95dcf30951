// Package metrics defines build-fn's Prometheus metrics on a registry of
// its own, so that tests and several handlers in one process never clash.
package metrics

import (
	"net/http"
	"strconv"

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
	}
	m.registry.MustRegister(m.Inflight, m.BuildDuration, m.Requests, m.BytesReceived,
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
