package linear

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/linear/fake"
)

func TestPostCardShape(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, "")
	m, ok := s.fk.Card(a.ID)
	if !ok {
		t.Fatal("no card posted")
	}
	if m.Issue != fake.TrackingIssue || ref != fake.Issues[fake.TrackingIssue]+"|"+m.CommentID {
		t.Fatalf("card on %s, ref %q; want the tracking issue and issueId|commentId", m.Issue, ref)
	}
	lines := strings.Split(m.Text, "\n")
	if lines[0] != "Create an issue in clawd-dev/clawd" {
		t.Fatalf("summary is not first: %q", lines[0])
	}
	for _, want := range []string{"Request: POST https://api.github.com/repos/clawd-dev/clawd/issues",
		"Container: agent-1", "Rule: github-writes", "Time left: 10m", "clawd approval needed",
		"Approval " + a.ID + " · request 0123456789abcdef"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("card lacks %q:\n%s", want, m.Text)
		}
	}
	if len(m.Blocks) != 1 || m.Blocks[0] != `{"title":"hello"}` {
		t.Errorf("body preview blocks %q", m.Blocks)
	}
	want := []string{"/clawd approve " + a.ID, "/clawd approve " + a.ID + " for 15m", "/clawd deny " + a.ID + " reason…"}
	if strings.Join(m.Commands, "|") != strings.Join(want, "|") {
		t.Errorf("commands %q, want %q", m.Commands, want)
	}
	if len(m.Hazards) > 0 {
		t.Errorf("card has live markup: %q\n%s", m.Hazards, m.Body)
	}

	// No grants: no "for 15m" command.
	b := newApproval()
	b.GrantsAllowed = false
	s.post(t, b, "")
	m, _ = s.fk.Card(b.ID)
	if len(m.Commands) != 2 || strings.Contains(m.Body, "for 15m") {
		t.Errorf("card without grants offers %q", m.Commands)
	}
	// The issue id is resolved once.
	if n := s.fk.Calls("issue"); n != 1 {
		t.Errorf("issue looked up %d times, want 1 (cached)", n)
	}
}

func TestPostTarget(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	ref := s.post(t, a, "ENG-123")
	m, _ := s.fk.Card(a.ID)
	if m.Issue != "ENG-123" || !strings.HasPrefix(ref, fake.Issues["ENG-123"]+"|") {
		t.Fatalf("card on %q (ref %q), want ENG-123", m.Issue, ref)
	}
	for _, bad := range []string{"not an issue", "ENG-0", "ENG-123\n", `ENG-1") { id } viewer { id`} {
		if _, err := s.ch.Post(ctxT(t), cardFor(newApproval(), bad)); err == nil {
			t.Errorf("target %q accepted", bad)
		}
	}
	if _, err := s.ch.Post(ctxT(t), cardFor(newApproval(), "ENG-999")); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown issue: %v", err)
	}
	// No target and no issue setting: a clear error.
	s2 := newSetup(t, func(m map[string]any, _ *approval.Env) { delete(m, "issue") })
	if _, err := s2.ch.Post(ctxT(t), cardFor(newApproval(), "")); err == nil || !strings.Contains(err.Error(), "no issue") {
		t.Errorf("no target, no issue: %v", err)
	}
}

func TestCommandDecides(t *testing.T) {
	for _, tc := range []struct {
		act      string
		approve  bool
		grantFor time.Duration
		reason   string
	}{{approval.ActApprove, true, 0, ""}, {approval.ActApproveFor, true, approval.GrantFor, ""}, {approval.ActDeny, false, 0, "not now"}} {
		t.Run(tc.act, func(t *testing.T) {
			s := newSetup(t)
			a := newApproval()
			s.post(t, a, "OPS-7")
			s.fk.SetName(alice, "Alice Liddell")
			reply, err := s.fk.Click(ctxT(t), a.ID, tc.act, alice)
			if err != nil {
				t.Fatal(err)
			}
			if reply != s.d.Res.Message {
				t.Errorf("commenter sees %q, want %q", reply, s.d.Res.Message)
			}
			calls := s.d.Calls()
			if len(calls) != 1 {
				t.Fatalf("decider called %d times", len(calls))
			}
			want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: tc.approve, GrantFor: tc.grantFor,
				Channel: "linear", User: alice, Display: "Alice Liddell", Reason: tc.reason}
			if calls[0] != want {
				t.Errorf("decision %+v\nwant     %+v", calls[0], want)
			}
		})
	}
}

