package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/summary"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

var testSecret = "whsec_" + base64.StdEncoding.EncodeToString(testKey)

// verifyStandardWebhook is an independent Standard Webhooks verifier: it
// decodes the whsec_ secret itself and checks any of the space-separated
// v1 signatures.
func verifyStandardWebhook(secret string, h http.Header, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("missing headers")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if v, sig, ok := strings.Cut(s, ","); ok && v == "v1" && hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return errors.New("no valid signature")
}

type hookRecv struct {
	*httptest.Server
	mu      sync.Mutex
	got     []hookMsg
	replies []int // status per attempt; 200 after they run out
}

type hookMsg struct {
	Header http.Header
	Body   []byte
	Event  map[string]any
}

func newHookRecv(t *testing.T, replies ...int) *hookRecv {
	h := &hookRecv{replies: replies}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var ev map[string]any
		json.Unmarshal(b, &ev)
		h.mu.Lock()
		h.got = append(h.got, hookMsg{r.Header.Clone(), b, ev})
		code := 200
		if len(h.replies) > 0 {
			code, h.replies = h.replies[0], h.replies[1:]
		}
		h.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookRecv) msgs() []hookMsg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookMsg(nil), h.got...)
}

func TestWebhookPayloadAndSignature(t *testing.T) {
	recv_ := newHookRecv(t)
	wh, err := New(Config{URL: recv_.URL, Secret: testSecret, HTTP: recv_.Client()})
	if err != nil {
		t.Fatal(err)
	}
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{wh}
		c.Summarizers = summary.Default()
		c.Redactor = redactor{}
	})
	h := approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	h.Header.Set("X-Api-Key", "k-123456")
	h.Header.Set("Cookie", "sid=1")
	ch := approvaltest.Async(e.M, context.Background(), h)
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	e.M.Decide(context.Background(), approval.Decision{ID: a.ID, Channel: approval.ChannelCLI, Reason: "too risky"})
	approvaltest.Recv(t, ch)
	msgs := recv_.msgs()
	for deadline := time.Now().Add(20 * time.Second); len(msgs) < 2 && time.Now().Before(deadline); msgs = recv_.msgs() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(msgs) != 2 {
		t.Fatalf("%d deliveries, want requested + decided", len(msgs))
	}
	for _, m := range msgs {
		if err := verifyStandardWebhook(testSecret, m.Header, m.Body); err != nil {
			t.Fatalf("signature: %v", err)
		}
		if err := verifyStandardWebhook("whsec_"+base64.StdEncoding.EncodeToString([]byte("another key 1234")), m.Header, m.Body); err == nil {
			t.Fatal("verifies with the wrong key")
		}
		for _, s := range []string{"SECRET-VALUE-123", "k-123456", "sid=1"} {
			if strings.Contains(string(m.Body), s) {
				t.Fatalf("payload leaks %q: %s", s, m.Body)
			}
		}
	}
	if msgs[0].Header.Get("webhook-id") == msgs[1].Header.Get("webhook-id") {
		t.Error("two events share a webhook-id")
	}
	ev := msgs[0].Event
	data, _ := ev["data"].(map[string]any)
	if data == nil {
		t.Fatalf("no data: %s", msgs[0].Body)
	}
	if ev["type"] != EventRequested || data["id"] != a.ID || data["method"] != "PUT" || data["rule"] != "github-writes" ||
		data["summary"] != "Merge pull request #7 in acme/api (squash)" || data["url"] != h.URL {
		t.Fatalf("requested event: %s", msgs[0].Body)
	}
	c := data["container"].(map[string]any)
	if c["name"] != "agent1" || c["runtime"] != "docker" || c["labels"].(map[string]any)["team"] != "ai" {
		t.Fatalf("container: %v", c)
	}
	hd := data["headers"].(map[string]any)
	if hd["Authorization"] != "Bearer [redacted]" || hd["X-Api-Key"] != "[redacted]" || hd["Cookie"] != "[redacted]" || hd["Accept"] != "application/json" {
		t.Fatalf("headers: %v", hd)
	}
	links := data["links"].(map[string]any)
	if !strings.Contains(links["approve"].(string), "/v1/links/"+a.ID+"/approve?") || !strings.Contains(links["deny"].(string), "/deny?") {
		t.Fatalf("links: %v", links)
	}
	if data["body"] == "" || data["created"] == nil || data["expires"] == nil {
		t.Fatalf("missing fields: %s", msgs[0].Body)
	}
	up := msgs[1].Event
	ud := up["data"].(map[string]any)
	if up["type"] != EventDecided || ud["status"] != approval.Denied || ud["by"] != "cli" || ud["reason"] != "too risky" || ud["links"] != nil {
		t.Fatalf("decided event: %s", msgs[1].Body)
	}
}

func TestWebhookRetries(t *testing.T) {
	tests := []struct {
		name     string
		replies  []int
		attempts int
		ok       bool
		sleeps   []time.Duration
	}{
		{"first try", nil, 1, true, nil},
		{"two 5xx then ok", []int{500, 503}, 3, true, []time.Duration{time.Second, 2 * time.Second}},
		{"429 retried", []int{429}, 2, true, []time.Duration{time.Second}},
		{"4xx not retried", []int{400}, 1, false, nil},
		{"bounded", []int{500, 500, 500, 500, 500, 500}, 4, false, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newHookRecv(t, tt.replies...)
			var sleeps []time.Duration
			wh, err := New(Config{
				URL: r.URL, Secret: testSecret, HTTP: r.Client(), MaxAttempts: 4,
				Sleep: func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			a := &approval.Approval{ID: "x", Status: approval.Pending}
			_, err = wh.Post(context.Background(), &approval.Card{Approval: a})
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v", err)
			}
			msgs := r.msgs()
			if len(msgs) != tt.attempts {
				t.Fatalf("%d attempts, want %d", len(msgs), tt.attempts)
			}
			for _, m := range msgs {
				if m.Header.Get("webhook-id") != msgs[0].Header.Get("webhook-id") {
					t.Fatal("retries changed webhook-id")
				}
			}
			if len(sleeps) != len(tt.sleeps) {
				t.Fatalf("sleeps %v, want %v", sleeps, tt.sleeps)
			}
			for i := range sleeps {
				if sleeps[i] != tt.sleeps[i] {
					t.Fatalf("sleeps %v, want %v", sleeps, tt.sleeps)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "http://127.0.0.1/x", Secret: "plain"},
		{URL: "http://127.0.0.1/x", Secret: "whsec_!!!"},
		{URL: "http://127.0.0.1/x", Secret: "whsec_" + base64.StdEncoding.EncodeToString([]byte("short"))},
		{URL: "ftp://127.0.0.1/x", Secret: testSecret},
		{URL: "/relative", Secret: testSecret},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
}

// redactor stands for the secret store: it knows one secret value.
type redactor struct{}

func (redactor) RedactString(s string) string {
	return strings.ReplaceAll(s, "SECRET-VALUE-123", "[secret:github]")
}
func (r redactor) Redact(b []byte) []byte { return []byte(r.RedactString(string(b))) }
