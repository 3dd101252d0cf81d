package discord

import (
	"context"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord/fake"
)

func TestGatewayClickDecides(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.gateway(t)
	a := newApproval()
	s.post(t, a)
	cases := []struct {
		act      string
		approve  bool
		grantFor time.Duration
	}{
		{approval.ActApprove, true, 0},
		{approval.ActApproveFor, true, approval.GrantFor},
		{approval.ActDeny, false, 0},
	}
	for i, c := range cases {
		s.d.say("Message for click " + c.act)
		reply, err := s.fk.Click(ctxT(t), a.ID, c.act, "111111111111111111")
		if err != nil {
			t.Fatal(err)
		}
		if reply != s.d.message() {
			t.Errorf("%s: clicker saw %q, want the Result's message", c.act, reply)
		}
		rep := s.fk.Replies()[i]
		if rep.Via != "gateway" || rep.Type != callbackMessage || rep.Flags != flagEphemeral {
			t.Errorf("%s: reply %+v, want an ephemeral message through the callback", c.act, rep)
		}
		if rep.Mentions == nil || len(rep.Mentions.Parse) != 0 {
			t.Errorf("%s: reply may mention: %+v", c.act, rep.Mentions)
		}
		calls := s.d.Calls()
		if len(calls) != i+1 {
			t.Fatalf("%d Decide calls, want %d", len(calls), i+1)
		}
		want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: c.approve, GrantFor: c.grantFor,
			Channel: "discord", User: "111111111111111111", Display: "user111111111111111111"}
		if calls[i] != want {
			t.Errorf("%s: Decision %+v, want %+v", c.act, calls[i], want)
		}
	}
}

