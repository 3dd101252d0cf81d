package approval

import (
	"context"
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
	m, err := New(Config{
		DBPath:    filepath.Join(f.TempDir(), "approvals.db"),
		Now:       e.clock.Now,
		AfterFunc: e.clock.AfterFunc,
		PublicURL: "http://127.0.0.1:8787",
		APIToken:  "tok-test",
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
		valid := linkSig(e.m.linkKey, a.ID, a.Digest, signed, exp)
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
		ok := id == a.ID && (action == "approve" || action == "deny") && sig == linkSig(e.m.linkKey, id, a.Digest, action, exp) && exp >= now
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
		// CheckLink alone: a signature binds id, digest, action and expiry.
		other := map[string]string{"approve": "deny", "deny": "approve"}[signed]
		if _, ok := e.m.CheckLink(a.ID, other, strconv.FormatInt(exp, 10), valid); ok {
			t.Fatalf("a %s signature for %s verifies as %s", signed, a.ID, other)
		}
		if _, ok := e.m.CheckLink(id, signed, strconv.FormatInt(exp, 10), valid); validID(id) && id != a.ID && ok {
			t.Fatalf("a signature for %s verifies for %s", a.ID, id)
		}
		if linkSig(e.m.linkKey, a.ID, strings.Repeat("0", 64), signed, exp) == valid {
			t.Fatalf("a signature does not depend on the request digest")
		}
		if _, ok := e.m.CheckLink(a.ID, signed, strconv.FormatInt(exp+1, 10), valid); ok {
			t.Fatalf("a signature for expiry %d verifies for %d", exp, exp+1)
		}
	})
}
