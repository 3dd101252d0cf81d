package mattermost

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/mattermost/fake"
)

func TestPostCardShape(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	ref := r.post(t, a, alice, bob, "carol")
	m, ok := r.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card posted")
	}
	if ref != m.PostID || m.ChannelID != fake.ChannelID {
		t.Fatalf("ref %q, post %s in %s", ref, m.PostID, m.ChannelID)
	}
	if !strings.HasPrefix(m.Message, "**clawd approval needed**: Create an issue in clawd-dev/clawd") {
		t.Errorf("message does not start with the summary: %q", m.Message)
	}
	if !strings.Contains(m.Message, "Asked: @alice @carol") || strings.Contains(m.Message, bob) {
		t.Errorf("mentions: alice via usernames, carol as a username, never a raw ID:\n%s", m.Message)
	}
	for _, want := range []string{"**Request:** ` POST https://api.github.com/repos/clawd-dev/clawd/issues `",
		"**Container:** agent-1", "**Rule:** github-writes", "**Time left:** 10m0s", "```\n{\"title\":\"hello\"}\n```"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("attachment lacks %q:\n%s", want, m.Text)
		}
	}
	if m.Footer != "clawd "+a.ID+" · request 0123456789abcdef" {
		t.Errorf("footer %q", m.Footer)
	}
	want := cardFor(a).Buttons()
	if len(m.Actions) != len(want) {
		t.Fatalf("actions %+v, want %d", m.Actions, len(want))
	}
	secrets := map[string]bool{}
	for i, b := range want {
		got := m.Actions[i]
		sec, _ := got.Context["t"].(string)
		if got.Name != b.Label || got.Type != "button" || got.Context["v"] != b.Value || len(sec) != 43 {
			t.Errorf("action %d = %+v, want %q carrying %q and a secret", i, got, b.Label, b.Value)
		}
		if got.URL != r.pub+"/v1/channels/mattermost/" {
			t.Errorf("integration url %q", got.URL)
		}
		secrets[sec] = true
	}
	if len(secrets) != 3 {
		t.Errorf("buttons share a secret")
	}
	if m.Actions[0].Style != "success" || m.Actions[2].Style != "danger" {
		t.Errorf("styles %q/%q", m.Actions[0].Style, m.Actions[2].Style)
	}
	// Only hashes are kept, in a private file.
	path := filepath.Join(r.dir, "mattermost-mattermost.secrets.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for s := range secrets {
		if strings.Contains(string(raw), s) {
			t.Errorf("state file holds a raw secret")
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
}

func TestClickDecides(t *testing.T) {
	for _, tc := range []struct {
		act      string
		approve  bool
		grantFor time.Duration
	}{{approval.ActApprove, true, 0}, {approval.ActApproveFor, true, approval.GrantFor}, {approval.ActDeny, false, 0}} {
		t.Run(tc.act, func(t *testing.T) {
			r := newRig(t, nil)
			a := newApproval()
			r.post(t, a, alice)
			r.d.res.Approval = decided(a, approval.Approved, "mattermost:"+alice)
			r.fk.SetName(alice, "alice")
			reply, err := r.fk.Click(ctxT(t), a.ID, tc.act, alice)
			if err != nil {
				t.Fatal(err)
			}
			if reply != r.d.res.Message {
				t.Errorf("clicker sees %q, want %q", reply, r.d.res.Message)
			}
			calls := r.d.Calls()
			if len(calls) != 1 {
				t.Fatalf("decider called %d times", len(calls))
			}
			want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: tc.approve, GrantFor: tc.grantFor,
				Channel: "mattermost", User: alice, Display: "alice"}
			if calls[0] != want {
				t.Errorf("decision %+v\nwant     %+v", calls[0], want)
			}
			// The answer replaced the post: the outcome, no buttons.
			m, _ := r.fk.Card(a.ID)
			if len(m.Actions) != 0 || !strings.Contains(m.Message, "Approved** by mattermost") {
				t.Errorf("post after the click: %d actions\n%s", len(m.Actions), m.Message)
			}
		})
	}
}

