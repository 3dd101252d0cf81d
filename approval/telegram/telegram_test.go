package telegram

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/telegram/fake"
	"github.com/clawd-dev/clawd/policy"
)

const (
	testID     = "abcdefghijklmnopqrstuvwxyz"
	testDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// decider records decisions and answers with res.
type decider struct {
	mu    sync.Mutex
	calls []approval.Decision
	res   approval.Result
	got   chan approval.Decision
	on    func()
}

func newDecider(res approval.Result) *decider {
	return &decider{res: res, got: make(chan approval.Decision, 16)}
}

func (d *decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	d.calls = append(d.calls, dec)
	on := d.on
	d.mu.Unlock()
	if on != nil {
		on()
	}
	d.got <- dec
	return d.res
}

func (d *decider) Calls() []approval.Decision {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]approval.Decision(nil), d.calls...)
}

func approved() approval.Result {
	return approval.Result{Outcome: approval.ResultDecided, Message: "Approved: the request goes through."}
}

func testCard() *approval.Card {
	return &approval.Card{
		Approval: &approval.Approval{
			ID: testID, Status: approval.Pending, Summary: "Merge pull request #7 in acme/app",
			Container: policy.Container{Name: "agent-1"}, Method: "PUT",
			URL: "https://api.github.com/repos/acme/app/pulls/7/merge", Rule: "github-writes",
			Body: `{"merge_method":"squash"}`, Expires: now.Add(5 * time.Minute), Digest: testDigest,
			GrantsAllowed: true, Required: 1,
		},
		Channel: "telegram", People: []string{"111", "ops"}, Now: now,
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type setup struct {
	f    *fake.Server
	ch   *Channel
	logs *observer.ObservedLogs
	dir  string
}

func newSetup(t *testing.T, mod func(s map[string]any, env *approval.Env)) *setup {
	t.Helper()
	f := fake.New()
	t.Cleanup(f.Close)
	settings := f.Settings()
	core, logs := observer.New(zapcore.DebugLevel)
	env := approval.Env{Log: zap.New(core), Now: func() time.Time { return now }, StateDir: t.TempDir()}
	if mod != nil {
		mod(settings, &env)
	}
	ch, err := New("telegram", settings, env)
	if err != nil {
		t.Fatal(err)
	}
	ch.sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	return &setup{f: f, ch: ch, logs: logs, dir: env.StateDir}
}

// run starts the listener and stops it at the end of the test.
func run(t *testing.T, ch *Channel, d approval.Decider) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ch.Run(ctx, d); close(done) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func noViolations(t *testing.T, f *fake.Server) {
	t.Helper()
	if v := f.Violations(); len(v) > 0 {
		t.Errorf("Bot API violations: %q", v)
	}
}

func TestPostCardShape(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	ref, err := s.ch.Post(ctx, testCard())
	if err != nil {
		t.Fatal(err)
	}
	m, ok := s.f.Card(testID)
	if !ok {
		t.Fatal("no card posted")
	}
	if want := "-1001234567890|" + strconv.FormatInt(m.MessageID, 10); ref != want {
		t.Errorf("ref %q, want %q", ref, want)
	}
	if !strings.HasPrefix(m.Text, "🔐 Merge pull request #7 in acme/app\n") {
		t.Errorf("summary not first: %q", m.Text)
	}
	for _, want := range []string{"PUT https://api.github.com/repos/acme/app/pulls/7/merge", "Container: agent-1", "Rule: github-writes",
		"5m0s left", `{"merge_method":"squash"}`, "ID: " + testID} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("card lacks %q:\n%s", want, m.Text)
		}
	}
	if !strings.Contains(m.HTML, `<a href="tg://user?id=111">111</a>, ops`) {
		t.Errorf("approvers not mentioned: %s", m.HTML)
	}
	if !strings.Contains(m.HTML, "<pre>") {
		t.Errorf("body not in <pre>: %s", m.HTML)
	}
	want := []string{"a:" + testID + ":" + testDigest[:16], "g:" + testID + ":" + testDigest[:16], "d:" + testID + ":" + testDigest[:16]}
	if len(m.Keyboard) != 1 || len(m.Keyboard[0]) != 3 {
		t.Fatalf("keyboard %+v", m.Keyboard)
	}
	for i, b := range m.Keyboard[0] {
		if b.CallbackData != want[i] {
			t.Errorf("button %d data %q, want %q", i, b.CallbackData, want[i])
		}
	}
	if !strings.Contains(m.Keyboard[0][1].Text, "Approve 15 min") {
		t.Errorf("button labels %+v", m.Keyboard[0])
	}
	noViolations(t, s.f)
}

