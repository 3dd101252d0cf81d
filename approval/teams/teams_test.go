package teams

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/teams/fake"
)

func TestPostCardShape(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, alice, bob, "not-an-aad-id")
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card posted")
	}
	if ref != fake.ConversationID+"|"+m.ActivityID {
		t.Fatalf("ref %q, want conversation|activity %s", ref, m.ActivityID)
	}
	lines := strings.Split(m.Text, "\n")
	if lines[0] != "Create an issue in clawd\\-dev/clawd" && lines[0] != "Create an issue in clawd-dev/clawd" {
		t.Fatalf("summary is not first: %q", lines[0])
	}
	for _, want := range []string{"Request: POST https://api.github.com/repos/clawd-dev/clawd/issues",
		"Container: agent-1", "Rule: github-writes", "Time left: 10m", `{"title":"hello"}`, "<at>approver 1</at>"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("card lacks %q:\n%s", want, m.Text)
		}
	}
	if strings.Join(m.Mentions, ",") != alice+","+bob {
		t.Errorf("mentions %v, want the two AAD ids only", m.Mentions)
	}
	want := cardFor(a).Buttons()
	if len(m.Actions) != len(want) {
		t.Fatalf("actions %+v, want %d", m.Actions, len(want))
	}
	for i, b := range want {
		got := m.Actions[i]
		if got.Type != "Action.Execute" || got.Verb != Verb || got.Value != b.Value || got.Title != b.Label || got.Fallback != "Action.Submit" {
			t.Errorf("action %d = %+v, want Execute %q with Submit fallback", i, got, b.Value)
		}
	}
	if m.Actions[0].Style != "positive" || m.Actions[len(m.Actions)-1].Style != "destructive" {
		t.Errorf("styles %q/%q", m.Actions[0].Style, m.Actions[len(m.Actions)-1].Style)
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
			s.post(t, a, alice)
			decided := *a
			decided.Status, decided.By = approval.Approved, "teams:"+alice
			s.d.Res.Approval = &decided
			reply, err := s.fk.Click(ctxT(t), a.ID, tc.act, alice)
			if err != nil {
				t.Fatal(err)
			}
			if reply != s.d.Res.Message {
				t.Errorf("clicker sees %q, want %q", reply, s.d.Res.Message)
			}
			calls := s.d.Calls()
			if len(calls) != 1 {
				t.Fatalf("decider called %d times", len(calls))
			}
			want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: tc.approve, GrantFor: tc.grantFor,
				Channel: "teams", User: alice, Display: "User " + alice}
			if calls[0] != want {
				t.Errorf("decision %+v\nwant     %+v", calls[0], want)
			}
			// The card the clicker gets back shows the outcome, no buttons.
			card, ok := s.fk.InvokeCard(a.ID)
			if !ok || card["actions"] != nil || !strings.Contains(mustJSON(card), "Approved") {
				t.Errorf("refreshed card %s", mustJSON(card))
			}
		})
	}
}

func TestClickWithoutApprovalAnswersMessage(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a)
	s.d.Res = approval.Result{Outcome: approval.ResultNotFound, Message: "No such approval."}
	reply, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, bob)
	if err != nil || reply != "No such approval." {
		t.Fatalf("reply %q, %v", reply, err)
	}
}

func TestSubmitFallbackRepliesInThread(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	s.d.Res = approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not asked to decide this request; nothing changed."}
	reply, err := s.fk.ClickSubmit(ctxT(t), a.ID, approval.ActDeny, bob)
	if err != nil {
		t.Fatal(err)
	}
	if reply != s.d.Res.Message {
		t.Errorf("thread reply %q", reply)
	}
	if c := s.d.Calls(); len(c) != 1 || c[0].User != bob || c[0].Approve {
		t.Errorf("decisions %+v", c)
	}
}

