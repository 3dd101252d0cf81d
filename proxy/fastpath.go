package proxy

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// decisionCounters caches the clawd_decisions_total children by label
// values: CounterVec.WithLabelValues hashes the labels, allocates and takes
// the vector's lock on every request otherwise. Rules are few (and the
// vector keeps every child it ever made anyway), so the cache is unbounded.
type decisionCounters struct {
	mu sync.RWMutex
	m  map[decisionKey]prometheus.Counter
}

type decisionKey struct{ action, rule string }

func (d *decisionCounters) get(vec *prometheus.CounterVec, action, rule string) prometheus.Counter {
	k := decisionKey{action, rule}
	d.mu.RLock()
	c, ok := d.m[k]
	d.mu.RUnlock()
	if ok {
		return c
	}
	c = vec.WithLabelValues(action, rule)
	d.mu.Lock()
	if d.m == nil {
		d.m = make(map[decisionKey]prometheus.Counter)
	}
	d.m[k] = c
	d.mu.Unlock()
	return c
}
