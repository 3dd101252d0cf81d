package webex

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/webex/fake"
)

func TestPostCardShape(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, fake.Alice, fake.Bob, "not an id!")
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card posted")
	}
	if m.RoomID != fake.RoomID || m.ParentID == "" {
		t.Fatalf("card in room %q under %q; want the configured room, in a thread", m.RoomID, m.ParentID)
	}
	if ref != fake.RoomID+"|"+m.ParentID+"|"+m.ID {
		t.Fatalf("ref %q", ref)
	}
	// The head: what, who is asked (mentions), where to decide.
	for _, want := range []string{"clawd approval needed", "Create an issue in clawd-dev/clawd",
		"POST https://api.github.com/repos/clawd-dev/clawd/issues", "agent-1", "github-writes",
		"Asked: @Alice Example, @Bob Example", "buttons on the card in this thread"} {
		if !strings.Contains(m.Head, want) {
			t.Errorf("head lacks %q:\n%s", want, m.Head)
		}
	}
	head := s.fk.Messages()[0]
	if strings.Join(head.Mentions, ",") != fake.Alice+","+fake.Bob {
		t.Errorf("mentions %v, want the two person ids only", head.Mentions)
	}
	lines := strings.Split(fake.Unescape(m.Text), "\n")
	if lines[0] != "Create an issue in clawd-dev/clawd" {
		t.Fatalf("summary is not first: %q", lines[0])
	}
	for _, want := range []string{"Request: POST https://api.github.com/repos/clawd-dev/clawd/issues",
		"Container: agent-1", "Rule: github-writes", "Time left: 10m", `{"title":"hello"}`, "clawd " + a.ID} {
		if !strings.Contains(fake.Unescape(m.Text), want) {
			t.Errorf("card lacks %q:\n%s", want, m.Text)
		}
	}
	want := cardFor(a).Buttons()
	if len(m.Actions) != len(want) {
		t.Fatalf("actions %+v, want %d", m.Actions, len(want))
	}
	for i, b := range want {
		if got := m.Actions[i]; got.Type != "Action.Submit" || got.Value != b.Value || got.Title != b.Label {
			t.Errorf("action %d = %+v, want Submit %q", i, got, b.Value)
		}
	}
	if m.Actions[0].Style != "positive" || m.Actions[len(m.Actions)-1].Style != "destructive" {
		t.Errorf("styles %q/%q", m.Actions[0].Style, m.Actions[len(m.Actions)-1].Style)
	}
	if m.Card["version"] != "1.3" {
		t.Errorf("version %v", m.Card["version"])
	}
}

func TestClickDecides(t *testing.T) {
	for _, tc := range []struct {
		act      string
		approve  bool
		grantFor time.Duration
	}{{approval.ActApprove, true, 0}, {approval.ActApproveFor, true, approval.GrantFor}, {approval.ActDeny, false, 0}} {
		t.Run(tc.act, func(t *testing.T) {
			s := newSetup(t)
			a := newApproval()
			s.post(t, a, fake.Alice)
			reply, err := s.fk.Click(ctxT(t), a.ID, tc.act, fake.Alice)
			if err != nil {
				t.Fatal(err)
			}
			if want := "@Alice Example " + s.d.Res.Message; reply != want {
				t.Errorf("clicker sees %q, want %q", reply, want)
			}
			calls := s.d.Calls()
			if len(calls) != 1 {
				t.Fatalf("decider called %d times", len(calls))
			}
			want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: tc.approve, GrantFor: tc.grantFor,
				Channel: "webex", User: fake.Alice, Display: "Alice Example"}
			if calls[0] != want {
				t.Errorf("decision %+v\nwant     %+v", calls[0], want)
			}
		})
	}
}

func TestUnknownPersonHasNoDisplay(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a)
	eve := "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9ldmU"
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActDeny, eve); err != nil {
		t.Fatal(err)
	}
	if c := s.d.Calls(); len(c) != 1 || c[0].User != eve || c[0].Display != "" || c[0].Approve {
		t.Fatalf("decisions %+v", c)
	}
}