func TestPollClickDecides(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	d := newDecider(approved())
	run(t, s.ch, d)
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	reply, err := s.f.Click(ctx, testID, approval.ActApproveFor, "111")
	if err != nil {
		t.Fatal(err)
	}
	if reply != approved().Message {
		t.Errorf("clicker saw %q, want %q", reply, approved().Message)
	}
	calls := d.Calls()
	if len(calls) != 1 {
		t.Fatalf("decider calls %d", len(calls))
	}
	want := approval.Decision{ID: testID, Digest: testDigest[:16], Approve: true, GrantFor: approval.GrantFor,
		Channel: "telegram", User: "111", Display: "user111"}
	if calls[0] != want {
		t.Errorf("decision %+v, want %+v", calls[0], want)
	}
	if a := s.f.Answers(); len(a) != 1 || a[0].ShowAlert {
		t.Errorf("answers %+v: a decided click is a toast, not an alert", a)
	}
	if p := s.f.Polls(); len(p) == 0 || len(p[0].AllowedUpdates) != 1 || p[0].AllowedUpdates[0] != "callback_query" || p[0].Timeout != 30 {
		t.Errorf("polls %+v", p)
	}
	noViolations(t, s.f)
}

func TestRefusalIsAnAlert(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	d := newDecider(approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not asked to decide this request; nothing changed."})
	run(t, s.ch, d)
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	reply, err := s.f.Click(ctx, testID, approval.ActDeny, "222")
	if err != nil {
		t.Fatal(err)
	}
	if reply != d.res.Message {
		t.Errorf("clicker saw %q", reply)
	}
	if c := d.Calls(); len(c) != 1 || c[0].Approve || c[0].User != "222" {
		t.Errorf("decision %+v", c)
	}
	if a := s.f.Answers(); len(a) != 1 || !a[0].ShowAlert {
		t.Errorf("answers %+v: a refusal is shown as an alert", a)
	}
}

func TestForeignAndMalformedClicksRefused(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	d := newDecider(approved())
	run(t, s.ch, d)
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	m, _ := s.f.Card(testID)
	reply, err := s.f.ClickIn(ctx, testID, approval.ActApprove, "111", -100999)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reply, "not in the approval chat") {
		t.Errorf("click from another chat: %q", reply)
	}
	for _, data := range []string{"a:" + testID, "x:" + testID + ":" + testDigest[:16], "a:ABC:0123456789abcdef", strings.Repeat("a", 64)} {
		reply, err := s.f.ClickData(ctx, m.MessageID, fake.ChatID, data, "111")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reply, "Not a clawd button") {
			t.Errorf("data %q: %q", data, reply)
		}
	}
	if c := d.Calls(); len(c) != 0 {
		t.Errorf("decider called for refused clicks: %+v", c)
	}
	for _, a := range s.f.Answers() {
		if !a.ShowAlert {
			t.Errorf("refusal %q not an alert", a.Text)
		}
	}
}

