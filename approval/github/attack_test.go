package github

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/clawd-dev/clawd/approval"
)

// TestAttackReplayWithFreshDeliveryID: X-GitHub-Delivery is not covered by
// X-Hub-Signature-256 (only the body is signed), so a captured delivery
// resent with a new delivery ID must still be refused (the comment ID is
// in the signed body and identifies the command).
func TestAttackReplayWithFreshDeliveryID(t *testing.T) {
	r := newRig(t)
	r.post(t, testCard())
	// Interpose a recorder between the fake and clawd.
	var mu sync.Mutex
	var body []byte
	var hdr http.Header
	real := newServer(t, r.ch.Callbacks(deciderFunc(r.dec.Decide)))
	spy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		b, _ := io.ReadAll(q.Body)
		mu.Lock()
		body, hdr = b, q.Header.Clone()
		mu.Unlock()
		req, _ := http.NewRequest(http.MethodPost, real+approval.CallbackPath("github"), bytes.NewReader(b))
		req.Header = q.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(spy.Close)
	r.fk.SetEndpoint(spy.URL + approval.CallbackPath("github"))

	if _, err := r.fk.Click(tctx(t), testID, approval.ActDeny, "alice"); err != nil {
		t.Fatal(err)
	}
	if n := len(r.dec.got()); n != 1 {
		t.Fatalf("genuine: %d decisions", n)
	}
	mu.Lock()
	b, h := body, hdr
	mu.Unlock()
	for i, restart := range []bool{false, true} {
		if restart {
			r.ch = r.channel(t)
			real = newServer(t, r.ch.Callbacks(deciderFunc(r.dec.Decide)))
		}
		req, _ := http.NewRequest(http.MethodPost, real+approval.CallbackPath("github"), bytes.NewReader(b))
		req.Header = h.Clone()
		req.Header.Set("X-GitHub-Delivery", "00000000-0000-0000-0000-00000000000"+string(rune('1'+i)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if n := len(r.dec.got()); n > 1 {
			t.Errorf("invariant single use / replays refused (restart=%v): the same signed comment resent with a new X-GitHub-Delivery reached the Decider again (%d decisions, HTTP %d); the delivery ID is unsigned, dedupe must key on the signed comment ID", restart, n, resp.StatusCode)
		}
	}
}
