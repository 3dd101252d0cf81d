package discord

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord/fake"
)

func TestPostCardShape(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	ref := s.post(t, a, "111111111111111111", "not-a-snowflake", "222222222222222222")
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card on the fake")
	}
	if ref != s.fk.ChannelID+"|"+m.ID {
		t.Errorf("ref = %q, want channel|message %s|%s", ref, s.fk.ChannelID, m.ID)
	}
	if !strings.Contains(m.Content, "<@111111111111111111>") || !strings.Contains(m.Content, "<@222222222222222222>") {
		t.Errorf("content %q does not mention the people asked", m.Content)
	}
	if strings.Contains(m.Content, "not-a-snowflake") {
		t.Errorf("content %q carries a non-ID", m.Content)
	}
	am := m.AllowedMentions
	if am == nil || len(am.Parse) != 0 || !slices.Equal(am.Users, []string{"111111111111111111", "222222222222222222"}) {
		t.Errorf("allowed_mentions = %+v, want only the two people", am)
	}
	if len(m.Embeds) != 1 {
		t.Fatalf("%d embeds, want 1", len(m.Embeds))
	}
	e := m.Embeds[0]
	if e.Title != "Create an issue in clawd\\-dev/clawd" {
		t.Errorf("title = %q", e.Title)
	}
	for _, want := range []string{"POST", "api.github.com/repos/clawd\\-dev/clawd/issues", "```\n{\"title\":\"hello\"}\n```"} {
		if !strings.Contains(e.Description, want) {
			t.Errorf("description %q lacks %q", e.Description, want)
		}
	}
	fields := map[string]string{}
	for _, f := range e.Fields {
		fields[f.Name] = f.Value
	}
	if fields["Container"] != "agent\\-1 (docker)" || fields["Rule"] != "github\\-writes" || !strings.Contains(fields["Time left"], "<t:") {
		t.Errorf("fields = %v", fields)
	}
	if e.Footer == nil || !strings.Contains(e.Footer.Text, a.ID) || !strings.Contains(e.Footer.Text, a.Digest[:16]) {
		t.Errorf("footer = %+v, want the approval ID and digest", e.Footer)
	}
	var got []string
	for _, b := range m.Buttons() {
		got = append(got, b.Label+"|"+b.CustomID)
		if (b.Label == "Deny") != (b.Style == styleDanger) {
			t.Errorf("button %q has style %d", b.Label, b.Style)
		}
	}
	want := []string{
		"Approve|" + approval.ButtonValue(approval.ActApprove, a),
		"Approve 15 min|" + approval.ButtonValue(approval.ActApproveFor, a),
		"Deny|" + approval.ButtonValue(approval.ActDeny, a),
	}
	if !slices.Equal(got, want) {
		t.Errorf("buttons = %v, want %v", got, want)
	}
}

func TestNoGrantButtonWhenGrantsForbidden(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	a.GrantsAllowed = false
	s.post(t, a)
	m, _ := s.fk.Card(a.ID)
	for _, b := range m.Buttons() {
		if strings.HasPrefix(b.CustomID, approval.ActApproveFor+":") {
			t.Errorf("card offers %q though the rule forbids grants", b.Label)
		}
	}
	if len(m.Buttons()) != 2 {
		t.Errorf("%d buttons, want approve and deny", len(m.Buttons()))
	}
}

func TestUpdateShowsOutcomeAndRemovesButtons(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	a.Required = 2
	ref := s.post(t, a)

	a.Votes = []approval.Vote{{By: "discord:111111111111111111", Display: "alice", At: time.Now()}}
	if err := s.ch.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if len(m.Buttons()) != 3 {
		t.Errorf("after the first of two approvals the card has %d buttons, want 3", len(m.Buttons()))
	}
	if v := fieldOf(m, "Approvals"); v != "1 of 2: <@111111111111111111>" {
		t.Errorf("Approvals field = %q", v)
	}

	a.Status, a.By, a.Reason = approval.Denied, "discord:222222222222222222", "not *now* @everyone"
	if err := s.ch.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.fk.Card(a.ID)
	if len(m.Components) != 0 {
		t.Errorf("decided card still has components %+v", m.Components)
	}
	if m.Edits != 2 {
		t.Errorf("%d edits, want 2 (the card is edited in place)", m.Edits)
	}
	if got := fieldOf(m, "Outcome"); got != `⛔ Denied by <@222222222222222222>: not \*now\* \@everyone` {
		t.Errorf("Outcome = %q", got)
	}
	if fieldOf(m, "Time left") != "" {
		t.Error("decided card still shows the time left")
	}
	if !strings.Contains(m.Content, "Denied") {
		t.Errorf("content %q does not say the outcome", m.Content)
	}
	if len(s.fk.Messages()) != 1 {
		t.Errorf("%d messages, want the one card", len(s.fk.Messages()))
	}
}

