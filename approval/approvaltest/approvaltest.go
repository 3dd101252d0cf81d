// Package approvaltest has what tests of the approval packages share: a
// fake clock whose timers fire when the test moves time, a channel that
// records its cards, an audit recorder, holds, and waits that wake on the
// Manager's own change signal instead of sleeping.
package approvaltest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// Clock is a clock with timers: Add moves time and fires the timers that
// became due, so timeouts happen when the test says.
type Clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*timer
}

type timer struct {
	at      time.Time
	f       func()
	stopped bool
}

// NewClock starts at 2026-03-01 12:00 UTC.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// AfterFunc is approval.Config.AfterFunc for this clock.
func (c *Clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &timer{at: c.t.Add(d), f: f}
	c.timers = append(c.timers, ft)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !ft.stopped
		ft.stopped = true
		return was
	}
}

// Add moves the clock and runs the timers that are due.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due []func()
	for _, ft := range c.timers {
		if !ft.stopped && !ft.at.After(c.t) {
			ft.stopped = true
			due = append(due, ft.f)
		}
	}
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// Audit records audit entries.
type Audit struct {
	mu      sync.Mutex
	entries []audit.Entry
}

func (a *Audit) Log(e audit.Entry) {
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
}

// Find returns the entries with that action.
func (a *Audit) Find(action string) []audit.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []audit.Entry
	for _, e := range a.entries {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// Channel records the cards it is given.
type Channel struct {
	ChannelName string
	mu          sync.Mutex
	posts       []*approval.Card
	updates     []*approval.Card
}

func (c *Channel) Name() string { return c.ChannelName }

func (c *Channel) Post(_ context.Context, card *approval.Card) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.posts = append(c.posts, card)
	return "ref-" + card.ID, nil
}

func (c *Channel) Update(_ context.Context, card *approval.Card, _ string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.updates = append(c.updates, card)
	return nil
}

// Cards returns the posted and the updated cards so far.
func (c *Channel) Cards() (posts, updates []*approval.Card) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*approval.Card(nil), c.posts...), append([]*approval.Card(nil), c.updates...)
}

// Env is a Manager on a fake clock with a recording channel "rec".
type Env struct {
	M     *approval.Manager
	Clock *Clock
	Audit *Audit
	Rec   *Channel
}

// New starts a Manager for t; mod may change the config first.
func New(t testing.TB, mod func(*approval.Config)) *Env {
	t.Helper()
	e := &Env{Clock: NewClock(), Audit: &Audit{}, Rec: &Channel{ChannelName: "rec"}}
	cfg := approval.Config{
		DBPath:    filepath.Join(t.TempDir(), "approvals.db"),
		Channels:  []approval.Channel{e.Rec},
		Audit:     e.Audit,
		Now:       e.Clock.Now,
		AfterFunc: e.Clock.AfterFunc,
		PublicURL: "http://127.0.0.1:8787",
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := approval.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.M = m
	t.Cleanup(m.Shutdown)
	return e
}

// Container is a Docker container named name.
func Container(name string) policy.Container {
	return policy.Container{ID: "id-" + name, Name: name, Runtime: "docker", Namespace: "moby", Labels: map[string]string{"team": "ai"}}
}

// Hold is a held GitHub write from container c.
func Hold(c, method, path string) approval.Hold {
	return approval.Hold{
		Container: Container(c), Method: method, Host: "api.github.com", Path: path,
		URL: "https://api.github.com" + path, Dst: "140.82.112.6:443", Rule: "github-writes",
		Header: map[string][]string{"Authorization": {"Bearer SECRET-VALUE-123"}, "Accept": {"application/json"}},
		Body:   []byte(`{"merge_method":"squash"}`), BodySize: 25,
	}
}

// Async runs Request in a goroutine and returns its outcome channel.
func Async(m *approval.Manager, ctx context.Context, h approval.Hold) <-chan approval.Outcome {
	ch := make(chan approval.Outcome, 1)
	go func() { ch <- m.Request(ctx, h) }()
	return ch
}

// Recv waits for an outcome (the deadline only turns a hang into a failure).
func Recv(t testing.TB, ch <-chan approval.Outcome) approval.Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("request never returned")
		return approval.Outcome{}
	}
}

// WaitFor blocks until cond holds on the pending list; it wakes on every
// change of the set, so it does not depend on timing.
func WaitFor(t testing.TB, m *approval.Manager, cond func([]*approval.Approval) bool) []*approval.Approval {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		list, v := m.List("")
		if cond(list) {
			return list
		}
		ch := m.ChangedSince(v, true)
		if ch == nil {
			continue
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("condition not reached; pending = %d", len(list))
		}
	}
}

// WaitPending waits until n approvals are pending.
func WaitPending(t testing.TB, m *approval.Manager, n int) []*approval.Approval {
	t.Helper()
	return WaitFor(t, m, func(l []*approval.Approval) bool { return len(l) == n })
}

// Decider stands for the core in a channel's tests: it records every
// decision the channel passes on and answers each with Res.
type Decider struct {
	mu    sync.Mutex
	calls []approval.Decision
	Res   approval.Result
}

// Decide records d and returns Res.
func (d *Decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dec)
	return d.Res
}

// Calls are the decisions so far.
func (d *Decider) Calls() []approval.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]approval.Decision(nil), d.calls...)
}
