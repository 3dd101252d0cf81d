package email

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/email/fake"
	"github.com/clawd-dev/clawd/policy"
)

const (
	alice = "alice@example.com"
	bob   = "bob@example.com"
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
		Expires: testNow.Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
		GrantsAllowed: true, Required: 1,
	}
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func cardFor(a *approval.Approval, people ...string) *approval.Card {
	return &approval.Card{Approval: a, Channel: "email", People: people, Now: testNow}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rig is the channel against a fresh fake, its callbacks served at the
// public URL the links point to.
type rig struct {
	fk    *fake.Server
	ch    *Channel
	d     *decider
	web   string // the public URL
	dir   string // state dir
	h     atomic.Pointer[http.Handler]
	clock atomic.Int64 // offset from testNow in ns
}

func (r *rig) now() time.Time { return testNow.Add(time.Duration(r.clock.Load())) }

func (r *rig) advance(d time.Duration) { r.clock.Add(int64(d)) }

func newRig(t *testing.T, mod func(map[string]any)) *rig {
	t.Helper()
	r := &rig{fk: fake.New(), dir: t.TempDir()}
	t.Cleanup(r.fk.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if h := r.h.Load(); h != nil {
			(*h).ServeHTTP(w, req)
			return
		}
		http.NotFound(w, req)
	}))
	t.Cleanup(srv.Close)
	r.web = srv.URL
	s := r.fk.Settings()
	if mod != nil {
		mod(s)
	}
	ch, err := New("email", s, r.env())
	if err != nil {
		t.Fatal(err)
	}
	r.d = &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved: POST api.github.com."}}
	r.mount(ch, r.d)
	t.Cleanup(func() {
		if v := r.fk.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return r
}

func (r *rig) env() approval.Env {
	return approval.Env{PublicURL: r.web, StateDir: r.dir, Now: r.now}
}

func (r *rig) mount(ch *Channel, d approval.Decider) {
	r.ch = ch
	h := ch.Callbacks(d)
	r.h.Store(&h)
}

func (r *rig) post(t *testing.T, a *approval.Approval, people ...string) string {
	t.Helper()
	ref, err := r.ch.Post(ctxT(t), cardFor(a, people...))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
