package fleet

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// startDown starts a host's fleet and approval Manager as the daemon does
// (Serve, OnGrants, OnRecovered), with its approvals spool at spool, while
// the database may be down: the failed first beat is not fatal.
func startDown(t *testing.T, s *pgtest.Server, db, name, spool string, clock *approvaltest.Clock) *fleetHost {
	t.Helper()
	f, err := Open(Config{Database: s.DSN(db), Password: s.Password, Host: name, Version: "v-" + name,
		Heartbeat: time.Second, Spool: spool})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.pool.Close)
	f.Beat(context.Background())
	h := &fleetHost{f: f, audit: &approvaltest.Audit{}, stop: func() {}}
	h.m, err = approval.New(approval.Config{Store: f.Store(), Audit: h.audit, Now: clock.Now, AfterFunc: clock.AfterFunc})
	if err != nil {
		t.Fatalf("start with the database down: %v", err)
	}
	f.Store().Serve(h.m)
	f.Store().OnGrants(h.m.SyncGrants)
	f.Store().OnRecovered(h.m.Recovered)
	t.Cleanup(h.m.Shutdown)
	return h
}

// run starts h's Run (beats, catch-up, decisions of other hosts, grant sync).
func (h *fleetHost) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.f.Run(ctx); close(done) }()
	h.stop = func() { cancel(); <-done }
	t.Cleanup(h.stop)
}

// approvalRows is host's approvals in the database as path:status, by path.
func approvalRows(t *testing.T, s *pgtest.Server, db, host string) string {
	t.Helper()
	return s.SQL(t, db, "SELECT coalesce(string_agg((data->>'path') || ':' || status, ',' ORDER BY data->>'path'), '') FROM clawd_approvals WHERE host = '"+host+"'")
}

func auditOf(h *fleetHost, action, id string) int {
	n := 0
	for _, e := range h.audit.Find(action) {
		if e.ApprovalID == id {
			n++
		}
	}
	return n
}

func catchUp(t *testing.T, h *fleetHost) {
	t.Helper()
	ctx := context.Background()
	if err := h.f.Beat(ctx); err != nil {
		t.Fatalf("beat after the database came back: %v", err)
	}
	if err := h.f.catchUp(ctx); err != nil {
		t.Fatalf("catch-up: %v", err)
	}
}

// testStartDuringOutage: a host that starts while the database is down
// does, once it answers, what a start with it up does: the previous run's
// pending approval is expired (and audited once), the fleet's grants are
// loaded, and the approvals created and ended during the outage are in
// clawd_approvals exactly once, as they ended; another host can then
// decide the one still held.
func testStartDuringOutage(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	ctx := context.Background()
	// The previous run of host a: a grant, and a hold it never ended (it
	// crashed: no Shutdown, its heartbeats stop).
	clock1 := approvaltest.NewClock()
	a1 := startHost(t, s, db, "a", clock1)
	apg, outg := hold(t, a1, testHold("/granted"))
	a1.m.Decide(ctx, approval.Decision{ID: apg.ID, Approve: true, GrantFor: time.Hour, Channel: approval.ChannelCLI})
	<-outg
	granted, _ := a1.m.Get(apg.ID)
	left, _ := hold(t, a1, testHold("/left-pending"))
	a1.stop()
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '1 hour' WHERE name = 'a'")

	s.Stop()
	stopped := true
	defer func() {
		if stopped {
			s.Restart()
		}
	}()
	clock := approvaltest.NewClock()
	clock.Add(time.Minute) // a later start
	spool := filepath.Join(t.TempDir(), "fleet-approvals.spool")
	a := startDown(t, s, db, "a", spool, clock)
	if gs := a.m.ListGrants(); len(gs) != 0 {
		t.Fatalf("grants with the database down: %+v", gs)
	}
	// During the outage: one hold times out (denied), one is approved on
	// the host, one is still held when the database returns.
	hd := testHold("/timeout")
	hd.Timeout = time.Minute
	apT, outT := hold(t, a, hd)
	clock.Add(time.Minute)
	if o := <-outT; o.Approved || o.Status != approval.StatusTimeout {
		t.Fatalf("hold during the outage ended %+v, want timeout", o)
	}
	apA, outA := hold(t, a, testHold("/approved"))
	if r := a.m.Decide(ctx, approval.Decision{ID: apA.ID, Approve: true, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("local decision during the outage = %+v", r)
	}
	<-outA
	apH, outH := hold(t, a, testHold("/still-held"))
	if n := a.f.Spooled(); n != 3 {
		t.Fatalf("spooled approvals = %d, want 3", n)
	}
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("spool file: %v", err)
	}

	s.Restart()
	stopped = false
	catchUp(t, a)
	want := "/approved:approved,/granted:approved,/left-pending:expired,/still-held:pending,/timeout:timeout"
	if got := approvalRows(t, s, db, "a"); got != want {
		t.Fatalf("approvals of a after the outage = %q, want %q", got, want)
	}
	if got := s.SQL(t, db, "SELECT data->>'reason' FROM clawd_approvals WHERE id = '"+left.ID+"'"); got != "clawd restarted" {
		t.Fatalf("the previous run's hold ended with reason %q", got)
	}
	if n := auditOf(a, approval.Expired, left.ID); n != 1 {
		t.Fatalf("the previous run's hold audited expired %d times, want once", n)
	}
	if n := auditOf(a, approval.TimedOut, apT.ID); n != 1 {
		t.Fatalf("the outage's timeout audited %d times, want once", n)
	}
	if n := a.f.Spooled(); n != 0 {
		t.Fatalf("spooled after catch-up = %d", n)
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Fatalf("spool file after catch-up: %v", err)
	}
	// Again (the next beat, a retry): nothing doubled, nothing re-audited.
	catchUp(t, a)
	if got := approvalRows(t, s, db, "a"); got != want {
		t.Fatalf("approvals after a second catch-up = %q", got)
	}
	if n := auditOf(a, approval.Expired, left.ID); n != 1 {
		t.Fatalf("expired audited %d times after a second catch-up", n)
	}
	// The fleet's grants are loaded, and another host decides the hold
	// made during the outage.
	a.run(t)
	waitGrant(t, a.m, granted.GrantID, true)
	b := startHost(t, s, db, "b", clock)
	if r := b.m.Decide(ctx, approval.Decision{ID: apH.ID, Approve: true, Channel: approval.ChannelCLI}); r.Outcome != approval.ResultDecided {
		t.Fatalf("b's decision on the hold made during the outage = %+v", r)
	}
	if o := <-outH; !o.Approved {
		t.Fatalf("the hold got %+v, want approved", o)
	}
	if got := s.SQL(t, db, "SELECT status FROM clawd_approvals WHERE id = '"+apH.ID+"'"); got != approval.Approved {
		t.Fatalf("row of the released hold = %q", got)
	}
}

