package approval

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRequestOutcomes(t *testing.T) {
	tests := []struct {
		name    string
		decide  func(m *Manager, id string) error
		timeout time.Duration
		cancel  bool
		want    Outcome
		status  string
	}{
		{
			name:   "approve",
			decide: func(m *Manager, id string) error { _, err := decideCompat(m, id, true, "cli", "", 0); return err },
			want:   Outcome{Approved: true, Status: StatusApproved, By: "cli"},
			status: Approved,
		},
		{
			name: "deny with reason",
			decide: func(m *Manager, id string) error {
				_, err := decideCompat(m, id, false, "cli", "not today", 0)
				return err
			},
			want:   Outcome{Status: StatusDenied, By: "cli", Reason: "not today"},
			status: Denied,
		},
		{
			name:    "timeout",
			timeout: 2 * time.Minute,
			want:    Outcome{Status: StatusTimeout, Reason: "no decision within 2m0s"},
			status:  TimedOut,
		},
		{
			name:    "default timeout",
			timeout: -1, // use the 10m default
			want:    Outcome{Status: StatusTimeout, Reason: "no decision within 10m0s"},
			status:  TimedOut,
		},
		{
			name:   "agent disconnects",
			cancel: true,
			want:   Outcome{Status: StatusCancelled, Reason: "the agent disconnected"},
			status: Cancelled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
			if tt.timeout > 0 {
				h.Timeout = tt.timeout
			}
			ch := async(e.m, ctx, h)
			id := waitPending(t, e.m, 1)[0].ID
			switch {
			case tt.timeout != 0:
				e.clock.Add(time.Minute)
				if a, _ := e.m.Get(id); a.Status != Pending {
					t.Fatalf("expired early: %s", a.Status)
				}
				e.clock.Add(10 * time.Minute)
			case tt.decide != nil:
				if err := tt.decide(e.m, id); err != nil {
					t.Fatal(err)
				}
			case tt.cancel:
				cancel()
			}
			got := recv(t, ch)
			tt.want.ID = id
			if got != tt.want {
				t.Fatalf("outcome = %+v, want %+v", got, tt.want)
			}
			a, err := e.m.Get(id)
			if err != nil || a.Status != tt.status {
				t.Fatalf("Get = %+v, %v; want status %s", a, err, tt.status)
			}
			if l, _ := e.m.List(""); len(l) != 0 {
				t.Fatalf("still pending: %d", len(l))
			}
			ents := e.audit.find(tt.status)
			if len(ents) != 1 || ents[0].ApprovalID != id || ents[0].By != tt.want.By || ents[0].Event != "approval" ||
				ents[0].Rule != "github-writes" || ents[0].Container != "agent1" || ents[0].Method != "PUT" || ents[0].Host != "api.github.com" {
				t.Fatalf("audit %s = %+v", tt.status, ents)
			}
			e.m.wait()
			_, ups, refs := e.note.snapshot()
			if len(ups) != 1 || ups[0].Status != tt.status || refs[0] != "ref-"+id {
				t.Fatalf("card updates = %+v %v", ups, refs)
			}
		})
	}
}

