package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
)

const testToken = "tok-s3cret-0123456789"

func serve(t *testing.T, f *fakeSource) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	t.Cleanup(srv.Close)
	return srv
}

type resp struct {
	code int
	hdr  http.Header
	body string
}

func do(t *testing.T, method, url, auth, ctype, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(b)}
}

func TestPageHeadersAndNoInlineCode(t *testing.T) {
	srv := serve(t, newFake())
	for _, p := range []string{"/ui/", "/ui/link/abc/approve?exp=1&sig=x", "/ui/app.js", "/ui/app.css", "/ui/api/approvals"} {
		r := do(t, "GET", srv.URL+p, "", "", "")
		if got := r.hdr.Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'self'") || strings.Contains(got, "unsafe") {
			t.Errorf("%s: CSP %q", p, got)
		}
		if r.hdr.Get("X-Frame-Options") != "DENY" || r.hdr.Get("X-Content-Type-Options") != "nosniff" ||
			r.hdr.Get("Referrer-Policy") != "no-referrer" || r.hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", p, r.hdr)
		}
	}
	r := do(t, "GET", srv.URL+"/ui/", "", "", "")
	if r.code != 200 || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", r.code, r.hdr.Get("Content-Type"))
	}
	// Every script has a src on this origin and no body; no inline handlers
	// or styles; nothing loaded from elsewhere.
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(r.body, -1) {
		if !strings.Contains(m[1], `src="/ui/`) || strings.TrimSpace(m[2]) != "" {
			t.Errorf("inline script: %q", m[0])
		}
	}
	if m := regexp.MustCompile(`(?i)\son[a-z]+\s*=|\sstyle\s*=|<style|https?://|javascript:`).FindString(r.body); m != "" {
		t.Errorf("page has %q", m)
	}
	// The script never parses agent strings as HTML.
	js := do(t, "GET", srv.URL+"/ui/app.js", "", "", "")
	if !strings.HasPrefix(js.hdr.Get("Content-Type"), "text/javascript") {
		t.Errorf("app.js type %q", js.hdr.Get("Content-Type"))
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "?token", "&token"} {
		if strings.Contains(js.body, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if r := do(t, "GET", srv.URL+"/ui/nothing", "", "", ""); r.code != 404 {
		t.Errorf("unknown path: %d", r.code)
	}
}

func TestAPINeedsToken(t *testing.T) {
	f := newFake()
	f.add(pending("ap1", "Open a pull request", "agent-1"))
	srv := serve(t, f)
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + testToken, "bearer " + testToken, "Bearer " + testToken + "x"} {
		r := do(t, "GET", srv.URL+"/ui/api/approvals", auth, "", "")
		if r.code != 401 || strings.Contains(r.body, "ap1") || strings.Contains(r.body, testToken) {
			t.Errorf("auth %q: %d %s", auth, r.code, r.body)
		}
		r = do(t, "POST", srv.URL+"/ui/api/approvals/ap1/decide", auth, "application/json", `{"act":"a","digest":"`+digestOf("ap1")+`"}`)
		if r.code != 401 {
			t.Errorf("decide with auth %q: %d", auth, r.code)
		}
	}
	// A token in the URL is not a token.
	if r := do(t, "GET", srv.URL+"/ui/api/approvals?token="+testToken, "", "", ""); r.code != 401 {
		t.Errorf("token in query: %d", r.code)
	}
	// No token configured: the token calls are off, whatever is sent.
	off := httptest.NewServer(Handler(f, Options{}))
	defer off.Close()
	for _, auth := range []string{"", "Bearer ", "Bearer " + testToken} {
		if r := do(t, "GET", off.URL+"/ui/api/approvals", auth, "", ""); r.code != 403 || strings.Contains(r.body, "ap1") {
			t.Errorf("no token configured, auth %q: %d %s", auth, r.code, r.body)
		}
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("Decide called %d times without a token", n)
	}
}

func TestListHidesLinks(t *testing.T) {
	f := newFake()
	a := pending("ap1", "Open a pull request", "agent-1")
	a.ApproveURL = "https://clawd.example/v1/links/ap1/approve?exp=1&sig=SIGNEDLINK"
	a.DenyURL = "https://clawd.example/v1/links/ap1/deny?exp=1&sig=SIGNEDLINK"
	f.add(a)
	srv := serve(t, f)
	r := do(t, "GET", srv.URL+"/ui/api/approvals", "Bearer "+testToken, "", "")
	if r.code != 200 {
		t.Fatalf("%d %s", r.code, r.body)
	}
	if strings.Contains(r.body, "SIGNEDLINK") {
		t.Errorf("list leaks the signed links: %s", r.body)
	}
	var lr ListResponse
	if err := json.Unmarshal([]byte(r.body), &lr); err != nil {
		t.Fatal(err)
	}
	if len(lr.Pending) != 1 || lr.Pending[0].Container != "agent-1" || lr.Pending[0].Digest != a.Digest || lr.Recent == nil || lr.Now.IsZero() {
		t.Errorf("list: %+v", lr)
	}
}

