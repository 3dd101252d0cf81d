package whatsapp

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/whatsapp/fake"
)

func TestTemplateOutsideWindow(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, alice)
	m, ok := s.fk.CardFor(a.ID, alice)
	if !ok {
		t.Fatal("no card sent to alice")
	}
	if m.Kind != "template" || m.Template != fake.TemplateName || m.Language != "en_US" {
		t.Fatalf("card outside the window: %+v", m)
	}
	want := []string{"Merge pull request #7 in acme/api", "agent-1", a.ID}
	if strings.Join(m.Params, "|") != strings.Join(want, "|") {
		t.Errorf("template parameters %q, want %q", m.Params, want)
	}
	for i, act := range []string{approval.ActApprove, approval.ActApproveFor, approval.ActDeny} {
		if m.Buttons[i].ID != approval.ButtonValue(act, a) {
			t.Errorf("quick reply %d payload %q", i, m.Buttons[i].ID)
		}
	}
	if ref != alice+":"+m.ID {
		t.Errorf("ref %q, message %q", ref, m.ID)
	}
}

func TestInteractiveInsideWindow(t *testing.T) {
	s := newSetup(t)
	s.open(t, alice)
	a := newApproval()
	a.GrantsAllowed = false
	ref := s.post(t, a, alice, bob)
	m, _ := s.fk.CardFor(a.ID, alice)
	if m.Kind != "interactive" {
		t.Fatalf("alice (window open) got a %s", m.Kind)
	}
	if m.Header != "clawd: approval needed" || !strings.HasPrefix(m.Footer, "Expires ") {
		t.Errorf("header %q footer %q", m.Header, m.Footer)
	}
	for _, w := range []string{"Merge pull request #7 in acme/api", "PUT https://api.github.com/repos/acme/api/pulls/7/merge",
		"Container: agent-1", "Rule: gh-merge", "ID: " + a.ID, "```{\"merge_method\":\"squash\"}```"} {
		if !strings.Contains(m.Body, w) {
			t.Errorf("body lacks %q:\n%s", w, m.Body)
		}
	}
	if len(m.Buttons) != 2 || m.Buttons[0] != (fake.Button{ID: approval.ButtonValue("a", a), Title: "Approve"}) ||
		m.Buttons[1] != (fake.Button{ID: approval.ButtonValue("d", a), Title: "Deny"}) {
		t.Errorf("buttons (no grants) %+v", m.Buttons)
	}
	mb, _ := s.fk.CardFor(a.ID, bob)
	if mb.Kind != "template" {
		t.Errorf("bob (no window) got a %s", mb.Kind)
	}
	if strings.Count(ref, ",") != 1 || !strings.Contains(ref, alice+":"+m.ID) || !strings.Contains(ref, bob+":"+mb.ID) {
		t.Errorf("ref %q", ref)
	}

	// A day later alice's window has closed: the template again.
	s.clock.add(24 * time.Hour)
	b := newApproval()
	s.post(t, b, alice)
	if m, _ := s.fk.CardFor(b.ID, alice); m.Kind != "template" {
		t.Errorf("a day later alice got a %s", m.Kind)
	}
}

// When WhatsApp says the window is closed although clawd thought it open,
// the card goes out as the template.
func TestFallbackToTemplate(t *testing.T) {
	s := newSetup(t)
	s.open(t, alice)
	s.fk.SetWindow(alice, false)
	a := newApproval()
	s.post(t, a, alice)
	if m, _ := s.fk.CardFor(a.ID, alice); m.Kind != "template" {
		t.Fatalf("got a %s", m.Kind)
	}
}

func TestNobodyToAsk(t *testing.T) {
	s := newSetup(t)
	_, err := s.ch.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || !strings.Contains(err.Error(), "no approver") {
		t.Errorf("no people: %v", err)
	}
	_, err = s.ch.Post(ctxT(t), cardFor(newApproval(), "+15551230001", "alice"))
	if err == nil {
		t.Error("invalid wa_ids were messaged")
	}
	if n := len(s.fk.Messages()); n != 0 {
		t.Errorf("%d messages sent", n)
	}
}

