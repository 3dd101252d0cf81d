package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Fuzz targets for the callbacks that arrive from outside: Slack button
// clicks (signature, timestamp window, replay, form and JSON payload,
// approver check) and signed approve/deny links. Each iteration holds a
// fresh request, sends one fuzzed callback through PublicHandler and checks
// that the approval changed only if the callback was genuinely valid.

// idMark in a fuzzed body or path stands for the ID of the held approval.
const idMark = "APPROVAL_ID"

// offlineTransport answers every outgoing call (Slack Web API, response_url)
// itself: fuzzed payloads must not make the process reach the network.
type offlineTransport struct{ calls atomic.Int64 }

func (o *offlineTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	o.calls.Add(1)
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{
		StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(`{"ok":true,"channel":"C123","ts":"1.2"}`)),
		Request: r,
	}, nil
}

type fuzzEnv struct {
	m     *Manager
	clock *fakeClock
	h     http.Handler
	seq   int
	cur   *Approval      // the pending approval iterations aim at
	end   func() Outcome // ends cur's hold
}

// pending returns a pending approval, reusing the last one while nobody
// decided it (creating one costs a database write).
func (e *fuzzEnv) pending(t *testing.T) *Approval {
	t.Helper()
	if e.cur != nil {
		if a, err := e.m.Get(e.cur.ID); err == nil && a.Status == Pending {
			return a
		}
		e.end()
	}
	e.cur, e.end = e.hold(t)
	return e.cur
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	e := &fuzzEnv{clock: newClock()}
	sl, err := NewSlack(SlackConfig{BotToken: "xoxb-test", Channel: "C123", APIBase: "http://slack.invalid/api",
		HTTP: &http.Client{Transport: &offlineTransport{}, Timeout: 5 * time.Second}})
	if err != nil {
		f.Fatal(err)
	}
	m, err := New(Config{
		DBPath:             filepath.Join(f.TempDir(), "approvals.db"),
		Notifiers:          []Notifier{sl},
		Now:                e.clock.Now,
		AfterFunc:          e.clock.AfterFunc,
		PublicURL:          "http://127.0.0.1:8787",
		APIToken:           "tok-test",
		SlackSigningSecret: signingSecret,
		SlackApprovers:     []string{"U_ALICE", "S_OPS"},
		SlackGroups:        map[string][]string{"S_OPS": {"U_BOB"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(m.Shutdown)
	e.m, e.h = m, m.PublicHandler()
	return e
}

// hold starts a held request and returns its pending approval and a
// function that ends the hold (cancelling it if nobody decided).
func (e *fuzzEnv) hold(t *testing.T) (*Approval, func() Outcome) {
	t.Helper()
	e.seq++
	h := hold("fuzz", "POST", fmt.Sprintf("/repos/o/r/pulls/%d/merge", e.seq))
	ctx, cancel := context.WithCancel(context.Background())
	ch := async(e.m, ctx, h)
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, _ := e.m.List("")
		for _, a := range list {
			if a.Path == h.Path {
				return a, func() Outcome { cancel(); return recv(t, ch) }
			}
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatal("held request never became pending")
		}
		time.Sleep(time.Millisecond)
	}
}

func slackSig(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func FuzzSlackInteraction(f *testing.F) {
	for _, s := range []struct {
		body  string
		delta int64
		sign  bool
		sig   string
	}{
		{interaction("U_ALICE", SlackActionApprove, idMark, "https://hooks.slack.com/actions/T/1/x"), 0, true, ""},
		{interaction("U_BOB", SlackActionDeny, idMark, ""), -299, true, ""},
		{interaction("U_ALICE", SlackActionApprove15m, idMark, ""), 12, true, ""},
		{interaction("U_EVE", SlackActionApprove, idMark, ""), 0, true, ""},
		{interaction("U_ALICE", SlackActionApprove, idMark, ""), 301, true, ""},
		{interaction("U_ALICE", SlackActionApprove, idMark, ""), 0, false, "v0=00"},
		{interaction("U_ALICE", "other", idMark, ""), 0, true, ""},
		{`payload={"type":"view_submission"}`, 0, true, ""},
		{`payload=%7B%22type%22%3A%22block_actions%22%2C%22actions%22%3A%5B%5D%7D`, 0, true, ""},
		{"payload=%zz;&&", 0, true, ""},
		{"", 0, false, ""},
	} {
		f.Add([]byte(s.body), s.delta, s.sign, s.sig)
	}
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, rawBody []byte, delta int64, sign bool, sigIn string) {
		a := e.pending(t)
		body := bytes.ReplaceAll(rawBody, []byte(idMark), []byte(a.ID))
		now := e.m.now().Unix()
		ts := strconv.FormatInt(now+delta, 10)
		valid := slackSig(signingSecret, ts, body)
		sig := sigIn
		if sign {
			sig = valid
		}
		post := func() (int, string) {
			r := httptest.NewRequest("POST", "/v1/slack/interactions", bytes.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("X-Slack-Request-Timestamp", ts)
			r.Header.Set("X-Slack-Signature", sig)
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, r)
			return w.Code, w.Body.String()
		}
		code, resp := post()
		if strings.Contains(resp, signingSecret) {
			t.Fatalf("response shows the signing secret: %q", resp)
		}
		authentic := sig == valid && delta >= -300 && delta <= 300
		if !authentic && code != http.StatusUnauthorized {
			t.Fatalf("unauthenticated callback (delta %d, sig %q) answered %d %q, want 401", delta, sig, code, resp)
		}
		if authentic && code == http.StatusUnauthorized {
			t.Fatalf("authentic callback refused: %q", resp)
		}
		got, err := e.m.Get(a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != Pending {
			// Only an authentic click by an approver on a known action may decide.
			if !authentic || code != http.StatusOK {
				t.Fatalf("approval became %s from a callback answered %d (authentic %v)", got.Status, code, authentic)
			}
			form, _ := url.ParseQuery(string(body))
			var p slackPayload
			if err := json.Unmarshal([]byte(form.Get("payload")), &p); err != nil || len(p.Actions) == 0 {
				t.Fatalf("decided by a payload that does not parse: %v", err)
			}
			act := p.Actions[0]
			if act.Value != a.ID || got.By != "slack:"+p.User.ID || (p.User.ID != "U_ALICE" && p.User.ID != "U_BOB") {
				t.Fatalf("approval %s decided by %q for action %+v", a.ID, got.By, act)
			}
			want := map[string]string{SlackActionApprove: Approved, SlackActionApprove15m: Approved, SlackActionDeny: Denied}[act.ActionID]
			if got.Status != want {
				t.Fatalf("action %q made the approval %s, want %s", act.ActionID, got.Status, want)
			}
		}
		// The same signed request again is a replay: refused, nothing changes.
		if authentic {
			if code2, resp2 := post(); code2 != http.StatusUnauthorized {
				t.Fatalf("replayed callback answered %d %q", code2, resp2)
			}
			again, _ := e.m.Get(a.ID)
			if again.Status != got.Status || again.By != got.By {
				t.Fatalf("replay changed the approval: %s by %s → %s by %s", got.Status, got.By, again.Status, again.By)
			}
		}
		// Keep the fake clock moving so the replay cache can age out.
		e.clock.Add(time.Second)
	})
}

func FuzzSignedLink(f *testing.F) {
	f.Add(idMark, "approve", int64(3600), "", true, true)
	f.Add(idMark, "deny", int64(60), "", true, true)
	f.Add(idMark, "approve", int64(-1), "", true, true)
	f.Add(idMark, "approve", int64(3600), "", false, false)
	f.Add(idMark, "deny", int64(0), "AAAA", false, true)
	f.Add("aaaaaaaaaaaaaaaaaaaaaaaaaa", "approve", int64(3600), "", true, true)
	f.Add(idMark+"x", "approve", int64(3600), "", true, true)
	f.Add(idMark, "approve\x00", int64(3600), "", true, true)
	f.Add(idMark, "APPROVE", int64(3600), "", true, false)
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, rawID, action string, expDelta int64, sigIn string, sign, post bool) {
		a := e.pending(t)
		id := strings.ReplaceAll(rawID, idMark, a.ID)
		now := e.m.now().Unix()
		exp := now + expDelta
		if expDelta > 0 && exp < now { // overflow
			exp = now
		}
		sig := sigIn
		// A signature made for the real approval and action, which the
		// fuzzer may then pair with another ID or action.
		signed := "approve"
		if action == "deny" {
			signed = "deny"
		}
		valid := linkSig(e.m.linkKey, a.ID, signed, exp)
		if sign {
			sig = valid
		}
		q := url.Values{"exp": {strconv.FormatInt(exp, 10)}, "sig": {sig}}
		target := "/v1/links/" + url.PathEscape(id) + "/" + url.PathEscape(action) + "?" + q.Encode()
		method := "GET"
		if post {
			method = "POST"
		}
		r := httptest.NewRequest(method, target, nil)
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, r)
		ok := id == a.ID && (action == "approve" || action == "deny") && sig == linkSig(e.m.linkKey, id, action, exp) && exp >= now
		if !ok && w.Code == http.StatusOK {
			t.Fatalf("invalid link %s %s answered 200", method, target)
		}
		if ok && w.Code != http.StatusOK {
			t.Fatalf("valid link %s %s answered %d %q", method, target, w.Code, w.Body.String())
		}
		got, err := e.m.Get(a.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !ok || !post:
			if got.Status != Pending {
				t.Fatalf("%s %s (valid %v) made the approval %s", method, target, ok, got.Status)
			}
		default:
			want := map[string]string{"approve": Approved, "deny": Denied}[action]
			if got.Status != want || got.By != "link" {
				t.Fatalf("valid %s link left the approval %s by %q", action, got.Status, got.By)
			}
		}
		// checkLink alone: a signature binds id, action and expiry.
		other := map[string]string{"approve": "deny", "deny": "approve"}[signed]
		if e.m.checkLink(a.ID, other, strconv.FormatInt(exp, 10), valid) {
			t.Fatalf("a %s signature for %s verifies as %s", signed, a.ID, other)
		}
		if validID(id) && id != a.ID && e.m.checkLink(id, signed, strconv.FormatInt(exp, 10), valid) {
			t.Fatalf("a signature for %s verifies for %s", a.ID, id)
		}
		if e.m.checkLink(a.ID, signed, strconv.FormatInt(exp+1, 10), valid) {
			t.Fatalf("a signature for expiry %d verifies for %d", exp, exp+1)
		}
	})
}

// A group ID listed in SlackApprovers admits the group's members only; a
// payload whose user ID is the group ID itself is not an approver.
func TestSlackApproverGroupIDIsNotAUser(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.SlackSigningSecret = signingSecret
		c.SlackApprovers = []string{"U_ALICE", "S_OPS"}
		c.SlackGroups = map[string][]string{"S_OPS": {"U_BOB"}}
	})
	for user, want := range map[string]bool{"U_ALICE": true, "U_BOB": true, "S_OPS": false, "U_EVE": false, "": false} {
		if got := e.m.slackApprover(user); got != want {
			t.Errorf("slackApprover(%q) = %v, want %v", user, got, want)
		}
	}
}
