package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/approval"
	approvalapi "github.com/clawd-dev/clawd/approval/api"
	discordfake "github.com/clawd-dev/clawd/approval/discord/fake"
	emailfake "github.com/clawd-dev/clawd/approval/email/fake"
	gchatfake "github.com/clawd-dev/clawd/approval/gchat/fake"
	githubfake "github.com/clawd-dev/clawd/approval/github/fake"
	linearfake "github.com/clawd-dev/clawd/approval/linear/fake"
	mattermostfake "github.com/clawd-dev/clawd/approval/mattermost/fake"
	ntfyfake "github.com/clawd-dev/clawd/approval/ntfy/fake"
	slackfake "github.com/clawd-dev/clawd/approval/slack/fake"
	teamsfake "github.com/clawd-dev/clawd/approval/teams/fake"
	telegramfake "github.com/clawd-dev/clawd/approval/telegram/fake"
	webexfake "github.com/clawd-dev/clawd/approval/webex/fake"
	whatsappfake "github.com/clawd-dev/clawd/approval/whatsapp/fake"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// chanUnderTest is one approval channel and its fake platform, seen the
// way the e2e test needs: the settings for clawd.yaml, the card of an
// approval (pending with buttons, or decided without), and a click as a
// person of the platform, authenticated as the platform does.
type chanUnderTest struct {
	name, typ  string
	approver   string           // the platform user ID of the approver
	intruder   string           // a user of the platform the route does not ask ("": nobody else can press)
	silent     bool             // the platform shows the clicker nothing from clawd (ntfy: only the HTTP status)
	settings   map[string]any   // without type/name/approvers
	endpoint   func(url string) // tells the fake clawd's callback URL (nil: no callbacks)
	card       func(ctx context.Context, id string, decided bool) error
	click      func(ctx context.Context, id, act, user string) (string, error)
	violations func() []string
	started    func(ctx context.Context) error // after the daemon started (nil: nothing)
}

func slackChannel(t *testing.T) chanUnderTest {
	f := slackfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "slack", typ: "slack", approver: "U0CHANAPPROVER", intruder: "U0INTRUDER", settings: f.Settings(),
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m slackfake.Message) bool { return (len(m.Buttons) == 0) == decided })
			return err
		},
		click:      f.Click, // over Socket Mode: clawd opened the connection, no inbound URL
		violations: f.Violations,
	}
}

