package ntfy

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/ntfy/fake"
	"github.com/clawd-dev/clawd/policy"
)

func init() { backoffMin = 20 * time.Millisecond }

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// decider records decisions and answers with result (ResultDecided by default).
type decider struct {
	mu     sync.Mutex
	calls  []approval.Decision
	got    chan approval.Decision
	result func(approval.Decision) approval.Result
}

func newDecider() *decider { return &decider{got: make(chan approval.Decision, 100)} }

func (d *decider) Decide(_ context.Context, dec approval.Decision) approval.Result {
	d.mu.Lock()
	d.calls = append(d.calls, dec)
	f := d.result
	d.mu.Unlock()
	d.got <- dec
	if f != nil {
		return f(dec)
	}
	return approval.Result{Outcome: approval.ResultDecided, Message: "Approved."}
}

func (d *decider) count() int { d.mu.Lock(); defer d.mu.Unlock(); return len(d.calls) }

func (d *decider) next(t *testing.T) approval.Decision {
	t.Helper()
	select {
	case dec := <-d.got:
		return dec
	case <-time.After(10 * time.Second):
		t.Fatal("no decision")
	}
	return approval.Decision{}
}

type harness struct {
	t     *testing.T
	srv   *fake.Server
	dir   string
	clock *clock
	logs  *observer.ObservedLogs
	core  zapcore.Core
	ch    *Channel
	dec   *decider
	stop  func()
}

func setup(t *testing.T) *harness {
	t.Helper()
	srv := fake.New()
	t.Cleanup(srv.Close)
	h := &harness{t: t, srv: srv, dir: t.TempDir(), clock: &clock{t: time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)}}
	h.core, h.logs = observer.New(zapcore.DebugLevel)
	h.ch = h.newChannel()
	t.Cleanup(func() {
		if v := srv.Violations(); len(v) > 0 {
			t.Errorf("payload violations: %q", v)
		}
		h.noSecretsLogged()
	})
	return h
}

func (h *harness) newChannel() *Channel {
	h.t.Helper()
	ch, err := New("phone", h.srv.Settings(), approval.Env{Log: zap.New(h.core), Now: h.clock.now, StateDir: h.dir})
	if err != nil {
		h.t.Fatal(err)
	}
	return ch
}

// run starts the listener with a fresh decider.
func (h *harness) run() *decider {
	h.t.Helper()
	d := newDecider()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.ch.Run(ctx, d); close(done) }()
	h.stop = func() { cancel(); <-done }
	h.t.Cleanup(h.stop)
	h.dec = d
	return d
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// noSecretsLogged fails if a token or a hash of one appears in the log.
func (h *harness) noSecretsLogged() {
	var toks []string
	for _, who := range []string{"alice", "bob"} {
		for _, m := range h.srv.Messages(h.srv.Topics[who]) {
			for _, a := range m.Actions {
				toks = append(toks, a.Body, hashToken(a.Body))
			}
		}
	}
	toks = append(toks, h.srv.Token)
	for _, e := range h.logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, tok := range toks {
			if strings.Contains(line, tok) {
				h.t.Errorf("log line carries a secret: %q", e.Message)
			}
		}
	}
}

func newCard(now time.Time) *approval.Card {
	r := make([]byte, 20)
	rand.Read(r)
	id := strings.ToLower(base32.StdEncoding.EncodeToString(r))[:26]
	dg := make([]byte, 32)
	rand.Read(dg)
	a := &approval.Approval{
		ID: id, Status: approval.Pending, Method: "POST", URL: "https://api.github.com/repos/acme/app/issues",
		Host: "api.github.com", Container: policy.Container{Name: "agent-7"}, Rule: "github-writes",
		Summary: "Open issue in acme/app: \"Fix login\"", Body: `{"title":"Fix login"}`, BodySize: 22,
		Created: now, Expires: now.Add(10 * time.Minute), Digest: hex.EncodeToString(dg), GrantsAllowed: true, Required: 1,
	}
	return &approval.Card{Approval: a, Channel: "phone", Now: now}
}

func (h *harness) post(c *approval.Card) string {
	h.t.Helper()
	ref, err := h.ch.Post(h.ctx(), c)
	if err != nil {
		h.t.Fatal(err)
	}
	return ref
}

// sentinel posts a fresh approval, presses its Deny as bob and waits for
// that decision: everything published to the reply topic before it has
// been processed by then.
func (h *harness) sentinel() {
	h.t.Helper()
	c := newCard(h.clock.now())
	h.post(c)
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActDeny, "bob"); err != nil {
		h.t.Fatal(err)
	}
	d := h.dec.next(h.t)
	if d.ID != c.ID {
		h.t.Fatalf("expected the sentinel decision, got %+v", d)
	}
}