func TestClickDecides(t *testing.T) {
	for _, inside := range []bool{true, false} {
		t.Run(map[bool]string{true: "interactive", false: "template"}[inside], func(t *testing.T) {
			s := newSetup(t)
			if inside {
				s.open(t, alice)
			}
			a := newApproval()
			s.post(t, a, alice)
			reply, err := s.fk.Click(ctxT(t), a.ID, approval.ActApproveFor, alice)
			if err != nil {
				t.Fatal(err)
			}
			if reply != "Approved: the request is released." {
				t.Errorf("clicker saw %q", reply)
			}
			calls := s.d.Calls()
			if len(calls) != 1 {
				t.Fatalf("%d decisions", len(calls))
			}
			d := calls[0]
			if d.ID != a.ID || d.Digest != a.Digest[:16] || !d.Approve || d.GrantFor != approval.GrantFor ||
				d.Channel != "whatsapp" || d.User != alice || d.Display != "User "+alice {
				t.Errorf("decision %+v", d)
			}
			// The answer is a reply to the press, not to the card.
			msgs := s.fk.To(alice)
			if last := msgs[len(msgs)-1]; last.Kind != "text" || last.ContextID != s.fk.LastPress() || last.Body != reply {
				t.Errorf("answer %+v", last)
			}
			if card, _ := s.fk.CardFor(a.ID, alice); len(card.Replies) != 0 {
				t.Errorf("card replies %q", card.Replies)
			}
		})
	}
}

func TestDenyAndNotAClawdButton(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	s.d.Res = approval.Result{Outcome: approval.ResultDecided, Message: "Denied."}
	if r, err := s.fk.Click(ctxT(t), a.ID, approval.ActDeny, alice); err != nil || r != "Denied." {
		t.Fatalf("deny: %q %v", r, err)
	}
	if c := s.d.Calls(); len(c) != 1 || c[0].Approve || c[0].GrantFor != 0 {
		t.Errorf("deny decision %+v", c)
	}

	// A genuine, signed press whose payload is not a clawd button.
	raw := `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
	"messaging_product":"whatsapp","metadata":{"phone_number_id":"` + fake.PhoneNumberID + `"},
	"messages":[{"from":"` + alice + `","id":"wamid.other1","timestamp":"` + unix(time.Now()) + `","type":"button",
	"button":{"payload":"a:` + a.ID + `:zzzz","text":"Approve"}}]}}]}]}`
	n := len(s.fk.To(alice))
	if st, err := s.fk.Deliver(ctxT(t), []byte(raw)); err != nil || st != 200 {
		t.Fatalf("deliver: %d %v", st, err)
	}
	s.ch.Close() // wait for the answer
	msgs := s.fk.To(alice)
	if len(msgs) != n+1 || !strings.Contains(msgs[n].Body, "not a valid clawd button") {
		t.Errorf("answer to a foreign button: %+v", msgs[n:])
	}
	if len(s.d.Calls()) != 1 {
		t.Error("the Decider was called for a foreign button")
	}
}

