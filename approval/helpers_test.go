package approval

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// fakeClock is an injectable clock with timers: Add moves time and fires
// the timers that became due, so timeouts happen when the test says.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{at: c.t.Add(d), f: f}
	c.timers = append(c.timers, ft)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !ft.stopped
		ft.stopped = true
		return was
	}
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
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

type auditRec struct {
	mu      sync.Mutex
	entries []audit.Entry
}

func (a *auditRec) Log(e audit.Entry) {
	a.mu.Lock()
	a.entries = append(a.entries, e)
	a.mu.Unlock()
}

func (a *auditRec) find(action string) []audit.Entry {
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

func (a *auditRec) json() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, _ := json.Marshal(a.entries)
	return string(b)
}

// recNotifier records calls.
type recNotifier struct {
	name    string
	mu      sync.Mutex
	notes   []*Approval
	updates []*Approval
	refs    []string
	failing bool
}

func (n *recNotifier) Name() string { return n.name }

func (n *recNotifier) Post(_ context.Context, c *Card) (string, error) {
	a := c.Approval
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failing {
		return "", context.DeadlineExceeded
	}
	n.notes = append(n.notes, a)
	return "ref-" + a.ID, nil
}

func (n *recNotifier) Update(_ context.Context, c *Card, ref string) error {
	a := c.Approval
	n.mu.Lock()
	defer n.mu.Unlock()
	n.updates = append(n.updates, a)
	n.refs = append(n.refs, ref)
	return nil
}

func (n *recNotifier) snapshot() (notes, updates []*Approval, refs []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Approval(nil), n.notes...), append([]*Approval(nil), n.updates...), append([]string(nil), n.refs...)
}

type env struct {
	m     *Manager
	clock *fakeClock
	audit *auditRec
	note  *recNotifier
	cfg   Config
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	e := &env{clock: newClock(), audit: &auditRec{}, note: &recNotifier{name: "rec"}}
	cfg := Config{
		DBPath:    filepath.Join(t.TempDir(), "approvals.db"),
		Channels:  []Channel{e.note},
		Audit:     e.audit,
		Now:       e.clock.Now,
		AfterFunc: e.clock.AfterFunc,
		PublicURL: "http://127.0.0.1:8787",
		APIToken:  "tok-test",
		Redactor:  strRedactor{"SECRET-VALUE-123": "[secret:github]"},
	}
	if mod != nil {
		mod(&cfg)
	}
	e.cfg = cfg
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	t.Cleanup(m.Shutdown)
	return e
}

// strRedactor replaces known secrets, like the secrets package does.
type strRedactor map[string]string

func (r strRedactor) RedactString(s string) string {
	for k, v := range r {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

func (r strRedactor) Redact(b []byte) []byte { return []byte(r.RedactString(string(b))) }

func ctr(name string) policy.Container {
	return policy.Container{ID: "id-" + name, Name: name, Runtime: "docker", Namespace: "moby", Labels: map[string]string{"team": "ai"}}
}

func hold(c string, method, path string) Hold {
	return Hold{
		Container: ctr(c), Method: method, Host: "api.github.com", Path: path,
		URL: "https://api.github.com" + path, Dst: "140.82.112.6:443", Rule: "github-writes",
		Header: map[string][]string{"Authorization": {"Bearer SECRET-VALUE-123"}, "Accept": {"application/json"}},
		Body:   []byte(`{"merge_method":"squash"}`), BodySize: 25,
	}
}

// waitFor blocks until cond holds on the pending list; it wakes on every
// change of the set, so it does not depend on timing. The deadline only
// turns a hang into a failure.
func waitFor(t *testing.T, m *Manager, cond func([]*Approval) bool) []*Approval {
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

func waitPending(t *testing.T, m *Manager, n int) []*Approval {
	t.Helper()
	return waitFor(t, m, func(l []*Approval) bool { return len(l) == n })
}

func waitWaiters(t *testing.T, m *Manager, n int) []*Approval {
	t.Helper()
	return waitFor(t, m, func(l []*Approval) bool {
		w := 0
		for _, a := range l {
			w += a.Waiters
		}
		return w == n
	})
}

// async runs Request in a goroutine and returns its outcome channel.
func async(m *Manager, ctx context.Context, h Hold) <-chan Outcome {
	ch := make(chan Outcome, 1)
	go func() { ch <- m.Request(ctx, h) }()
	return ch
}

func recv(t *testing.T, ch <-chan Outcome) Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(20 * time.Second):
		t.Fatal("request never returned")
	}
	return Outcome{}
}

// decideCompat decides as the local operator and maps the Result to the
// errors the older API returned, for the table tests written against it.
func decideCompat(m *Manager, id string, approve bool, by, reason string, grantFor time.Duration) (*Approval, error) {
	ch := ChannelCLI
	if by == ChannelAPI {
		ch = ChannelAPI
	}
	res := m.Decide(context.Background(), Decision{ID: id, Approve: approve, Channel: ch, Reason: reason, GrantFor: grantFor})
	switch res.Outcome {
	case ResultDecided, ResultAlready, ResultRecorded:
		return res.Approval, nil
	case ResultNotFound:
		return nil, ErrNotFound
	case ResultConflict:
		return res.Approval, ErrConflict
	case ResultExpired:
		return res.Approval, ErrGone
	case ResultInvalid:
		return res.Approval, ErrInvalid
	}
	return res.Approval, errors.New(res.Outcome + ": " + res.Message)
}
