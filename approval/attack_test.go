package approval

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// A grant's end is a revocation by the clock: the connections and streams
// it let through (a splice approved "for 10 minutes") must be re-decided
// when it expires. Only RevokeGrant runs the OnRevoke hooks, so a spliced
// connection granted for a minute stays open for as long as the agent
// keeps it, until some unrelated reload or revocation happens.
func TestAttackGrantExpiryIsNotARevocation(t *testing.T) {
	e := newEnv(t, nil)
	var hooks atomic.Int64
	e.m.OnRevoke(func() { hooks.Add(1) })
	ch := async(e.m, context.Background(), hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	id := waitPending(t, e.m, 1)[0].ID
	if _, err := decideCompat(e.m, id, true, "cli", "", time.Minute); err != nil {
		t.Fatal(err)
	}
	out := recv(t, ch)
	if !out.Approved {
		t.Fatalf("outcome %+v", out)
	}
	if gs := e.m.ListGrants(); len(gs) != 1 {
		t.Fatalf("grants: %+v", gs)
	}
	e.clock.Add(2 * time.Minute)
	// Whatever drives expiry (a timer on the manager's clock, a sweep),
	// give it real time too.
	deadline := time.Now().Add(3 * time.Second)
	for hooks.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		e.clock.Add(time.Second)
	}
	if hooks.Load() == 0 {
		t.Error("a grant expired and no OnRevoke hook ran: what it let through is never re-decided")
	}
}