func TestPostCardShape(t *testing.T) {
	h := setup(t)
	c := newCard(h.clock.now())
	ref := h.post(c)

	var bodies []string
	for _, who := range []string{"alice", "bob"} {
		m, ok := h.srv.CardFor(c.ID, who)
		if !ok {
			t.Fatalf("%s got no notification", who)
		}
		if !strings.Contains(ref, who+"="+m.ID) {
			t.Errorf("ref %q does not name %s's message %s", ref, who, m.ID)
		}
		if m.Title != `Approve? Open issue in acme/app: "Fix login"` || m.Priority != 4 {
			t.Errorf("title/priority = %q/%d", m.Title, m.Priority)
		}
		lines := strings.Split(m.Message, "\n")
		want := []string{
			`Open issue in acme/app: "Fix login"`,
			"POST https://api.github.com/repos/acme/app/issues",
			"Container: agent-7",
			"Rule: github-writes",
			"Expires in 10m0s (15:10:00 UTC)",
			"ID: " + c.ID,
			"Body (22 bytes):",
			`│ {"title":"Fix login"}`,
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			t.Errorf("message:\n%s\nwant:\n%s", m.Message, strings.Join(want, "\n"))
		}
		if len(m.Actions) != 3 {
			t.Fatalf("%d actions", len(m.Actions))
		}
		for i, label := range []string{"Approve", "Approve 15 min", "Deny"} {
			a := m.Actions[i]
			if a.Action != "http" || a.Label != label || a.Method != "POST" || !a.Clear ||
				a.URL != h.srv.URL+"/"+h.ch.ReplyTopic() || len(a.Body) != 64 {
				t.Errorf("action %d = %+v", i, a)
			}
			bodies = append(bodies, a.Body)
		}
	}
	seen := map[string]bool{}
	for _, b := range bodies {
		if seen[b] {
			t.Error("a token is shared between buttons or approvers")
		}
		seen[b] = true
	}
	// Only hashes on disk.
	raw, err := os.ReadFile(filepath.Join(h.dir, "ntfy-phone.tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if strings.Contains(string(raw), b) {
			t.Error("a raw token is stored on disk")
		}
		if !strings.Contains(string(raw), hashToken(b)) {
			t.Error("a token hash is missing on disk")
		}
	}
	if fi, _ := os.Stat(filepath.Join(h.dir, "ntfy-phone.tokens.json")); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", fi.Mode())
	}
}

func TestNoGrantsTwoButtons(t *testing.T) {
	h := setup(t)
	c := newCard(h.clock.now())
	c.GrantsAllowed = false
	h.post(c)
	m, _ := h.srv.CardFor(c.ID, "alice")
	if len(m.Actions) != 2 || m.Actions[0].Label != "Approve" || m.Actions[1].Label != "Deny" {
		t.Fatalf("actions = %+v", m.Actions)
	}
}

func TestPeopleAddressed(t *testing.T) {
	h := setup(t)
	c := newCard(h.clock.now())
	c.People = []string{"bob", "mallory"}
	ref := h.post(c)
	if _, ok := h.srv.CardFor(c.ID, "alice"); ok {
		t.Error("alice was not asked but got the card")
	}
	if _, ok := h.srv.CardFor(c.ID, "bob"); !ok {
		t.Error("bob was asked but got no card")
	}
	if strings.Contains(ref, "alice") || strings.Contains(ref, "mallory") {
		t.Errorf("ref %q", ref)
	}
	c2 := newCard(h.clock.now())
	c2.People = []string{"mallory"}
	if _, err := h.ch.Post(h.ctx(), c2); err == nil {
		t.Error("Post to nobody with a topic succeeded")
	}
}

func TestClickDecides(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)

	reply, err := h.srv.Click(h.ctx(), c.ID, approval.ActApproveFor, "alice")
	if err != nil || reply != "200 OK" {
		t.Fatalf("click: %q %v", reply, err)
	}
	got := d.next(t)
	want := approval.Decision{ID: c.ID, Digest: c.Digest[:16], Approve: true, GrantFor: approval.GrantFor, Channel: "phone", User: "alice", Display: "alice"}
	if got != want {
		t.Fatalf("decision = %+v, want %+v", got, want)
	}

	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActDeny, "bob"); err != nil {
		t.Fatal(err)
	}
	got = d.next(t)
	if got.User != "bob" || got.Approve || got.GrantFor != 0 || got.ID != c.ID {
		t.Fatalf("deny decision = %+v", got)
	}
}

