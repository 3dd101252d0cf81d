package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
)

func doReq(t *testing.T, h http.Handler, method, target, token, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result(), w.Body.String()
}

func TestAPIDecisions(t *testing.T) {
	tests := []struct {
		name       string
		first      string // path suffix of the first decision, "" for none
		firstBody  string
		second     string
		secondBody string
		wantCode   int
		wantStatus string // approval status afterwards
	}{
		{"approve", "", "", "approve", "", 200, approval.Approved},
		{"approve empty json", "", "", "approve", "{}", 200, approval.Approved},
		{"deny with reason", "", "", "deny", `{"reason":"no"}`, 200, approval.Denied},
		{"approve twice is a no-op", "approve", "", "approve", "", 200, approval.Approved},
		{"deny twice is a no-op", "deny", "", "deny", "", 200, approval.Denied},
		{"deny after approve", "approve", "", "deny", "", 409, approval.Approved},
		{"approve after deny", "deny", "", "approve", "", 409, approval.Denied},
		{"bad json", "", "", "approve", `{"for":`, 400, approval.Pending},
		{"unknown field", "", "", "approve", `{"fro":"1m"}`, 400, approval.Pending},
		{"bad duration", "", "", "approve", `{"for":"forever"}`, 400, approval.Pending},
		{"negative duration", "", "", "approve", `{"for":"-1m"}`, 400, approval.Pending},
		{"too long grant", "", "", "approve", `{"for":"1000h"}`, 400, approval.Pending},
		{"for on deny", "", "", "deny", `{"for":"1m"}`, 400, approval.Pending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, "tok-test")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ch := approvaltest.Async(e.M, ctx, approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
			id := approvaltest.WaitPending(t, e.M, 1)[0].ID
			api := Local(e.M)
			if tt.first != "" {
				if resp, body := doReq(t, api, "POST", "/v1/approvals/"+id+"/"+tt.first, "", tt.firstBody); resp.StatusCode != 200 {
					t.Fatalf("first: %d %s", resp.StatusCode, body)
				}
			}
			resp, body := doReq(t, api, "POST", "/v1/approvals/"+id+"/"+tt.second, "", tt.secondBody)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("code = %d (%s), want %d", resp.StatusCode, body, tt.wantCode)
			}
			a, _ := e.M.Get(id)
			if a.Status != tt.wantStatus {
				t.Fatalf("status = %s, want %s", a.Status, tt.wantStatus)
			}
			if tt.wantStatus == approval.Pending {
				cancel()
			}
			o := approvaltest.Recv(t, ch)
			if tt.wantStatus != approval.Pending && o.By != "cli" {
				t.Fatalf("by = %q, want cli", o.By)
			}
		})
	}
}

func TestAPIGoneAndNotFound(t *testing.T) {
	e := newEnv(t, "tok-test")
	api := Local(e.M)
	h := approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/1/merge")
	h.Timeout = time.Minute
	ch := approvaltest.Async(e.M, context.Background(), h)
	approvaltest.WaitPending(t, e.M, 1)
	e.Clock.Add(time.Minute)
	o := approvaltest.Recv(t, ch)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/v1/approvals/" + o.ID + "/approve", 410},
		{"POST", "/v1/approvals/" + o.ID + "/deny", 410},
		{"GET", "/v1/approvals/" + o.ID, 200},
		{"POST", "/v1/approvals/" + "aaaaaaaaaaaaaaaaaaaaaaaaaa" + "/approve", 404},
		{"GET", "/v1/approvals/" + "aaaaaaaaaaaaaaaaaaaaaaaaaa", 404},
		{"GET", "/v1/approvals/..%2f..%2fetc", 404},
		{"DELETE", "/v1/grants/" + "aaaaaaaaaaaaaaaaaaaaaaaaaa", 404},
		{"POST", "/v1/grants/nope/revoke", 404},
		{"GET", "/v1/approvals?wait=soon", 400},
	} {
		if resp, body := doReq(t, api, tc.method, tc.path, "", ""); resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d %s, want %d", tc.method, tc.path, resp.StatusCode, body, tc.want)
		}
	}
}