func TestRedactedEverywhere(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent1", "POST", "/repos/acme/api/issues?access_token=SECRET-VALUE-123")
	h.URL = "https://api.github.com" + h.Path
	h.Header.Set("Cookie", "session=abc")
	h.Header.Set("X-Custom", "SECRET-VALUE-123")
	h.Body = []byte(`{"title":"hi","token":"SECRET-VALUE-123","stripe":"sk_live_abcdefghijklmnop1234","gh":"ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}`)
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if _, err := decideCompat(e.m, a.ID, false, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	recv(t, ch)
	e.m.wait()
	notes, _, _ := e.note.snapshot()
	for what, s := range map[string]string{"approval": fmt.Sprintf("%+v", *a), "card": fmt.Sprintf("%+v", *notes[0]), "audit": e.audit.json()} {
		for _, secret := range []string{"SECRET-VALUE-123", "sk_live_abc", "ghp_aaaa", "session=abc"} {
			if strings.Contains(s, secret) {
				t.Errorf("%s shows %q: %s", what, secret, s)
			}
		}
	}
	if got := a.Header.Get("Authorization"); got != "Bearer [redacted]" {
		t.Errorf("Authorization shown as %q", got)
	}
	if !strings.Contains(a.Body, `"title": "hi"`) {
		t.Errorf("body preview not pretty JSON: %s", a.Body)
	}
}

func TestLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxPending = 3; c.MaxPendingPerContainer = 2 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	async(e.m, ctx, hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	async(e.m, ctx, hold("a", "PUT", "/repos/o/r/pulls/2/merge"))
	waitWaiters(t, e.m, 2)
	if got := e.m.Request(ctx, hold("a", "PUT", "/repos/o/r/pulls/3/merge")); got.Status != StatusLimit || got.Approved {
		t.Fatalf("per-container limit: %+v", got)
	}
	async(e.m, ctx, hold("b", "PUT", "/repos/o/r/pulls/1/merge"))
	waitWaiters(t, e.m, 3)
	if got := e.m.Request(ctx, hold("c", "PUT", "/repos/o/r/pulls/1/merge")); got.Status != StatusLimit {
		t.Fatalf("total limit: %+v", got)
	}
	if len(e.audit.find(StatusLimit)) != 2 {
		t.Fatalf("limits not audited")
	}
	// Cancelled holds free their slots.
	cancel()
	waitWaiters(t, e.m, 0)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	ch := async(e.m, ctx2, hold("a", "PUT", "/repos/o/r/pulls/3/merge"))
	waitPending(t, e.m, 1)
	cancel2()
	if got := recv(t, ch); got.Status != StatusCancelled {
		t.Fatalf("after freeing: %+v", got)
	}
}

func TestDedupSharesOneApproval(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	chs := []<-chan Outcome{async(e.m, ctx1, h), async(e.m, context.Background(), h), async(e.m, context.Background(), h)}
	other := h
	other.Body = []byte(`{"merge_method":"rebase"}`)
	chOther := async(e.m, context.Background(), other)
	list := waitWaiters(t, e.m, 4)
	if len(list) != 2 {
		t.Fatalf("want 2 approvals (3 identical + 1 other body), got %d", len(list))
	}
	var id, otherID string
	for _, a := range list {
		if a.Waiters == 3 {
			id = a.ID
		} else {
			otherID = a.ID
		}
	}
	// One waiter leaving does not cancel the shared approval.
	cancel1()
	if got := recv(t, chs[0]); got.Status != StatusCancelled {
		t.Fatalf("cancelled waiter: %+v", got)
	}
	if a, _ := e.m.Get(id); a.Status != Pending {
		t.Fatalf("shared approval %s after one cancel", a.Status)
	}
	if _, err := decideCompat(e.m, id, true, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	for _, ch := range chs[1:] {
		if got := recv(t, ch); !got.Approved || got.ID != id {
			t.Fatalf("waiter got %+v", got)
		}
	}
	if _, err := decideCompat(e.m, otherID, false, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, chOther); got.Approved {
		t.Fatalf("other body approved: %+v", got)
	}
	e.m.wait()
	if notes, _, _ := e.note.snapshot(); len(notes) != 2 {
		t.Fatalf("%d cards for 2 approvals", len(notes))
	}
}

func TestGrants(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if _, err := decideCompat(e.m, a.ID, true, "cli", "", 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ch); !got.Approved || got.Status != StatusApproved {
		t.Fatalf("first: %+v", got)
	}
	gs := e.m.ListGrants()
	if len(gs) != 1 || gs[0].ApprovalID != a.ID || gs[0].Path != h.Path || gs[0].By != "cli" {
		t.Fatalf("grants = %+v", gs)
	}
	if got := e.m.Request(context.Background(), h); got.Status != StatusGranted || !got.Approved || got.By != "grant:"+gs[0].ID || got.ID != "" {
		t.Fatalf("matching request: %+v", got)
	}
	if en := e.audit.find(StatusGranted); len(en) != 1 || en[0].By != "grant:"+gs[0].ID {
		t.Fatalf("grant hit audit: %+v", en)
	}

	nonMatching := map[string]Hold{
		"other container": hold("agent2", "PUT", h.Path),
		"other path":      hold("agent1", "PUT", "/repos/acme/api/pulls/8/merge"),
		"other method":    hold("agent1", "DELETE", h.Path),
		"other rule":      func() Hold { x := h; x.Rule = "other"; return x }(),
		"other host":      func() Hold { x := h; x.Host = "evil.example"; return x }(),
	}
	for name, nh := range nonMatching {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			ch := async(e.m, ctx, nh)
			waitPending(t, e.m, 1)
			cancel()
			if got := recv(t, ch); got.Status != StatusCancelled {
				t.Fatalf("non-matching request not held: %+v", got)
			}
			waitPending(t, e.m, 0)
		})
	}

	// Expired grants no longer match.
	e.clock.Add(16 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	ch = async(e.m, ctx, h)
	waitPending(t, e.m, 1)
	cancel()
	if got := recv(t, ch); got.Status != StatusCancelled {
		t.Fatalf("after expiry: %+v", got)
	}
	if len(e.m.ListGrants()) != 0 {
		t.Fatal("expired grant listed")
	}
}

func TestRevokeGrant(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	decideCompat(e.m, a.ID, true, "cli", "", time.Hour)
	recv(t, ch)
	g := e.m.ListGrants()[0]
	if err := e.m.RevokeGrant(g.ID, "cli"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.RevokeGrant(g.ID, "cli"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch = async(e.m, ctx, h)
	waitPending(t, e.m, 1)
	cancel()
	recv(t, ch)
}

func TestDecideIdempotency(t *testing.T) {
	tests := []struct {
		name     string
		first    string // approve, deny, timeout, cancel
		second   bool   // approve?
		grantFor time.Duration
		want     error
	}{
		{"approve twice", "approve", true, 0, nil},
		{"deny twice", "deny", false, 0, nil},
		{"deny after approve", "approve", false, 0, ErrConflict},
		{"approve after deny", "deny", true, 0, ErrConflict},
		{"approve after timeout", "timeout", true, 0, ErrGone},
		{"deny after cancel", "cancel", false, 0, ErrGone},
		{"grant too long", "", true, 48 * time.Hour, ErrInvalid},
		{"grant on deny", "", false, time.Minute, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := hold("a", "PUT", "/repos/o/r/pulls/1/merge")
			ch := async(e.m, ctx, h)
			var id string
			switch tt.first {
			case "approve", "deny":
				id = waitPending(t, e.m, 1)[0].ID
				decideCompat(e.m, id, tt.first == "approve", "cli", "", 0)
				id = recv(t, ch).ID
			case "timeout":
				waitPending(t, e.m, 1)
				e.clock.Add(DefaultTimeout)
				id = recv(t, ch).ID
			case "cancel":
				id = waitPending(t, e.m, 1)[0].ID
				cancel()
				recv(t, ch)
			default:
				id = waitPending(t, e.m, 1)[0].ID
			}
			_, err := decideCompat(e.m, id, tt.second, "api", "", tt.grantFor)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.first == "" {
				if a, _ := e.m.Get(id); a.Status != Pending {
					t.Fatalf("invalid decision changed status to %s", a.Status)
				}
			}
		})
	}
	e := newEnv(t, nil)
	for _, id := range []string{"nope", strings.Repeat("a", 26), "../../etc"} {
		if _, err := decideCompat(e.m, id, true, "cli", "", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("Decide(%q) = %v", id, err)
		}
	}
}

func TestRestart(t *testing.T) {
	e := newEnv(t, nil)
	// A grant that must survive.
	h := hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	decideCompat(e.m, a.ID, true, "cli", "", time.Hour)
	recv(t, ch)
	// A request left pending when the process dies.
	ch = async(e.m, context.Background(), hold("agent1", "DELETE", "/repos/acme/api"))
	p := waitFor(t, e.m, func(l []*Approval) bool { return len(l) == 1 && l[0].Refs["rec"] != "" })[0]
	crash(t, e.m)

	note := &recNotifier{name: "rec"}
	cfg := e.cfg
	cfg.Channels = []Channel{note}
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Shutdown()
	got, err := m2.Get(p.ID)
	if err != nil || got.Status != Expired {
		t.Fatalf("left-over pending = %+v, %v", got, err)
	}
	if l, _ := m2.List(""); len(l) != 0 {
		t.Fatalf("pending after restart: %d", len(l))
	}
	if _, err := decideCompat(m2, p.ID, true, "cli", "", 0); !errors.Is(err, ErrGone) {
		t.Fatalf("deciding expired: %v", err)
	}
	m2.wait()
	_, ups, refs := note.snapshot()
	if len(ups) != 1 || ups[0].ID != p.ID || ups[0].Status != Expired || refs[0] != "ref-"+p.ID {
		t.Fatalf("card of expired approval not updated: %+v %v", ups, refs)
	}
	if o := m2.Request(context.Background(), h); o.Status != StatusGranted {
		t.Fatalf("grant lost in restart: %+v", o)
	}
	_ = ch // the first manager's waiter is abandoned with the crash
}

// crash closes the DB without Shutdown, like a killed process.
func crash(t *testing.T, m *Manager) {
	t.Helper()
	m.mu.Lock()
	m.closed = true
	for _, e := range m.pending {
		e.stop()
	}
	m.mu.Unlock()
	if err := m.store.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownReleasesRestarting(t *testing.T) {
	e := newEnv(t, nil)
	chs := []<-chan Outcome{
		async(e.m, context.Background(), hold("a", "PUT", "/repos/o/r/pulls/1/merge")),
		async(e.m, context.Background(), hold("b", "PUT", "/repos/o/r/pulls/1/merge")),
	}
	waitPending(t, e.m, 2)
	e.m.Shutdown()
	for _, ch := range chs {
		if got := recv(t, ch); got.Status != StatusRestarting || got.Approved {
			t.Fatalf("after shutdown: %+v", got)
		}
	}
	if got := e.m.Request(context.Background(), hold("c", "GET", "/")); got.Status != StatusRestarting {
		t.Fatalf("request after shutdown: %+v", got)
	}
	_, ups, _ := e.note.snapshot()
	if len(ups) != 2 || ups[0].Status != Expired {
		t.Fatalf("cards not updated on shutdown: %+v", ups)
	}
	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Shutdown()
	if a, err := m2.Get(ups[0].ID); err != nil || a.Status != Expired {
		t.Fatalf("stored after shutdown: %+v %v", a, err)
	}
}

func TestConcurrentHolds(t *testing.T) {
	e := newEnv(t, nil)
	const n = 200
	var wg sync.WaitGroup
	outs := make([]Outcome, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i] = e.m.Request(context.Background(), hold(fmt.Sprintf("c%d", i%10), "PUT", fmt.Sprintf("/repos/o/r/pulls/%d/merge", i)))
		}()
	}
	list := waitPending(t, e.m, n)
	approveIDs := map[string]bool{}
	var dwg sync.WaitGroup
	for _, a := range list {
		var num int
		fmt.Sscanf(a.Path, "/repos/o/r/pulls/%d/merge", &num)
		approve := num%2 == 0
		approveIDs[a.ID] = approve
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if _, err := decideCompat(e.m, a.ID, approve, "api", "", 0); err != nil {
				t.Error(err)
			}
		}()
	}
	dwg.Wait()
	wg.Wait()
	for i, o := range outs {
		if o.Approved != (i%2 == 0) || o.Approved != approveIDs[o.ID] {
			t.Fatalf("request %d: %+v", i, o)
		}
	}
	if e.m.holds != 0 || len(e.m.perCont) != 0 {
		t.Fatalf("counters leak: holds=%d perCont=%v", e.m.holds, e.m.perCont)
	}
}

func TestNotifierFailureDoesNotBlock(t *testing.T) {
	e := newEnv(t, nil)
	e.note.failing = true
	ch := async(e.m, context.Background(), hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	a := waitPending(t, e.m, 1)[0]
	decideCompat(e.m, a.ID, true, "cli", "", 0)
	if got := recv(t, ch); !got.Approved {
		t.Fatalf("%+v", got)
	}
	e.m.wait()
	if _, ups, _ := e.note.snapshot(); len(ups) != 0 {
		t.Fatalf("updated a card that was never sent: %d", len(ups))
	}
}

func TestAlreadyCancelledContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := e.m.Request(ctx, hold("a", "GET", "/")); got.Status != StatusCancelled || got.Approved {
		t.Fatalf("%+v", got)
	}
	e.m.wait()
	if notes, _, _ := e.note.snapshot(); len(notes) != 0 {
		t.Fatal("a human was asked about a request nobody waits for")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("no DBPath accepted")
	}
	dup := &recNotifier{name: "x"}
	if _, err := New(Config{DBPath: t.TempDir() + "/db", Channels: []Channel{dup, dup}}); err == nil {
		t.Fatal("duplicate notifier names accepted")
	}
}
