package github

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/github/fake"
	"github.com/clawd-dev/clawd/policy"
)

// decider records decisions and answers with a chosen Result.
type decider struct {
	mu    sync.Mutex
	calls []approval.Decision
	res   approval.Result
}

func newDecider(msg string) *decider {
	return &decider{res: approval.Result{Outcome: approval.ResultDecided, Message: msg}}
}

func (d *decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dec)
	return d.res
}

func (d *decider) got() []approval.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]approval.Decision(nil), d.calls...)
}

const (
	testID     = "abcdefghijklmnopqrstuvwxyz"
	testDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testCard() *approval.Card {
	return &approval.Card{
		Approval: &approval.Approval{
			ID: testID, Status: approval.Pending, Summary: "Merge pull request #7 in acme/api",
			Method: "PUT", URL: "https://api.github.com/repos/acme/api/pulls/7/merge", Host: "api.github.com",
			Rule: "gh-merge", Container: policy.Container{Name: "agent1", Runtime: "docker"},
			Body: "{\"merge_method\": \"squash\"}", BodySize: 26,
			Expires: now.Add(5 * time.Minute), Digest: testDigest, GrantsAllowed: true, Required: 1,
		},
		Channel: "github", People: []string{"alice", "bob"}, Now: now,
	}
}

// rig is a channel wired to a fake GitHub, its webhook served on loopback.
type rig struct {
	fk  *fake.Server
	ch  *Channel
	dec *decider
	dir string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	r := &rig{fk: fk, dec: newDecider("Approved: the request is released."), dir: t.TempDir()}
	r.ch = r.channel(t)
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("GitHub payload violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return r
}

// channel builds a channel on the rig's fake and state dir and points the
// fake's webhook at it (a restart is a second call).
func (r *rig) channel(t *testing.T) *Channel {
	t.Helper()
	ch, err := New("github", r.fk.Settings(), approval.Env{
		Log: zaptest.NewLogger(t), HTTP: r.fk.HTTP, PublicURL: "https://clawd.example", StateDir: r.dir,
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, ch.Callbacks(deciderFunc(func(ctx context.Context, d approval.Decision) approval.Result {
		return r.dec.Decide(ctx, d)
	})))
	r.fk.SetEndpoint(srv + approval.CallbackPath(ch.Name()))
	return ch
}

// newServer serves h at the channel's callback path on loopback.
func newServer(t *testing.T, h http.Handler) string {
	mux := http.NewServeMux()
	mux.Handle(approval.CallbackPath("github"), h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

type deciderFunc func(context.Context, approval.Decision) approval.Result

func (f deciderFunc) Decide(ctx context.Context, d approval.Decision) approval.Result {
	return f(ctx, d)
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (r *rig) post(t *testing.T, c *approval.Card) string {
	t.Helper()
	ref, err := r.ch.Post(tctx(t), c)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
