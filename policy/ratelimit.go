package policy

import (
	"fmt"
	"sync"
	"time"
)

// rateSpec is "n requests per per", e.g. 10/minute.
type rateSpec struct {
	n   int
	per time.Duration
}

func unitName(per time.Duration) string {
	switch per {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	return per.String()
}

func (r rateSpec) String() string { return fmt.Sprintf("%d/%s", r.n, unitName(r.per)) }

// limitKey identifies one bucket. The rate is part of the key so editing a
// rule's limit starts fresh buckets instead of reinterpreting old state.
type limitKey struct {
	set, rule string
	n         int
	per       time.Duration
	who       string
}

func limiterID(c Container) string {
	if c.ID == "" {
		return c.Key() + "|" + c.Name
	}
	return c.Key()
}

// limiter implements per-container, per-rule limits with GCRA (a token
// bucket kept as one timestamp): bursts of up to n, then one every per/n.
// Integer arithmetic keeps Retry-After exact for a given clock.
type limiter struct {
	mu        sync.Mutex
	tat       map[limitKey]time.Time // theoretical arrival time per bucket
	nextPrune int
}

func newLimiter() *limiter {
	return &limiter{tat: map[limitKey]time.Time{}, nextPrune: 1024}
}

// take spends one request from the bucket. When the bucket is empty it
// returns false and how long until a request would be accepted.
func (l *limiter) take(k limitKey, spec rateSpec, now time.Time) (bool, time.Duration) {
	interval := spec.per / time.Duration(spec.n)
	if interval <= 0 {
		interval = 1
	}
	burst := interval * time.Duration(spec.n-1)
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[k]
	if !ok || tat.Before(now) {
		tat = now
	}
	if wait := tat.Sub(now) - burst; wait > 0 {
		return false, wait
	}
	l.tat[k] = tat.Add(interval)
	if !ok && len(l.tat) >= l.nextPrune {
		l.prune(now)
	}
	return true, 0
}

// prune drops buckets that have refilled completely: they hold no state a
// fresh bucket would not. Run when the map doubles, so it is amortized O(1).
func (l *limiter) prune(now time.Time) {
	for k, t := range l.tat {
		if !t.After(now) {
			delete(l.tat, k)
		}
	}
	l.nextPrune = 2*len(l.tat) + 1024
}
