package webex

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/webex/fake"
	"github.com/clawd-dev/clawd/policy"
	"go.uber.org/zap/zaptest"
)

// decider stands for the core (approvaltest.Decider).
type decider = approvaltest.Decider

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
		Expires: time.Now().Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
		GrantsAllowed: true, Required: 1,
	}
}

func cardFor(a *approval.Approval, people ...string) *approval.Card {
	return &approval.Card{Approval: a, Channel: "webex", People: people, Now: time.Now()}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type setup struct {
	fk *fake.Server
	ch *Channel
	d  *decider
}

// newSetup builds the channel against a fresh fake and serves its
// callbacks where the fake POSTs notifications (an operator-registered
// webhook).
func newSetup(t *testing.T) *setup {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	ch, err := New("webex", fk.Settings(), approval.Env{PublicURL: "https://clawd.example.com", Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	d := &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved: POST api.github.com."}}
	srv := httptest.NewServer(ch.Callbacks(d))
	t.Cleanup(srv.Close)
	fk.SetEndpoint(srv.URL + approval.CallbackPath("webex"))
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return &setup{fk: fk, ch: ch, d: d}
}

func (s *setup) post(t *testing.T, a *approval.Approval, people ...string) string {
	t.Helper()
	ref, err := s.ch.Post(ctxT(t), cardFor(a, people...))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