func TestForgeriesRefused(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	// A genuine click first, so the keys are loaded and known good.
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    fake.Forgery
		want int
	}{
		{"wrong key", fake.ForgeWrongKey, 401},
		{"unknown key", fake.ForgeUnknownKey, 401},
		{"unendorsed key", fake.ForgeUnendorsed, 401},
		{"wrong audience", fake.ForgeWrongAudience, 401},
		{"wrong issuer", fake.ForgeWrongIssuer, 401},
		{"expired", fake.ForgeExpired, 401},
		{"not yet valid", fake.ForgeNotYetValid, 401},
		{"serviceUrl mismatch", fake.ForgeServiceURL, 401},
		{"no token", fake.ForgeNoToken, 401},
		{"HS256", fake.ForgeHS256, 401},
		{"other conversation", fake.ForgeOtherConversation, 401},
		{"other bot", fake.ForgeOtherRecipient, 401},
		{"malformed", fake.ForgeMalformed, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, err := s.fk.Forge(ctxT(t), a.ID, approval.ActApprove, bob, tc.f)
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
		if err != nil || status != 401 {
			t.Errorf("replay: %d, %v", status, err)
		}
	})
	if n := len(s.d.Calls()); n != 1 {
		t.Fatalf("decider called %d times; only the genuine click counts", n)
	}
}

func TestMalformedActivities(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	for name, raw := range map[string]string{
		"empty":       ``,
		"array":       `[]`,
		"no id":       `{"type":"invoke","name":"adaptiveCard/action","channelId":"msteams","serviceUrl":"` + s.fk.ServiceURL() + `","recipient":{"id":"28:` + fake.AppID + `"},"conversation":{"id":"` + fake.ConversationID + `"}}`,
		"not msteams": `{"type":"invoke","id":"x1","name":"adaptiveCard/action","channelId":"slack","serviceUrl":"` + s.fk.ServiceURL() + `","recipient":{"id":"28:` + fake.AppID + `"},"conversation":{"id":"` + fake.ConversationID + `"}}`,
	} {
		status, err := s.fk.Deliver(ctxT(t), []byte(raw))
		if err != nil || (status != 400 && status != 401) {
			t.Errorf("%s: %d, %v", name, status, err)
		}
	}
	// Authenticated but not a clawd button: answered, decider not called.
	bad := `{"type":"invoke","id":"x2","name":"adaptiveCard/action","channelId":"msteams","serviceUrl":"` + s.fk.ServiceURL() +
		`","from":{"id":"29:1","aadObjectId":"` + alice + `"},"recipient":{"id":"28:` + fake.AppID + `"},"conversation":{"id":"` + fake.ConversationID +
		`"},"value":{"action":{"type":"Action.Execute","verb":"clawd","data":{"v":"a:../../x:zz"}}}}`
	if status, err := s.fk.Deliver(ctxT(t), []byte(bad)); err != nil || status != 200 {
		t.Errorf("bad button: %d, %v", status, err)
	}
	if n := len(s.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times", n)
	}
}

func TestEndpointMethod(t *testing.T) {
	s := newSetup(t)
	srv := s.ch.Callbacks(s.d)
	rec := &recorder{h: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, "http://x"+approval.CallbackPath("teams"), nil)
	srv.ServeHTTP(rec, req)
	if rec.code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.code)
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func TestKeyRotation(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	s.fk.Rotate()
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatalf("click signed with the rotated key: %v", err)
	}
	if n := len(s.d.Calls()); n != 2 {
		t.Fatalf("decider called %d times, want 2", n)
	}
}

