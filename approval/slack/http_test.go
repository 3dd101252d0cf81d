package slack

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/slack/fake"
)

// public mounts the channel's callbacks as the daemon does.
func public(t *testing.T, r *rig) *httptest.Server {
	mux := http.NewServeMux()
	h := r.ch.Callbacks(r.dec)
	mux.Handle(approval.CallbackPath(r.ch.Name()), h)
	mux.Handle(LegacyPath, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPInteractivity(t *testing.T) {
	r := newRig(t, nil)
	pub := public(t, r)
	r.post(t, testCard())
	r.fk.SetName("U0ALICE", "alice")

	for _, path := range []string{approval.CallbackPath("slack") + "interactions", LegacyPath} {
		reply, err := r.fk.ClickHTTP(tctx(t), pub.URL+path, testID, approval.ActApproveFor, "U0ALICE")
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if reply != "Approved. The request goes through." {
			t.Errorf("%s: clicker saw %q", path, reply)
		}
		d := <-r.dec.got
		want := approval.Decision{ID: testID, Digest: testDigest[:16], Approve: true, GrantFor: approval.GrantFor, Channel: "slack", User: "U0ALICE", Display: "alice"}
		if d != want {
			t.Errorf("%s: decision %+v", path, d)
		}
	}
}

func TestHTTPInteractivityRefuses(t *testing.T) {
	r := newRig(t, nil)
	pub := public(t, r)
	u := pub.URL + LegacyPath
	r.post(t, testCard())
	ctx := tctx(t)
	at := time.Now()
	signed, err := r.fk.SignedClick(testID, approval.ActApprove, "U0ALICE", at)
	if err != nil {
		t.Fatal(err)
	}
	send := func(name string, req fake.SignedRequest, code int, text string) {
		t.Helper()
		got, body, err := r.fk.Send(ctx, u, req)
		if err != nil {
			t.Fatal(err)
		}
		if got != code || !strings.Contains(body, text) {
			t.Errorf("%s: %d %q, want %d %q", name, got, body, code, text)
		}
	}
	old, _ := r.fk.SignedClick(testID, approval.ActApprove, "U0ALICE", at.Add(-6*time.Minute))
	future, _ := r.fk.SignedClick(testID, approval.ActApprove, "U0ALICE", at.Add(6*time.Minute))
	noSig := signed
	noSig.Signature = ""
	noTS := signed
	noTS.Timestamp = ""
	tampered := signed
	tampered.Body = strings.Replace(signed.Body, "U0ALICE", "U0MALLORY", 1)
	shortSig := signed
	shortSig.Signature = "v0=abcd"
	v1 := signed
	v1.Signature = "v1=" + strings.TrimPrefix(signed.Signature, "v0=")

	send("bad signature", signed.WithBadSignature(), 401, "bad signature")
	send("no signature", noSig, 401, "missing signature")
	send("no timestamp", noTS, 401, "missing signature")
	send("old timestamp", old, 401, "outside the 5 minute window")
	send("future timestamp", future, 401, "outside the 5 minute window")
	send("tampered body", tampered, 401, "bad signature")
	send("short signature", shortSig, 401, "invalid slack request")
	send("v1 signature", v1, 401, "invalid slack request")
	// Validly signed but malformed.
	send("not a form", fake.Sign("%zz", at), 400, "no payload")
	send("no payload", fake.Sign("x=1", at), 400, "no payload")
	send("payload not JSON", fake.Sign(url.Values{"payload": {"{not json"}}.Encode(), at), 400, "bad payload")
	forged := func(value string) fake.SignedRequest {
		p, _ := r.fk.ClickPayload(testID, approval.ActApprove, "U0ALICE")
		p["actions"].([]any)[0].(map[string]any)["value"] = value
		b, _ := json.Marshal(p)
		return fake.Sign(url.Values{"payload": {string(b)}}.Encode(), at)
	}
	send("forged value", forged("a:"+testID), 200, "not a valid clawd button")
	if n := r.dec.count(); n != 0 {
		t.Fatalf("Decider called %d times for refused callbacks", n)
	}

	// The genuine request goes through once; the same bytes again are a replay.
	send("genuine", signed, 200, "Approved.")
	<-r.dec.got
	last, _ := r.fk.LastHTTP()
	send("replay", last, 401, "replayed request")
	if n := r.dec.count(); n != 1 {
		t.Errorf("Decider called %d times, want 1", n)
	}

	// Not a POST; not ours (no signing secret).
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}

func TestHTTPInteractivityOff(t *testing.T) {
	r := newRig(t, func(fk *fake.Server) map[string]any {
		s := fk.Settings()
		delete(s, "signing-secret")
		return s
	})
	pub := public(t, r)
	r.post(t, testCard())
	if _, err := r.fk.ClickHTTP(tctx(t), pub.URL+LegacyPath, testID, approval.ActApprove, "U0ALICE"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("click without a signing secret: %v", err)
	}
	if r.dec.count() != 0 {
		t.Error("Decider called")
	}
}

// Non-click interactions (a view submission, a shortcut) get a bare 200.
func TestHTTPInteractivityIgnoresOthers(t *testing.T) {
	r := newRig(t, nil)
	pub := public(t, r)
	b, _ := json.Marshal(map[string]any{"type": "shortcut", "user": map[string]any{"id": "U0ALICE"}})
	code, body, err := r.fk.Send(context.Background(), pub.URL+LegacyPath, fake.Sign(url.Values{"payload": {string(b)}}.Encode(), time.Now()))
	if err != nil || code != 200 || body != "" {
		t.Errorf("shortcut: %d %q %v", code, body, err)
	}
	if r.dec.count() != 0 {
		t.Error("Decider called")
	}
}
