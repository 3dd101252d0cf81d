package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/internal/pgtest"
	"github.com/clawd-dev/clawd/policy"
)

// fleetHost is one host of a test fleet: its Fleet (beating, listening,
// serving decisions) and its approval Manager on the fleet store.
type fleetHost struct {
	f     *Fleet
	m     *approval.Manager
	audit *approvaltest.Audit
	stop  context.CancelFunc
}

func startHost(t *testing.T, s *pgtest.Server, db, name string, clock *approvaltest.Clock) *fleetHost {
	t.Helper()
	f := open(t, s, db, name, 0)
	if err := f.Beat(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &fleetHost{f: f, audit: &approvaltest.Audit{}}
	var err error
	h.m, err = approval.New(approval.Config{Store: f.Store(), Audit: h.audit, Now: clock.Now, AfterFunc: clock.AfterFunc})
	if err != nil {
		t.Fatal(err)
	}
	f.Store().Serve(h.m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	h.stop = func() { cancel(); <-done }
	t.Cleanup(func() { h.stop(); h.m.Shutdown() })
	return h
}

func testHold(path string) approval.Hold {
	return approval.Hold{
		Container: policy.Container{ID: "id-agent", Name: "agent", Runtime: "containerd", Namespace: "fleet"},
		Method:    "POST", Host: "api.example.com", Path: path, URL: "https://api.example.com" + path,
		Dst: "203.0.113.7:443", Rule: "writes", Body: []byte(`{"x":1}`), BodySize: 7,
	}
}

// hold starts a request on h and returns its approval (once pending) and
// where its outcome arrives.
func hold(t *testing.T, h *fleetHost, hd approval.Hold) (*approval.Approval, <-chan approval.Outcome) {
	t.Helper()
	out := make(chan approval.Outcome, 1)
	_, v := h.m.List("")
	go func() { out <- h.m.Request(context.Background(), hd) }()
	for {
		list, _ := h.m.List("")
		for _, a := range list {
			if a.Path == hd.Path {
				return a, out
			}
		}
		select {
		case <-h.m.ChangedSince(v, false):
		case <-time.After(20 * time.Second):
			t.Fatal("the request was never held")
		}
		_, v = h.m.List("")
	}
}

func testDecideOnAnotherHost(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	ctx := context.Background()

	// Held on a, approved by the operator of b by ID.
	ap, out := hold(t, a, testHold("/one"))
	r := b.m.Decide(ctx, approval.Decision{ID: ap.ID, Approve: true, Channel: approval.ChannelCLI})
	if r.Outcome != approval.ResultDecided {
		t.Fatalf("decision on b = %+v, want decided", r)
	}
	got := <-out
	if !got.Approved || got.Status != approval.StatusApproved || got.ID != ap.ID || got.By != "cli" {
		t.Fatalf("the agent on a got %+v, want approved by cli", got)
	}
	// The holding host audited it; b did not decide anything itself.
	if e := a.audit.Find(approval.Approved); len(e) != 1 || e[0].ApprovalID != ap.ID {
		t.Fatalf("a's audit of the approval: %+v", e)
	}
	if e := b.audit.Find(approval.Approved); len(e) != 0 {
		t.Fatalf("b audited a decision it did not make: %+v", e)
	}
	// The same decision again, from b: already, nothing doubled; the
	// other one: a conflict.
	if r := b.m.Decide(ctx, approval.Decision{ID: ap.ID, Approve: true, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultAlready {
		t.Fatalf("repeat = %+v, want already", r)
	}
	if r := b.m.Decide(ctx, approval.Decision{ID: ap.ID, Approve: false, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultConflict {
		t.Fatalf("deny after approve = %+v, want conflict", r)
	}
	if e := a.audit.Find(approval.Approved); len(e) != 1 {
		t.Fatalf("approval audited %d times", len(e))
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM clawd_decisions WHERE result IS NOT NULL"); got != "1" {
		t.Fatalf("decisions answered = %s, want 1 (the ended ones are answered from the store)", got)
	}

	// The holder's checks apply to a forwarded decision: a click whose
	// digest is not the request's is refused there and audited there.
	ap2, out2 := hold(t, a, testHold("/two"))
	r = b.m.Decide(ctx, approval.Decision{ID: ap2.ID, Approve: true, Channel: approval.ChannelLink, Digest: strings.Repeat("0", 16)})
	if r.Outcome != approval.ResultStale {
		t.Fatalf("forwarded stale click = %+v, want stale", r)
	}
	if e := a.audit.Find("refused"); len(e) != 1 || e[0].ApprovalID != ap2.ID {
		t.Fatalf("a's audit of the refused click: %+v", e)
	}
	// Deny from b.
	if r := b.m.Decide(ctx, approval.Decision{ID: ap2.ID, Approve: false, Channel: approval.ChannelCLI, Reason: "no"}); r.Outcome != approval.ResultDecided {
		t.Fatalf("deny from b = %+v", r)
	}
	if got := <-out2; got.Approved || got.Status != approval.StatusDenied {
		t.Fatalf("the agent got %+v, want denied", got)
	}
	// Get on b shows a's approval as decided.
	if got, err := b.m.Get(ap2.ID); err != nil || got.Status != approval.Denied {
		t.Fatalf("b.Get = %+v, %v", got, err)
	}
}

func testHolderDown(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	ap, out := hold(t, a, testHold("/down"))
	// a's heartbeats stop (its Run is stopped, its row aged).
	a.stop()
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '1 hour' WHERE name = 'a'")
	r := b.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: true, Channel: approval.ChannelCLI})
	if r.Outcome != approval.ResultError || !strings.Contains(r.Message, "held on host a, which is down") {
		t.Fatalf("decision for a down host = %+v", r)
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM clawd_decisions"); got != "0" {
		t.Fatalf("a decision for a down host was queued")
	}
	// Its hold stays its own: still pending there, released only by it.
	select {
	case o := <-out:
		t.Fatalf("the hold ended: %+v", o)
	default:
	}
	if r := a.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: false, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("local decision on a = %+v", r)
	}
	<-out
}

func testWithdrawnNeverApplied(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	ap, out := hold(t, a, testHold("/withdrawn"))
	// a stops taking decisions up (alive, but stuck); b's decision is
	// withdrawn after claimTimeout...
	a.f.mu.Lock()
	a.f.decider = nil
	a.f.mu.Unlock()
	old := claimTimeout
	claimTimeout = 0
	defer func() { claimTimeout = old }()
	r := b.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: true, Channel: approval.ChannelCLI})
	if r.Outcome != approval.ResultError || !strings.Contains(r.Message, "withdrawn") {
		t.Fatalf("unanswered decision = %+v, want withdrawn", r)
	}
	// ...and when a serves again it is not applied: the person was told
	// nothing changed.
	a.f.Store().Serve(a.m)
	if err := a.f.serveOpen(context.Background(), a.m); err != nil {
		t.Fatal(err)
	}
	if got := s.SQL(t, db, "SELECT count(*) FROM clawd_decisions WHERE claimed IS NOT NULL"); got != "0" {
		t.Fatalf("a withdrawn decision was taken up")
	}
	select {
	case o := <-out:
		t.Fatalf("the hold ended by a withdrawn decision: %+v", o)
	default:
	}
}

func testGrantSurvivesRestart(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	ap, out := hold(t, a, testHold("/grant"))
	if r := b.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: true, GrantFor: 15 * time.Minute, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("grant from b = %+v", r)
	}
	<-out
	// a restarts: a new Manager on the same store finds the grant.
	a.stop()
	a.m.Shutdown()
	a.f.Close()
	a2 := startHost(t, s, db, "a", clock)
	if gs := a2.m.ListGrants(); len(gs) != 1 || gs[0].ApprovalID != ap.ID {
		t.Fatalf("grants after restart: %+v", gs)
	}
	if o := a2.m.Request(context.Background(), testHold("/grant")); o.Status != approval.StatusGranted {
		t.Fatalf("request after restart = %+v, want granted", o)
	}
	// Not another path.
	_, out3 := hold(t, a2, testHold("/other"))
	select {
	case o := <-out3:
		t.Fatalf("the grant let another path through: %+v", o)
	default:
	}
	// A restart expires what it held: the /other hold ended with the
	// Manager; a new one finds it expired.
	a2.stop()
	a2.m.Shutdown()
	a2.f.Close()
	<-out3
	if got := s.SQL(t, db, "SELECT status FROM clawd_approvals WHERE data->>'path' = '/other'"); got != approval.Expired {
		t.Fatalf("the hold cut short by the restart is %q in the store, want expired", got)
	}
}