func TestUpdateReplacesButtons(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Required = 2
	ref := s.post(t, a, alice, bob)
	// First approval of two: still pending, buttons stay, votes shown.
	a.Votes = []approval.Vote{{By: "teams:" + alice, Display: "Alice"}}
	if err := s.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if len(m.Actions) != 3 || !strings.Contains(m.Text, "Approvals: 1 of 2 (teams:"+alice+" (Alice))") {
		t.Fatalf("after one vote: actions %d, text:\n%s", len(m.Actions), m.Text)
	}
	a.Status, a.By, a.Reason = approval.Denied, "teams:"+bob, "not today"
	if err := s.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.fk.Card(a.ID)
	if len(m.Actions) != 0 || m.Updates != 2 {
		t.Fatalf("decided card still has %d actions (updates %d)", len(m.Actions), m.Updates)
	}
	if !strings.Contains(m.Text, "Denied by teams:"+bob) || !strings.Contains(m.Text, "not today") || strings.Contains(m.Text, "Time left") {
		t.Errorf("outcome not shown:\n%s", m.Text)
	}
	if len(s.fk.Messages()) != 1 {
		t.Errorf("update posted a new message")
	}
	if err := s.ch.Update(ctxT(t), cardFor(a), "19:other@thread.tacv2|1"); err == nil {
		t.Errorf("update of another conversation's message accepted")
	}
}

func TestTokenCachedAndRenewed(t *testing.T) {
	s := newSetup(t)
	s.post(t, newApproval())
	s.post(t, newApproval())
	if n := s.fk.TokensIssued(); n != 1 {
		t.Fatalf("%d tokens for two posts; want one cached", n)
	}
	s.fk.ExpireTokens()
	s.post(t, newApproval())
	if n := s.fk.TokensIssued(); n != 2 {
		t.Fatalf("%d tokens; a refused token is renewed once", n)
	}
}

func TestWrongPasswordNotLeaked(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	set := fk.Settings()
	set["app-password"] = "wrong-password-value-42"
	ch, err := New("teams", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	_, err = ch.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || strings.Contains(err.Error(), "wrong-password-value-42") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("error %v", err)
	}
}

func TestSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	for name, mod := range map[string]func(map[string]any){
		"unknown key":       func(m map[string]any) { m["bot-token"] = "x" },
		"no app id":         func(m map[string]any) { delete(m, "app-id") },
		"bad app id":        func(m map[string]any) { m["app-id"] = "clawd" },
		"no password":       func(m map[string]any) { delete(m, "app-password") },
		"missing env":       func(m map[string]any) { m["app-password"] = "env:CLAWD_TEAMS_NOPE_NOT_SET" },
		"no service url":    func(m map[string]any) { delete(m, "service-url") },
		"ftp service url":   func(m map[string]any) { m["service-url"] = "ftp://x/" },
		"userinfo":          func(m map[string]any) { m["token-url"] = "https://u:p@login.example/" },
		"no conversation":   func(m map[string]any) { delete(m, "conversation-id") },
		"ref separator":     func(m map[string]any) { m["conversation-id"] = "19:a|b" },
		"bad openid":        func(m map[string]any) { m["openid-metadata"] = "not a url" },
		"conversation ctl":  func(m map[string]any) { m["conversation-id"] = "19:a\nb" },
		"http over network": func(m map[string]any) { m["token-url"] = "http://login.example.com/token" },
		"http openid":       func(m map[string]any) { m["openid-metadata"] = "http://10.0.0.1/meta" },
	} {
		set := fk.Settings()
		mod(set)
		if _, err := New("teams", set, approval.Env{}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), fake.AppPassword) {
			t.Errorf("%s: error leaks the password: %v", name, err)
		}
	}
	// The defaults are the real Bot Framework endpoints.
	set := fk.Settings()
	delete(set, "openid-metadata")
	delete(set, "token-url")
	ch, err := New("teams", set, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if ch.cfg.OpenIDMetadata != DefaultOpenIDMetadata || ch.cfg.TokenURL != DefaultTokenURL {
		t.Errorf("defaults %q %q", ch.cfg.OpenIDMetadata, ch.cfg.TokenURL)
	}
}