func fieldOf(m fake.Message, name string) string {
	for _, f := range m.Embeds[0].Fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func TestUpdateBadRef(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	for _, ref := range []string{"", "123", "123|../../x", "abc|123"} {
		if err := s.ch.Update(ctxT(t), cardFor(newApproval()), ref); err == nil {
			t.Errorf("Update with ref %q: no error", ref)
		}
	}
}

func TestEmbedLimitsWithHugeAgentText(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	huge := strings.Repeat("*_`@<>|", 20000) + "é"
	a.Summary, a.URL, a.Rule, a.Reason = huge, "https://x/"+huge, huge, huge
	a.Container.Name, a.Container.Runtime = huge, huge
	a.Method = strings.Repeat("P", 5000)
	a.Body = strings.Repeat("```\n@everyone 日本", 100000)
	a.BodyTruncated, a.BodySize = true, 1<<30
	a.Required = 30
	for i := 0; i < 29; i++ {
		a.Votes = append(a.Votes, approval.Vote{By: "slack:" + huge[:500], Display: huge[:300]})
	}
	ref := s.post(t, a)
	m, _ := s.fk.Card(a.ID)
	e := m.Embeds[0]
	total := utf8.RuneCountInString(e.Title) + utf8.RuneCountInString(e.Description) + utf8.RuneCountInString(e.Footer.Text)
	for _, f := range e.Fields {
		total += utf8.RuneCountInString(f.Name) + utf8.RuneCountInString(f.Value)
	}
	if total > 6000 {
		t.Errorf("embed is %d characters", total)
	}
	if !strings.Contains(e.Description, "```\n") || !strings.HasSuffix(e.Description, "bytes in total)") {
		t.Errorf("body preview is not a closed, cut code block with the truncation note: …%q", e.Description[len(e.Description)-80:])
	}
	a.Status, a.By = approval.Approved, huge
	if err := s.ch.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	// The fake refuses (and records) anything over a limit.
}

func TestAgentTextCannotFormatOrMention(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	evil := "**Approved** by admin @everyone @here <@&1234> <@5678> [click](https://evil.example) # Heading\n> quote ||spoiler||"
	a.Summary, a.Rule, a.Container.Name = evil, evil, evil
	a.URL = "https://evil.example/`](x)"
	a.Body = "```\n@everyone\n``` **out of the block** ``"
	s.post(t, a, "111111111111111111")
	m, _ := s.fk.Card(a.ID)
	if m.AllowedMentions == nil || len(m.AllowedMentions.Parse) != 0 || !slices.Equal(m.AllowedMentions.Users, []string{"111111111111111111"}) {
		t.Errorf("allowed_mentions = %+v: agent text could notify", m.AllowedMentions)
	}
	if strings.Contains(m.Content, "everyone") || strings.Contains(m.Content, "5678") {
		t.Errorf("content %q carries agent text", m.Content)
	}
	e := m.Embeds[0]
	texts := []string{e.Title, fieldOf(m, "Rule"), fieldOf(m, "Container")}
	for _, txt := range texts {
		for _, bad := range []string{"**", " @everyone", " @here", "<@&", "<@5678", "[click]", "](", "||", "\n"} {
			if strings.Contains(txt, bad) {
				t.Errorf("%q keeps markdown %q", txt, bad)
			}
		}
	}
	if !strings.Contains(e.Title, `\*\*Approved\*\*`) || !strings.Contains(e.Title, `\@everyone`) || !strings.Contains(e.Title, `\<\@&1234\>`) {
		t.Errorf("title %q is not escaped as expected", e.Title)
	}
	// One code block: the agent's backticks cannot close it early.
	if n := strings.Count(e.Description, "```"); n != 2 {
		t.Errorf("description has %d ``` fences, want 2: %q", n, e.Description)
	}
	first, last := strings.Index(e.Description, "```"), strings.LastIndex(e.Description, "```")
	if !strings.Contains(e.Description[first:last], "out of the block") {
		t.Errorf("body text escaped the code block: %q", e.Description)
	}
	if strings.Contains(e.Description[:first], "](") || strings.Contains(e.Description[:first], "`") && !strings.Contains(e.Description[:first], "\\`") {
		t.Errorf("request line keeps markdown: %q", e.Description[:first])
	}
}

func TestNewSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	base := fk.Settings()
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	bad := map[string]map[string]any{
		"no token":              with("bot-token", nil),
		"token with newline":    with("bot-token", "abc\ndef"),
		"no application":        with("application-id", nil),
		"bad application":       with("application-id", "my-app"),
		"no channel":            with("channel-id", nil),
		"channel name":          with("channel-id", "#approvals"),
		"bad mode":              with("mode", "webhook"),
		"bad key":               with("public-key", "zz"),
		"short key":             with("public-key", "abcd"),
		"unknown setting":       with("guild-id", "1"),
		"api-base not http":     with("api-base", "ftp://discord.com"),
		"api-base plain http":   with("api-base", "http://discord.com/api/v10"),
		"interactions, no URL":  with("mode", "interactions"),
		"interactions, no key":  with("mode", "interactions", "public-key", nil),
		"missing env variable":  with("bot-token", "env:CLAWD_DISCORD_TEST_UNSET"),
		"missing credential fl": with("bot-token", "file:/nonexistent/discord-token"),
	}
	for name, settings := range bad {
		env := approval.Env{}
		if name == "interactions, no key" {
			env = httpsEnv
		}
		if _, err := New("discord", settings, env); err == nil {
			t.Errorf("%s: no error", name)
		} else if strings.Contains(err.Error(), fk.Token) {
			t.Errorf("%s: error %q contains the token", name, err)
		}
	}
	ch, err := New("discord", with("mode", "interactions"), httpsEnv)
	if err != nil || ch.Mode() != ModeInteractions {
		t.Errorf("interactions mode with a public URL: %v", err)
	}
	if approval.IsExclusive(ch) {
		t.Error("interactions (HTTP) mode is Exclusive: a fleet would run it on one host only")
	}
	ch, err = New("discord", with("public-key", nil, "api-base", nil), approval.Env{})
	if err != nil || ch.api != DefaultAPIBase || ch.Mode() != ModeGateway {
		t.Errorf("defaults: %v %+v", err, ch)
	}
	if !approval.IsExclusive(ch) {
		t.Error("gateway mode is not Exclusive: every host of a fleet would open a Gateway session")
	}
	// Credentials resolve through env.
	f := filepath.Join(t.TempDir(), "token")
	os.WriteFile(f, []byte(fk.Token+"\n"), 0o600)
	ch, err = New("discord", with("bot-token", "file:"+f), approval.Env{})
	if err != nil || ch.token != fk.Token {
		t.Errorf("file credential: %v", err)
	}
	ch, err = New("discord", with("bot-token", "secret:discord"), approval.Env{Secret: func(n string) (string, error) {
		if n != "discord" {
			return "", errors.New("no such secret")
		}
		return fk.Token, nil
	}})
	if err != nil || ch.token != fk.Token {
		t.Errorf("secret credential: %v", err)
	}
}