// A click uses its button up; the answer re-arms the card with fresh
// secrets so others can still decide, and a replay changes nothing.
func TestSingleUse(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	before, _ := r.fk.Card(a.ID)
	r.d.set(approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not asked to decide this request; nothing changed.", Approval: a})
	reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, bob)
	if err != nil || reply != "You are not asked to decide this request; nothing changed." {
		t.Fatalf("bob: %q, %v", reply, err)
	}
	res, err := r.fk.Replay(ctxT(t))
	if err != nil || res.Status != 200 || res.Ephemeral != msgUsed {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	// The other buttons of the used card are dead too.
	old := before.Actions[2].Context
	body := `{"user_id":"` + alice + `","channel_id":"` + fake.ChannelID + `","post_id":"` + before.PostID +
		`","context":{"v":"` + old["v"].(string) + `","t":"` + old["t"].(string) + `"}}`
	if res, err := r.fk.Deliver(ctxT(t), []byte(body)); err != nil || res.Ephemeral != msgUsed {
		t.Fatalf("sibling button of a used card: %+v, %v", res, err)
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Fatalf("decider called %d times, want 1", n)
	}
	after, _ := r.fk.Card(a.ID)
	if len(after.Actions) != 3 || after.Actions[0].Context["t"] == before.Actions[0].Context["t"] {
		t.Fatalf("card not re-armed with fresh secrets: %+v", after.Actions)
	}
	if !strings.Contains(after.Message, "@alice") {
		t.Errorf("re-armed card lost its mentions: %s", after.Message)
	}
	r.d.set(approval.Result{Outcome: approval.ResultDecided, Message: "ok", Approval: decided(a, approval.Approved, "mattermost:"+alice)})
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if c := r.d.Calls(); len(c) != 2 || c[1].User != alice {
		t.Fatalf("decisions %+v", c)
	}
}

func TestForgeriesRefused(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	for _, tc := range []struct {
		name  string
		f     fake.Forgery
		code  int
		reply string
	}{
		{"wrong secret", fake.ForgeWrongSecret, 200, msgUsed},
		{"other channel", fake.ForgeOtherChannel, 403, ""},
		{"other post", fake.ForgeOtherPost, 403, ""},
		{"other button's value", fake.ForgeOtherValue, 403, ""},
		{"no context", fake.ForgeNoContext, 400, ""},
		{"malformed", fake.ForgeMalformed, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := r.fk.Forge(ctxT(t), a.ID, approval.ActApprove, bob, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.code || res.Ephemeral != tc.reply || res.Updated {
				t.Errorf("got %+v, want %d %q", res, tc.code, tc.reply)
			}
		})
	}
	for name, body := range map[string]string{
		"empty":        ``,
		"array":        `[]`,
		"no user":      `{"channel_id":"` + fake.ChannelID + `","context":{"v":"a:x:y","t":"` + strings.Repeat("A", 43) + `"}}`,
		"short secret": `{"user_id":"` + bob + `","context":{"v":"a:x:y","t":"abc"}}`,
		"secret type":  `{"user_id":"` + bob + `","context":{"v":"a:x:y","t":42}}`,
	} {
		res, err := r.fk.Deliver(ctxT(t), []byte(body))
		if err != nil || (res.Status != 400 && res.Status != 403) {
			t.Errorf("%s: %+v, %v", name, res, err)
		}
	}
	if n := len(r.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times by forgeries", n)
	}
	// None of that used the genuine buttons up.
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Fatalf("genuine click after forgeries: %d calls", n)
	}
}

func TestExpiredSecret(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	r.post(t, a, alice)
	r.clock.Add(10*time.Minute + time.Second)
	reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice)
	if err != nil || reply != msgUsed {
		t.Fatalf("click after expiry: %q, %v", reply, err)
	}
	if n := len(r.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times", n)
	}
}