func TestTokenSingleUse(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)
	a, err := h.srv.Action(c.ID, approval.ActApprove, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Press(h.ctx(), a); err != nil {
		t.Fatal(err)
	}
	if got := d.next(t); got.User != "alice" || !got.Approve {
		t.Fatalf("first press: %+v", got)
	}
	// The same button again, and the token copied into a new message.
	if _, err := fake.Press(h.ctx(), a); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Publish(h.ctx(), h.ch.ReplyTopic(), a.Body); err != nil {
		t.Fatal(err)
	}
	h.sentinel()
	if n := d.count(); n != 2 {
		t.Fatalf("%d decisions, want 2 (first press and sentinel)", n)
	}
}

func TestForgedRepliesIgnored(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)
	rnd := make([]byte, 32)
	rand.Read(rnd)
	ctx := h.ctx()
	for _, body := range []string{
		hex.EncodeToString(rnd),                               // a well-formed token nobody issued
		approval.ButtonValue(approval.ActApprove, c.Approval), // the button value itself
		"alice", "", strings.Repeat("a", 4000),
		strings.ToUpper(hex.EncodeToString(rnd)),
	} {
		if err := h.srv.Publish(ctx, h.ch.ReplyTopic(), body); err != nil {
			t.Fatal(err)
		}
	}
	h.sentinel()
	if n := d.count(); n != 1 {
		t.Fatalf("%d decisions, want only the sentinel", n)
	}
	var ignored int
	for _, e := range h.logs.All() {
		if strings.HasPrefix(e.Message, "ntfy: ignored") {
			ignored++
			if e.Level != zapcore.InfoLevel {
				t.Errorf("%q logged at %v", e.Message, e.Level)
			}
		}
	}
	if ignored != 6 {
		t.Errorf("%d ignored replies logged, want 6", ignored)
	}
}

func TestExpiredTokenIgnored(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)
	h.clock.add(10*time.Minute + time.Second)
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActApprove, "alice"); err != nil {
		t.Fatal(err)
	}
	h.sentinel()
	if n := d.count(); n != 1 {
		t.Fatalf("%d decisions, want only the sentinel", n)
	}
}

func TestReconnectResumesSince(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)
	if _, err := h.srv.WaitSubscriptions(h.ctx(), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActApprove, "alice"); err != nil {
		t.Fatal(err)
	}
	d.next(t)
	replies := h.srv.Messages(h.ch.ReplyTopic())
	last := replies[len(replies)-1].ID

	h.srv.Drop()
	subs, err := h.srv.WaitSubscriptions(h.ctx(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if subs[0].Since != "all" || subs[1].Since != last || subs[1].Topic != h.ch.ReplyTopic() {
		t.Fatalf("subscriptions = %+v, want since=all then since=%s", subs, last)
	}
	// A press made after the reconnect is decided; the old one is not
	// processed again.
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActDeny, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := d.next(t); got.User != "bob" {
		t.Fatalf("after reconnect: %+v", got)
	}
	h.sentinel()
	if n := d.count(); n != 3 {
		t.Fatalf("%d decisions, want 3", n)
	}
}

func TestTokensSurviveRestart(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	h.post(c)
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActApprove, "bob"); err != nil {
		t.Fatal(err)
	}
	d.next(t)
	reply := h.ch.ReplyTopic()
	h.stop()

	// Pressed while clawd is down.
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActDeny, "alice"); err != nil {
		t.Fatal(err)
	}
	h.ch = h.newChannel()
	if h.ch.ReplyTopic() != reply {
		t.Fatalf("reply topic changed across restart: %s → %s", reply, h.ch.ReplyTopic())
	}
	d2 := h.run()
	got := d2.next(t)
	if got.User != "alice" || got.Approve || got.ID != c.ID {
		t.Fatalf("after restart: %+v", got)
	}
	// bob's used token stays used.
	if err := h.srv.Publish(h.ctx(), reply, mustAction(t, h.srv, c.ID, approval.ActApprove, "bob").Body); err != nil {
		t.Fatal(err)
	}
	h.sentinel()
	if n := d2.count(); n != 2 {
		t.Fatalf("%d decisions after restart, want 2", n)
	}
	subs := h.srv.Subscriptions()
	if subs[len(subs)-1].Since == "all" {
		t.Error("restarted listener did not resume from the persisted position")
	}
}

