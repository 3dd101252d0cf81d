package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
)

// Fuzz target for signed approve/deny links, which arrive from outside.
// Each iteration aims one fuzzed link at a held request through Public and
// checks that the approval changed only if the link was genuinely valid.

// idMark in a fuzzed body or path stands for the ID of the held approval.
const idMark = "APPROVAL_ID"

var fuzzLinkKey = []byte("fuzz-link-key-0123456789abcdef012345")

type fuzzEnv struct {
	m     *approval.Manager
	clock *approvaltest.Clock
	h     http.Handler
	seq   int
	cur   *approval.Approval      // the pending approval iterations aim at
	end   func() approval.Outcome // ends cur's hold
}

// pending returns a pending approval, reusing the last one while nobody
// decided it (creating one costs a database write).
func (e *fuzzEnv) pending(t *testing.T) *approval.Approval {
	t.Helper()
	if e.cur != nil {
		if a, err := e.m.Get(e.cur.ID); err == nil && a.Status == approval.Pending {
			return a
		}
		e.end()
	}
	e.cur, e.end = e.hold(t)
	return e.cur
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	e := &fuzzEnv{clock: approvaltest.NewClock()}
	m, err := approval.New(approval.Config{
		DBPath:    filepath.Join(f.TempDir(), "approvals.db"),
		Now:       e.clock.Now,
		AfterFunc: e.clock.AfterFunc,
		PublicURL: "http://127.0.0.1:8787",
		LinkKey:   fuzzLinkKey,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(m.Shutdown)
	e.m, e.h = m, Public(m, Options{Token: "tok-test"})
	return e
}

// hold starts a held request and returns its pending approval and a
// function that ends the hold (cancelling it if nobody decided).
func (e *fuzzEnv) hold(t *testing.T) (*approval.Approval, func() approval.Outcome) {
	t.Helper()
	e.seq++
	h := approvaltest.Hold("fuzz", "POST", fmt.Sprintf("/repos/o/r/pulls/%d/merge", e.seq))
	ctx, cancel := context.WithCancel(context.Background())
	ch := approvaltest.Async(e.m, ctx, h)
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, _ := e.m.List("")
		for _, a := range list {
			if a.Path == h.Path {
				return a, func() approval.Outcome { cancel(); return approvaltest.Recv(t, ch) }
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
		now := e.clock.Now().Unix()
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
		valid := approval.SignLink(fuzzLinkKey, a.ID, a.Digest, signed, exp)
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
		ok := id == a.ID && (action == "approve" || action == "deny") && sig == approval.SignLink(fuzzLinkKey, id, a.Digest, action, exp) && exp >= now
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
			if got.Status != approval.Pending {
				t.Fatalf("%s %s (valid %v) made the approval %s", method, target, ok, got.Status)
			}
		default:
			want := map[string]string{"approve": approval.Approved, "deny": approval.Denied}[action]
			if got.Status != want || got.By != "link" {
				t.Fatalf("valid %s link left the approval %s by %q", action, got.Status, got.By)
			}
		}
		// CheckLink alone: a signature binds id, digest, action and expiry.
		other := map[string]string{"approve": "deny", "deny": "approve"}[signed]
		if _, ok := e.m.CheckLink(a.ID, other, strconv.FormatInt(exp, 10), valid); ok {
			t.Fatalf("a %s signature for %s verifies as %s", signed, a.ID, other)
		}
		if _, ok := e.m.CheckLink(id, signed, strconv.FormatInt(exp, 10), valid); len(id) == 26 && id != a.ID && ok {
			t.Fatalf("a signature for %s verifies for %s", a.ID, id)
		}
		if approval.SignLink(fuzzLinkKey, a.ID, strings.Repeat("0", 64), signed, exp) == valid {
			t.Fatalf("a signature does not depend on the request digest")
		}
		if _, ok := e.m.CheckLink(a.ID, signed, strconv.FormatInt(exp+1, 10), valid); ok {
			t.Fatalf("a signature for expiry %d verifies for %d", exp, exp+1)
		}
	})
}
