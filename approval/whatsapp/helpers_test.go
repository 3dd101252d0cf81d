package whatsapp

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/whatsapp/fake"
	"github.com/clawd-dev/clawd/policy"
)

// Approvers as wa_ids.
const (
	alice = "15551230001"
	bob   = "15551230002"
)

// decider stands for the core (approvaltest.Decider).
type decider = approvaltest.Decider

// clock is a settable clock for the channel (the fake uses real time).
type clock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.d += d
	c.mu.Unlock()
}

var seq int

func newApproval() *approval.Approval {
	seq++
	id := []byte(strings.Repeat("a", 26))
	for i, n := 25, seq; n > 0; i, n = i-1, n/32 {
		id[i] = "abcdefghijklmnopqrstuvwxyz234567"[n%32]
	}
	return &approval.Approval{
		ID: string(id), Status: approval.Pending, Summary: "Merge pull request #7 in acme/api",
		Method: "PUT", URL: "https://api.github.com/repos/acme/api/pulls/7/merge", Host: "api.github.com",
		Container: policy.Container{Name: "agent-1", Runtime: "docker"},
		Rule:      "gh-merge", Body: `{"merge_method":"squash"}`, BodySize: 25,
		Expires: time.Now().Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
		GrantsAllowed: true, Required: 1,
	}
}

func cardFor(a *approval.Approval, people ...string) *approval.Card {
	return &approval.Card{Approval: a, Channel: "whatsapp", People: people, Now: time.Now()}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type setup struct {
	fk    *fake.Server
	ch    *Channel
	d     *decider
	clock *clock
	dir   string
}

// newSetup builds the channel against a fresh fake and mounts its webhook
// where the fake delivers.
func newSetup(t *testing.T) *setup {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	s := &setup{fk: fk, clock: &clock{}, dir: t.TempDir(),
		d: &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved: the request is released."}}}
	s.ch = s.build(t)
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return s
}

// build makes a channel on the setup's state directory and points the
// fake's webhook at it.
func (s *setup) build(t *testing.T) *Channel {
	t.Helper()
	ch, err := New("whatsapp", s.fk.Settings(), approval.Env{
		Log: zaptest.NewLogger(t), Now: s.clock.now, StateDir: s.dir, PublicURL: "https://clawd.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	srv := httptest.NewServer(ch.Callbacks(s.d))
	t.Cleanup(srv.Close)
	s.fk.SetEndpoint(srv.URL + approval.CallbackPath("whatsapp"))
	return ch
}

func (s *setup) post(t *testing.T, a *approval.Approval, people ...string) string {
	t.Helper()
	ref, err := s.ch.Post(ctxT(t), cardFor(a, people...))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// open opens user's window the way it happens: they write to the number.
func (s *setup) open(t *testing.T, user string) {
	t.Helper()
	if st, err := s.fk.Text(ctxT(t), user, "hi"); err != nil || st != 200 {
		t.Fatalf("text from %s: %d %v", user, st, err)
	}
}
