package daemon

import (
	"sync/atomic"
	"time"
)

// DefaultMaxConnsPerContainer bounds the connections one attachment may
// have open through clawd at once (max-conns-per-container).
const DefaultMaxConnsPerContainer = 1024

// connLimit counts an attachment's open proxied connections, so one
// container cannot take every file descriptor and goroutine of the daemon
// (connection floods, slowloris). Over the limit a new connection is closed
// at once: the agent sees a reset, other containers are unaffected.
type connLimit struct {
	open     atomic.Int64
	lastWarn atomic.Int64 // unix nanos of the last "limit reached" log line
}

// admit takes a slot; max <= 0 means unlimited. Every admitted connection
// must be released.
func (l *connLimit) admit(max int) bool {
	if max <= 0 {
		l.open.Add(1)
		return true
	}
	for {
		n := l.open.Load()
		if n >= int64(max) {
			return false
		}
		if l.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (l *connLimit) release() { l.open.Add(-1) }

// shouldWarn rate-limits the log line about refused connections to one per
// interval.
func (l *connLimit) shouldWarn(now time.Time, interval time.Duration) bool {
	last := l.lastWarn.Load()
	if last != 0 && now.UnixNano()-last < int64(interval) {
		return false
	}
	return l.lastWarn.CompareAndSwap(last, now.UnixNano())
}
