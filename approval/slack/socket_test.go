package slack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/slack/fake"
)

func TestSocketModeClick(t *testing.T) {
	r := newRig(t, nil)
	r.run(t)
	r.post(t, testCard())
	r.fk.SetName("U0ALICE", "Alice Example")

	// Click returns once clawd acked the envelope and answered the clicker.
	reply, err := r.fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE")
	if err != nil {
		t.Fatal(err)
	}
	if reply != "Approved. The request goes through." {
		t.Errorf("clicker saw %q", reply)
	}
	d := <-r.dec.got
	want := approval.Decision{ID: testID, Digest: testDigest[:16], Approve: true, Channel: "slack", User: "U0ALICE", Display: "Alice Example"}
	if d != want {
		t.Errorf("decision %+v\nwant     %+v", d, want)
	}

	r.dec.res = approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not asked to decide this request. Nothing was changed."}
	reply, err = r.fk.Click(tctx(t), testID, approval.ActApproveFor, "U0BOB")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(reply, "not asked") {
		t.Errorf("clicker saw %q", reply)
	}
	if d := <-r.dec.got; !d.Approve || d.GrantFor != approval.GrantFor || d.User != "U0BOB" {
		t.Errorf("grant decision %+v", d)
	}
	if _, err := r.fk.Click(tctx(t), testID, approval.ActDeny, "U0BOB"); err != nil {
		t.Fatal(err)
	}
	if d := <-r.dec.got; d.Approve || d.GrantFor != 0 {
		t.Errorf("deny decision %+v", d)
	}

	// Envelopes that are not clicks are acked too (Envelope waits for the
	// ack) and decide nothing.
	for _, env := range []map[string]any{
		{"type": "events_api", "payload": map[string]any{"type": "event_callback", "event": map[string]any{"type": "app_mention"}}},
		{"type": "slash_commands", "payload": map[string]any{"command": "/clawd", "text": "approve " + testID}},
		{"type": "interactive", "payload": map[string]any{"type": "view_submission"}},
	} {
		if err := r.fk.Envelope(tctx(t), env); err != nil {
			t.Fatalf("%v: %v", env["type"], err)
		}
	}
	if n := r.dec.count(); n != 3 {
		t.Errorf("Decider called %d times, want 3", n)
	}
}

// A click Slack resends (same envelope_id) is acked again, decided once.
func TestSocketModeResentEnvelope(t *testing.T) {
	r := newRig(t, nil)
	r.run(t)
	r.post(t, testCard())
	if _, err := r.fk.ClickWith(tctx(t), testID, approval.ActApprove, "U0ALICE", func(env, _ map[string]any) {
		env["envelope_id"] = "e-fixed"
	}); err != nil {
		t.Fatal(err)
	}
	p, err := r.fk.ClickPayload(testID, approval.ActApprove, "U0ALICE")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.fk.Envelope(tctx(t), map[string]any{"envelope_id": "e-fixed", "type": "interactive", "payload": p, "retry_attempt": 1, "retry_reason": "timeout"}); err != nil {
		t.Fatal(err)
	}
	// A later click is decided, so the resent one had its chance.
	if _, err := r.fk.Click(tctx(t), testID, approval.ActDeny, "U0ALICE"); err != nil {
		t.Fatal(err)
	}
	if n := r.dec.count(); n != 2 {
		t.Errorf("Decider called %d times, want 2 (resend ignored)", n)
	}
}

func TestSocketModeRefusesForgedClicks(t *testing.T) {
	r := newRig(t, nil)
	r.run(t)
	r.post(t, testCard())
	action := func(p map[string]any) map[string]any { return p["actions"].([]any)[0].(map[string]any) }
	for _, tc := range []struct {
		name   string
		tamper func(env, p map[string]any)
		want   string
	}{
		{"not a clawd value", func(_, p map[string]any) { action(p)["value"] = testID }, "not a valid clawd button"},
		{"value for another act", func(_, p map[string]any) { action(p)["action_id"] = "clawd_d" }, "not a valid clawd button"},
		{"bad digest", func(_, p map[string]any) { action(p)["value"] = "a:" + testID + ":zz" }, "not a valid clawd button"},
		{"no user", func(_, p map[string]any) { p["user"] = map[string]any{} }, "could not tell who clicked"},
		{"odd user", func(_, p map[string]any) { p["user"] = map[string]any{"id": "slack:U0ALICE"} }, "could not tell who clicked"},
	} {
		reply, err := r.fk.ClickWith(tctx(t), testID, approval.ActApprove, "U0ALICE", tc.tamper)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !strings.Contains(reply, tc.want) || !strings.Contains(reply, "Nothing was changed") {
			t.Errorf("%s: clicker saw %q", tc.name, reply)
		}
	}
	if n := r.dec.count(); n != 0 {
		t.Errorf("Decider called %d times for forged clicks", n)
	}
}

