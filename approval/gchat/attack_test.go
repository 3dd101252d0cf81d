package gchat_test

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/gchat"
)

// TestAttackTokenReuseWithEditedBody: Google Chat's bearer token does not
// cover the body, and clawd's replay key is built from body fields
// (message name, user, eventTime, …) and its card binding does not check
// that the clicked message is this approval's card. A captured request
// resent with the same token and eventTime moved by 1 ms, or naming
// another user, reaches the Decider again.
func TestAttackTokenReuseWithEditedBody(t *testing.T) {
	r := newRig(t, gchat.AudienceProjectNumber)
	if _, err := r.ch.Post(ctx(t), testCard(time.Now())); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var hdr http.Header
	var body []byte
	inner := r.ch.Callbacks(r.dec)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, q *http.Request) {
		b, _ := io.ReadAll(q.Body)
		mu.Lock()
		if hdr == nil {
			hdr, body = q.Header.Clone(), b
		}
		mu.Unlock()
		q.Body = io.NopCloser(bytes.NewReader(b))
		inner.ServeHTTP(w, q)
	})
	r.h.Store(&h)
	if _, err := r.f.Click(ctx(t), testID, approval.ActDeny, "users/111"); err != nil {
		t.Fatal(err)
	}
	if n := len(r.dec.Calls()); n != 1 {
		t.Fatalf("genuine: %d", n)
	}
	mu.Lock()
	h0, b0 := hdr, body
	mu.Unlock()
	send := func(b []byte) int {
		req, _ := http.NewRequest(http.MethodPost, r.ts.URL+approval.CallbackPath("gchat"), bytes.NewReader(b))
		req.Header = h0.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// 1: same token, eventTime nudged (the body is unsigned).
	i := bytes.Index(b0, []byte(`"eventTime":"`))
	if i < 0 {
		t.Fatal("no eventTime in the captured event")
	}
	b1 := append([]byte(nil), b0...)
	j := i + len(`"eventTime":"`)
	// change the last digit before 'Z' of the timestamp
	k := bytes.IndexByte(b1[j:], '"') + j - 2
	if b1[k] == '9' {
		b1[k] = '8'
	} else {
		b1[k]++
	}
	st := send(b1)
	if n := len(r.dec.Calls()); n != 1 {
		t.Errorf("invariant replays refused: the captured click resent with the same bearer token and eventTime changed by a fraction of a second reached the Decider again (HTTP %d, %d decisions); the replay key (callback.go:126) is made of unsigned body fields, not of the token", st, n)
	}
	// 2 (another approver named in the unsigned body, same token) is a
	// limit of Google Chat's design: its token does not sign the event.
	// It is documented in approval/gchat/README.md "Limits"; a captured
	// token needs a request clawd's TLS endpoint received.
}