func TestGatewayDirectMessageIdentity(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.gateway(t)
	a := newApproval()
	s.post(t, a)
	_, err := s.fk.ClickWith(ctxT(t), a.ID, approval.ActApprove, "", func(in *fake.Interaction) {
		in.Member, in.GuildID = nil, ""
		in.User = &fake.User{ID: "333333333333333333", Username: "carol"}
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.d.Calls(); len(c) != 1 || c[0].User != "333333333333333333" || c[0].Display != "carol" {
		t.Errorf("Decide calls %+v, want user 333… (carol)", c)
	}
}

func TestGatewayRefusesOtherChannelsAndForeignButtons(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.gateway(t)
	a := newApproval()
	s.post(t, a)
	for name, mod := range map[string]func(*fake.Interaction){
		"other channel": func(in *fake.Interaction) { in.ChannelID = "1999999999999999999" },
		"not ours":      func(in *fake.Interaction) { in.Data.CustomID = "vote:yes" },
		"select menu":   func(in *fake.Interaction) { in.Data.ComponentType = 3 },
		"no user":       func(in *fake.Interaction) { in.Member = nil },
		"bad user":      func(in *fake.Interaction) { in.Member.User.ID = "<@everyone>" },
	} {
		reply, err := s.fk.ClickWith(ctxT(t), a.ID, approval.ActApprove, "111111111111111111", mod)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if reply == "" || reply == s.d.message() {
			t.Errorf("%s: clicker saw %q", name, reply)
		}
	}
	if c := s.d.Calls(); len(c) != 0 {
		t.Errorf("Decider called: %+v", c)
	}
}

func TestAnswerIgnoresForeignAndReplayedInteractions(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	a := newApproval()
	s.post(t, a)
	in := &interaction{ID: "1500000000000000001", ApplicationID: "42", Type: interactionComponent, ChannelID: s.fk.ChannelID}
	in.Data.CustomID, in.Data.ComponentType = approval.ButtonValue(approval.ActApprove, a), componentButton
	in.User = &user{ID: "111111111111111111"}
	if _, err := s.ch.answer(context.Background(), in, s.d); err != errForeign {
		t.Errorf("foreign application: %v", err)
	}
	in.ApplicationID = s.fk.AppID
	if _, err := s.ch.answer(context.Background(), in, s.d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ch.answer(context.Background(), in, s.d); err != errReplay {
		t.Errorf("the same interaction again: %v", err)
	}
	if c := s.d.Calls(); len(c) != 1 {
		t.Errorf("%d Decide calls, want 1", len(c))
	}
}

func TestGatewayResumesAfterDrop(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.gateway(t)
	a := newApproval()
	s.post(t, a)
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, "111111111111111111"); err != nil {
		t.Fatal(err)
	}
	s.fk.Drop()
	// The click is queued in the session and replayed on Resume.
	reply, err := s.fk.Click(ctxT(t), a.ID, approval.ActDeny, "222222222222222222")
	if err != nil {
		t.Fatal(err)
	}
	if reply != s.d.message() {
		t.Errorf("clicker saw %q", reply)
	}
	st := s.fk.Gateway()
	if st.Identifies != 1 || st.Resumes != 1 {
		t.Errorf("gateway %+v, want 1 identify and 1 resume", st)
	}
	if c := s.d.Calls(); len(c) != 2 || c[1].User != "222222222222222222" || c[1].Approve {
		t.Errorf("Decide calls %+v", c)
	}
}

func TestGatewayReconnectAndInvalidSession(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.gateway(t)
	ctx := ctxT(t)
	if err := s.fk.SendReconnect(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fk.WaitGateway(ctx, func(st fake.GatewayStats) bool { return st.Resumes == 1 && st.Connected }); err != nil {
		t.Fatal(err)
	}
	if err := s.fk.InvalidateSession(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.fk.WaitGateway(ctx, func(st fake.GatewayStats) bool { return st.Resumes == 2 && st.Connected }); err != nil {
		t.Fatal(err)
	}
	if err := s.fk.InvalidateSession(ctx, false); err != nil {
		t.Fatal(err)
	}
	st, err := s.fk.WaitGateway(ctx, func(st fake.GatewayStats) bool { return st.Identifies == 2 && st.Connected })
	if err != nil {
		t.Fatal(err)
	}
	if st.Resumes != 2 {
		t.Errorf("gateway %+v: a non-resumable session was resumed", st)
	}
	a := newApproval()
	s.post(t, a)
	if _, err := s.fk.Click(ctx, a.ID, approval.ActApprove, "111111111111111111"); err != nil {
		t.Fatal(err)
	}
}

func TestGatewayHeartbeatsAndReconnectsWhenNotACKed(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	s.fk.SetHeartbeatInterval(20 * time.Millisecond)
	s.gateway(t)
	ctx := ctxT(t)
	if _, err := s.fk.WaitGateway(ctx, func(st fake.GatewayStats) bool { return st.Heartbeats >= 3 }); err != nil {
		t.Fatal(err)
	}
	if st := s.fk.Gateway(); st.Resumes != 0 || st.Identifies != 1 {
		t.Fatalf("acknowledged heartbeats caused reconnects: %+v", st)
	}
	s.fk.StopACKs()
	if _, err := s.fk.WaitGateway(ctx, func(st fake.GatewayStats) bool { return st.Resumes >= 1 && st.Connected }); err != nil {
		t.Fatal(err)
	}
	a := newApproval()
	s.post(t, a)
	if _, err := s.fk.Click(ctx, a.ID, approval.ActApprove, "111111111111111111"); err != nil {
		t.Fatal(err)
	}
}

func TestGatewayWrongTokenKeepsTrying(t *testing.T) {
	fk := fake.New()
	defer fk.Close()
	st := fk.Settings()
	st["bot-token"] = "not-the-token"
	ch, err := New("discord", st, approval.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx, newDecider()) }()
	// GET /gateway/bot is refused; Run keeps going until cancelled.
	deadline := time.Now().Add(10 * time.Second)
	for len(fk.Violations()) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := len(fk.Violations()); n < 2 {
		t.Errorf("Run tried %d times", n)
	}
	if fk.Gateway().Identifies != 0 {
		t.Error("identified with a wrong token")
	}
}

func TestRunInInteractionsModeWaits(t *testing.T) {
	s := newSetup(t, map[string]any{"mode": "interactions"}, httpsEnv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ch.Run(ctx, s.d) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if st := s.fk.Gateway(); st.Identifies != 0 {
		t.Errorf("interactions mode connected to the gateway: %+v", st)
	}
}

func TestRouteTargetChannel(t *testing.T) {
	state := t.TempDir()
	s := newSetup(t, nil, approval.Env{StateDir: state})
	s.gateway(t)
	a := newApproval()
	c := cardFor(a)
	c.Target = s.fk.OtherChannelID
	ref, err := s.ch.Post(ctxT(t), c)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := s.fk.Card(a.ID)
	if m.ChannelID != s.fk.OtherChannelID || ref != s.fk.OtherChannelID+"|"+m.ID {
		t.Errorf("card in %s (ref %q), want the route's target %s", m.ChannelID, ref, s.fk.OtherChannelID)
	}
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, "111111111111111111"); err != nil {
		t.Fatal(err)
	}
	if len(s.d.Calls()) != 1 {
		t.Fatalf("a click in the target channel was not decided: %+v", s.d.Calls())
	}
	a.Status = approval.Approved
	if err := s.ch.Update(ctxT(t), cardFor(a), ref); err != nil {
		t.Fatal(err)
	}
	// After a restart clicks there are still accepted.
	again, err := New("discord", s.fk.Settings(), approval.Env{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	if !again.clickable(s.fk.OtherChannelID) || again.clickable("1999999999999999999") {
		t.Error("target channels not remembered across a restart (or too many)")
	}
	c.Target = "#general"
	if _, err := s.ch.Post(ctxT(t), c); err == nil {
		t.Error("a non-ID target was accepted")
	}
}
