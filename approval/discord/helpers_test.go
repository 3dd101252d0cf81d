package discord

import (
	"context"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord/fake"
	"github.com/clawd-dev/clawd/policy"
)

func init() {
	// No real waits between reconnections in tests.
	invalidSessionWait = func() time.Duration { return 0 }
	backoff = func(int) time.Duration { return 10 * time.Millisecond }
}

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

func (d *decider) say(msg string) {
	d.mu.Lock()
	d.res.Message = msg
	d.mu.Unlock()
}

func (d *decider) message() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.res.Message
}

func newDecider() *decider {
	return &decider{res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved: POST api.github.com."}}
}

var seq = 0

func newApproval() *approval.Approval {
	seq++
	id := strings.Repeat("a", 24) + string(rune('a'+seq%26)) + "2"
	return &approval.Approval{
		ID: id, Status: approval.Pending, Summary: "Create an issue in clawd-dev/clawd",
		Method: "POST", URL: "https://api.github.com/repos/clawd-dev/clawd/issues",
		Container: policy.Container{Name: "agent-1", Runtime: "docker"},
		Rule:      "github-writes", Body: `{"title":"hello"}`, BodySize: 17,
		Expires: time.Now().Add(10 * time.Minute), Digest: strings.Repeat("0123456789abcdef", 4),
		GrantsAllowed: true, Required: 1,
	}
}

func cardFor(a *approval.Approval, people ...string) *approval.Card {
	return &approval.Card{Approval: a, Channel: "discord", People: people, Now: time.Now()}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type setup struct {
	fk *fake.Server
	ch *Channel
	d  *decider
}

func newSetup(t *testing.T, extra map[string]any, env approval.Env) *setup {
	t.Helper()
	fk := fake.New()
	t.Cleanup(fk.Close)
	s := fk.Settings()
	for k, v := range extra {
		s[k] = v
	}
	ch, err := New("discord", s, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if v := fk.Violations(); len(v) > 0 {
			t.Errorf("fake saw violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return &setup{fk: fk, ch: ch, d: newDecider()}
}

// gateway starts Run and waits for the first READY.
func (s *setup) gateway(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ch.Run(ctx, s.d) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	if _, err := s.fk.WaitGateway(ctxT(t), func(st fake.GatewayStats) bool { return st.Connected }); err != nil {
		t.Fatal(err)
	}
}

// interactions mounts the endpoint and registers it with the fake (which
// checks PING/PONG and a bad-signature 401 as Discord does).
func (s *setup) interactions(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(s.ch.Callbacks(s.d))
	t.Cleanup(srv.Close)
	u := srv.URL + approval.CallbackPath("discord")
	if err := s.fk.SetInteractionsURL(ctxT(t), u); err != nil {
		t.Fatal(err)
	}
	return u
}

func (s *setup) post(t *testing.T, a *approval.Approval, people ...string) string {
	t.Helper()
	ref, err := s.ch.Post(ctxT(t), cardFor(a, people...))
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

var httpsEnv = approval.Env{PublicURL: "https://clawd.example.com"}
