package slack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/slack/fake"
)

// Incoming webhook: post only; the card is edited through the
// response_url of a click on it.
func TestWebhookMode(t *testing.T) {
	r := newRig(t, func(fk *fake.Server) map[string]any { return fk.WebhookSettings() })
	r.run(t)
	c := testCard()
	if ref := r.post(t, c); ref != "" {
		t.Errorf("webhook ref %q", ref)
	}
	m, ok := r.fk.Card(testID)
	if !ok || !m.Webhook || len(m.Buttons) != 3 {
		t.Fatalf("webhook card %+v", m)
	}
	// Nobody clicked yet: nothing to edit with, and no error.
	c.Votes = []approval.Vote{{By: "cli"}}
	if err := r.ch.Update(tctx(t), c, ""); err != nil {
		t.Fatal(err)
	}
	if m, _ := r.fk.Card(testID); m.Updates != 0 {
		t.Fatal("card edited without a response_url")
	}
	if _, err := r.fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE"); err != nil {
		t.Fatal(err)
	}
	c.Status, c.By = approval.Approved, "slack:U0ALICE"
	if err := r.ch.Update(tctx(t), c, ""); err != nil {
		t.Fatal(err)
	}
	m, _ = r.fk.Card(testID)
	if m.Updates != 1 || len(m.Buttons) != 0 || !strings.Contains(m.AllText(), "Approved by slack:U0ALICE") {
		t.Errorf("after the decision: %d updates, buttons %v:\n%s", m.Updates, m.Buttons, m.AllText())
	}
}

func TestNewValidates(t *testing.T) {
	env := approval.Env{}
	for _, tc := range []struct {
		name string
		s    map[string]any
		want string
	}{
		{"nothing", map[string]any{}, "set bot-token and channel, or webhook-url"},
		{"both", map[string]any{"bot-token": "xoxb-1", "channel": "C1", "webhook-url": "https://hooks.slack.com/services/x"}, "not both"},
		{"no channel", map[string]any{"bot-token": "xoxb-1"}, "needs channel"},
		{"bad channel", map[string]any{"bot-token": "xoxb-1", "channel": "C1 ; rm"}, "needs channel"},
		{"channel with webhook", map[string]any{"webhook-url": "https://hooks.slack.com/services/x", "channel": "C1"}, "channel is for bot-token"},
		{"user token", map[string]any{"bot-token": "xoxp-SECRET-VALUE", "channel": "C1"}, "not a xoxb-… token"},
		{"bot token as app token", map[string]any{"bot-token": "xoxb-1", "channel": "C1", "app-token": "xoxb-SECRET-VALUE"}, "not a xapp-… token"},
		{"clear-text webhook", map[string]any{"webhook-url": "http://hooks.example.com/SECRET-VALUE"}, "must be an https URL"},
		{"file webhook", map[string]any{"webhook-url": "file:///nonexistent/hook"}, "credential file"},
		{"api-base scheme", map[string]any{"bot-token": "xoxb-1", "channel": "C1", "api-base": "ftp://slack.com/api/"}, "api-base"},
		{"clear-text api-base", map[string]any{"bot-token": "xoxb-1", "channel": "C1", "api-base": "http://slack.example/api/"}, "api-base"},
		{"unknown key", map[string]any{"bot-token": "xoxb-1", "channel": "C1", "chanel": "C2"}, "chanel"},
		{"unset env", map[string]any{"bot-token": "env:CLAWD_TEST_UNSET_TOKEN", "channel": "C1"}, "CLAWD_TEST_UNSET_TOKEN"},
		{"no secret store", map[string]any{"bot-token": "secret:slack", "channel": "C1"}, "no secret store"},
	} {
		_, err := New("slack", tc.s, env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "SECRET-VALUE") {
			t.Errorf("%s: error shows the credential: %v", tc.name, err)
		}
	}
}

func TestCredentialsResolved(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bot"), []byte(fake.BotToken+"\n"), 0o600)
	t.Setenv("CLAWD_TEST_SIGNING", fake.SigningSecret)
	ch, err := New("ops-slack", map[string]any{
		"bot-token": "file:" + filepath.Join(dir, "bot"), "app-token": "secret:slack-app",
		"signing-secret": "env:CLAWD_TEST_SIGNING", "channel": fake.ChannelID, "api-base": fk.APIBase(),
	}, approval.Env{HTTP: fk.HTTP, Secret: func(n string) (string, error) {
		if n != "slack-app" {
			t.Errorf("secret %q asked", n)
		}
		return fake.AppToken, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if ch.Name() != "ops-slack" || ch.appToken != fake.AppToken || ch.secret != fake.SigningSecret {
		t.Errorf("credentials not resolved")
	}
	// Socket Mode: one host of a fleet runs it (a lease).
	if !approval.IsExclusive(ch) {
		t.Error("a Socket Mode channel is not Exclusive")
	}
	httpOnly, err := New("ops-slack", map[string]any{"bot-token": fake.BotToken, "signing-secret": fake.SigningSecret,
		"channel": fake.ChannelID, "api-base": fk.APIBase()}, approval.Env{HTTP: fk.HTTP})
	if err != nil {
		t.Fatal(err)
	}
	if approval.IsExclusive(httpOnly) {
		t.Error("an HTTP-interactivity channel is Exclusive")
	}
	if _, err := ch.Post(tctx(t), testCard()); err != nil {
		t.Fatalf("post with the file token: %v", err)
	}
	if v := fk.Violations(); len(v) > 0 {
		t.Error(v)
	}
}

// Nothing clawd logs or returns carries a token, the signing secret or the
// webhook URL, even when Slack fails.
func TestSecretsStayOut(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	fk := fake.New()
	s := fk.Settings()
	ch, err := New("slack", s, approval.Env{HTTP: fk.HTTP, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	dec := newDecider("ok")
	r := &rig{fk: fk, ch: ch, dec: dec}
	r.run(t)
	r.post(t, testCard())
	if _, err := fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE"); err != nil {
		t.Fatal(err)
	}
	wh, err := New("hook", fk.WebhookSettings(), approval.Env{HTTP: fk.HTTP, Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	fk.Close() // every later call fails
	var errs []string
	if _, err := ch.Post(tctx(t), testCard()); err != nil {
		errs = append(errs, err.Error())
	}
	if _, err := wh.Post(tctx(t), testCard()); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) != 2 {
		t.Fatalf("posts to a closed Slack did not fail: %v", errs)
	}
	all := strings.Join(errs, "\n")
	for _, e := range logs.All() {
		all += "\n" + e.Message
		for k, v := range e.ContextMap() {
			all += " " + k + "=" + strings.ReplaceAll(strings.TrimSpace(strings.Join(strings.Fields(toString(v)), " ")), "\n", " ")
		}
	}
	for _, secret := range []string{fake.BotToken, fake.AppToken, fake.SigningSecret, "fakewebhooksecret", "ticket="} {
		if strings.Contains(all, secret) {
			t.Errorf("%q in errors or logs:\n%s", secret, all)
		}
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}