// TestInputsOnlyFromAction: the notification body is only a pointer; what
// it claims (inputs, person) is ignored in favour of the action clawd
// reads from Webex by id.
func TestInputsOnlyFromAction(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, fake.Alice)
	st, err := s.fk.Forge(ctxT(t), a.ID, approval.ActApprove, fake.Alice, fake.ForgeInputsInBody)
	if err != nil || st != http.StatusOK {
		t.Fatalf("status %d, %v", st, err)
	}
	c := s.d.Calls()
	if len(c) != 1 || !c[0].Approve || c[0].GrantFor != 0 || c[0].User != fake.Alice {
		t.Fatalf("decision %+v: taken from the body, not the action", c)
	}
}

func TestForgeriesRefused(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, fake.Alice)
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, fake.Alice); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    fake.Forgery
		want int
	}{
		{"bad signature", fake.ForgeBadSignature, 401},
		{"no signature", fake.ForgeNoSignature, 401},
		{"malformed", fake.ForgeMalformed, 400},
		{"other resource", fake.ForgeWrongResource, 400},
		{"unknown action", fake.ForgeUnknownAction, 404},
		// Genuine Webex notifications about actions clawd must not take:
		// answered 200 (so Webex does not disable the webhook), ignored.
		{"foreign message", fake.ForgeForeignMessage, 200},
		{"foreign room", fake.ForgeForeignRoom, 200},
		{"stale action", fake.ForgeStale, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, err := s.fk.Forge(ctxT(t), a.ID, approval.ActDeny, fake.Bob, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.want {
				t.Errorf("status %d, want %d", status, tc.want)
			}
		})
	}
	t.Run("replay", func(t *testing.T) {
		status, err := s.fk.Replay(ctxT(t))
		if err != nil || status != http.StatusConflict {
			t.Errorf("replay: %d, %v", status, err)
		}
	})
	if n := len(s.d.Calls()); n != 1 {
		t.Fatalf("decider called %d times; only the genuine click counts", n)
	}
	if m, _ := s.fk.Card(a.ID); len(m.Replies) != 1 {
		t.Errorf("replies %q: refused clicks must not be answered in the room", m.Replies)
	}
}

// TestButtonBoundToItsCard: an action whose inputs name another approval
// than the card's is answered and not decided.
func TestButtonBoundToItsCard(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, fake.Alice)
	st, err := s.fk.Forge(ctxT(t), a.ID, approval.ActApprove, fake.Alice, fake.ForgeOtherApproval)
	if err != nil || st != http.StatusOK {
		t.Fatalf("status %d, %v", st, err)
	}
	if n := len(s.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times", n)
	}
	m, _ := s.fk.Card(a.ID)
	if len(m.Replies) != 1 || !strings.Contains(m.Replies[0], "not a button of this clawd card") {
		t.Errorf("replies %q", m.Replies)
	}
}

func TestSignatureOverRawBody(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, fake.Alice)
	// Signed correctly, but for nothing clawd knows: 404, no decision.
	raw := `{"resource":"attachmentActions","event":"created","data":{"id":"Y2lzY29zcGFyazovL3VzL25vcGU"}}`
	if st, err := s.fk.Deliver(ctxT(t), []byte(raw)); err != nil || st != http.StatusNotFound {
		t.Fatalf("status %d, %v", st, err)
	}
	for name, raw := range map[string]string{"empty": ``, "array": `[]`, "no id": `{"resource":"attachmentActions","event":"created","data":{}}`,
		"bad id": `{"resource":"attachmentActions","event":"created","data":{"id":"../../people/me"}}`} {
		if st, err := s.fk.Deliver(ctxT(t), []byte(raw)); err != nil || st != http.StatusBadRequest {
			t.Errorf("%s: %d, %v", name, st, err)
		}
	}
	if n := len(s.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times", n)
	}
}

