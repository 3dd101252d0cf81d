package approval

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	pending      prometheus.Gauge
	holds        prometheus.Gauge
	grants       prometheus.Gauge
	requests     *prometheus.CounterVec
	decided      *prometheus.CounterVec
	notifyErrors *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_approvals_pending", Help: "Approvals waiting for a human.",
		}),
		holds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_approval_holds", Help: "Requests held waiting for an approval (identical requests share one approval).",
		}),
		grants: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_approval_grants", Help: "Active time-limited grants.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_approval_requests_total", Help: "Requests that needed approval, by how they entered (held, granted, limit).",
		}, []string{"result"}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_approvals_decided_total", Help: "Approvals ended, by status.",
		}, []string{"status"}),
		notifyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_approval_notify_errors_total", Help: "Failed notifications and card updates, by notifier.",
		}, []string{"notifier"}),
	}
	return m
}

// register registers all collectors on reg (nil = none), undoing partial
// registration on error.
func (m *metrics) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{m.pending, m.holds, m.grants, m.requests, m.decided, m.notifyErrors}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}
