package proxy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	decisions      *prometheus.CounterVec
	active         prometheus.Gauge
	held           prometheus.Gauge
	upstreamErrors prometheus.Counter
	untrusted      *prometheus.CounterVec
	buffered       prometheus.Gauge
	bufferRefused  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_decisions_total",
			Help: "Proxy decisions by action and deciding rule.",
		}, []string{"action", "rule"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_active_connections",
			Help: "Connections the proxy is serving.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_held_requests",
			Help: "Requests and connections held for approval.",
		}),
		upstreamErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clawd_upstream_errors_total",
			Help: "Upstream dials or exchanges that failed.",
		}),
		untrusted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_tls_untrusted_total",
			Help: "Intercepted TLS handshakes the agent aborted on clawd's certificate (it does not trust clawd's CA), by container.",
		}, []string{"container"}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_buffered_body_bytes",
			Help: "Request-body bytes held in memory (approval holds, body conditions, decoding), counted against max-buffered-bytes.",
		}),
		bufferRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_buffered_body_refused_total",
			Help: "Requests refused because buffering their body would pass a memory budget, by the bound that was hit (container, global, request).",
		}, []string{"scope"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.decisions = register(reg, m.decisions, &err)
	m.active = register(reg, m.active, &err)
	m.held = register(reg, m.held, &err)
	m.upstreamErrors = register(reg, m.upstreamErrors, &err)
	m.untrusted = register(reg, m.untrusted, &err)
	m.buffered = register(reg, m.buffered, &err)
	m.bufferRefused = register(reg, m.bufferRefused, &err)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, reusing an identical collector already registered
// (a second Server on the same registry shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
