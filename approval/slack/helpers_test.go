package slack

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/slack/fake"
	"github.com/clawd-dev/clawd/policy"
)

// decider records decisions and answers with a chosen Result.
type decider struct {
	mu    sync.Mutex
	calls []approval.Decision
	res   approval.Result
	got   chan approval.Decision
}

func newDecider(msg string) *decider {
	return &decider{res: approval.Result{Outcome: approval.ResultDecided, Message: msg}, got: make(chan approval.Decision, 16)}
}

func (d *decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	d.calls = append(d.calls, dec)
	d.mu.Unlock()
	d.got <- dec
	return d.res
}

func (d *decider) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

const (
	testID     = "abcdefghijklmnopqrstuvwxyz"
	testDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testCard() *approval.Card {
	return &approval.Card{
		Approval: &approval.Approval{
			ID: testID, Status: approval.Pending, Summary: "Merge pull request #7 in acme/api <!channel>",
			Method: "PUT", URL: "https://api.github.com/repos/acme/api/pulls/7/merge", Host: "api.github.com",
			Rule: "gh-merge", Container: policy.Container{Name: "agent1", Runtime: "docker"},
			Body: "{\n  \"merge_method\": \"squash\", \"x\": \"```\"\n}", BodySize: 40,
			Expires: now.Add(5 * time.Minute), Digest: testDigest, GrantsAllowed: true, Required: 1,
		},
		Channel: "slack", People: []string{"U0ALICE", "U0BOB"}, Now: now,
	}
}

// rig is a channel wired to a fake Slack.
type rig struct {
	fk  *fake.Server
	ch  *Channel
	dec *decider
}

func newRig(t *testing.T, settings func(fk *fake.Server) map[string]any) *rig {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	s := fk.Settings()
	if settings != nil {
		s = settings(fk)
	}
	ch, err := New("slack", s, approval.Env{Log: zaptest.NewLogger(t), HTTP: fk.HTTP, PublicURL: "https://clawd.example"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("Slack payload violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return &rig{fk: fk, ch: ch, dec: newDecider("Approved. The request goes through.")}
}

// run starts the Socket Mode listener and waits for its first connection.
func (r *rig) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ch.Run(ctx, r.dec) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	if err := r.fk.WaitConnected(tctx(t), 1); err != nil {
		t.Fatal(err)
	}
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

// recorder is an HTTP client transport that refuses (and records) every
// request to a host other than the fake's.
type recorder struct {
	allow string
	mu    sync.Mutex
	other []string
	base  http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != r.allow {
		r.mu.Lock()
		r.other = append(r.other, req.URL.String())
		r.mu.Unlock()
		return nil, http.ErrNotSupported
	}
	return r.base.RoundTrip(req)
}

func (r *recorder) others() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.other...)
}
