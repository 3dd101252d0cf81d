package mattermost

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/mattermost/fake"
	"github.com/clawd-dev/clawd/policy"
)

// Approvers as Mattermost user IDs.
const (
	alice = "a11ceuser00000000000000000"
	bob   = "b0buser0000000000000000000"
)

// decider records decisions and answers with a chosen Result.
type decider struct {
	mu    sync.Mutex
	calls []approval.Decision
	res   approval.Result
}

func (d *decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dec)
	return d.res
}

func (d *decider) Calls() []approval.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]approval.Decision(nil), d.calls...)
}

func (d *decider) set(r approval.Result) {
	d.mu.Lock()
	d.res = r
	d.mu.Unlock()
}

var seq int

func newApproval() *approval.Approval {
	seq++
	id := []byte(strings.Repeat("a", 26))
	for i, n := 25, seq; n > 0; i, n = i-1, n/32 {
		id[i] = "abcdefghijklmnopqrstuvwxyz234567"[n%32]
	}
	return &approval.Approval{
		ID: string(id), Status: approval.Pending, Summary: "Create an issue in clawd-dev/clawd",
		Method: "POST", URL: "https://api.github.com/repos/clawd-dev/clawd/issues", Host: "api.github.com",
		Container: policy.Container{Name: "agent-1", Runtime: "docker"},
		Rule:      "github-writes", Body: `{"title":"hello"}`, BodySize: 17,
		Expires: testNow.Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
		GrantsAllowed: true, Required: 1,
	}
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for the channel.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func cardFor(a *approval.Approval, people ...string) *approval.Card {
	return &approval.Card{Approval: a, Channel: "mattermost", People: people, Now: testNow}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// swap is a handler that can be replaced after the server started (the
// channel needs the server's URL before its handler exists).
type swap struct {
	mu sync.Mutex
	h  http.Handler
}

func (s *swap) set(h http.Handler) { s.mu.Lock(); s.h = h; s.mu.Unlock() }
func (s *swap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	h := s.h
	s.mu.Unlock()
	if h == nil {
		http.NotFound(w, r)
		return
	}
	h.ServeHTTP(w, r)
}

type rig struct {
	fk    *fake.Server
	ch    *Channel
	d     *decider
	clock *clock
	dir   string
	pub   string
	mux   *swap
	set   map[string]any
}

// newRig builds the channel against a fresh fake, with clawd's public
// listener on a loopback server where the fake delivers clicks.
func newRig(t *testing.T, mod func(map[string]any)) *rig {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	r := &rig{fk: fk, clock: &clock{t: testNow}, dir: t.TempDir(), mux: &swap{},
		d: &decider{res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved: the request is released."}}}
	srv := httptest.NewServer(r.mux)
	t.Cleanup(srv.Close)
	r.pub = srv.URL
	fk.SetCallbackURL(srv.URL + approval.CallbackPath("mattermost"))
	r.set = fk.Settings()
	r.set["usernames"] = map[string]any{alice: "alice"}
	if mod != nil {
		mod(r.set)
	}
	r.ch = r.build(t)
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return r
}

// build makes a channel (a clawd process) on the rig's state directory
// and mounts its callbacks where the fake clicks.
func (r *rig) build(t *testing.T) *Channel {
	t.Helper()
	ch, err := New("mattermost", r.set, approval.Env{PublicURL: r.pub, StateDir: r.dir, Now: r.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	r.mux.set(ch.Callbacks(r.d))
	return ch
}

func (r *rig) post(t *testing.T, a *approval.Approval, people ...string) string {
	t.Helper()
	ref, err := r.ch.Post(ctxT(t), cardFor(a, people...))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func decided(a *approval.Approval, status, by string) *approval.Approval {
	c := *a
	c.Status, c.By = status, by
	return &c
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func newRequest(method, u, ct string) (*http.Request, error) {
	req, err := http.NewRequest(method, u, strings.NewReader(`{}`))
	if err == nil && ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	return req, err
}