// Secrets survive a restart (a new Channel on the same state directory),
// and so does their being used.
func TestRestartKeepsSecrets(t *testing.T) {
	r := newRig(t, nil)
	a1, a2 := newApproval(), newApproval()
	r.post(t, a1, alice)
	r.post(t, a2, alice)
	r.d.set(approval.Result{Outcome: approval.ResultDecided, Message: "Approved.", Approval: decided(a1, approval.Approved, "mattermost:"+alice)})
	if _, err := r.fk.Click(ctxT(t), a1.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	r.ch = r.build(t) // restart
	res, err := r.fk.Replay(ctxT(t))
	if err != nil || res.Ephemeral != msgUsed {
		t.Fatalf("replay after restart: %+v, %v", res, err)
	}
	r.d.set(approval.Result{Outcome: approval.ResultDecided, Message: "Denied.", Approval: decided(a2, approval.Denied, "mattermost:"+alice)})
	reply, err := r.fk.Click(ctxT(t), a2.ID, approval.ActDeny, alice)
	if err != nil || reply != "Denied." {
		t.Fatalf("card posted before the restart: %q, %v", reply, err)
	}
	if c := r.d.Calls(); len(c) != 2 || c[1].ID != a2.ID || c[1].Approve {
		t.Fatalf("decisions %+v", c)
	}
	// A corrupt state file is an error, not an empty set.
	if err := os.WriteFile(filepath.Join(r.dir, "mattermost-mattermost.secrets.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New("mattermost", r.set, approval.Env{PublicURL: r.pub, StateDir: r.dir}); err == nil {
		t.Error("corrupt state file accepted")
	}
}

func TestUpdateReplacesButtons(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	a.Required = 2
	ref := r.post(t, a, alice, bob)
	first, _ := r.fk.Card(a.ID)
	a.Votes = []approval.Vote{{By: "mattermost:" + alice, Display: "alice"}}
	if err := r.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := r.fk.Card(a.ID)
	if len(m.Actions) != 3 || !strings.Contains(m.Text, "**Approvals:** 1 of 2 (alice)") || m.Updates != 1 {
		t.Fatalf("after one vote: %d actions, %d updates\n%s", len(m.Actions), m.Updates, m.Text)
	}
	a.Status, a.By, a.Reason = approval.Denied, "mattermost:"+bob, "not today"
	if err := r.ch.Update(ctxT(t), cardFor(a, alice, bob), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = r.fk.Card(a.ID)
	if len(m.Actions) != 0 || m.Updates != 2 || len(r.fk.Messages()) != 1 {
		t.Fatalf("decided post: %d actions, %d updates, %d posts", len(m.Actions), m.Updates, len(r.fk.Messages()))
	}
	if !strings.Contains(m.Message, "⛔ Denied** by mattermost") || !strings.Contains(m.Text, "not today") ||
		strings.Contains(m.Text, "Time left") || strings.Contains(m.Message, "@alice") {
		t.Errorf("outcome not shown:\n%s\n%s", m.Message, m.Text)
	}
	// Every secret of the approval is gone, the first card's too.
	if n := r.ch.secrets.count(); n != 0 {
		t.Errorf("%d secrets live after the decision", n)
	}
	old := first.Actions[0].Context
	body := `{"user_id":"` + alice + `","channel_id":"` + fake.ChannelID + `","post_id":"` + ref +
		`","context":{"v":"` + old["v"].(string) + `","t":"` + old["t"].(string) + `"}}`
	if res, err := r.fk.Deliver(ctxT(t), []byte(body)); err != nil || res.Ephemeral != msgUsed {
		t.Fatalf("button of a decided card: %+v, %v", res, err)
	}
	if n := len(r.d.Calls()); n != 0 {
		t.Fatalf("decider called %d times", n)
	}
	if err := r.ch.Update(ctxT(t), cardFor(a), "../../users/me"); err == nil {
		t.Error("ref that is not a post ID accepted")
	}
}

func TestTargetChannel(t *testing.T) {
	r := newRig(t, nil)
	other := fake.NewID()
	r.fk.AddChannel(other)
	a := newApproval()
	card := cardFor(a, alice)
	card.Target = other
	if _, err := r.ch.Post(ctxT(t), card); err != nil {
		t.Fatal(err)
	}
	m, _ := r.fk.Card(a.ID)
	if m.ChannelID != other {
		t.Fatalf("posted in %s, want the route's %s", m.ChannelID, other)
	}
	if _, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Fatalf("click in the target channel: %d calls", n)
	}
	card = cardFor(newApproval())
	card.Target = "owner/repo#1"
	if _, err := r.ch.Post(ctxT(t), card); err == nil {
		t.Error("target that is not a channel ID accepted")
	}
	card = cardFor(newApproval())
	card.Target = fake.NewID() // the bot is not a member
	if _, err := r.ch.Post(ctxT(t), card); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("post to a channel the bot is not in: %v", err)
	}
	if n := r.ch.secrets.count(); n != 0 {
		t.Errorf("failed posts left %d secrets", n)
	}
}

func TestNoPublicURL(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	ch, err := New("mattermost", fk.Settings(), approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	a := newApproval()
	if _, err := ch.Post(ctxT(t), cardFor(a)); err != nil {
		t.Fatal(err)
	}
	m, ok := fk.Card(a.ID)
	if !ok || len(m.Actions) != 0 || !strings.Contains(m.Message, "approval needed") {
		t.Fatalf("card %+v", m)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Fatal(v)
	}
}

func TestWrongTokenNotLeaked(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	set := fk.Settings()
	set["bot-token"] = "wrongtokenvalue42"
	ch, err := New("mattermost", set, approval.Env{PublicURL: "https://clawd.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || strings.Contains(err.Error(), "wrongtokenvalue42") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("error %v", err)
	}
	if ch.secrets.count() != 0 {
		t.Error("secrets of a card never posted are kept")
	}
}

func TestSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	for name, mod := range map[string]func(map[string]any){
		"unknown key":       func(m map[string]any) { m["app-id"] = "x" },
		"no server":         func(m map[string]any) { delete(m, "server") },
		"ftp server":        func(m map[string]any) { m["server"] = "ftp://chat.example.com" },
		"http over network": func(m map[string]any) { m["server"] = "http://chat.example.com" },
		"userinfo":          func(m map[string]any) { m["server"] = "https://u:p@chat.example.com" },
		"no token":          func(m map[string]any) { delete(m, "bot-token") },
		"missing env":       func(m map[string]any) { m["bot-token"] = "env:CLAWD_MM_NOPE_NOT_SET" },
		"no channel":        func(m map[string]any) { delete(m, "channel-id") },
		"channel name":      func(m map[string]any) { m["channel-id"] = "town-square" },
		"username id":       func(m map[string]any) { m["usernames"] = map[string]any{"alice": "alice"} },
		"username bad":      func(m map[string]any) { m["usernames"] = map[string]any{alice: "Alice Smith"} },
	} {
		set := fk.Settings()
		mod(set)
		if _, err := New("mattermost", set, approval.Env{}); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), fake.BotToken) {
			t.Errorf("%s: error leaks the token: %v", name, err)
		}
	}
	set := fk.Settings()
	set["server"] = "https://chat.example.com/mm"
	set["usernames"] = map[string]any{alice: "@alice"}
	ch, err := New("mattermost", set, approval.Env{PublicURL: "https://clawd.example.com/"})
	if err != nil {
		t.Fatal(err)
	}
	if ch.api != "https://chat.example.com/mm/api/v4" || ch.callback != "https://clawd.example.com/v1/channels/mattermost/" || ch.usernames[alice] != "alice" {
		t.Errorf("api %q callback %q usernames %v", ch.api, ch.callback, ch.usernames)
	}
}