func mustAction(t *testing.T, s *fake.Server, id, act, who string) fake.Action {
	t.Helper()
	a, err := s.Action(id, act, who)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestUpdateShowsOutcomeAndRevokes(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	ref := h.post(c)
	first, _ := h.srv.CardFor(c.ID, "alice")
	old := mustAction(t, h.srv, c.ID, approval.ActApprove, "bob")

	done := *c.Approval
	done.Status, done.By, done.Reason = approval.Approved, "phone:alice", "looks fine"
	if err := h.ch.Update(h.ctx(), &approval.Card{Approval: &done, Channel: "phone", Now: h.clock.now()}, ref); err != nil {
		t.Fatal(err)
	}
	m, _ := h.srv.CardFor(c.ID, "alice")
	if m.SequenceID != first.ID || len(m.Actions) != 0 || m.Title != `Approved: Open issue in acme/app: "Fix login"` ||
		!strings.HasPrefix(m.Message, "Approved by phone:alice\nReason: looks fine\n") || strings.Contains(m.Message, "Expires") {
		t.Fatalf("updated card = %+v", m)
	}
	if mb, _ := h.srv.CardFor(c.ID, "bob"); mb.SequenceID == "" || len(mb.Actions) != 0 {
		t.Fatalf("bob's card not replaced: %+v", mb)
	}
	// The buttons of the replaced card do nothing now.
	if _, err := fake.Press(h.ctx(), old); err != nil {
		t.Fatal(err)
	}
	h.sentinel()
	if n := d.count(); n != 1 {
		t.Fatalf("%d decisions, want only the sentinel", n)
	}
}

func TestPendingUpdateKeepsButtons(t *testing.T) {
	h := setup(t)
	d := h.run()
	c := newCard(h.clock.now())
	c.Required = 2
	ref := h.post(c)
	voted := *c.Approval
	voted.Votes = []approval.Vote{{By: "phone:alice", At: h.clock.now()}}
	if err := h.ch.Update(h.ctx(), &approval.Card{Approval: &voted, Channel: "phone", Now: h.clock.now()}, ref); err != nil {
		t.Fatal(err)
	}
	m, _ := h.srv.CardFor(c.ID, "bob")
	if len(m.Actions) != 3 || m.SequenceID == "" || !strings.Contains(m.Message, "Approvals: 1 of 2 (phone:alice)") {
		t.Fatalf("pending update = %+v", m)
	}
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActApprove, "bob"); err != nil {
		t.Fatal(err)
	}
	if got := d.next(t); got.User != "bob" || !got.Approve {
		t.Fatalf("%+v", got)
	}
}

