package e2e

// A local receiver for approval webhook events (Standard Webhooks). Slack
// is approval/slack/fake.

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
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

// approvalReceiver records webhook events, checking their signatures.
type approvalReceiver struct {
	srv      *httptest.Server
	whKey    []byte
	WHSecret string // whsec_...
	mu       sync.Mutex
	events   []apprRecvEvent
}

func apprStartReceiver(t testing.TB) *approvalReceiver {
	t.Helper()
	r := &approvalReceiver{whKey: []byte("e2e-webhook-signing-key-0123456789")}
	r.WHSecret = "whsec_" + base64.StdEncoding.EncodeToString(r.whKey)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		ev := apprRecvEvent{Raw: string(body), SigOK: r.verify(req.Header, body)}
		if err := json.Unmarshal(body, &ev.Event); err != nil {
			ev.SigOK = false
		}
		r.mu.Lock()
		r.events = append(r.events, ev)
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

// AllText is everything the receiver got, for leak checks.
func (r *approvalReceiver) AllText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, e := range r.events {
		b.WriteString(e.Raw)
	}
	return b.String()
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