func TestErrorsNeverCarryTheToken(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	ch, err := New("discord", fk.Settings(), approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := New("discord", map[string]any{
		"bot-token": "wrong-token-value", "application-id": fk.AppID, "channel-id": fk.ChannelID,
		"api-base": fk.URL() + "/api/v10",
	}, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong-token-value") {
		t.Errorf("Post with a refused token: %v", err)
	}
	// The fake recorded the wrong token: that is this test's point.
	if v := fk.Violations(); len(v) != 1 || !strings.Contains(v[0], "Authorization") {
		t.Errorf("violations = %v", v)
	}
	fk.Close()
	_, err = ch.Post(ctxT(t), cardFor(newApproval()))
	if err == nil || strings.Contains(err.Error(), fk.Token) {
		t.Errorf("Post to a closed server: %v", err)
	}
}

func newRawServer(t *testing.T, h http.HandlerFunc) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRateLimitIsWaitedOutOnce(t *testing.T) {
	n := 0
	srv := newRawServer(t, func(w http.ResponseWriter, r *http.Request) {
		n++
		if n == 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"message":"You are being rate limited.","retry_after":0.01,"global":false}`))
			return
		}
		w.Write([]byte(`{"id":"1400000000000000001","channel_id":"1200000000000000002"}`))
	})
	ch, err := New("discord", map[string]any{
		"bot-token": "t", "application-id": "1", "channel-id": "1200000000000000002", "api-base": srv,
	}, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ch.Post(context.Background(), cardFor(newApproval()))
	if err != nil || ref != "1200000000000000002|1400000000000000001" || n != 2 {
		t.Errorf("ref %q err %v after %d requests", ref, err, n)
	}
}

func TestGatewayURLMustBeSecure(t *testing.T) {
	ch, err := New("discord", map[string]any{"bot-token": "t", "application-id": "1", "channel-id": "2"}, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for u, ok := range map[string]bool{
		"wss://gateway.discord.gg":         true,
		"ws://gateway.discord.gg":          false,
		"ws://127.0.0.1:8080/gateway":      true,
		"https://gateway.discord.gg":       false,
		"wss://user:pw@gateway.discord.gg": false,
		"":                                 false,
	} {
		got, err := ch.wsURL(u)
		if (err == nil) != ok {
			t.Errorf("wsURL(%q) = %q, %v", u, got, err)
		}
		if err == nil && !strings.HasSuffix(got, "?encoding=json&v=10") {
			t.Errorf("wsURL(%q) = %q", u, got)
		}
	}
}