func TestAPIListGrantsAndLongPoll(t *testing.T) {
	e := newEnv(t, "tok-test")
	api := Local(e.M)
	resp, body := doReq(t, api, "GET", "/v1/approvals", "", "")
	var lr ListResponse
	if err := json.Unmarshal([]byte(body), &lr); err != nil || resp.StatusCode != 200 || len(lr.Approvals) != 0 {
		t.Fatalf("empty list: %d %s", resp.StatusCode, body)
	}
	// A long-poll from that version returns once a request arrives.
	polled := make(chan ListResponse, 1)
	go func() {
		_, b := doReq(t, api, "GET", "/v1/approvals?wait=1m&since="+jsonNum(lr.Version), "", "")
		var r ListResponse
		json.Unmarshal([]byte(b), &r)
		polled <- r
	}()
	ch := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	var got ListResponse
	select {
	case got = <-polled:
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll did not return on change")
	}
	if got.Version == lr.Version || len(got.Approvals) > 1 {
		t.Fatalf("long-poll answer %+v", got)
	}
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	approvaltest.Async(e.M, context.Background(), approvaltest.Hold("b", "PUT", "/repos/o/r/pulls/1/merge"))
	approvaltest.WaitPending(t, e.M, 2)
	_, body = doReq(t, api, "GET", "/v1/approvals?container=a", "", "")
	json.Unmarshal([]byte(body), &lr)
	if len(lr.Approvals) != 1 || lr.Approvals[0].Container.Name != "a" {
		t.Fatalf("container filter: %s", body)
	}
	// A stale since returns at once.
	if _, body = doReq(t, api, "GET", "/v1/approvals?wait=10m&since=0", "", ""); !strings.Contains(body, a.ID) {
		t.Fatalf("stale since: %s", body)
	}
	if resp, body := doReq(t, api, "POST", "/v1/approvals/"+a.ID+"/approve", "", `{"for":"15m"}`); resp.StatusCode != 200 {
		t.Fatalf("approve for: %d %s", resp.StatusCode, body)
	}
	approvaltest.Recv(t, ch)
	var gs []approval.Grant
	_, body = doReq(t, api, "GET", "/v1/grants", "", "")
	if err := json.Unmarshal([]byte(body), &gs); err != nil || len(gs) != 1 || gs[0].Method != "PUT" {
		t.Fatalf("grants: %s", body)
	}
	if resp, body := doReq(t, api, "DELETE", "/v1/grants/"+gs[0].ID, "", ""); resp.StatusCode != 200 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	if resp, _ := doReq(t, api, "POST", "/v1/grants/"+gs[0].ID+"/revoke", "", ""); resp.StatusCode != 404 {
		t.Fatalf("revoke twice: %d", resp.StatusCode)
	}
}

func jsonNum(v uint64) string { b, _ := json.Marshal(v); return string(b) }

func TestPublicAuth(t *testing.T) {
	e := newEnv(t, "tok-test")
	pub := Public(e.M, Options{Token: e.token})
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", 401},
		{"wrong token", "tok-wrong", 401},
		{"right token", "tok-test", 200},
	} {
		if resp, _ := doReq(t, pub, "GET", "/v1/approvals", tc.token, ""); resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if resp, body := doReq(t, pub, "GET", "/healthz", "", ""); resp.StatusCode != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
	// Without a configured token the API is off on the public listener.
	e2 := newEnv(t, "")
	if resp, _ := doReq(t, Public(e2.M, Options{Token: e2.token}), "GET", "/v1/approvals", "", ""); resp.StatusCode != 403 {
		t.Errorf("no configured token: %d", resp.StatusCode)
	}
	// Decisions through the public API are attributed to "api".
	ch := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	id := approvaltest.WaitPending(t, e.M, 1)[0].ID
	if resp, _ := doReq(t, pub, "POST", "/v1/approvals/"+id+"/deny", "", ""); resp.StatusCode != 401 {
		t.Fatalf("unauthenticated deny: %d", resp.StatusCode)
	}
	if resp, _ := doReq(t, pub, "POST", "/v1/approvals/"+id+"/deny", "tok-test", ""); resp.StatusCode != 200 {
		t.Fatalf("deny: %d", resp.StatusCode)
	}
	if o := approvaltest.Recv(t, ch); o.By != "api" || o.Approved {
		t.Fatalf("outcome %+v", o)
	}
}

