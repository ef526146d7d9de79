package lb

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the balancer's Prometheus series. Every series carries the
// service and published port; per-endpoint series also the endpoint
// address. Series of endpoints that leave a route are deleted.
type metrics struct {
	conns     *prometheus.CounterVec
	reqs      *prometheus.CounterVec
	errs      *prometheus.CounterVec
	retries   *prometheus.CounterVec
	ejections *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	active    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_lb_connections_total",
			Help: "Client connections accepted (endpoint \"\") and connections opened to each endpoint (L4).",
		}, []string{"service", "port", "endpoint"}),
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_lb_requests_total",
			Help: "HTTP requests answered by each endpoint, by status class.",
		}, []string{"service", "port", "endpoint", "code"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_lb_errors_total",
			Help: "Failures: per endpoint by kind (refused, timeout, 5xx, other); endpoint \"\" for connections and requests that failed for good (no_endpoint, failed).",
		}, []string{"service", "port", "endpoint", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_lb_retries_total",
			Help: "Connects and requests retried on another endpoint.",
		}, []string{"service", "port"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_lb_ejections_total",
			Help: "Times passive outlier detection ejected an endpoint.",
		}, []string{"service", "port", "endpoint"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "shoal_lb_latency_seconds",
			Help:    "Time to connect (L4) or to the response headers (L7), per endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"service", "port", "endpoint"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_lb_active",
			Help: "Connections (L4) or requests (L7) in flight per endpoint.",
		}, []string{"service", "port", "endpoint"}),
	}
	if reg != nil {
		reg.MustRegister(m.conns, m.reqs, m.errs, m.retries, m.ejections, m.latency, m.active)
	}
	return m
}

// endpointMetrics are one endpoint's series, resolved once.
type endpointMetrics struct {
	conns     prometheus.Counter
	ejections prometheus.Counter
	errKinds  [4]prometheus.Counter // by failKind
	codes     [6]prometheus.Counter // 1xx..5xx, other
	latency   prometheus.Observer
	active    prometheus.Gauge
}

func (m *metrics) endpoint(service string, port int, addr string) *endpointMetrics {
	p := strconv.Itoa(port)
	em := &endpointMetrics{
		conns:     m.conns.WithLabelValues(service, p, addr),
		ejections: m.ejections.WithLabelValues(service, p, addr),
		latency:   m.latency.WithLabelValues(service, p, addr),
		active:    m.active.WithLabelValues(service, p, addr),
	}
	for k := range em.errKinds {
		em.errKinds[k] = m.errs.WithLabelValues(service, p, addr, failKind(k).String())
	}
	for i, c := range []string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"} {
		em.codes[i] = m.reqs.WithLabelValues(service, p, addr, c)
	}
	return em
}

func (em *endpointMetrics) errors(k failKind) prometheus.Counter { return em.errKinds[k] }

func (em *endpointMetrics) code(status int) prometheus.Counter {
	if c := status / 100; c >= 1 && c <= 5 {
		return em.codes[c-1]
	}
	return em.codes[5]
}

// forget deletes an endpoint's series.
func (m *metrics) forget(service string, port int, addr string) {
	l := prometheus.Labels{"service": service, "port": strconv.Itoa(port), "endpoint": addr}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.conns, m.reqs, m.errs, m.ejections, m.latency, m.active} {
		v.DeletePartialMatch(l)
	}
}

// forgetRoute deletes every series of a service's published port.
func (m *metrics) forgetRoute(service string, port int) {
	l := prometheus.Labels{"service": service, "port": strconv.Itoa(port)}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.conns, m.reqs, m.errs, m.retries, m.ejections, m.latency, m.active} {
		v.DeletePartialMatch(l)
	}
}

// routeMetrics are a listener's own series.
type routeMetrics struct {
	accepted   prometheus.Counter
	retries    prometheus.Counter
	noEndpoint prometheus.Counter
	failed     prometheus.Counter
}

func (m *metrics) route(service string, port int) *routeMetrics {
	p := strconv.Itoa(port)
	return &routeMetrics{
		accepted:   m.conns.WithLabelValues(service, p, ""),
		retries:    m.retries.WithLabelValues(service, p),
		noEndpoint: m.errs.WithLabelValues(service, p, "", "no_endpoint"),
		failed:     m.errs.WithLabelValues(service, p, "", "failed"),
	}
}