func TestUpdateReplacesButtons(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	card := testCard()
	card.Required = 2
	ref, err := s.ch.Post(ctx, card)
	if err != nil {
		t.Fatal(err)
	}
	// A first approval of two: votes shown, buttons kept.
	card.Votes = []approval.Vote{{By: "telegram:111", Display: "alice", At: now}}
	if err := s.ch.Update(ctx, card, ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.f.Card(testID)
	if !strings.Contains(m.Text, "Approvals: 1 of 2 (telegram:111 (alice))") || len(m.Keyboard) != 1 {
		t.Errorf("pending update: %q %+v", m.Text, m.Keyboard)
	}
	// The decision: outcome shown, buttons gone.
	card.Status, card.By, card.Reason = approval.Approved, "telegram:222", "looks fine"
	card.Votes = append(card.Votes, approval.Vote{By: "telegram:222", Display: "bob", At: now})
	if err := s.ch.Update(ctx, card, ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.f.Card(testID)
	if !strings.HasPrefix(m.Text, "✅ ") || !strings.Contains(m.Text, "Approved by telegram:222: looks fine") || len(m.Keyboard) != 0 {
		t.Errorf("decided card: %q %+v", m.Text, m.Keyboard)
	}
	if strings.Contains(m.Text, "left") || strings.Contains(m.HTML, "tg://user") {
		t.Errorf("decided card still asks: %q", m.Text)
	}
	// The same update again: "message is not modified" is success.
	if err := s.ch.Update(ctx, card, ref); err != nil {
		t.Errorf("unchanged update: %v", err)
	}
	for _, st := range []string{approval.TimedOut, approval.Cancelled, approval.Expired} {
		card.Status, card.By, card.Reason = st, "", ""
		if err := s.ch.Update(ctx, card, ref); err != nil {
			t.Fatal(err)
		}
		m, _ = s.f.Card(testID)
		if !strings.HasPrefix(m.Text, "⌛ ") || len(m.Keyboard) != 0 {
			t.Errorf("%s card: %q", st, m.Text)
		}
	}
	if err := s.ch.Update(ctx, card, "garbage"); err == nil {
		t.Error("a malformed ref was accepted")
	}
	noViolations(t, s.f)
}

func TestHostileTextEscapedAndCut(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	card := testCard()
	evil := `</b><a href="https://evil.example">click</a> & <pre>`
	card.Summary = evil + "\n✅ Approved by admin" + strings.Repeat("<&>", 500)
	card.URL = "https://x.example/" + strings.Repeat("<&>\"", 2000)
	card.Container.Name = strings.Repeat("&", 500)
	card.Rule = strings.Repeat("<", 500)
	card.Method = strings.Repeat(">", 500)
	card.Body = evil + strings.Repeat("<&>😀", 5000)
	card.People = nil
	for i := 0; i < 100; i++ {
		card.People = append(card.People, strconv.Itoa(1000000000+i))
	}
	card.Required = 50
	for i := 0; i < 50; i++ {
		card.Votes = append(card.Votes, approval.Vote{By: "telegram:1", Display: strings.Repeat("<", 200)})
	}
	if _, err := s.ch.Post(ctx, card); err != nil {
		t.Fatal(err)
	}
	m, _ := s.f.Card(testID)
	if n := len(utf16.Encode([]rune(m.HTML))); n > 4096 {
		t.Errorf("card is %d UTF-16 units", n)
	}
	if !strings.Contains(m.Text, `</b><a href="https://evil.example">click</a> & <pre>`) {
		t.Errorf("agent text not shown literally: %q", m.Text[:200])
	}
	if strings.Contains(m.HTML, "evil.example\">") || strings.Count(m.HTML, "<pre>") != 1 {
		t.Errorf("agent HTML got through: %s", m.HTML[:300])
	}
	if strings.Contains(m.Text, "\n✅ Approved") {
		t.Error("agent drew its own status line")
	}
	if !strings.Contains(m.Text, "… (cut)") || !strings.Contains(m.Text, "and 80 more") {
		t.Errorf("cut not marked: %q", m.Text[len(m.Text)-100:])
	}
	noViolations(t, s.f)
}

func TestOffsetKeptAcrossRestart(t *testing.T) {
	// clawd stops right after deciding, before its next getUpdates could
	// confirm the update to Telegram.
	click := func(t *testing.T, s *setup) {
		ctx := ctxT(t)
		d := newDecider(approved())
		stop := run(t, s.ch, d)
		d.on = func() { go stop() }
		if _, err := s.ch.Post(ctx, testCard()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.f.Click(ctx, testID, approval.ActApprove, "111"); err != nil {
			t.Fatal(err)
		}
		stop()
		if s.f.Pending() != 1 {
			t.Fatalf("the update was confirmed already; the test needs it unconfirmed")
		}
	}
	restart := func(t *testing.T, s *setup, dir string) (*decider, fake.Poll) {
		ctx := ctxT(t)
		ch, err := New("telegram", s.f.Settings(), approval.Env{Now: func() time.Time { return now }, StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		d := newDecider(approved())
		polls := len(s.f.Polls())
		run(t, ch, d)
		// The first poll of the new instance has confirmed what its offset
		// covers once it waits.
		if err := s.f.WaitPolling(ctx, polls+1); err != nil {
			t.Fatal(err)
		}
		return d, s.f.Polls()[polls]
	}
	t.Run("kept", func(t *testing.T) {
		s := newSetup(t, nil)
		click(t, s)
		d, first := restart(t, s, s.dir)
		if first.Offset == 0 {
			t.Errorf("restart polled without the kept offset")
		}
		if s.f.Pending() != 0 || len(d.Calls()) != 0 {
			t.Errorf("restart repeated the click: %+v", d.Calls())
		}
	})
	t.Run("control: without the state directory the click repeats", func(t *testing.T) {
		s := newSetup(t, nil)
		click(t, s)
		d, _ := restart(t, s, t.TempDir())
		select {
		case <-d.got:
		case <-ctxT(t).Done():
			t.Fatal("the unconfirmed click was not delivered again: the kept-offset test proves nothing")
		}
	})
}

func TestConflictRetried(t *testing.T) {
	s := newSetup(t, nil)
	var mu sync.Mutex
	var waits []time.Duration
	s.ch.sleep = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ctx.Err()
	}
	s.f.Conflict(3)
	ctx := ctxT(t)
	d := newDecider(approved())
	run(t, s.ch, d)
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.Click(ctx, testID, approval.ActApprove, "111"); err != nil {
		t.Fatal(err)
	}
	if len(d.Calls()) != 1 {
		t.Errorf("decider calls %d", len(d.Calls()))
	}
	if n := s.logs.FilterMessageSnippet("409 Conflict: another clawd or bot program is polling this bot token").Len(); n != 3 {
		t.Errorf("409 logged %d times, want 3", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(waits) != 3 || waits[0] != time.Second || waits[1] != 2*time.Second || waits[2] != 4*time.Second {
		t.Errorf("backoff %v", waits)
	}
}

func TestTwoPollersAtOnce(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	d := newDecider(approved())
	run(t, s.ch, d)
	if err := s.f.WaitPolling(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Another program polls the same bot: Telegram ends clawd's poll with 409.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.f.URL()+"/bot"+s.f.Token+"/getUpdates", strings.NewReader(`{"timeout":1}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s.logs.FilterMessageSnippet("409 Conflict").Len() == 0 {
		t.Error("the conflict was not logged")
	}
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.Click(ctx, testID, approval.ActApprove, "111"); err != nil {
		t.Fatal(err)
	}
}

func TestReconnectAfterDrop(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	d := newDecider(approved())
	run(t, s.ch, d)
	if err := s.f.WaitPolling(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := s.f.DropPolls(); n != 1 {
		t.Fatalf("dropped %d polls", n)
	}
	if err := s.f.WaitPolling(ctx, 2); err != nil {
		t.Fatal("no new poll after the drop:", err)
	}
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.f.Click(ctx, testID, approval.ActApprove, "111"); err != nil {
		t.Fatal(err)
	}
	if len(d.Calls()) != 1 {
		t.Errorf("decider calls %d", len(d.Calls()))
	}
}

func TestWebhook(t *testing.T) {
	var h http.Handler = http.NotFoundHandler()
	pub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(pub.Close)
	s := newSetup(t, func(set map[string]any, env *approval.Env) {
		set["mode"] = "webhook"
		env.PublicURL = pub.URL + "/"
	})
	ctx := ctxT(t)
	d := newDecider(approved())
	h = s.ch.Callbacks(d)
	run(t, s.ch, d)
	url, secret, err := s.f.WaitWebhook(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if url != pub.URL+"/v1/channels/telegram/" || len(secret) != 64 {
		t.Errorf("webhook %q secret of %d characters", url, len(secret))
	}
	if _, err := s.ch.Post(ctx, testCard()); err != nil {
		t.Fatal(err)
	}
	reply, err := s.f.Click(ctx, testID, approval.ActApprove, "111")
	if err != nil {
		t.Fatal(err)
	}
	if reply != approved().Message || len(d.Calls()) != 1 || d.Calls()[0].User != "111" {
		t.Errorf("reply %q calls %+v", reply, d.Calls())
	}
	for _, bad := range []string{"", "wrong", secret[:63], secret + "x"} {
		code, err := s.f.ForgeWebhook(ctx, testID, approval.ActApprove, "666", bad)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusUnauthorized {
			t.Errorf("secret %q: %d", bad, code)
		}
	}
	code, err := s.f.ReplayWebhook(ctx)
	if err != nil || code != http.StatusOK {
		t.Errorf("replay: %d %v", code, err)
	}
	if c := d.Calls(); len(c) != 1 {
		t.Errorf("forged or replayed calls reached the decider: %+v", c)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	noViolations(t, s.f)

	// The secret is kept: a restart sets the same one.
	ch2, err := New("telegram", s.f.Settings(), approval.Env{PublicURL: pub.URL, StateDir: s.dir})
	if err != nil {
		t.Fatal(err)
	}
	if ch2.Mode() != ModePoll {
		t.Errorf("an http public URL on a random port defaults to %q", ch2.Mode())
	}
	set := s.f.Settings()
	set["mode"] = "webhook"
	ch3, err := New("telegram", set, approval.Env{PublicURL: pub.URL, StateDir: s.dir})
	if err != nil || ch3.secret != secret {
		t.Errorf("secret not kept across restarts: %v", err)
	}
}

func TestPollModeHasNoWebhook(t *testing.T) {
	s := newSetup(t, nil)
	if h := s.ch.Callbacks(newDecider(approved())); h != nil {
		t.Error("poll mode offers a webhook handler")
	}
}

func TestSettings(t *testing.T) {
	f := fake.New()
	defer f.Close()
	base := f.Settings()
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range base {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	os.Unsetenv("CLAWD_TG_UNSET")
	for name, tc := range map[string]struct {
		s    map[string]any
		env  approval.Env
		want string
	}{
		"no token":       {with("bot-token", nil), approval.Env{}, "bot-token is required"},
		"bad token":      {with("bot-token", "not a token SECRETVALUE"), approval.Env{}, "does not look like"},
		"unset env":      {with("bot-token", "env:CLAWD_TG_UNSET"), approval.Env{}, "CLAWD_TG_UNSET is not set"},
		"no chat":        {with("chat-id", nil), approval.Env{}, "chat-id must be"},
		"chat name":      {with("chat-id", "@approvals"), approval.Env{}, "chat-id must be"},
		"unknown key":    {with("chat", "1"), approval.Env{}, "chat"},
		"bad mode":       {with("mode", "push"), approval.Env{}, "mode"},
		"webhook no url": {with("mode", "webhook"), approval.Env{}, "public URL"},
		"poll timeout":   {with("poll-timeout", 99), approval.Env{}, "poll-timeout"},
		"api base":       {with("api-base", "ftp://x"), approval.Env{}, "api-base"},
		"api base query": {with("api-base", "https://x/?a=1"), approval.Env{}, "api-base"},
	} {
		_, err := New("telegram", tc.s, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), f.Token) || strings.Contains(err.Error(), "SECRETVALUE")) {
			t.Errorf("%s: error shows the token: %v", name, err)
		}
	}
	// A credential from the secret store; chat-id as a YAML number.
	s := with("bot-token", "secret:tg")
	s["chat-id"] = -1001234567890
	ch, err := New("telegram", s, approval.Env{Secret: func(n string) (string, error) { return f.Token, nil }})
	if err != nil || ch.token != f.Token || ch.chatID != fake.ChatID {
		t.Fatalf("secret store: %v", err)
	}
	for pub, mode := range map[string]string{"": ModePoll, "https://clawd.example.com": ModeWebhook, "https://clawd.example.com:8443/": ModeWebhook,
		"https://clawd.internal:8787": ModePoll, "http://clawd.example.com": ModePoll} {
		if got := defaultMode(pub); got != mode {
			t.Errorf("default mode for %q: %s, want %s", pub, got, mode)
		}
	}
	if d := with("api-base", nil); true {
		ch, err := New("telegram", d, approval.Env{})
		if err != nil || ch.apiBase != DefaultAPIBase {
			t.Errorf("default api-base: %v %q", err, ch.apiBase)
		}
	}
}

func TestErrorsHideToken(t *testing.T) {
	f := fake.New()
	set := f.Settings()
	f.Close()
	ch, err := New("telegram", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(ctxT(t), testCard())
	if err == nil {
		t.Fatal("post to a closed server worked")
	}
	if strings.Contains(err.Error(), f.Token) || !strings.Contains(err.Error(), "<bot-token>") {
		t.Errorf("error: %v", err)
	}
	// A state file that is not ours is ignored, not trusted.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "state.json"), []byte("{garbage"), 0o600)
	ch, err = New("telegram", set, approval.Env{StateDir: dir})
	if err != nil || ch.seen.offset(now) != 0 {
		t.Errorf("garbage state: %v", err)
	}
}

func TestWithTheCore(t *testing.T) {
	s := newSetup(t, nil)
	ctx := ctxT(t)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{s.ch}
		c.Approvers = map[string][]string{"telegram": {"111"}}
	})
	run(t, s.ch, e.M)
	out := approvaltest.Async(e.M, ctx, approvaltest.Hold("agent-1", "PUT", "/repos/acme/app/pulls/7/merge"))
	id := approvaltest.WaitPending(t, e.M, 1)[0].ID
	m, err := s.f.WaitCard(ctx, id, func(m fake.Message) bool { return len(m.Keyboard) == 1 })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.Text, "SECRET-VALUE-123") || !strings.Contains(m.HTML, "tg://user?id=111") {
		t.Errorf("card: %s", m.HTML)
	}
	// Someone not asked is refused; the approver decides.
	reply, err := s.f.Click(ctx, id, approval.ActApprove, "222")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reply, "not asked") {
		t.Errorf("stranger saw %q", reply)
	}
	reply, err = s.f.Click(ctx, id, approval.ActApprove, "111")
	if err != nil {
		t.Fatal(err)
	}
	if o := approvaltest.Recv(t, out); !o.Approved {
		t.Fatalf("outcome %+v (clicker saw %q)", o, reply)
	}
	m, err = s.f.WaitCard(ctx, id, func(m fake.Message) bool { return len(m.Keyboard) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "Approved by") || !strings.HasPrefix(m.Text, "✅") {
		t.Errorf("decided card: %q", m.Text)
	}
	noViolations(t, s.f)
}

// TestExclusiveOnlyWhenPolling: getUpdates has one consumer per bot, so a
// fleet runs a polling channel on one host; a webhook channel takes its
// clicks on any host and is not leased.
func TestExclusiveOnlyWhenPolling(t *testing.T) {
	s := newSetup(t, nil)
	if !approval.IsExclusive(s.ch) {
		t.Error("a polling channel is not Exclusive")
	}
	set := s.f.Settings()
	set["mode"] = "webhook"
	hook, err := New("telegram", set, approval.Env{PublicURL: "https://clawd.example", StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if approval.IsExclusive(hook) {
		t.Error("a webhook channel is Exclusive")
	}
}