// testDatabaseDownHolds: with the database unreachable, a new approve-rule
// request is still held (the host's own channels and CLI can decide it),
// another host cannot decide it, and it ends by timeout as a denial.
func testDatabaseDownHolds(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	// A grant given before the outage, for the host started during it.
	apg, outg := hold(t, a, testHold("/granted-before"))
	a.m.Decide(context.Background(), approval.Decision{ID: apg.ID, Approve: true, GrantFor: time.Hour, Channel: approval.ChannelCLI})
	<-outg
	granted, _ := a.m.Get(apg.ID)
	s.Stop()
	stopped := true
	defer func() {
		if stopped {
			s.Restart()
		}
	}()
	a.f.Beat(context.Background()) // fails: the store's breaker opens
	b.f.Beat(context.Background())
	hd := testHold("/outage")
	hd.Timeout = time.Minute
	ap, out := hold(t, a, hd)
	r := b.m.Decide(context.Background(), approval.Decision{ID: ap.ID, Approve: true, Channel: approval.ChannelCLI})
	if r.OK() {
		t.Fatalf("b decided with the database down: %+v", r)
	}
	clock.Add(time.Minute)
	o := <-out
	if o.Approved || o.Status != approval.StatusTimeout {
		t.Fatalf("held request during the outage ended %+v, want timeout (denied)", o)
	}
	// A host starting during the outage starts (no grants loaded, a link
	// key of its own) and holds; its own operator can still decide.
	c := open(t, s, db, "c", 0)
	if err := c.Beat(context.Background()); err == nil {
		t.Fatal("beat worked with the database stopped")
	}
	mc, err := approval.New(approval.Config{Store: c.Store(), Now: clock.Now, AfterFunc: clock.AfterFunc})
	if err != nil {
		t.Fatalf("approval manager on a fleet store started during an outage: %v", err)
	}
	defer mc.Shutdown()
	if gs := mc.ListGrants(); len(gs) != 0 {
		t.Fatalf("grants from nowhere: %+v", gs)
	}
	hc := &fleetHost{f: c, m: mc}
	apc, outc := hold(t, hc, testHold("/started-in-outage"))
	if r := mc.Decide(context.Background(), approval.Decision{ID: apc.ID, Approve: true, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("local decision during the outage = %+v", r)
	}
	if o := <-outc; !o.Approved {
		t.Fatalf("outcome %+v", o)
	}
	// The database returns: c loads the fleet's grants without a restart.
	c.Store().OnGrants(mc.SyncGrants)
	s.Restart()
	stopped = false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitGrant(t, mc, granted.GrantID, true)
}

func testPendingFleetWide(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	clock := approvaltest.NewClock()
	a, b := startHost(t, s, db, "a", clock), startHost(t, s, db, "b", clock)
	apA, outA := hold(t, a, testHold("/on-a"))
	clock.Add(time.Second)
	apB, outB := hold(t, b, testHold("/on-b"))
	list, err := b.f.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != apA.ID || list[0].HeldOn != "a" || list[0].HostState != StateUp ||
		list[1].ID != apB.ID || list[1].HeldOn != "b" {
		t.Fatalf("pending = %+v", list)
	}
	// a goes down: its hold is still listed, as a's, with a down.
	a.stop()
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '1 hour' WHERE name = 'a'")
	list, err = b.f.Pending(context.Background())
	if err != nil || len(list) != 2 || list[0].HeldOn != "a" || list[0].HostState != StateDown {
		t.Fatalf("pending with a down = %+v, %v", list, err)
	}
	// Decided ones leave the list.
	b.m.Decide(context.Background(), approval.Decision{ID: apB.ID, Approve: false, Channel: approval.ChannelCLI})
	<-outB
	list, _ = b.f.Pending(context.Background())
	if len(list) != 1 || list[0].ID != apA.ID {
		t.Fatalf("pending after deciding b's = %+v", list)
	}
	a.m.Decide(context.Background(), approval.Decision{ID: apA.ID, Approve: false, Channel: approval.ChannelCLI})
	<-outA
}
