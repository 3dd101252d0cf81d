package approval

import (
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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// slackServer is a fake Slack: Web API methods and response_url.
type slackServer struct {
	*httptest.Server
	mu    sync.Mutex
	calls []slackCall
}

type slackCall struct {
	Path string
	Auth string
	Body map[string]any
}

func newSlackServer(t *testing.T) *slackServer {
	s := &slackServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var body map[string]any
		json.Unmarshal(b, &body)
		s.mu.Lock()
		s.calls = append(s.calls, slackCall{Path: r.URL.Path, Auth: r.Header.Get("Authorization"), Body: body})
		s.mu.Unlock()
		switch r.URL.Path {
		case "/api/chat.postMessage":
			fmt.Fprint(w, `{"ok":true,"channel":"C123","ts":"1700000000.000100"}`)
		case "/api/chat.update":
			fmt.Fprint(w, `{"ok":true}`)
		default:
			fmt.Fprint(w, "ok")
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *slackServer) byPath(p string) []slackCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []slackCall
	for _, c := range s.calls {
		if c.Path == p {
			out = append(out, c)
		}
	}
	return out
}

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

func slackEnv(t *testing.T, srv *slackServer) *env {
	sl, err := NewSlack(SlackConfig{BotToken: "xoxb-test", Channel: "C123", APIBase: srv.URL + "/api", HTTP: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return newEnv(t, func(c *Config) {
		c.Notifiers = append(c.Notifiers, sl)
		c.SlackSigningSecret = signingSecret
		c.SlackApprovers = []string{"U_ALICE", "S_OPS"}
		c.SlackGroups = map[string][]string{"S_OPS": {"U_BOB"}}
	})
}

func signSlack(body string, ts int64) (string, string) {
	t := strconv.FormatInt(ts, 10)
	mac := hmac.New(sha256.New, []byte(signingSecret))
	mac.Write([]byte("v0:" + t + ":" + body))
	return t, "v0=" + hex.EncodeToString(mac.Sum(nil))
}

func interaction(user, actionID, id, responseURL string) string {
	p, _ := json.Marshal(map[string]any{
		"type": "block_actions", "user": map[string]any{"id": user}, "response_url": responseURL,
		"actions": []any{map[string]any{"action_id": actionID, "value": id}},
	})
	return url.Values{"payload": {string(p)}}.Encode()
}

func postSlack(h http.Handler, body, ts, sig string) (*http.Response, string) {
	r := httptest.NewRequest("POST", "/v1/slack/interactions", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("X-Slack-Request-Timestamp", ts)
	r.Header.Set("X-Slack-Signature", sig)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result(), w.Body.String()
}

func TestSlackMessageShape(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a := &Approval{
		ID: "abc", Status: Pending, Summary: "Merge pull request #7 in acme/api <!channel>",
		Method: "PUT", URL: "https://api.github.com/repos/acme/api/pulls/7/merge", Rule: "gh",
		Container: ctr("agent1"), Body: "{\n  \"x\": \"```\"\n}", Expires: now.Add(5 * time.Minute),
	}
	msg := SlackMessage(a, now)
	b, _ := json.Marshal(msg)
	s := string(b)
	blocks := msg["blocks"].([]any)
	first := blocks[0].(map[string]any)["text"].(map[string]any)["text"].(string)
	if !strings.HasPrefix(first, "*Merge pull request #7") {
		t.Errorf("summary not first: %q", first)
	}
	if strings.Contains(s, "<!channel>") {
		t.Errorf("agent text not escaped: %s", s)
	}
	for _, want := range []string{"`PUT` https://api.github.com/repos/acme/api/pulls/7/merge", "expires in 5m0s", "rule `gh`", "```{"} {
		if !strings.Contains(s, want) {
			t.Errorf("message lacks %q: %s", want, s)
		}
	}
	act := blocks[len(blocks)-1].(map[string]any)
	if act["type"] != "actions" {
		t.Fatalf("last block %v", act["type"])
	}
	var ids []string
	for _, el := range act["elements"].([]any) {
		btn := el.(map[string]any)
		if btn["value"] != "abc" {
			t.Errorf("button value %v", btn["value"])
		}
		ids = append(ids, btn["action_id"].(string))
	}
	if strings.Join(ids, ",") != "clawd_approve,clawd_approve_15m,clawd_deny" {
		t.Errorf("buttons %v", ids)
	}
	a.Status, a.By = Denied, "slack:U1"
	s2, _ := json.Marshal(SlackMessage(a, now))
	if strings.Contains(string(s2), `"actions"`) || !strings.Contains(string(s2), "Denied by slack:U1") {
		t.Errorf("decided message: %s", s2)
	}
}

func TestSlackFlow(t *testing.T) {
	srv := newSlackServer(t)
	e := slackEnv(t, srv)
	pub := e.m.PublicHandler()
	ch := async(e.m, context.Background(), hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := waitFor(t, e.m, func(l []*Approval) bool { return len(l) == 1 && l[0].Refs["slack"] != "" })[0]
	posts := srv.byPath("/api/chat.postMessage")
	if len(posts) != 1 || posts[0].Auth != "Bearer xoxb-test" || posts[0].Body["channel"] != "C123" {
		t.Fatalf("postMessage: %+v", posts)
	}
	if b, _ := json.Marshal(posts[0].Body); strings.Contains(string(b), "SECRET-VALUE-123") {
		t.Fatal("secret on the Slack card")
	}
	now := e.clock.Now().Unix()
	respURL := srv.URL + "/response/1"

	// Attempts that must change nothing.
	body := interaction("U_ALICE", SlackActionApprove, a.ID, respURL)
	ts, sig := signSlack(body, now)
	bad := []struct {
		name, body, ts, sig string
		code                int
		text                string
	}{
		{"bad signature", body, ts, "v0=" + strings.Repeat("0", 64), 401, ""},
		{"missing signature", body, ts, "", 401, ""},
		{"stale timestamp", body, func() string { t, _ := signSlack(body, now-301); return t }(), func() string { _, s := signSlack(body, now-301); return s }(), 401, ""},
		{"future timestamp", body, func() string { t, _ := signSlack(body, now+301); return t }(), func() string { _, s := signSlack(body, now+301); return s }(), 401, ""},
		{"non-approver", interaction("U_EVE", SlackActionApprove, a.ID, respURL), "", "", 200, "not allowed"},
		{"unknown ID", interaction("U_ALICE", SlackActionApprove, newID(), respURL), "", "", 200, "does not exist"},
		{"garbage ID", interaction("U_ALICE", SlackActionApprove, "../x", respURL), "", "", 200, "does not exist"},
		{"unknown action", interaction("U_ALICE", "clawd_nuke", a.ID, respURL), "", "", 200, "Unknown action"},
	}
	for i, tc := range bad {
		if tc.ts == "" {
			tc.ts, tc.sig = signSlack(tc.body, now+int64(i))
		}
		resp, out := postSlack(pub, tc.body, tc.ts, tc.sig)
		if resp.StatusCode != tc.code || !strings.Contains(out, tc.text) {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, out)
		}
		if tc.text != "" {
			var eph map[string]any
			json.Unmarshal([]byte(out), &eph)
			if eph["response_type"] != "ephemeral" || eph["replace_original"] != false {
				t.Errorf("%s: not an ephemeral refusal: %s", tc.name, out)
			}
		}
		if got, _ := e.m.Get(a.ID); got.Status != Pending {
			t.Fatalf("%s changed the approval to %s", tc.name, got.Status)
		}
	}

	// Group member approves for 15 minutes.
	body = interaction("U_BOB", SlackActionApprove15m, a.ID, respURL)
	ts, sig = signSlack(body, now)
	if resp, out := postSlack(pub, body, ts, sig); resp.StatusCode != 200 || out != "" {
		t.Fatalf("approve: %d %q", resp.StatusCode, out)
	}
	o := recv(t, ch)
	if !o.Approved || o.By != "slack:U_BOB" {
		t.Fatalf("outcome %+v", o)
	}
	if len(e.m.ListGrants()) != 1 {
		t.Fatal("15 min button made no grant")
	}
	// The same signed request again is a replay.
	if resp, _ := postSlack(pub, body, ts, sig); resp.StatusCode != 401 {
		t.Fatalf("replay: %d", resp.StatusCode)
	}
	// Deny on the decided approval: refused, nothing changes.
	body = interaction("U_ALICE", SlackActionDeny, a.ID, respURL)
	ts, sig = signSlack(body, now+1)
	if _, out := postSlack(pub, body, ts, sig); !strings.Contains(out, "already approved by slack:U_BOB") {
		t.Fatalf("deny after approve: %s", out)
	}
	e.m.wait()
	rs := srv.byPath("/response/1")
	if len(rs) != 1 || rs[0].Body["replace_original"] != true {
		t.Fatalf("response_url updates: %+v", rs)
	}
	if b, _ := json.Marshal(rs[0].Body); !strings.Contains(string(b), "Approved by slack:U_BOB") {
		t.Fatalf("response_url message: %s", b)
	}
	ups := srv.byPath("/api/chat.update")
	if len(ups) != 1 || ups[0].Body["ts"] != "1700000000.000100" || ups[0].Body["channel"] != "C123" {
		t.Fatalf("chat.update: %+v", ups)
	}
}

func TestSlackWebhookMode(t *testing.T) {
	srv := newSlackServer(t)
	sl, err := NewSlack(SlackConfig{WebhookURL: srv.URL + "/hook", HTTP: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Notifiers = []Notifier{sl} })
	ch := async(e.m, context.Background(), hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge"))
	a := waitFor(t, e.m, func(l []*Approval) bool { return len(l) == 1 && l[0].Refs != nil && len(srv.byPath("/hook")) == 1 })[0]
	e.m.Decide(a.ID, true, "cli", "", 0)
	recv(t, ch)
	e.m.wait()
	hooks := srv.byPath("/hook")
	if len(hooks) != 1 || hooks[0].Body["blocks"] == nil {
		t.Fatalf("webhook posts: %+v", hooks)
	}
}

func TestNewSlackValidates(t *testing.T) {
	for _, cfg := range []SlackConfig{{}, {BotToken: "x"}, {WebhookURL: "file:///etc/passwd"}} {
		if _, err := NewSlack(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}