func TestCardFitsAndIsInert(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Summary = "Merge [this](https://evil.example) <at>approver 1</at> **now** " + strings.Repeat("x", 5000)
	a.URL = "https://api.github.com/" + strings.Repeat("p", 9000)
	a.Body = strings.Repeat("body ", 20000)
	a.BodySize, a.BodyTruncated = 100000, true
	s.post(t, a, alice)
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("not posted")
	}
	raw := mustJSON(m.Card)
	if len(raw) > fake.MaxMessage {
		t.Fatalf("card of %d bytes", len(raw))
	}
	first := strings.Split(m.Text, "\n")[0]
	if strings.Contains(first, "[this](") || strings.Contains(first, "<at>") || strings.Contains(first, "**now") {
		t.Errorf("agent text can format or mention: %q", first[:120])
	}
	if len(m.Actions) != 3 {
		t.Errorf("buttons lost when shrinking: %d", len(m.Actions))
	}
}

// TestWithCore runs the real approval core: a held request is posted to
// Teams, approved by a click, and the card shows the outcome.
func TestWithCore(t *testing.T) {
	s := newSetup(t)
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{s.ch}
		c.Approvers = map[string][]string{"teams": {alice}}
	})
	srv := s.ch.Callbacks(e.M)
	fk := s.fk
	hsrv := newServer(t, srv)
	fk.SetEndpoint(hsrv + approval.CallbackPath("teams"))
	out := approvaltest.Async(e.M, ctxT(t), approvaltest.Hold("agent-1", "POST", "/repos/clawd-dev/clawd/merges"))
	list := approvaltest.WaitPending(t, e.M, 1)
	id := list[0].ID
	if _, err := fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Actions) > 0 }); err != nil {
		t.Fatal(err)
	}
	// Bob is not asked: refused, nothing changes.
	reply, err := fk.Click(ctxT(t), id, approval.ActApprove, bob)
	if err != nil || !strings.Contains(reply, "not asked") {
		t.Fatalf("bob: %q, %v", reply, err)
	}
	reply, err = fk.Click(ctxT(t), id, approval.ActApprove, alice)
	if err != nil || !strings.Contains(reply, "Approved") {
		t.Fatalf("alice: %q, %v", reply, err)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "teams:"+alice {
		t.Fatalf("outcome %+v", o)
	}
	m, err := fk.WaitCard(ctxT(t), id, func(m fake.Message) bool { return len(m.Actions) == 0 })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.Text, "Approved") {
		t.Errorf("decided card:\n%s", m.Text)
	}
	for _, msg := range fk.Messages() {
		if raw := mustJSON(msg.Card); strings.Contains(raw, "SECRET-VALUE-123") {
			t.Errorf("a card shows the request's secret: %s", raw)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestMetadataOutage: while the keys cannot be loaded every click is
// refused; after the retry pause the keys load and clicks work.
func TestMetadataOutage(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ch, err := New("teams", fk.Settings(), approval.Env{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	d := &decider{Res: approval.Result{Outcome: approval.ResultDecided, Message: "ok"}}
	fk.SetEndpoint(newServer(t, ch.Callbacks(d)) + approval.CallbackPath("teams"))
	a := newApproval()
	if _, err := ch.Post(ctxT(t), cardFor(a)); err != nil {
		t.Fatal(err)
	}
	fk.SetMetadataDown(true)
	if st, _ := fk.Forge(ctxT(t), a.ID, approval.ActApprove, alice, fake.Genuine); st != 401 {
		t.Fatalf("keys unavailable: %d", st)
	}
	fk.SetMetadataDown(false)
	if st, _ := fk.Forge(ctxT(t), a.ID, approval.ActApprove, alice, fake.Genuine); st != 401 {
		t.Fatalf("within the retry pause: %d", st)
	}
	mu.Lock()
	now = now.Add(retryMetadata + time.Second)
	mu.Unlock()
	if _, err := fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
	if n := len(d.Calls()); n != 1 {
		t.Fatalf("decider called %d times", n)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Fatal(v)
	}
}
