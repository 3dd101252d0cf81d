package usage

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// HOLE: round 1 says "what is in flight is persisted as spent (its
// reservation), so a daemon killed mid-stream forgets nothing". That holds
// for a Close (tested there), not for a kill: Admit schedules no write, so
// a request admitted while nothing else settles (an hour-long stream, a
// realtime session, the only request of a quiet agent) is on disk only if
// another change happened to be saved after it. Killed (SIGKILL, OOM,
// power loss) long after the admission, the daemon comes back with the
// reservation and the request count forgotten.
func TestAttackLedgerKillForgetsInFlight(t *testing.T) {
	path := filepath.Join(t.TempDir(), "budgets.json")
	l, err := Open(path, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Budget{ID: "default/llm", Tokens: 10000, Requests: 10, Per: 24 * time.Hour}
	k := Key{"c", b.ID}
	now := time.Now()
	l.Admit(k, "agent", b, 1000, now)
	l.Settle(k, b, 1000, true, 500, now) // a first request, written
	time.Sleep(5 * flushDelay)
	l.Admit(k, "agent", b, 8000, now) // a long stream, in flight
	time.Sleep(5 * flushDelay)        // far longer than a write takes
	// SIGKILL: no Close. The new daemon reads what is on disk.
	l2, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	u := l2.Usage("", now)
	if len(u) != 1 || u[0].Tokens < 500+8000 || u[0].Requests < 2 {
		t.Errorf("after a kill %s after the stream was admitted: %+v, want at least 8500 tokens (500 spent + 8000 reserved) and 2 requests", 5*flushDelay, u)
	}
	l.Close()
}
