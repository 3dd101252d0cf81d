package proxy

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawd-dev/clawd/proxy/usage"
)

type metrics struct {
	decisions      *prometheus.CounterVec
	active         prometheus.Gauge
	held           prometheus.Gauge
	upstreamErrors prometheus.Counter
	untrusted      *prometheus.CounterVec
	buffered       prometheus.Gauge
	bufferRefused  *prometheus.CounterVec

	// LLM budgets (issue 16, budget): by budget ("set/rule") only; the
	// per-container figures are the usage collector's.
	budgetTokens *prometheus.CounterVec
	budgetDenied *prometheus.CounterVec
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
		budgetTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_budget_tokens_total",
			Help: "LLM tokens charged to budgets, by budget (set/rule).",
		}, []string{"budget"}),
		budgetDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_budget_denied_total",
			Help: "Requests answered 429 budget_exhausted, by budget (set/rule).",
		}, []string{"budget"}),
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
	m.budgetTokens = register(reg, m.budgetTokens, &err)
	m.budgetDenied = register(reg, m.budgetDenied, &err)
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

// usageCollector exports the budget ledger's live windows at scrape time:
// one series per container and budget with a window in progress, so
// containers and windows that are gone leave no stale series (cardinality
// is attached containers × budget rules).
type usageCollector struct {
	l   *usage.Ledger
	now func() time.Time
}

var (
	budgetUsedDesc = prometheus.NewDesc("clawd_budget_tokens_used",
		"LLM tokens a container spent of a budget in its current window.", []string{"container", "budget"}, nil)
	budgetLimitDesc = prometheus.NewDesc("clawd_budget_tokens_limit",
		"The token limit of a budget per window (0: none).", []string{"container", "budget"}, nil)
	budgetReservedDesc = prometheus.NewDesc("clawd_budget_tokens_reserved",
		"LLM tokens the requests in flight reserved of a budget (their estimates).", []string{"container", "budget"}, nil)
	budgetReqDesc = prometheus.NewDesc("clawd_budget_requests_used",
		"Requests a container made under a budget in its current window.", []string{"container", "budget"}, nil)
)

func (c usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetUsedDesc
	ch <- budgetLimitDesc
	ch <- budgetReqDesc
	ch <- budgetReservedDesc
}

func (c usageCollector) Collect(ch chan<- prometheus.Metric) {
	list := c.l.Usage("", c.now())
	names := map[[2]string]int{}
	for _, u := range list {
		names[[2]string{u.Name, u.Budget}]++
	}
	for _, u := range list {
		name := u.Name
		if name == "" || names[[2]string{u.Name, u.Budget}] > 1 {
			name = u.Container // two containers of one name: the key tells them apart
		}
		ch <- prometheus.MustNewConstMetric(budgetUsedDesc, prometheus.GaugeValue, float64(u.Tokens), name, u.Budget)
		ch <- prometheus.MustNewConstMetric(budgetLimitDesc, prometheus.GaugeValue, float64(u.TokenLimit), name, u.Budget)
		ch <- prometheus.MustNewConstMetric(budgetReqDesc, prometheus.GaugeValue, float64(u.Requests), name, u.Budget)
		ch <- prometheus.MustNewConstMetric(budgetReservedDesc, prometheus.GaugeValue, float64(u.Reserved), name, u.Budget)
	}
}

// registerUsage registers the ledger's collector (once per registry: a
// second Server on the same registry keeps the first's).
func registerUsage(reg prometheus.Registerer, l *usage.Ledger, now func() time.Time) error {
	if reg == nil {
		return nil
	}
	var err error
	register(reg, prometheus.Collector(usageCollector{l: l, now: now}), &err)
	return err
}
