package e2e

// A local receiver for approval notifications (Standard Webhooks and Slack
// incoming webhooks) and helpers to answer as Slack does.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
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

	"github.com/clawd-dev/clawd/approval/webhook"
	"github.com/clawd-dev/clawd/e2e/harness"
)

type apprRecvEvent struct {
	webhook.Event
	Raw   string
	SigOK bool
}

// approvalReceiver records webhook events (checking their signatures),
// Slack cards and Slack response_url updates.
type approvalReceiver struct {
	srv       *httptest.Server
	whKey     []byte
	WHSecret  string // whsec_...
	mu        sync.Mutex
	events    []apprRecvEvent
	cards     []string // Slack incoming-webhook bodies
	responses []string // response_url bodies
}

func apprStartReceiver(t testing.TB) *approvalReceiver {
	t.Helper()
	r := &approvalReceiver{whKey: []byte("e2e-webhook-signing-key-0123456789")}
	r.WHSecret = "whsec_" + base64.StdEncoding.EncodeToString(r.whKey)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		ev := apprRecvEvent{Raw: string(body), SigOK: r.verify(req.Header, body)}
		if err := json.Unmarshal(body, &ev.WebhookEvent); err != nil {
			ev.SigOK = false
		}
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
	})
	mux.HandleFunc("POST /slack", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.cards = append(r.cards, string(body))
		r.mu.Unlock()
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /slack-response", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.responses = append(r.responses, string(body))
		r.mu.Unlock()
	})
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

// verify checks a Standard Webhooks signature.
func (r *approvalReceiver) verify(h http.Header, body []byte) bool {
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, r.whKey)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

func (r *approvalReceiver) URL(p string) string { return r.srv.URL + p }

func (r *approvalReceiver) Events() []apprRecvEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]apprRecvEvent(nil), r.events...)
}

// requested returns the approval.requested events whose URL ends in path.
func (r *approvalReceiver) requested(path string) []apprRecvEvent {
	var out []apprRecvEvent
	for _, e := range r.Events() {
		if e.Type == webhook.EventRequested && strings.HasSuffix(e.Data.URL, path) {
			out = append(out, e)
		}
	}
	return out
}

// waitRequested waits for the card of a held request to path and returns it.
func (r *approvalReceiver) waitRequested(t testing.TB, path string) apprRecvEvent {
	t.Helper()
	eventually(t, "a webhook card for "+path, func() bool { return len(r.requested(path)) > 0 })
	evs := r.requested(path)
	if len(evs) != 1 {
		t.Fatalf("%d cards for %s, want 1", len(evs), path)
	}
	if !evs[0].SigOK {
		t.Fatalf("webhook card for %s has a bad Standard Webhooks signature", path)
	}
	return evs[0]
}

// updates returns the non-requested events for approval id.
func (r *approvalReceiver) updates(id string) []apprRecvEvent {
	var out []apprRecvEvent
	for _, e := range r.Events() {
		if e.Type != webhook.EventRequested && e.Data.ID == id {
			out = append(out, e)
		}
	}
	return out
}

func (r *approvalReceiver) waitUpdate(t testing.TB, id, typ, status string) apprRecvEvent {
	t.Helper()
	var got apprRecvEvent
	eventually(t, fmt.Sprintf("a %s/%s update for %s", typ, status, id), func() bool {
		for _, e := range r.updates(id) {
			if e.Type == typ && e.Data.Status == status {
				got = e
				return true
			}
		}
		return false
	})
	if !got.SigOK {
		t.Fatalf("update for %s has a bad signature", id)
	}
	return got
}

func (r *approvalReceiver) slackCardFor(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cards {
		if strings.Contains(c, `"value":"`+id+`"`) {
			return true
		}
	}
	return false
}

func (r *approvalReceiver) Responses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.responses...)
}

// AllText is everything the receiver got, for leak checks.
func (r *approvalReceiver) AllText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		b.WriteString(e.Raw)
	}
	for _, c := range r.cards {
		b.WriteString(c)
	}
	for _, c := range r.responses {
		b.WriteString(c)
	}
	return b.String()
}

// apprSlackInteraction builds the form body Slack POSTs for a button click.
func apprSlackInteraction(user, actionID, id, responseURL string) string {
	p := map[string]any{
		"type":       "block_actions",
		"user":       map[string]any{"id": user, "username": "approver", "name": "approver", "team_id": "T0E2E"},
		"api_app_id": "A0E2E", "token": "legacy-verification-token", "trigger_id": "123.456.abc",
		"team":         map[string]any{"id": "T0E2E", "domain": "e2e"},
		"container":    map[string]any{"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0E2E", "is_ephemeral": false},
		"channel":      map[string]any{"id": "C0E2E", "name": "approvals"},
		"message":      map[string]any{"type": "message", "ts": "1700000000.000100", "text": "Approval needed"},
		"response_url": responseURL,
		"actions": []any{map[string]any{
			"type": "button", "action_id": actionID, "block_id": "clawd_" + id, "value": id,
			"text": map[string]any{"type": "plain_text", "text": "button"}, "action_ts": "1700000001.000200",
		}},
	}
	b, _ := json.Marshal(p)
	return "payload=" + url.QueryEscape(string(b))
}

func apprSlackSign(secret, ts, body string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%s:%s", ts, body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// apprPostSlack POSTs a Slack interaction to the daemon's API listener.
func apprPostSlack(t testing.TB, api, ts, sig, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+api+"/v1/slack/interactions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sig)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("slack callback: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type apprAgentResult struct {
	A   AgentAnswer
	Out string
	Err error
}

// apprAgentAsync runs /agent in ct in the background (for held requests).
func apprAgentAsync(ct *harness.Container, args ...string) <-chan apprAgentResult {
	ch := make(chan apprAgentResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		out, errOut, _, err := ct.Exec(ctx, append([]string{"/agent"}, args...)...)
		r := apprAgentResult{Out: out + errOut, Err: err}
		if err == nil {
			if jerr := json.Unmarshal([]byte(out), &r.A); jerr != nil {
				r.Err = fmt.Errorf("agent output %q: %v", out+errOut, jerr)
			}
		}
		ch <- r
	}()
	return ch
}

// apprAwait waits for a background agent (bounded).
func apprAwait(t testing.TB, ch <-chan apprAgentResult) AgentAnswer {
	t.Helper()
	select {
	case r := <-ch:
		if r.Err != nil {
			t.Fatalf("agent: %v", r.Err)
		}
		return r.A
	case <-time.After(150 * time.Second):
		t.Fatal("agent did not finish")
	}
	return AgentAnswer{}
}