func TestDecideValidation(t *testing.T) {
	f := newFake()
	f.add(pending("ap1", "Open a pull request", "agent-1"))
	srv := serve(t, f)
	url := srv.URL + "/ui/api/approvals/ap1/decide"
	dg := digestOf("ap1")
	bad := map[string]struct{ ctype, body string }{
		"form content type":  {"application/x-www-form-urlencoded", `{"act":"a","digest":"` + dg + `"}`},
		"text content type":  {"text/plain", `{"act":"a","digest":"` + dg + `"}`},
		"no body":            {"application/json", ``},
		"not json":           {"application/json", `act=a`},
		"unknown field":      {"application/json", `{"act":"a","digest":"` + dg + `","user":"admin"}`},
		"trailing":           {"application/json", `{"act":"a","digest":"` + dg + `"}{}`},
		"bad act":            {"application/json", `{"act":"approve","digest":"` + dg + `"}`},
		"no digest":          {"application/json", `{"act":"a"}`},
		"reason on approve":  {"application/json", `{"act":"a","digest":"` + dg + `","reason":"ok"}`},
		"long reason":        {"application/json", `{"act":"d","digest":"` + dg + `","reason":"` + strings.Repeat("x", maxReason+1) + `"}`},
		"control in reason":  {"application/json", `{"act":"d","digest":"` + dg + `","reason":"a\u001b[2Jb"}`},
		"link fields":        {"application/json", `{"act":"a","digest":"` + dg + `","sig":"x"}`},
		"huge body":          {"application/json", `{"act":"d","digest":"` + dg + `","reason":"` + strings.Repeat("x", maxBody) + `"}`},
		"user claimed by id": {"application/json", `{"act":"a","digest":"` + dg + `","channel":"slack"}`},
	}
	for name, c := range bad {
		r := do(t, "POST", url, "Bearer "+testToken, c.ctype, c.body)
		if r.code != 400 || !strings.Contains(r.body, `"error"`) {
			t.Errorf("%s: %d %s", name, r.code, r.body)
		}
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("Decide called %d times on bad input: %+v", n, f.calls())
	}
	if r := do(t, "GET", url, "Bearer "+testToken, "", ""); r.code != 405 {
		t.Errorf("GET decide: %d", r.code)
	}

	// A good one: deny with a reason, attributed to the token.
	r := do(t, "POST", url, "Bearer "+testToken, "application/json; charset=utf-8", `{"act":"d","digest":"`+dg+`","reason":"not today"}`)
	if r.code != 200 {
		t.Fatalf("deny: %d %s", r.code, r.body)
	}
	var dr DecideResponse
	if err := json.Unmarshal([]byte(r.body), &dr); err != nil {
		t.Fatal(err)
	}
	if dr.Outcome != approval.ResultDecided || dr.Message != "Denied." || dr.Approval.Status != approval.Denied || dr.Approval.By != "api" {
		t.Errorf("deny answer: %+v", dr)
	}
	want := approval.Decision{ID: "ap1", Digest: dg, Approve: false, Channel: "api", Display: "web page", Reason: "not today"}
	if got := f.calls(); len(got) != 1 || got[0] != want {
		t.Errorf("decisions %+v, want %+v", got, want)
	}
}

func TestDecideOutcomes(t *testing.T) {
	f := newFake()
	f.add(pending("ap1", "Open a pull request", "agent-1"))
	srv := serve(t, f)
	url := srv.URL + "/ui/api/approvals/ap1/decide"
	// Approve for 15 min asks the core for the grant.
	r := do(t, "POST", url, "Bearer "+testToken, "application/json", `{"act":"g","digest":"`+digestOf("ap1")+`"}`)
	if r.code != 200 || !strings.Contains(r.body, "Approved for 15 minutes.") {
		t.Fatalf("grant: %d %s", r.code, r.body)
	}
	if got := f.calls(); len(got) != 1 || !got[0].Approve || got[0].GrantFor != 15*time.Minute {
		t.Errorf("decisions %+v", got)
	}
	// The core's refusals reach the page with its message.
	for outcome, code := range map[string]int{
		approval.ResultStale: 409, approval.ResultConflict: 409, approval.ResultExpired: 409,
		approval.ResultNotFound: 404, approval.ResultNotApprover: 403, approval.ResultSelf: 403,
		approval.ResultInvalid: 400, approval.ResultError: 500, approval.ResultAlready: 200, approval.ResultRecorded: 200,
	} {
		f.mu.Lock()
		f.result = &approval.Result{Outcome: outcome, Message: "msg " + outcome}
		f.mu.Unlock()
		r := do(t, "POST", url, "Bearer "+testToken, "application/json", `{"act":"a","digest":"`+digestOf("ap1")+`"}`)
		var dr DecideResponse
		_ = json.Unmarshal([]byte(r.body), &dr)
		if r.code != code || dr.Message != "msg "+outcome || dr.Outcome != outcome {
			t.Errorf("%s: %d %s, want %d", outcome, r.code, r.body, code)
		}
	}
}