func teamsChannel(t *testing.T) chanUnderTest {
	f := teamsfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "teams", typ: "teams", approver: "8f2c6f0a-1b2c-4d5e-9f00-0000000000aa", intruder: "8f2c6f0a-1b2c-4d5e-9f00-0000000000bb", settings: f.Settings(),
		endpoint: f.SetEndpoint,
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m teamsfake.Message) bool { return (len(m.Actions) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func telegramChannel(t *testing.T) chanUnderTest {
	f := telegramfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "telegram", typ: "telegram", approver: "424242", intruder: "666", settings: f.Settings(),
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m telegramfake.Message) bool { return (len(m.Keyboard) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations, // getUpdates long polling: no inbound URL
	}
}

func discordChannel(t *testing.T) chanUnderTest {
	f := discordfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "discord", typ: "discord", approver: "112233445566778899", intruder: "998877665544332211", settings: f.Settings(),
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m discordfake.Message) bool { return (len(m.Components) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations, // over the Gateway: no inbound URL
	}
}

func gchatChannel(t *testing.T) chanUnderTest {
	f := gchatfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "gchat", typ: "gchat", approver: "users/1111", intruder: "users/6666", settings: f.Settings(),
		endpoint: f.SetCallbackURL,
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m gchatfake.Message) bool { return (len(m.Buttons) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func whatsappChannel(t *testing.T) chanUnderTest {
	f := whatsappfake.New()
	t.Cleanup(f.Close)
	const approver = "15550001234"
	return chanUnderTest{
		// Only asked approvers get a message: no stranger can press.
		name: "whatsapp", typ: "whatsapp", approver: approver, settings: f.Settings(),
		// The approver writes first: clawd may then send reply buttons and
		// follow-ups (the 24-hour customer-service window).
		started: func(ctx context.Context) error {
			code, err := f.Text(ctx, approver, "hello clawd")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("webhook answered %d", code)
			}
			return err
		},
		endpoint: f.SetEndpoint,
		// WhatsApp messages cannot be edited: a decided card is one with a
		// follow-up saying it no longer does anything.
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m whatsappfake.Message) bool {
				done := false
				for _, r := range m.Replies {
					done = done || strings.Contains(r, "no longer do anything")
				}
				return done == decided
			})
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func webexChannel(t *testing.T) chanUnderTest {
	f := webexfake.New()
	t.Cleanup(f.Close)
	st := f.Settings()
	st["register-webhook"] = true // clawd registers its attachmentActions webhook itself
	return chanUnderTest{
		name: "webex", typ: "webex", approver: "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9hcHByb3Zlcg", intruder: "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9pbnRydWRlcg", settings: st,
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m webexfake.Message) bool { return (len(m.Actions) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func emailChannel(t *testing.T) chanUnderTest {
	f := emailfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		// Each recipient gets links of their own: no stranger can press.
		name: "mail", typ: "email", approver: strings.ToLower(emailfake.Recipients[0]), silent: false, settings: f.Settings(),
		// A message cannot be edited: a decided card is a follow-up in its thread.
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m emailfake.Message) bool {
				if decided {
					return m.InReplyTo != ""
				}
				return len(m.Links) > 0
			})
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func githubChannel(t *testing.T) chanUnderTest {
	f := githubfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "github", typ: "github", approver: "alice", intruder: "mallory", settings: f.Settings(),
		endpoint: f.SetEndpoint,
		// The card is a comment; once decided its commands are gone.
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m githubfake.Message) bool { return !strings.Contains(m.Body, "/clawd approve ") == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func linearChannel(t *testing.T) chanUnderTest {
	f := linearfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "linear", typ: "linear", approver: "5f1c2e0a-0000-4000-8000-00000000a11c", intruder: "5f1c2e0a-0000-4000-8000-0000000bad00", settings: f.Settings(),
		endpoint: f.SetEndpoint,
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m linearfake.Message) bool { return (len(m.Commands) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func mattermostChannel(t *testing.T) chanUnderTest {
	f := mattermostfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		name: "mattermost", typ: "mattermost", approver: "a11ceuser00000000000000000", intruder: "ma11oryuser000000000000000", settings: f.Settings(),
		endpoint: f.SetCallbackURL,
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m mattermostfake.Message) bool { return (len(m.Actions) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

func ntfyChannel(t *testing.T) chanUnderTest {
	f := ntfyfake.New()
	t.Cleanup(f.Close)
	return chanUnderTest{
		// Only the asked approver's topic gets buttons: no stranger can press.
		name: "phones", typ: "ntfy", approver: "alice", silent: true, settings: f.Settings(),
		card: func(ctx context.Context, id string, decided bool) error {
			_, err := f.WaitCard(ctx, id, func(m ntfyfake.Message) bool { return (len(m.Actions) == 0) == decided })
			return err
		},
		click: f.Click, violations: f.Violations,
	}
}

// TestApprovalChannels holds a real agent request and approves it from
// each channel in turn, through each platform's fake as the platform would
// deliver the click; the upstream sees each request exactly once, after
// the click. A stranger's click on every channel releases nothing; a deny
// and a timeout update the card on every channel.
func TestApprovalChannels(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	chans := []chanUnderTest{slackChannel(t), teamsChannel(t), ntfyChannel(t), telegramChannel(t), discordChannel(t), gchatChannel(t), whatsappChannel(t), webexChannel(t), emailChannel(t), githubChannel(t), linearChannel(t), mattermostChannel(t)}
	var creds []string // every credential value, which no log or audit line may hold
	for _, ch := range chans {
		for k, v := range ch.settings {
			if str, ok := v.(string); ok && len(str) >= 12 && (strings.Contains(k, "token") || strings.Contains(k, "secret") || strings.Contains(k, "password") || k == "credentials") {
				creds = append(creds, str)
			}
		}
	}
	if len(creds) < 6 {
		t.Fatalf("only %d credentials found in the fakes' settings", len(creds))
	}
	const policy = `version: 1
default:
  default_action: deny
  rules:
    - name: short
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/chan-timeout/**"]
      action: approve
      approval_timeout: 3s
    - name: via-channels
      cidrs: [198.51.100.10/32]
      ports: 8080
      paths: ["/chan/**"]
      action: approve
`
	cl := StartClawd(t, ctd, ClawdOpts{Policy: policy, ExtraFunc: func(c *Clawd) string {
		// Credentials as operators keep them: a clawd-owned secret in the
		// store (Telegram's bot token) and a file (Teams' app password).
		for i := range chans {
			switch chans[i].typ {
			case "telegram":
				tok := chans[i].settings["bot-token"].(string)
				if out, err := secCLIStdin(c, tok, "secret", "set", "telegram-bot", "--clawd"); err != nil {
					t.Fatalf("secret set: %v %s", err, out)
				}
				chans[i].settings["bot-token"] = "secret:telegram-bot"
			case "teams":
				f := filepath.Join(c.Dir, "teams-password")
				if err := os.WriteFile(f, []byte(chans[i].settings["app-password"].(string)+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				chans[i].settings["app-password"] = "file:" + f
			}
		}
		var list []map[string]any
		for _, ch := range chans {
			m := map[string]any{"type": ch.typ, "name": ch.name, "approvers": []string{ch.approver}}
			for k, v := range ch.settings {
				m[k] = v
			}
			list = append(list, m)
			if ch.endpoint != nil {
				ch.endpoint("http://" + c.API + approval.CallbackPath(ch.name))
			}
		}
		b, err := yaml.Marshal(map[string]any{"public-url": "http://" + c.API, "approval": map[string]any{"channels": list}})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}})
	tok, err := os.ReadFile(filepath.Join(cl.StateDir, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	api := &approvalapi.Client{Base: "http://" + cl.API, Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	for _, ch := range chans {
		if ch.started != nil {
			if err := ch.started(context.Background()); err != nil {
				t.Fatalf("%s: %v", ch.name, err)
			}
		}
	}
	ct := ctd.Run(t, "chan-agent", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	cl.MustCLI("attach", ct.Name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// held sends POST path from the agent and returns its pending approval.
	held := func(t *testing.T, path string) (<-chan apprAgentResult, string) {
		t.Helper()
		ch := apprAgentAsync(ct, "-timeout", "90s", "-X", "POST", "-d", "payload of "+path, upURL(path))
		for {
			list, err := api.List(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range list {
				if strings.HasSuffix(a.URL, path) {
					return ch, a.ID
				}
			}
			select {
			case <-ctx.Done():
				t.Fatalf("no approval for %s", path)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	everyCard := func(t *testing.T, id string, decided bool) {
		t.Helper()
		for _, ch := range chans {
			if err := ch.card(ctx, id, decided); err != nil {
				t.Fatalf("%s: card of %s (decided %v): %v", ch.name, id, decided, err)
			}
		}
	}

	for _, ch := range chans {
		t.Run("approve from "+ch.name, func(t *testing.T) {
			path := "/chan/" + ch.name
			res, id := held(t, path)
			everyCard(t, id, false)
			// Someone the route does not ask, on every channel: nothing moves.
			for _, other := range chans {
				if other.intruder == "" {
					continue
				}
				reply, err := other.click(ctx, id, approval.ActApprove, other.intruder)
				if err != nil || !strings.Contains(reply, "not asked") {
					t.Errorf("%s: a stranger's click answered %q, %v", other.name, reply, err)
				}
			}
			if n := apprUpCount(up, path); n != 0 {
				t.Fatalf("upstream saw %d requests before the decision", n)
			}
			reply, err := ch.click(ctx, id, approval.ActApprove, ch.approver)
			if err != nil || (!ch.silent && !strings.Contains(reply, "Approved")) {
				t.Fatalf("approve on %s: %q %v", ch.name, reply, err)
			}
			if a := apprAwait(t, res); a.Status != 200 {
				t.Fatalf("the held request got %+v", a)
			}
			if n := apprUpCount(up, path); n != 1 {
				t.Fatalf("upstream saw %d requests, want exactly 1", n)
			}
			a, err := api.Get(ctx, id)
			if err != nil || a.Status != approval.Approved || a.By != ch.name+":"+ch.approver {
				t.Fatalf("approval %+v %v", a, err)
			}
			everyCard(t, id, true)
			// The same click again is idempotent; nothing is sent twice.
			if reply, err := ch.click(ctx, id, approval.ActApprove, ch.approver); err == nil && !ch.silent && !strings.Contains(reply, "Already approved") {
				t.Errorf("second click answered %q", reply)
			}
			if n := apprUpCount(up, path); n != 1 {
				t.Fatalf("upstream saw %d requests after a second click, want exactly 1", n)
			}
		})
	}

	t.Run("deny updates every card", func(t *testing.T) {
		res, id := held(t, "/chan/deny")
		everyCard(t, id, false)
		cl.MustCLI("deny", id, "--reason", "not now")
		if a := apprAwait(t, res); a.Status != 403 {
			t.Fatalf("the denied request got %+v", a)
		}
		everyCard(t, id, true)
		for _, ch := range chans {
			if reply, err := ch.click(ctx, id, approval.ActApprove, ch.approver); err == nil && !ch.silent && !strings.Contains(reply, "Already denied") {
				t.Errorf("%s: click after deny answered %q", ch.name, reply)
			}
		}
		if n := apprUpCount(up, "/chan/deny"); n != 0 {
			t.Fatalf("upstream saw %d denied requests", n)
		}
	})

	t.Run("timeout updates every card", func(t *testing.T) {
		res, id := held(t, "/chan-timeout/x")
		everyCard(t, id, false)
		if a := apprAwait(t, res); a.Status != 403 {
			t.Fatalf("the timed-out request got %+v", a)
		}
		everyCard(t, id, true)
		for _, ch := range chans {
			if reply, err := ch.click(ctx, id, approval.ActApprove, ch.approver); err == nil && !ch.silent && !strings.Contains(reply, "timed out") {
				t.Errorf("%s: click after the timeout answered %q", ch.name, reply)
			}
		}
	})

	logs, _ := os.ReadFile(cl.LogPath)
	audit, _ := os.ReadFile(cl.Audit)
	for _, c := range creds {
		probe := c
		if len(probe) > 40 {
			probe = probe[len(probe)/2 : len(probe)/2+24] // a piece of a key file
		}
		if strings.Contains(string(logs), probe) || strings.Contains(string(audit), probe) {
			t.Errorf("a channel credential appears in the daemon log or the audit log")
		}
	}
	for _, ch := range chans {
		if v := ch.violations(); len(v) > 0 {
			t.Errorf("%s: payloads the platform would refuse: %s", ch.name, strings.Join(v, "; "))
		}
	}
}