func TestSocketModeReconnects(t *testing.T) {
	r := newRig(t, nil)
	r.run(t)
	r.post(t, testCard())

	r.fk.Disconnect() // the network drops the socket
	if err := r.fk.WaitConnected(tctx(t), 2); err != nil {
		t.Fatal(err)
	}
	if _, err := r.fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE"); err != nil {
		t.Fatalf("click after a dropped socket: %v", err)
	}

	r.fk.RequestDisconnect() // Slack asks for a refresh
	if err := r.fk.WaitConnected(tctx(t), 3); err != nil {
		t.Fatal(err)
	}
	if _, err := r.fk.Click(tctx(t), testID, approval.ActDeny, "U0ALICE"); err != nil {
		t.Fatalf("click after a disconnect envelope: %v", err)
	}
	if n := r.dec.count(); n != 2 {
		t.Errorf("Decider called %d times, want 2", n)
	}
}

// A refused or failing apps.connections.open does not end Run (slack-go
// gives up on invalid_auth; the channel retries), and it connects once
// Slack answers again.
func TestSocketModeRetriesOpen(t *testing.T) {
	r := newRig(t, nil)
	r.fk.FailOpen("internal_error", "invalid_auth")
	r.run(t) // waits for the first connection
	if _, err := r.fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE"); err == nil {
		t.Fatal("clicked a card that was never posted")
	}
	r.post(t, testCard())
	if _, err := r.fk.Click(tctx(t), testID, approval.ActApprove, "U0ALICE"); err != nil {
		t.Fatal(err)
	}
}

// The clicker is answered only through Slack's hooks host (or the
// configured API host), never a URL the payload names.
func TestResponseURLMustBeSlack(t *testing.T) {
	r := newRig(t, nil)
	rec := &recorder{allow: strings.TrimPrefix(r.fk.URL(), "http://"), base: r.fk.HTTP.Transport}
	r.ch.env.HTTP.Transport = rec
	r.run(t)
	r.post(t, testCard())
	for _, u := range []string{"https://evil.example/actions/1", "http://hooks.slack.com/actions/1", "https://hooks.slack.com.evil.example/x", "https://user@hooks.slack.com/x"} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err := r.fk.ClickWith(ctx, testID, approval.ActApprove, "U0ALICE", func(_, p map[string]any) { p["response_url"] = u })
		cancel()
		if err == nil {
			t.Errorf("%s: clicker got an answer", u)
		}
		<-r.dec.got // the click itself is still decided
	}
	if o := rec.others(); len(o) > 0 {
		t.Errorf("clawd called %v", o)
	}
	if !r.ch.allowedResponseURL("https://hooks.slack.com/actions/T1/1/abc") {
		t.Error("Slack's own response_url refused")
	}
}

func TestRunWithoutAppToken(t *testing.T) {
	r := newRig(t, func(fk *fake.Server) map[string]any {
		s := fk.Settings()
		delete(s, "app-token")
		return s
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ch.Run(ctx, r.dec) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r.fk.Connections() != 0 {
		t.Error("connected without an app-token")
	}
}

// gate is a Decider that blocks until released.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gate) Decide(ctx context.Context, _ approval.Decision) approval.Result {
	close(g.entered)
	<-g.release
	return approval.Result{Outcome: approval.ResultDecided, Message: "done"}
}

// Slack wants the ack within 3 seconds whatever the decision takes: clawd
// acks before it decides.
func TestSocketModeAcksBeforeDeciding(t *testing.T) {
	r := newRig(t, nil)
	g := &gate{entered: make(chan struct{}), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ch.Run(ctx, g) }()
	defer func() { cancel(); <-done }()
	r.post(t, testCard())
	p, err := r.fk.ClickPayload(testID, approval.ActApprove, "U0ALICE")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.fk.Envelope(tctx(t), map[string]any{"type": "interactive", "payload": p}); err != nil {
		t.Fatal(err) // not acked while the decision is still running
	}
	<-g.entered
	close(g.release)
}