func TestEndpointMethodAndNoSecret(t *testing.T) {
	s := newSetup(t)
	rec := httptest.NewRecorder()
	s.ch.Callbacks(s.d).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, approval.CallbackPath("webex"), nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
	set := s.fk.Settings()
	delete(set, "webhook-secret")
	ch, err := New("webex", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Callbacks(s.d) != nil {
		t.Error("callbacks mounted without a webhook secret")
	}
}

func TestUpdateShowsOutcome(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Required = 2
	ref := s.post(t, a, fake.Alice, fake.Bob)
	first, _ := s.fk.Card(a.ID)
	// First approval of two: the head shows the vote, the card keeps its
	// buttons (Webex cannot edit a card).
	a.Votes = []approval.Vote{{By: "webex:" + fake.Alice, Display: "Alice"}}
	if err := s.ch.Update(ctxT(t), cardFor(a, fake.Alice, fake.Bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if m.ID != first.ID || len(m.Actions) != 3 || !strings.Contains(m.Head, "Approvals: 1 of 2 (webex:"+fake.Alice+" (Alice))") {
		t.Fatalf("after one vote: card %s actions %d, head:\n%s", m.ID, len(m.Actions), m.Head)
	}
	a.Status, a.By, a.Reason = approval.Denied, "webex:bob", "not today"
	if err := s.ch.Update(ctxT(t), cardFor(a, fake.Alice, fake.Bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.fk.Card(a.ID)
	if m.ID == first.ID || len(m.Actions) != 0 || m.ParentID != first.ParentID {
		t.Fatalf("decided: card %s (first %s) with %d actions in thread %s", m.ID, first.ID, len(m.Actions), m.ParentID)
	}
	text := fake.Unescape(m.Text)
	if !strings.Contains(text, "Denied by webex:bob") || !strings.Contains(text, "not today") || strings.Contains(text, "Time left") {
		t.Errorf("outcome card:\n%s", text)
	}
	if !strings.Contains(m.Head, "⛔ Denied by webex:bob") || !strings.Contains(m.Head, "not today") || strings.Contains(m.Head, "@Alice") {
		t.Errorf("head:\n%s", m.Head)
	}
	var deleted, cards int
	for _, msg := range s.fk.Messages() {
		if msg.ID == first.ID && msg.Deleted {
			deleted++
		}
		if msg.Card != nil && !msg.Deleted {
			cards++
		}
	}
	if deleted != 1 || cards != 1 {
		t.Fatalf("the card with buttons deleted: %d; cards shown: %d", deleted, cards)
	}
	// Again (a restart re-sends the outcome): no second outcome card.
	if err := s.ch.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	cards = 0
	for _, msg := range s.fk.Messages() {
		if msg.Card != nil && !msg.Deleted {
			cards++
		}
	}
	if cards != 1 {
		t.Errorf("%d cards after a repeated update", cards)
	}
	if err := s.ch.Update(ctxT(t), cardFor(a), "a|b"); err == nil {
		t.Error("malformed ref accepted")
	}
}

// TestUpdateAfterRestart: a new Channel (no memory) edits a card posted by
// an earlier one from the ref alone.
func TestUpdateAfterRestart(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, fake.Alice)
	ch2, err := New("webex", s.fk.Settings(), approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	a.Status = approval.Expired
	if err := ch2.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if len(m.Actions) != 0 || !strings.Contains(m.Head, "Expired") {
		t.Fatalf("card %+v", m)
	}
}

func TestTargetRoom(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	c := cardFor(a, fake.Alice)
	c.Target = fake.OtherRoomID
	ref, err := s.ch.Post(ctxT(t), c)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if m.RoomID != fake.OtherRoomID || !strings.HasPrefix(ref, fake.OtherRoomID+"|") {
		t.Fatalf("card in %q, ref %q", m.RoomID, ref)
	}
	reply, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, fake.Alice)
	if err != nil || !strings.Contains(reply, s.d.Res.Message) {
		t.Fatalf("click in the target room: %q, %v", reply, err)
	}
	c.Target = "not a room/../x y"
	if _, err := s.ch.Post(ctxT(t), c); err == nil {
		t.Error("bad target accepted")
	}
}

func TestCardFitsAndIsInert(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Summary = "Merge [this](https://evil.example) <@all> <@personId:" + fake.Bob + "> **now** " + strings.Repeat("x", 5000)
	a.URL = "https://api.github.com/`<@all>`" + strings.Repeat("p", 9000)
	a.Body = strings.Repeat("body ", 20000)
	a.BodySize, a.BodyTruncated = 100000, true
	s.post(t, a, fake.Alice)
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("not posted")
	}
	if raw, _ := json.Marshal(m.Card); len(raw) > MaxCard {
		t.Fatalf("card of %d bytes", len(raw))
	}
	head := s.fk.Messages()[0]
	if strings.Join(head.Mentions, ",") != fake.Alice || strings.Contains(head.Markdown, "<@all>") {
		t.Errorf("agent text mentions people: %v\n%.300s", head.Mentions, head.Markdown)
	}
	if strings.Contains(head.Markdown, "[this](") || strings.Contains(head.Markdown, "**now") {
		t.Errorf("agent text formats the head: %.300s", head.Markdown)
	}
	if len(m.Actions) != 3 {
		t.Errorf("buttons lost when shrinking: %d", len(m.Actions))
	}
}

func TestWrongTokenNotLeaked(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	set := fk.Settings()
	set["bot-token"] = "wrong-token-value-42"
	ch, err := New("webex", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || strings.Contains(err.Error(), "wrong-token-value-42") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("error %v", err)
	}
}

func TestSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	for name, mod := range map[string]func(map[string]any){
		"unknown key":      func(m map[string]any) { m["app-id"] = "x" },
		"no token":         func(m map[string]any) { delete(m, "bot-token") },
		"missing env":      func(m map[string]any) { m["bot-token"] = "env:CLAWD_WEBEX_NOPE_NOT_SET" },
		"no room":          func(m map[string]any) { delete(m, "room-id") },
		"bad room":         func(m map[string]any) { m["room-id"] = "room|1" },
		"short secret":     func(m map[string]any) { m["webhook-secret"] = "short" },
		"ftp api":          func(m map[string]any) { m["api-base"] = "ftp://x/" },
		"http api":         func(m map[string]any) { m["api-base"] = "http://webexapis.com" },
		"userinfo":         func(m map[string]any) { m["api-base"] = "https://u:p@webexapis.com" },
		"register, no url": func(m map[string]any) { m["register-webhook"] = true },
		"register, no secret": func(m map[string]any) {
			m["register-webhook"] = true
			delete(m, "webhook-secret")
		},
	} {
		set := fk.Settings()
		mod(set)
		if _, err := New("webex", set, approval.Env{}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), fake.BotToken) || strings.Contains(err.Error(), fake.WebhookSecret) {
			t.Errorf("%s: error leaks a credential: %v", name, err)
		}
	}
	set := fk.Settings()
	delete(set, "api-base")
	ch, err := New("webex", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if ch.base != DefaultAPIBase {
		t.Errorf("default api-base %q", ch.base)
	}
}

func registering(t *testing.T, fk *fake.Server) (*Channel, *decider, string) {
	t.Helper()
	d := &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "Approved."}}
	var ch *Channel
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ch.Callbacks(d).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	set := fk.Settings()
	set["register-webhook"] = true
	var err error
	ch, err = New("webex", set, approval.Env{PublicURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return ch, d, srv.URL + approval.CallbackPath("webex")
}

func TestWebhookRegistration(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	// An old set-up: clawd's webhook pointing elsewhere and disabled, a
	// duplicate, and somebody else's webhook that must stay.
	fk.AddWebhook(fake.Webhook{Name: "clawd webex", TargetURL: "https://old.example/x", Resource: "attachmentActions", Event: "created", Secret: "old-secret-0123456789", Status: "inactive"})
	fk.AddWebhook(fake.Webhook{Name: "clawd webex", TargetURL: "https://old.example/y", Resource: "messages", Event: "created"})
	other := fk.AddWebhook(fake.Webhook{Name: "stand-up bot", TargetURL: "https://other.example/", Resource: "messages", Event: "created"})
	fk.FailWebhooks(1) // the first try fails: Run retries
	ch, d, target := registering(t, fk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx, d) }()
	defer func() { cancel(); <-done }()
	hooks, err := fk.WaitWebhooks(ctxT(t), func(hs []fake.Webhook) bool {
		return len(hs) == 2 && hs[0].TargetURL == target && hs[0].Status == "active"
	})
	if err != nil {
		t.Fatalf("webhooks %+v: %v", hooks, err)
	}
	if h := hooks[0]; h.Resource != "attachmentActions" || h.Event != "created" || h.Secret != fake.WebhookSecret || h.Name != "clawd webex" {
		t.Errorf("webhook %+v", h)
	}
	if hooks[1].ID != other {
		t.Errorf("another app's webhook was touched: %+v", hooks)
	}
	// Clicks now arrive through the registered webhook (no SetEndpoint).
	a := newApproval()
	if _, err := ch.Post(ctxT(t), cardFor(a, fake.Alice)); err != nil {
		t.Fatal(err)
	}
	if reply, err := fk.Click(ctxT(t), a.ID, approval.ActApprove, fake.Alice); err != nil || !strings.Contains(reply, "Approved.") {
		t.Fatalf("click: %q, %v", reply, err)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Fatal(v)
	}
}

func TestWebhookCreatedWhenMissing(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	ch, _, target := registering(t, fk)
	if err := ch.RegisterWebhook(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := ch.RegisterWebhook(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	hs := fk.Webhooks()
	if len(hs) != 1 || hs[0].TargetURL != target || hs[0].Secret != fake.WebhookSecret {
		t.Fatalf("webhooks %+v", hs)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Fatal(v)
	}
}

// TestWithCore runs the real approval core: a held request is posted to
// Webex, refused for a stranger, approved by a click, and the thread shows
// the outcome.
func TestWithCore(t *testing.T) {
	s := newSetup(t)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{s.ch}
		c.Approvers = map[string][]string{"webex": {fake.Alice}}
	})
	srv := httptest.NewServer(s.ch.Callbacks(e.M))
	t.Cleanup(srv.Close)
	s.fk.SetEndpoint(srv.URL + approval.CallbackPath("webex"))
	out := approvaltest.Async(e.M, ctxT(t), approvaltest.Hold("agent-1", "POST", "/repos/clawd-dev/clawd/merges"))
	id := approvaltest.WaitPending(t, e.M, 1)[0].ID
	m, err := s.fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Actions) > 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Head, "@Alice Example") {
		t.Errorf("head does not mention the approver:\n%s", m.Head)
	}
	reply, err := s.fk.Click(ctxT(t), id, approval.ActApprove, fake.Bob)
	if err != nil || !strings.Contains(reply, "not asked") {
		t.Fatalf("bob: %q, %v", reply, err)
	}
	reply, err = s.fk.Click(ctxT(t), id, approval.ActApprove, fake.Alice)
	if err != nil || !strings.Contains(reply, "Approved") || !strings.HasPrefix(reply, "@Alice Example ") {
		t.Fatalf("alice: %q, %v", reply, err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "webex:"+fake.Alice {
		t.Fatalf("outcome %+v", o)
	}
	m, err = s.fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Actions) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fake.Unescape(m.Text), "Approved") || !strings.Contains(m.Head, "Approved") {
		t.Errorf("decided card:\n%s\nhead:\n%s", m.Text, m.Head)
	}
	for _, msg := range s.fk.Messages() {
		raw, _ := json.Marshal(msg.Card)
		if strings.Contains(string(raw)+msg.Markdown, "SECRET-VALUE-123") {
			t.Errorf("a message shows the request's secret")
		}
	}
}