func TestClickerSeesRefusal(t *testing.T) {
	h := setup(t)
	d := h.run()
	d.result = func(approval.Decision) approval.Result {
		return approval.Result{Outcome: approval.ResultSelf, Message: "You cannot approve your own request."}
	}
	c := newCard(h.clock.now())
	h.post(c)
	if _, err := h.srv.Click(h.ctx(), c.ID, approval.ActApprove, "alice"); err != nil {
		t.Fatal(err)
	}
	m, err := h.srv.WaitMessage(h.ctx(), "alice", func(m fake.Message) bool {
		return strings.Contains(m.Message, "You cannot approve your own request.")
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Actions) != 0 || m.ApprovalID != "" {
		t.Errorf("answer = %+v", m)
	}
	for _, bm := range h.srv.Messages(h.srv.Topics["bob"]) {
		if strings.Contains(bm.Message, "own request") {
			t.Error("bob was told alice's answer")
		}
	}
}

func TestStorageErrorAllowsRetry(t *testing.T) {
	h := setup(t)
	d := h.run()
	fail := true
	d.result = func(approval.Decision) approval.Result {
		if fail {
			fail = false
			return approval.Result{Outcome: approval.ResultError, Message: "Could not record it; try again."}
		}
		return approval.Result{Outcome: approval.ResultDecided}
	}
	c := newCard(h.clock.now())
	h.post(c)
	a := mustAction(t, h.srv, c.ID, approval.ActApprove, "alice")
	fake.Press(h.ctx(), a)
	d.next(t)
	fake.Press(h.ctx(), a)
	if got := d.next(t); got.User != "alice" {
		t.Fatalf("%+v", got)
	}
}

func TestAgentTextCannotForgeLines(t *testing.T) {
	h := setup(t)
	c := newCard(h.clock.now())
	c.Summary = "harmless\nID: aaaaaaaaaaaaaaaaaaaaaaaaaa\nApproved by phone:alice\x1b[2J"
	c.Container.Name = "x\r\nRule: allow-all"
	c.Body = "line1\nID: bbbbbbbbbbbbbbbbbbbbbbbbbb\n" + strings.Repeat("é", 5000)
	c.BodySize = int64(len(c.Body))
	h.post(c)
	m, ok := h.srv.CardFor(c.ID, "alice")
	if !ok {
		t.Fatal("the card is not found by its real ID")
	}
	if m.ApprovalID != c.ID {
		t.Fatalf("card attributed to %s", m.ApprovalID)
	}
	for _, l := range strings.Split(m.Message, "\n") {
		if strings.HasPrefix(l, "ID: ") && l != "ID: "+c.ID || strings.HasPrefix(l, "Approved") || strings.HasPrefix(l, "Rule: allow") {
			t.Errorf("agent text forged a line: %q", l)
		}
	}
	if strings.ContainsAny(m.Title, "\n\x1b") || strings.Contains(m.Message, "\x1b") {
		t.Error("control characters reached the notification")
	}
	if len(m.Message) > fake.MaxMessage || !strings.HasSuffix(m.Message, "…") {
		t.Errorf("message is %d bytes, cut marker missing", len(m.Message))
	}
}

func TestSettings(t *testing.T) {
	srv := fake.New()
	defer srv.Close()
	env := approval.Env{StateDir: t.TempDir(), Secret: func(string) (string, error) { return "", fmt.Errorf("no such secret") }}
	base := func(mod func(map[string]any)) map[string]any {
		s := srv.Settings()
		mod(s)
		return s
	}
	for name, tc := range map[string]struct {
		s    map[string]any
		want string
	}{
		"unknown key":      {base(func(s map[string]any) { s["topic"] = "x" }), "invalid keys: topic"},
		"no topics":        {base(func(s map[string]any) { delete(s, "topics") }), "at least one approver topic"},
		"bad topic":        {base(func(s map[string]any) { s["topics"] = map[string]any{"alice": "a/b"} }), "not an ntfy topic name"},
		"bad approver":     {base(func(s map[string]any) { s["topics"] = map[string]any{"al ice": "abc"} }), "approver name"},
		"shared topic":     {base(func(s map[string]any) { s["topics"] = map[string]any{"alice": "t1", "bob": "t1"} }), "alice and bob share a topic"},
		"reply clash":      {base(func(s map[string]any) { s["reply-topic"] = srv.Topics["alice"] }), "must differ"},
		"bad reply":        {base(func(s map[string]any) { s["reply-topic"] = "a b" }), "reply-topic"},
		"http remote":      {base(func(s map[string]any) { s["server"] = "http://ntfy.example.com" }), "http:// only for a server on this host"},
		"ftp":              {base(func(s map[string]any) { s["server"] = "ftp://ntfy.example.com" }), "https://"},
		"query":            {base(func(s map[string]any) { s["server"] = "https://ntfy.example.com/?a=1" }), "no user, query"},
		"priority":         {base(func(s map[string]any) { s["priority"] = "loud" }), "priority"},
		"secret missing":   {base(func(s map[string]any) { s["token"] = "secret:ntfy" }), "no such secret"},
		"token multi-line": {base(func(s map[string]any) { s["token"] = "tk_a\nb" }), "single line"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New("phone", tc.s, env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), srv.Token) {
				t.Error("error carries the token")
			}
		})
	}
	if _, err := New("phone", srv.Settings(), approval.Env{}); err == nil {
		t.Error("no StateDir accepted")
	}
	ch, err := New("", map[string]any{"topics": map[string]any{"alice": "clawd-alice-0123456789abcdef"}, "priority": 5}, env)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Name() != "ntfy" || ch.server != DefaultServer || ch.priority != 5 || !strings.HasPrefix(ch.reply, "clawd-reply-") || len(ch.reply) != 44 {
		t.Errorf("defaults: %+v", ch)
	}
	ch2, _ := New("", map[string]any{"topics": map[string]any{"alice": "clawd-alice-0123456789abcdef"}, "reply-topic": "my-reply-topic-xyz"}, env)
	if ch2.reply != "my-reply-topic-xyz" {
		t.Errorf("reply-topic setting ignored: %s", ch2.reply)
	}
}

func TestPublishErrorNamesNoToken(t *testing.T) {
	srv := fake.New()
	defer srv.Close()
	s := srv.Settings()
	s["token"] = "tk_wrongwrongwrong"
	ch, err := New("phone", s, approval.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(context.Background(), newCard(time.Now()))
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "tk_wrong") {
		t.Fatalf("err = %v", err)
	}
	if ch.state.tokens != nil && len(ch.state.tokens) != 0 {
		t.Error("tokens of a failed publish were kept")
	}
}
