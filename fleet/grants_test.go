package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// waitGrant waits until m has (or no longer has) the grant id.
func waitGrant(t *testing.T, m *approval.Manager, id string, active bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for m.GrantActive(id) != active {
		if time.Now().After(deadline) {
			t.Fatalf("grant %s active = %v, want %v", id, !active, active)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testGrantSync: a grant given on one host applies on another at once
// (no restart); a revoke on the other host ends it on the first, whose
// revocation hooks run (what it let through is re-decided); a host that
// has not loaded a grant yet can still revoke it.
func testGrantSync(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	for _, h := range []*fleetHost{a, b} {
		h.f.Store().OnGrants(h.m.SyncGrants)
	}
	revokedOnA := make(chan struct{}, 10)
	a.m.OnRevoke(func() { revokedOnA <- struct{}{} })

	// Held on a, approved for 15 minutes from a: the same request on b
	// (the container moved there) is let through without asking.
	ap, out := hold(t, a, testHold("/synced"))
	if r := a.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: true, GrantFor: 15 * time.Minute, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("grant on a = %+v", r)
	}
	<-out
	decided, _ := a.m.Get(ap.ID)
	gid := decided.GrantID
	if gid == "" {
		t.Fatalf("no grant on %+v", decided)
	}
	waitGrant(t, b.m, gid, true)
	if o := b.m.Request(context.Background(), testHold("/synced")); o.Status != approval.StatusGranted {
		t.Fatalf("the request on b = %+v, want granted by a's grant", o)
	}

	// Revoked on b: gone on a too, a's hooks ran, and a asks again.
	if err := b.m.RevokeGrant(gid, "cli"); err != nil {
		t.Fatalf("revoke on b: %v", err)
	}
	waitGrant(t, a.m, gid, false)
	select {
	case <-revokedOnA:
	case <-time.After(30 * time.Second):
		t.Fatal("a's revocation hooks did not run")
	}
	_, out2 := hold(t, a, testHold("/synced"))
	select {
	case o := <-out2:
		t.Fatalf("after the revoke on b the request on a was not held: %+v", o)
	default:
	}

	// A host whose Manager has not loaded the grant (no sync hook) can
	// revoke it all the same.
	c := startHost(t, s, db, "c", clock)
	ap3, out3 := hold(t, a, testHold("/late"))
	a.m.Decide(context.Background(), approval.Decision{ID: ap3.ID, Approve: true, GrantFor: time.Hour, Channel: approval.ChannelCLI})
	<-out3
	got, _ := a.m.Get(ap3.ID)
	if c.m.GrantActive(got.GrantID) {
		t.Fatal("c loaded the grant without a sync hook: the test proves nothing")
	}
	if err := c.m.RevokeGrant(got.GrantID, "cli"); err != nil {
		t.Fatalf("revoke on c of a grant it had not loaded: %v", err)
	}
	waitGrant(t, a.m, got.GrantID, false)
	waitGrant(t, b.m, got.GrantID, false)
}