// testSpoolSurvivesRestart: approvals written while the database is down
// survive a crash of the daemon in the spool file; the next run writes
// them once the database answers (whether it starts before or after
// that), a hold the crash cut short as expired and audited once.
func testSpoolSurvivesRestart(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	spool := filepath.Join(t.TempDir(), "fleet-approvals.spool")
	clock := approvaltest.NewClock()
	s.Stop()
	stopped := true
	defer func() {
		if stopped {
			s.Restart()
		}
	}()
	// Run 1, all of it during the outage, then a crash.
	r1 := startDown(t, s, db, "a", spool, clock)
	crashed, _ := hold(t, r1, testHold("/crashed"))
	hd := testHold("/ended")
	hd.Timeout = time.Minute
	ended, outE := hold(t, r1, hd)
	clock.Add(time.Minute)
	<-outE
	// Run 2 starts during the outage and finds run 1's writes.
	r2 := startDown(t, s, db, "a", spool, clock)
	if n := r2.f.Spooled(); n != 2 {
		t.Fatalf("run 2 found %d spooled approvals, want 2", n)
	}
	s.Restart()
	stopped = false
	catchUp(t, r2)
	if got, want := approvalRows(t, s, db, "a"), "/crashed:expired,/ended:timeout"; got != want {
		t.Fatalf("approvals = %q, want %q", got, want)
	}
	if n := auditOf(r2, approval.Expired, crashed.ID); n != 1 {
		t.Fatalf("run 2 audited the crashed hold expired %d times, want once", n)
	}
	if n := auditOf(r2, approval.Expired, ended.ID) + auditOf(r2, approval.TimedOut, ended.ID); n != 0 {
		t.Fatalf("run 2 audited run 1's ended approval %d times (run 1 did)", n)
	}
	catchUp(t, r2)
	if n := auditOf(r2, approval.Expired, crashed.ID); n != 1 {
		t.Fatalf("audited %d times after a second catch-up", n)
	}
	// Run 2 holds during a second outage and crashes; run 3 starts with
	// the database up: its start writes run 2's spool at once.
	s.Stop()
	stopped = true
	held2, _ := hold(t, r2, testHold("/crashed-2"))
	if n := r2.f.Spooled(); n != 1 {
		t.Fatalf("run 2 spooled %d in the second outage, want 1", n)
	}
	s.Restart()
	stopped = false
	s.SQL(t, db, "UPDATE clawd_hosts SET last_seen = now() - interval '1 hour' WHERE name = 'a'")
	r3 := startDown(t, s, db, "a", spool, clock)
	if got, want := approvalRows(t, s, db, "a"), "/crashed:expired,/crashed-2:expired,/ended:timeout"; got != want {
		t.Fatalf("approvals after run 3's start = %q, want %q", got, want)
	}
	if n := auditOf(r3, approval.Expired, held2.ID); n != 1 {
		t.Fatalf("run 3 audited run 2's crashed hold %d times, want once", n)
	}
	if n := r3.f.Spooled(); n != 0 {
		t.Fatalf("spooled after run 3's start = %d", n)
	}
}

// testSpoolUnreadable: a damaged spool file is set aside and said so,
// never taken for approvals nor overwritten.
func testSpoolUnreadable(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	spool := filepath.Join(t.TempDir(), "fleet-approvals.spool")
	if err := os.WriteFile(spool, []byte(`{"x": {"run": "r", "host": "a", "data": `), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Open(Config{Database: s.DSN(db), Password: s.Password, Host: "a", Spool: spool})
	if err != nil {
		t.Fatal(err)
	}
	defer f.pool.Close()
	if n := f.Spooled(); n != 0 {
		t.Fatalf("spooled from a damaged file = %d", n)
	}
	b, err := os.ReadFile(spool + ".unreadable")
	if err != nil || !strings.Contains(string(b), `"run": "r"`) {
		t.Fatalf("damaged spool not set aside: %v", err)
	}
}