func TestLinkAPI(t *testing.T) {
	f := newFake()
	f.add(pending("ap1", "Open a pull request", "agent-1"))
	f.add(pending("ap2", "Another", "agent-2"))
	f.addLink("ap1", "approve", "1900000000", "goodsig")
	f.addLink("ap2", "deny", "1900000000", "denysig")
	srv := serve(t, f)
	dg := digestOf("ap1")
	post := func(path, body string) resp { return do(t, "POST", srv.URL+path, "", "application/json", body) }

	// Viewing: only with a valid link, and only that approval.
	r := post("/ui/api/link", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig"}`)
	if r.code != 200 || !strings.Contains(r.body, `"id":"ap1"`) || strings.Contains(r.body, "ap2") {
		t.Fatalf("link view: %d %s", r.code, r.body)
	}
	for name, body := range map[string]string{
		"bad sig":        `{"id":"ap1","action":"approve","exp":"1900000000","sig":"badsig"}`,
		"other id":       `{"id":"ap2","action":"approve","exp":"1900000000","sig":"goodsig"}`,
		"other action":   `{"id":"ap1","action":"deny","exp":"1900000000","sig":"goodsig"}`,
		"other exp":      `{"id":"ap1","action":"approve","exp":"1900000001","sig":"goodsig"}`,
		"unknown action": `{"id":"ap1","action":"grant","exp":"1900000000","sig":"goodsig"}`,
		"no sig":         `{"id":"ap1","action":"approve"}`,
	} {
		if r := post("/ui/api/link", body); r.code != 403 || strings.Contains(r.body, "Open a pull") {
			t.Errorf("view %s: %d %s", name, r.code, r.body)
		}
		if r := post("/ui/api/link/decide", strings.Replace(body, `"id"`, `"act":"a","digest":"`+dg+`","id"`, 1)); r.code != 403 {
			t.Errorf("decide %s: %d %s", name, r.code, r.body)
		}
	}
	// An approve link cannot deny or grant; a token is no substitute.
	for _, act := range []string{"d", "g"} {
		if r := post("/ui/api/link/decide", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig","act":"`+act+`","digest":"`+dg+`"}`); r.code != 403 {
			t.Errorf("approve link with act %s: %d %s", act, r.code, r.body)
		}
	}
	// The page must have shown the request the link signs.
	if r := post("/ui/api/link/decide", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig","act":"a","digest":"`+digestOf("other")+`"}`); r.code != 409 || !strings.Contains(r.body, "nothing changed") {
		t.Errorf("link with another digest: %d %s", r.code, r.body)
	}
	if r := do(t, "POST", srv.URL+"/ui/api/link/decide", "", "text/plain", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig","act":"a","digest":"`+dg+`"}`); r.code != 400 {
		t.Errorf("text/plain link decide: %d", r.code)
	}
	if n := len(f.calls()); n != 0 {
		t.Fatalf("Decide called %d times: %+v", n, f.calls())
	}

	// The link's own action goes through, attributed to "link".
	r = post("/ui/api/link/decide", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig","act":"a","digest":"`+dg+`"}`)
	if r.code != 200 || !strings.Contains(r.body, "Approved.") {
		t.Fatalf("link approve: %d %s", r.code, r.body)
	}
	r = post("/ui/api/link/decide", `{"id":"ap2","action":"deny","exp":"1900000000","sig":"denysig","act":"d","digest":"`+digestOf("ap2")+`","reason":"no"}`)
	if r.code != 200 || !strings.Contains(r.body, "Denied.") {
		t.Fatalf("link deny: %d %s", r.code, r.body)
	}
	want := []approval.Decision{
		{ID: "ap1", Digest: dg, Approve: true, Channel: "link", Display: "web page"},
		{ID: "ap2", Digest: digestOf("ap2"), Channel: "link", Display: "web page", Reason: "no"},
	}
	if got := f.calls(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("decisions %+v, want %+v", got, want)
	}
	// A decided approval still shows on its link, with the outcome.
	r = post("/ui/api/link", `{"id":"ap1","action":"approve","exp":"1900000000","sig":"goodsig"}`)
	if r.code != 200 || !strings.Contains(r.body, `"status":"approved"`) || !strings.Contains(r.body, `"by":"link"`) {
		t.Errorf("decided link view: %d %s", r.code, r.body)
	}
}