func TestThreadedCommand(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, "")
	reply, err := s.fk.Reply(ctxT(t), a.ID, bob, "/clawd deny "+strings.ToUpper(a.ID)+" too risky\nplease open a PR instead")
	if err != nil {
		t.Fatal(err)
	}
	calls := s.d.Calls()
	if len(calls) != 1 || calls[0].Approve || calls[0].Reason != "too risky please open a PR instead" || calls[0].ID != a.ID {
		t.Fatalf("calls %+v", calls)
	}
	m, _ := s.fk.Card(a.ID)
	if len(m.Replies) != 1 || m.Replies[0] != reply || reply != s.d.Res.Message {
		t.Errorf("reply %q, thread replies %q", reply, m.Replies)
	}
}

func TestCommandMistakes(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, "")
	other := newApproval()
	s.post(t, other, "ENG-123") // on another issue
	for _, tc := range []struct{ text, reply string }{
		{"/clawd approve", "use"},
		{"/clawd approve " + a.ID + " for ever", "duration"},
		{"/clawd approve " + a.ID + " please", "use"},
		{"/clawd merge " + a.ID, "use"},
		{"/clawd approve aaaaaaaaaaaaaaaaaaaaaaaazz", "no approval"},
		{"/clawd approve " + other.ID, "no approval"}, // its card is not on this issue
		{"/clawd approve ../../etc", "no approval"},
	} {
		reply, err := s.fk.Comment(ctxT(t), a.ID, alice, tc.text)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reply, tc.reply) || !strings.Contains(reply, "nothing changed") {
			t.Errorf("%q: reply %q, want %q", tc.text, reply, tc.reply)
		}
	}
	// An ordinary comment gets no answer.
	if reply, err := s.fk.Comment(ctxT(t), a.ID, alice, "looks fine to me, /clawd approve later"); err != nil || reply != "" {
		t.Errorf("ordinary comment: %q %v", reply, err)
	}
	if n := len(s.d.Calls()); n != 0 {
		t.Errorf("decider called %d times", n)
	}
}

func TestForgedDeliveriesRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		f      fake.Forgery
		status int
	}{
		{"bad signature", fake.ForgeSignature, 401},
		{"no signature", fake.ForgeNoSignature, 401},
		{"stale timestamp", fake.ForgeStale, 401},
		{"future timestamp", fake.ForgeFuture, 401},
		{"malformed", fake.ForgeMalformed, 400},
		{"no delivery id", fake.ForgeNoDelivery, 400},
		{"update event", fake.ForgeUpdate, 200},
		{"remove event", fake.ForgeRemove, 200},
		{"other issue", fake.ForgeOtherIssue, 200},
		{"integration comment", fake.ForgeBot, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			a := newApproval()
			s.post(t, a, "")
			d, err := s.fk.Deliver(ctxT(t), a.ID, alice, "/clawd approve "+a.ID, false, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			if d.Status != tc.status {
				t.Errorf("status %d, want %d", d.Status, tc.status)
			}
			if n := len(s.d.Calls()); n != 0 {
				t.Errorf("decider called %d times", n)
			}
			if tc.f == fake.ForgeOtherIssue && !strings.Contains(d.Reply, "no approval") {
				t.Errorf("other issue: reply %q", d.Reply)
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, "")
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	status, err := s.fk.Replay(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if status != 401 {
		t.Errorf("replay answered %d", status)
	}
	if status, err = s.fk.ReplayNewDelivery(ctxT(t)); err != nil || status != 401 {
		t.Errorf("replay under a new delivery id answered %d (%v)", status, err)
	}
	if n := len(s.d.Calls()); n != 1 {
		t.Errorf("decider called %d times, want 1", n)
	}
}

func TestOwnCommentsIgnored(t *testing.T) {
	s := newSetup(t)
	s.fk.DeliverOwn(true) // Linear sends webhooks for clawd's own comments too
	s.d.Res.Message = "/clawd approve " + strings.Repeat("b", 26)
	a := newApproval()
	s.post(t, a, "")
	// A command written as clawd's own user is clawd's text, not a person's.
	reply, err := s.fk.Comment(ctxT(t), a.ID, fake.ViewerID, "/clawd approve "+a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if reply != "" || len(s.d.Calls()) != 0 {
		t.Fatalf("own comment: reply %q, calls %d", reply, len(s.d.Calls()))
	}
	// A person's command is decided once, and clawd's reply (delivered
	// back to clawd) decides nothing more even though it reads like one.
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if n := len(s.d.Calls()); n != 1 {
		t.Errorf("decider called %d times, want 1", n)
	}
	if n := s.fk.Calls("viewer"); n != 1 {
		t.Errorf("viewer fetched %d times, want once", n)
	}
}

func TestUpdateShowsOutcome(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	a.Required = 2
	ref := s.post(t, a, "")
	a.Votes = []approval.Vote{{By: "linear:" + alice, Display: "Alice", At: time.Now()}}
	if err := s.ch.Update(ctxT(t), cardFor(a, ""), ref); err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if !strings.Contains(m.Text, "Approvals: 1 of 2 (Alice)") || len(m.Commands) != 3 || m.Updates != 1 {
		t.Errorf("first vote card (updates %d):\n%s", m.Updates, m.Text)
	}
	a.Status, a.By, a.Reason = approval.Denied, "linear:"+bob, "not @ this hour"
	if err := s.ch.Update(ctxT(t), cardFor(a, ""), ref); err != nil {
		t.Fatal(err)
	}
	m, _ = s.fk.Card(a.ID)
	if len(m.Commands) != 0 || strings.Contains(m.Text, "To decide") || strings.Contains(m.Text, "Time left") {
		t.Errorf("decided card still offers commands:\n%s", m.Text)
	}
	for _, want := range []string{"Denied by linear:" + bob, "Reason: not @ this hour"} {
		if !strings.Contains(m.Text, want) {
			t.Errorf("decided card lacks %q:\n%s", want, m.Text)
		}
	}
	if len(m.Hazards) > 0 {
		t.Errorf("hazards %q", m.Hazards)
	}
	for _, bad := range []string{"", "nopipe", "a|", "|b", "a|b|c", "../x|y"} {
		if err := s.ch.Update(ctxT(t), cardFor(a, ""), bad); err == nil {
			t.Errorf("ref %q accepted", bad)
		}
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := newSetup(t, func(_ map[string]any, e *approval.Env) { e.StateDir = dir })
	a := newApproval()
	s.post(t, a, "ENG-123")
	// A new channel on the same state directory (clawd restarted) still
	// binds commands to the posted card's digest.
	s2 := newSetup(t, func(_ map[string]any, e *approval.Env) { e.StateDir = dir })
	// Copy the card into the second fake so it can deliver on that issue.
	if _, err := s2.ch.createComment(ctxT(t), fake.Issues["ENG-123"], "", render(cardFor(a, "ENG-123"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	calls := s2.d.Calls()
	if len(calls) != 1 || calls[0].Digest != a.Digest[:16] {
		t.Fatalf("after restart: %+v", calls)
	}
}

func TestSettings(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	good := fk.Settings
	for _, tc := range []struct {
		name string
		mod  func(map[string]any)
		want string
	}{
		{"no api-key", func(m map[string]any) { delete(m, "api-key") }, "api-key is required"},
		{"bearer api key", func(m map[string]any) { m["api-key"] = "Bearer " + fake.APIKey }, "auth: oauth"},
		{"no webhook secret", func(m map[string]any) { delete(m, "webhook-secret") }, "webhook-secret is required"},
		{"bad auth", func(m map[string]any) { m["auth"] = "basic" }, "auth must be"},
		{"bad issue", func(m map[string]any) { m["issue"] = "issue one" }, "issue must be"},
		{"http api-base", func(m map[string]any) { m["api-base"] = "http://api.linear.app" }, "api-base"},
		{"api-base with credentials", func(m map[string]any) { m["api-base"] = "https://u:p@api.linear.app" }, "api-base"},
		{"unknown key", func(m map[string]any) { m["channel"] = "x" }, "channel"},
		{"missing env credential", func(m map[string]any) { m["webhook-secret"] = "env:CLAWD_TEST_NOPE_LINEAR" }, "CLAWD_TEST_NOPE_LINEAR"},
	} {
		m := good()
		tc.mod(m)
		_, err := New("linear", m, approval.Env{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), fake.APIKey) || strings.Contains(err.Error(), fake.WebhookSecret)) {
			t.Errorf("%s: error leaks a credential: %v", tc.name, err)
		}
	}
	// A secret-store failure is reported without the value.
	m := good()
	m["api-key"] = "secret:linear-key"
	_, err := New("linear", m, approval.Env{Secret: func(string) (string, error) { return "", errors.New("no such secret") }})
	if err == nil || !strings.Contains(err.Error(), "api-key: no such secret") {
		t.Errorf("secret store error: %v", err)
	}
}

func TestOAuthToken(t *testing.T) {
	s := newSetup(t, func(m map[string]any, _ *approval.Env) {
		m["auth"] = AuthOAuth
		m["api-key"] = fake.OAuthToken
	})
	a := newApproval()
	s.post(t, a, "")
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice); err != nil {
		t.Fatal(err)
	}
	if len(s.d.Calls()) != 1 {
		t.Fatal("no decision with an OAuth token")
	}
}

func TestAPIErrorsHideTheKey(t *testing.T) {
	s := newSetup(t, func(m map[string]any, _ *approval.Env) { m["api-key"] = "lin_api_wrongkeyvalue123" })
	_, err := s.ch.Post(ctxT(t), cardFor(newApproval(), ""))
	if err == nil || strings.Contains(err.Error(), "wrongkeyvalue") {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestParseCommand(t *testing.T) {
	id := "abcdefghijklmnopqrstuvwxyz"
	for _, tc := range []struct {
		in   string
		ok   bool
		want command
	}{
		{"/clawd approve " + id, true, command{id: id, approve: true}},
		{"  `/clawd approve " + strings.ToUpper(id) + "`  \nthanks", true, command{id: id, approve: true}},
		{"/clawd approve " + id + " for 1h", true, command{id: id, approve: true, grant: time.Hour}},
		{"/clawd deny " + id, true, command{id: id}},
		{"/clawd deny " + id + " no\r\nway", true, command{id: id, reason: "no way"}},
		{"hello /clawd approve " + id, false, command{}},
		{"/clawdapprove " + id, false, command{}},
		{"", false, command{}},
		{"/clawd approve " + id + " for -5m", true, command{err: "clawd: `for` takes a duration like 15m or 1h; nothing changed."}},
	} {
		got, ok := parseCommand(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseCommand(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// While clawd cannot learn its own Linear user it decides nothing (503, so
// Linear retries); the retry of the same delivery then decides.
func TestViewerOutage(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	s.post(t, a, "")
	s.fk.SetViewerDown(true)
	d, err := s.fk.Deliver(ctxT(t), a.ID, alice, "/clawd approve "+a.ID, false, fake.Genuine)
	if err != nil || d.Status != 503 || len(s.d.Calls()) != 0 {
		t.Fatalf("outage: status %d, calls %d, %v", d.Status, len(s.d.Calls()), err)
	}
	s.fk.SetViewerDown(false)
	if st, err := s.fk.Replay(ctxT(t)); err != nil || st != 200 {
		t.Fatalf("retry: %d %v", st, err)
	}
	if n := len(s.d.Calls()); n != 1 {
		t.Fatalf("decider called %d times after the retry", n)
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	s := newSetup(t, func(_ map[string]any, e *approval.Env) { e.StateDir = dir })
	s.post(t, newApproval(), "")
	fi, err := os.Stat(filepath.Join(dir, "linear-linear.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(filepath.Join(dir, "linear-linear.json"))
	if strings.Contains(string(b), fake.APIKey) || strings.Contains(string(b), fake.WebhookSecret) || !strings.Contains(string(b), "0123456789abcdef") {
		t.Errorf("state file: %s", b)
	}
	// A corrupt state file does not stop the channel.
	if err := os.WriteFile(filepath.Join(dir, "linear-linear.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	newSetup(t, func(_ map[string]any, e *approval.Env) { e.StateDir = dir }).post(t, newApproval(), "")
}

// A command that arrives before Linear has answered clawd's commentCreate
// is still bound to the card.
func TestCommandBeforePostReturns(t *testing.T) {
	s := newSetup(t)
	a := newApproval()
	var reply string
	var err error
	s.fk.OnCreate(func(c fake.Comment) {
		if c.ParentID == "" {
			s.fk.OnCreate(nil)
			reply, err = s.fk.Click(ctxT(t), a.ID, approval.ActApprove, alice)
		}
	})
	s.post(t, a, "")
	if err != nil || reply != s.d.Res.Message || len(s.d.Calls()) != 1 {
		t.Fatalf("early command: reply %q, err %v, calls %d", reply, err, len(s.d.Calls()))
	}
}