func TestSignedLinks(t *testing.T) {
	e := newEnv(t, "tok-test")
	pub := Public(e.M, Options{Token: e.token})
	ch1 := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/1/merge"))
	ch2 := approvaltest.Async(e.M, context.Background(), approvaltest.Hold("a", "PUT", "/repos/o/r/pulls/2/merge"))
	list := approvaltest.WaitPending(t, e.M, 2)
	a1, a2 := list[0], list[1]
	path := func(link string) string {
		u, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		return u.RequestURI()
	}
	swapID := strings.Replace(path(a1.ApproveURL), a1.ID, a2.ID, 1)
	swapAction := strings.Replace(path(a1.DenyURL), "/deny?", "/approve?", 1)
	u, _ := url.Parse(a1.ApproveURL)
	q := u.Query()
	q.Set("exp", "9999999999")
	laterExp := u.Path + "?" + q.Encode()
	for _, tc := range []struct {
		name, method, target string
		want                 int
	}{
		{"signature for another ID", "POST", swapID, 403},
		{"signature for another action", "POST", swapAction, 403},
		{"changed expiry", "POST", laterExp, 403},
		{"no signature", "POST", u.Path, 403},
		{"GET only shows a page", "GET", path(a1.ApproveURL), 200},
	} {
		resp, body := doReq(t, pub, tc.method, tc.target, "", "")
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d %s", tc.name, resp.StatusCode, body)
		}
		for _, a := range []*approval.Approval{a1, a2} {
			if got, _ := e.M.Get(a.ID); got.Status != approval.Pending {
				t.Fatalf("%s changed %s to %s", tc.name, a.ID, got.Status)
			}
		}
	}
	if _, body := doReq(t, pub, "GET", path(a1.ApproveURL), "", ""); !strings.Contains(body, `<form method="post">`) {
		t.Errorf("confirmation page has no form: %s", body)
	}
	if resp, body := doReq(t, pub, "POST", path(a1.ApproveURL), "", ""); resp.StatusCode != 200 {
		t.Fatalf("POST link: %d %s", resp.StatusCode, body)
	}
	if a, _ := e.M.Get(a1.ID); a.Status != approval.Approved || a.By != "link" {
		t.Fatalf("after link: %+v", a)
	}
	if resp, _ := doReq(t, pub, "POST", path(a1.DenyURL), "", ""); resp.StatusCode != 409 {
		t.Fatalf("contrary link after approve: %d", resp.StatusCode)
	}
	// Links stop working after they expire.
	e.Clock.Add(11 * time.Minute)
	if resp, _ := doReq(t, pub, "POST", path(a2.DenyURL), "", ""); resp.StatusCode != 403 {
		t.Fatalf("expired link: %d", resp.StatusCode)
	}
	e.M.Decide(context.Background(), approval.Decision{ID: a2.ID, Channel: approval.ChannelCLI})
	outs := map[string]approval.Outcome{}
	for _, ch := range []<-chan approval.Outcome{ch1, ch2} {
		o := approvaltest.Recv(t, ch)
		outs[o.ID] = o
	}
	if o := outs[a1.ID]; !o.Approved || o.By != "link" {
		t.Fatalf("link outcome %+v", o)
	}
	if o := outs[a2.ID]; o.Approved {
		t.Fatalf("other approval released: %+v", o)
	}
}

type apiEnv struct {
	*approvaltest.Env
	token string
}

func newEnv(t *testing.T, token string) *apiEnv {
	t.Helper()
	return &apiEnv{Env: approvaltest.New(t, nil), token: token}
}
