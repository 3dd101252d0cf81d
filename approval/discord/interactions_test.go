package discord

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/discord/fake"
)

func TestInteractionsPingPong(t *testing.T) {
	s := newSetup(t, map[string]any{"mode": "interactions"}, httpsEnv)
	u := s.interactions(t) // the fake checks PONG and a 401 for a bad signature
	status, body, err := s.fk.Ping(ctxT(t), u)
	if err != nil || status != http.StatusOK || strings.TrimSpace(string(body)) != `{"type":1}` {
		t.Errorf("PING: %d %s %v", status, body, err)
	}
	if c := s.d.Calls(); len(c) != 0 {
		t.Errorf("PING called the Decider: %+v", c)
	}
}

func TestInteractionsClickDecides(t *testing.T) {
	s := newSetup(t, map[string]any{"mode": "interactions"}, httpsEnv)
	s.interactions(t)
	a := newApproval()
	s.post(t, a)
	s.d.say("Approved for 15 minutes.")
	reply, err := s.fk.Click(ctxT(t), a.ID, approval.ActApproveFor, "111111111111111111")
	if err != nil {
		t.Fatal(err)
	}
	if reply != "Approved for 15 minutes." {
		t.Errorf("clicker saw %q", reply)
	}
	if r := s.fk.Replies(); len(r) != 1 || r[0].Via != "http" || r[0].Type != callbackMessage || r[0].Flags != flagEphemeral {
		t.Errorf("replies %+v, want one ephemeral message in the response", r)
	}
	want := approval.Decision{ID: a.ID, Digest: a.Digest[:16], Approve: true, GrantFor: approval.GrantFor,
		Channel: "discord", User: "111111111111111111", Display: "user111111111111111111"}
	if c := s.d.Calls(); len(c) != 1 || c[0] != want {
		t.Errorf("Decide calls %+v, want %+v", c, want)
	}
}

func TestInteractionsRefuseForgeries(t *testing.T) {
	s := newSetup(t, map[string]any{"mode": "interactions"}, httpsEnv)
	s.interactions(t)
	a := newApproval()
	s.post(t, a)
	for name, f := range map[string]fake.Forgery{
		"bad signature":    fake.BadSignature,
		"no signature":     fake.NoSignature,
		"other key":        fake.OtherKey,
		"stale timestamp":  fake.StaleTimestamp,
		"future timestamp": fake.FutureTimestamp,
		"tampered body":    fake.TamperedBody,
	} {
		status, err := s.fk.ClickForged(ctxT(t), a.ID, approval.ActApprove, "111111111111111111", f)
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", name, status)
		}
	}
	if c := s.d.Calls(); len(c) != 0 {
		t.Fatalf("Decider called for forgeries: %+v", c)
	}
	// A genuine click, then the same request replayed byte for byte.
	if _, err := s.fk.Click(ctxT(t), a.ID, approval.ActApprove, "111111111111111111"); err != nil {
		t.Fatal(err)
	}
	status, err := s.fk.Replay(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusUnauthorized {
		t.Errorf("replay: HTTP %d, want 401", status)
	}
	if c := s.d.Calls(); len(c) != 1 {
		t.Errorf("%d Decide calls, want 1 (the replay must not count)", len(c))
	}
}

func TestInteractionsRefuseMalformedAndForeign(t *testing.T) {
	s := newSetup(t, map[string]any{"mode": "interactions"}, httpsEnv)
	u := s.interactions(t)
	a := newApproval()
	s.post(t, a)
	ctx := ctxT(t)
	for name, body := range map[string]string{
		"not JSON":         `{"type":3,`,
		"other app":        `{"id":"1500000000000000001","application_id":"42","type":3,"token":"x","channel_id":"` + s.fk.ChannelID + `"}`,
		"no id":            `{"application_id":"` + s.fk.AppID + `","type":3,"token":"x"}`,
		"slash command":    `{"id":"1500000000000000002","application_id":"` + s.fk.AppID + `","type":2,"token":"x"}`,
		"empty interacton": `{}`,
	} {
		status, _, err := s.fk.PostSigned(ctx, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", name, status)
		}
	}
	for name, mod := range map[string]func(*fake.Interaction){
		"other channel": func(in *fake.Interaction) { in.ChannelID = "1999999999999999999" },
		"not a button":  func(in *fake.Interaction) { in.Data.CustomID = "a:" + a.ID + ":zz" },
		"no user":       func(in *fake.Interaction) { in.Member = nil },
	} {
		reply, err := s.fk.ClickWith(ctx, a.ID, approval.ActApprove, "111111111111111111", mod)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(reply, "nothing was decided") {
			t.Errorf("%s: clicker saw %q", name, reply)
		}
	}
	if c := s.d.Calls(); len(c) != 0 {
		t.Errorf("Decider called: %+v", c)
	}
	// Only POST at the exact path.
	for _, tc := range []struct{ method, path string }{{"GET", u}, {"POST", u + "x"}, {"POST", strings.TrimSuffix(u, "/")}} {
		req, _ := http.NewRequest(tc.method, tc.path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: HTTP %d", tc.method, tc.path, resp.StatusCode)
		}
	}
}

func TestInteractionsEndpointOffInGatewayMode(t *testing.T) {
	s := newSetup(t, nil, approval.Env{})
	srv := httptest.NewServer(s.ch.Callbacks(s.d))
	defer srv.Close()
	status, _, err := s.fk.Ping(ctxT(t), srv.URL+approval.CallbackPath("discord"))
	if err != nil || status != http.StatusNotFound {
		t.Errorf("gateway mode: PING got %d %v, want 404", status, err)
	}
}

func TestVerifyWindowUsesTheClock(t *testing.T) {
	// clawd's clock 10 minutes ahead: the fake's fresh signatures are stale.
	env := httpsEnv
	env.Now = func() time.Time { return time.Now().Add(10 * time.Minute) }
	s := newSetup(t, map[string]any{"mode": "interactions"}, env)
	srv := httptest.NewServer(s.ch.Callbacks(s.d))
	defer srv.Close()
	status, _, err := s.fk.Ping(context.Background(), srv.URL+approval.CallbackPath("discord"))
	if err != nil || status != http.StatusUnauthorized {
		t.Errorf("PING with a timestamp 10 minutes off: %d %v", status, err)
	}
}