func TestCardFitsAndIsInert(t *testing.T) {
	r := newRig(t, nil)
	a := newApproval()
	a.Summary = "Merge [this](https://evil.example) @channel ~town-square **now** <b> www.evil.example " + strings.Repeat("x", 5000)
	a.URL = "https://api.github.com/`x`/" + strings.Repeat("p", 20000)
	a.Body = "```\n@all look\n```` " + strings.Repeat("body ", 20000)
	a.BodySize, a.BodyTruncated = 200000, true
	r.post(t, a, alice)
	m, ok := r.fk.Card(a.ID)
	if !ok {
		t.Fatal("not posted")
	}
	if n := utf8.RuneCountInString(m.Message) + utf8.RuneCountInString(m.Text); n > fake.MaxMessage {
		t.Fatalf("card of %d runes", n)
	}
	for _, bad := range []string{"[this](", "@channel", "~town-square", "**now", "<b>", "https://evil", "www.evil"} {
		if strings.Contains(m.Message, bad) {
			t.Errorf("agent text keeps %q live: %.200s", bad, m.Message)
		}
	}
	// The body cannot close its code block: the fence is longer than any
	// backtick run in it.
	if !strings.Contains(m.Text, "\n`````\n```\n@all look") {
		t.Errorf("body fence:\n%.300s", m.Text[strings.Index(m.Text, "**Rule"):])
	}
	if !strings.Contains(m.Text, "(body cut: 200000 bytes in all)") {
		t.Errorf("cut not shown")
	}
	if len(m.Actions) != 3 {
		t.Errorf("buttons lost when shrinking: %d", len(m.Actions))
	}
	b, _ := json.Marshal(m.Props)
	if len(b) > fake.MaxProps {
		t.Errorf("props of %d bytes", len(b))
	}
}

func TestEndpointMethodAndType(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		method, ct string
		want       int
	}{{"GET", "", 405}, {"POST", "text/plain", 415}} {
		req, _ := newRequest(tc.method, r.pub+approval.CallbackPath("mattermost"), tc.ct)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.ct, resp.StatusCode, tc.want)
		}
	}
}

// Mattermost can deliver a click before the create call returned the post
// ID: the click waits for it instead of being refused.
func TestClickBeforePostReturns(t *testing.T) {
	r := newRig(t, nil)
	release := r.fk.HoldCreates()
	defer release()
	a := newApproval()
	posted := make(chan error, 1)
	go func() {
		_, err := r.ch.Post(ctxT(t), cardFor(a, alice))
		posted <- err
	}()
	if _, err := r.fk.WaitCard(ctxT(t), a.ID, func(m fake.Message) bool { return len(m.Actions) > 0 }); err != nil {
		t.Fatal(err)
	}
	replied := make(chan string, 1)
	go func() {
		reply, err := r.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice)
		if err != nil {
			reply = err.Error()
		}
		replied <- reply
	}()
	release()
	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	if reply := <-replied; reply != r.d.res.Message {
		t.Fatalf("early click: %q", reply)
	}
	if n := len(r.d.Calls()); n != 1 {
		t.Fatalf("decider called %d times", n)
	}
}