func unix(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

func TestHandshake(t *testing.T) {
	s := newSetup(t)
	if err := s.fk.Verify(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ mode, token, challenge string }{
		{"subscribe", "wrong-token", "123"},
		{"subscribe", "", "123"},
		{"unsubscribe", fake.VerifyToken, "123"},
		{"subscribe", fake.VerifyToken, ""},
		{"subscribe", fake.VerifyToken, "<script>"},
	} {
		st, body, err := s.fk.Handshake(ctxT(t), c.mode, c.token, c.challenge)
		if err != nil {
			t.Fatal(err)
		}
		if st != http.StatusForbidden || strings.Contains(body, c.challenge) && c.challenge != "" {
			t.Errorf("%+v: HTTP %d %q", c, st, body)
		}
	}
}

func TestForgeriesRefused(t *testing.T) {
	for _, c := range []struct {
		name   string
		f      fake.Forgery
		status int
	}{
		{"bad signature", fake.ForgeBadSignature, 401},
		{"no signature", fake.ForgeNoSignature, 401},
		{"tampered", fake.ForgeTampered, 401},
		{"other phone number", fake.ForgeOtherPhone, 200},
		{"stale", fake.ForgeStale, 200},
		{"malformed", fake.ForgeMalformed, 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSetup(t)
			a := newApproval()
			s.post(t, a, alice)
			st, err := s.fk.Forge(ctxT(t), a.ID, approval.ActApprove, alice, c.f)
			if err != nil {
				t.Fatal(err)
			}
			if st != c.status {
				t.Errorf("HTTP %d, want %d", st, c.status)
			}
			s.ch.Close()
			if n := len(s.d.Calls()); n != 0 {
				t.Errorf("the Decider was called %d times", n)
			}
			if m := s.fk.To(alice); len(m) != 1 {
				t.Errorf("clawd answered a forgery: %+v", m[1:])
			}
			// Nothing from a refused webhook opens the window.
			if s.ch.state.windowOpen(alice, s.clock.now(), time.Hour) {
				t.Error("a refused webhook opened the window")
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, alice)
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if st, err := s.fk.Replay(ctxT(t)); err != nil || st != 200 {
		t.Fatalf("replay: %d %v", st, err)
	}
	// And after a restart (the seen IDs are in the state directory).
	ch := s.build(t)
	if st, err := s.fk.Replay(ctxT(t)); err != nil || st != 200 {
		t.Fatalf("replay after restart: %d %v", st, err)
	}
	s.ch.Close()
	ch.Close()
	if n := len(s.d.Calls()); n != 1 {
		t.Errorf("the Decider was called %d times for one press", n)
	}
}

func TestWindowSurvivesRestart(t *testing.T) {
	s := newSetup(t)
	s.open(t, alice)
	s.ch = s.build(t)
	a := newApproval()
	s.post(t, a, alice)
	if m, _ := s.fk.CardFor(a.ID, alice); m.Kind != "interactive" {
		t.Errorf("after a restart alice got a %s", m.Kind)
	}
	fi, err := os.Stat(filepath.Join(s.dir, "whatsapp-whatsapp.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v", fi, err)
	}
}

func TestUpdateFollowUps(t *testing.T) {
	s := newSetup(t)
	s.open(t, alice)
	a := newApproval()
	a.Required = 2
	ref := s.post(t, a, alice, bob)
	ctx := ctxT(t)

	// Nothing new while pending without votes.
	if err := s.ch.Update(ctx, cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	// A first vote of two.
	a.Votes = []approval.Vote{{By: "whatsapp:" + alice, Display: "Alice"}}
	if err := s.ch.Update(ctx, cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	// Decided.
	a.Status, a.By, a.Reason = approval.Approved, "whatsapp:"+bob, "looks fine"
	a.Votes = append(a.Votes, approval.Vote{By: "whatsapp:" + bob, Display: "Bob"})
	if err := s.ch.Update(ctx, cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.CardFor(a.ID, alice)
	if len(m.Replies) != 2 {
		t.Fatalf("alice's card replies: %q", m.Replies)
	}
	if !strings.HasPrefix(m.Replies[0], "Approvals: 1 of 2 (Alice), waiting for more") {
		t.Errorf("vote follow-up %q", m.Replies[0])
	}
	if !strings.HasPrefix(m.Replies[1], "Approved by whatsapp:"+bob+". Reason: looks fine") ||
		!strings.Contains(m.Replies[1], "ID: "+a.ID) || !strings.Contains(m.Replies[1], "no longer") {
		t.Errorf("outcome follow-up %q", m.Replies[1])
	}
	// Bob's window is closed: WhatsApp would refuse free text, none sent.
	if mb, _ := s.fk.CardFor(a.ID, bob); len(mb.Replies) != 0 {
		t.Errorf("bob got follow-ups outside his window: %q", mb.Replies)
	}

	for _, st := range []string{approval.TimedOut, approval.Denied, approval.Cancelled, approval.Expired} {
		b := newApproval()
		r := s.post(t, b, alice)
		b.Status, b.By, b.Reason = st, "", ""
		if err := s.ch.Update(ctx, cardFor(b, alice), r); err != nil {
			t.Fatal(err)
		}
		m, _ := s.fk.CardFor(b.ID, alice)
		want := map[string]string{approval.TimedOut: "Timed out", approval.Denied: "Denied", approval.Cancelled: "Cancelled", approval.Expired: "Expired"}[st]
		if len(m.Replies) != 1 || !strings.HasPrefix(m.Replies[0], want+"\n") {
			t.Errorf("%s follow-up %q", st, m.Replies)
		}
	}
	if err := s.ch.Update(ctx, cardFor(a), "garbage"); err == nil {
		t.Error("bad ref accepted")
	}
}

// Hostile agent text of any size stays within every limit in both kinds
// of message (the fake checks them) and cannot break out of its fence.
func TestLimitsWithHugeText(t *testing.T) {
	s := newSetup(t)
	s.open(t, alice)
	a := newApproval()
	huge := strings.Repeat("😈 *bold* _x_ ```` \n\t\u202e     ", 2000)
	a.Summary, a.URL, a.Rule, a.Body = huge, "https://x/"+huge, huge, huge
	a.Container.Name = huge
	a.BodySize, a.BodyTruncated = 1<<20, true
	a.Required = 3
	a.Votes = []approval.Vote{{By: huge}, {By: huge}}
	s.post(t, a, alice, bob)
	mi, _ := s.fk.CardFor(a.ID, alice)
	mt, _ := s.fk.CardFor(a.ID, bob)
	if mi.Kind != "interactive" || mt.Kind != "template" {
		t.Fatalf("kinds %s %s", mi.Kind, mt.Kind)
	}
	if !strings.Contains(mi.Body, "ID: "+a.ID) || !strings.HasSuffix(mi.Body, "…```") || strings.Count(mi.Body, "```") != 2 {
		t.Errorf("interactive body:\n%s", mi.Body)
	}
	if strings.ContainsRune(mi.Body, '\u202e') {
		t.Error("bidi override kept")
	}
	if mt.Params[2] != a.ID {
		t.Errorf("template ID parameter %q", mt.Params[2])
	}
	a.Status, a.By, a.Reason = approval.Denied, huge, huge
	if err := s.ch.Update(ctxT(t), cardFor(a, alice), alice+":"+mi.ID); err != nil {
		t.Fatal(err)
	}
	// Violations are checked at cleanup.
}

func TestSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	env := approval.Env{StateDir: t.TempDir()}
	with := func(k string, v any) map[string]any {
		m := fk.Settings()
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for name, set := range map[string]map[string]any{
		"no token":        with("access-token", nil),
		"no app secret":   with("app-secret", nil),
		"no verify token": with("verify-token", nil),
		"phone number":    with("phone-number-id", "+1 555 078 3881"),
		"http api-base":   with("api-base", "http://graph.facebook.com"),
		"api-version":     with("api-version", "21"),
		"template name":   with("template-name", "Clawd Approval"),
		"language":        with("template-language", "en-US; x"),
		"unknown key":     with("chat-id", "1"),
		"missing env":     with("access-token", "env:CLAWD_TEST_NO_SUCH_VAR"),
	} {
		_, err := New("whatsapp", set, env)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, secret := range []string{fake.AccessToken, fake.AppSecret, fake.VerifyToken} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error shows a credential: %v", name, err)
			}
		}
	}
	if _, err := New("whatsapp", fk.Settings(), approval.Env{}); err == nil {
		t.Error("no state dir accepted")
	}
	set := fk.Settings()
	delete(set, "api-base")
	delete(set, "api-version")
	delete(set, "template-language")
	c, err := New("", set, env)
	if err != nil {
		t.Fatal(err)
	}
	if c.endpoint != "https://graph.facebook.com/v21.0/"+fake.PhoneNumberID+"/messages" || c.language != "en_US" || c.Name() != "whatsapp" {
		t.Errorf("defaults: %s %s %s", c.endpoint, c.language, c.Name())
	}
}

// The access token never reaches an error (a refused token is reported by
// code only).
func TestBadTokenError(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	set := fk.Settings()
	set["access-token"] = "EAAwrong-token"
	ch, err := New("whatsapp", set, approval.Env{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(context.Background(), cardFor(newApproval(), alice))
	if err == nil || strings.Contains(err.Error(), "EAAwrong-token") || !strings.Contains(err.Error(), "error 190") {
		t.Errorf("post with a bad token: %v", err)
	}
	if v := fk.Violations(); len(v) != 1 || !strings.Contains(v[0], "bearer") {
		t.Errorf("fake saw %q", v)
	}
}
