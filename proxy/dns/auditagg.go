package dns

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// aggKey is what one aggregated audit line stands for.
type aggKey struct {
	container string // policy.Container.Key()
	action    string // audit.ActionDNS*
	name      string
	qtype     string
	dst       string // the address left out (drop-record)
	reason    string
}

type aggVal struct {
	c     policy.Container
	count int64
}

// aggregator counts repeated DNS events and writes one audit line per
// distinct event when flushed. Memory is bounded by max distinct events: a
// new one beyond it writes everything pending first, so nothing is lost and
// nothing grows.
type aggregator struct {
	sink audit.Sink
	now  func() time.Time
	max  int

	mu sync.Mutex
	m  map[aggKey]*aggVal
}

func newAggregator(sink audit.Sink, now func() time.Time, max int) *aggregator {
	return &aggregator{sink: sink, now: now, max: max, m: map[aggKey]*aggVal{}}
}

// add counts one event of container c.
func (a *aggregator) add(c policy.Container, k aggKey) {
	k.container = c.Key()
	a.mu.Lock()
	if v, ok := a.m[k]; ok {
		v.count++
		a.mu.Unlock()
		return
	}
	var full map[aggKey]*aggVal
	if len(a.m) >= a.max {
		full, a.m = a.m, map[aggKey]*aggVal{}
	}
	a.m[k] = &aggVal{c: c, count: 1}
	a.mu.Unlock()
	a.write(full)
}

// flush writes and forgets the pending lines of one container (by key), or
// of all when containerKey is "".
func (a *aggregator) flush(containerKey string) {
	a.mu.Lock()
	var out map[aggKey]*aggVal
	if containerKey == "" {
		out, a.m = a.m, map[aggKey]*aggVal{}
	} else {
		for k, v := range a.m {
			if k.container == containerKey {
				if out == nil {
					out = map[aggKey]*aggVal{}
				}
				out[k] = v
				delete(a.m, k)
			}
		}
	}
	a.mu.Unlock()
	a.write(out)
}

// write logs lines in a stable order (container, action, name, type, ...).
func (a *aggregator) write(m map[aggKey]*aggVal) {
	if len(m) == 0 {
		return
	}
	keys := make([]aggKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y aggKey) int {
		return cmp.Or(cmp.Compare(x.container, y.container), cmp.Compare(x.action, y.action),
			cmp.Compare(x.name, y.name), cmp.Compare(x.qtype, y.qtype), cmp.Compare(x.dst, y.dst), cmp.Compare(x.reason, y.reason))
	})
	now := a.now()
	for _, k := range keys {
		v := m[k]
		a.sink.Log(audit.Entry{
			Time:        now,
			Event:       audit.EventDNS,
			Container:   v.c.Name,
			ContainerID: v.c.ID,
			Runtime:     v.c.Runtime,
			Labels:      v.c.Labels,
			Host:        k.name,
			QType:       k.qtype,
			Dst:         k.dst,
			Proto:       audit.ProtoDNS,
			Action:      k.action,
			Reason:      k.reason,
			Count:       v.count,
		})
	}
}
