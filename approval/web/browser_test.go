package web

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/clawd-dev/clawd/approval"
)

// chromiumPath is Debian's chromium package.
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium tab with what the page did wrong: script
// exceptions, CSP violations, and dialogs (alert() from an injected script).
type browser struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string
	dialogs  []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("no browser: %s is absent (install the Debian package chromium; scripts/deps.sh does)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // tests run as root
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 900),
		// Loopback only: no name resolves, so nothing leaves the host.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTime(); cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}

	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	entries := chromedp.Events(ctx, log.EntryAdded)
	b.must(chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	if _, err := chromedp.Call(ctx, log.Enable, struct{}{}); err != nil {
		t.Fatalf("log.enable: %v", err)
	}
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			b.problem("exception: " + ev.ExceptionDetails.Text + " " + fmt.Sprint(ev.ExceptionDetails.Exception))
		}
	}()
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			// CSP violations are "security"; script errors "javascript".
			if e := ev.Entry; e != nil && (e.Source == log.EntrySourceSecurity || e.Source == log.EntrySourceJavascript) {
				b.problem(string(e.Source) + ": " + e.Text)
			}
		}
	}()
	return b
}

func (b *browser) problem(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, s)
}

// clean fails the test if the page threw, broke its CSP or opened a dialog.
func (b *browser) clean() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 || len(b.dialogs) > 0 {
		b.t.Errorf("page problems %q, dialogs %q", b.problems, b.dialogs)
	}
}

func (b *browser) must(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.must(chromedp.Do(b.ctx, actions...))
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS(sel)))
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	b.must(err)
	return s
}

func (b *browser) eval(js string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](js))
	b.must(err)
	return s
}

// waitJS waits until the expression is true in the page (the page polls
// every 3 s and redraws after each click).
func (b *browser) waitJS(expr string) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		b.t.Fatalf("waiting for %s: %v", expr, err)
	}
}

func (b *browser) login(base, token string) {
	b.t.Helper()
	b.do(
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)),
	)
}

func TestBrowserLoginApprove(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	a := f.add(pending("ap1", "Open a pull request on acme/site", "agent-1"))
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()

	// A wrong token shows an error and nothing of the approvals.
	b.login(srv.URL, "not-the-token")
	if got := b.text("#login-error"); got != "Wrong token." {
		t.Errorf("wrong token shows %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll('#pending .card').length)`); n != "0" {
		t.Errorf("cards shown with a wrong token: %s", n)
	}
	if got := b.eval(`String(sessionStorage.getItem('clawd-token'))`); got != "null" {
		t.Errorf("wrong token kept in sessionStorage: %q", got)
	}

	// The right token shows the card.
	b.login(srv.URL, testToken)
	if got := b.text("#pending .card .summary"); got != a.Summary {
		t.Errorf("summary %q", got)
	}
	if got := b.text("#pending .card .container"); got != "agent-1" {
		t.Errorf("container %q", got)
	}
	if got := b.text("#pending .card .request"); got != "POST https://api.github.com/repos/acme/site/pulls" {
		t.Errorf("request %q", got)
	}
	if got := b.text("#pending .card .rule"); got != "github-writes" {
		t.Errorf("rule %q", got)
	}
	if got := b.text("#pending .card .left"); !strings.HasSuffix(got, "s left") || !strings.HasPrefix(got, "9m ") && !strings.HasPrefix(got, "8m ") {
		t.Errorf("time left %q", got)
	}
	if got := b.eval(`document.querySelector('#pending .card details pre').textContent`); !strings.Contains(got, "Authorization: Bearer [redacted]") {
		t.Errorf("headers %q", got)
	}
	if got := b.eval(`Array.from(document.querySelectorAll('#pending .card button')).map(b => b.textContent).join('|')`); got != "Approve once|Deny" {
		t.Errorf("buttons without grants: %q", got)
	}
	// The token lives in sessionStorage, never in the address.
	if got := b.eval(`sessionStorage.getItem('clawd-token')`); got != testToken {
		t.Errorf("sessionStorage %q", got)
	}
	if got := b.eval(`location.href`); strings.Contains(got, testToken) {
		t.Errorf("token in URL %q", got)
	}

	b.do(chromedp.Click(chromedp.CSS(`#pending .card button[data-act="a"]`)))
	b.waitJS(`document.querySelector('#recent .card .by') !== null`)
	want := approval.Decision{ID: "ap1", Digest: a.Digest, Approve: true, Channel: "api", Display: "web page"}
	if got := f.calls(); len(got) != 1 || got[0] != want {
		t.Fatalf("decisions %+v, want %+v", got, want)
	}
	if got := b.text("#message"); got != "Approved." {
		t.Errorf("message %q", got)
	}
	if got := b.text("#recent .card .by"); got != "api" {
		t.Errorf("decided by %q", got)
	}
	if got := b.text("#recent .card .status"); !strings.EqualFold(got, "approved") {
		t.Errorf("status %q", got)
	}
	if got := b.text("#pending-empty"); got != "Nothing is waiting for a decision." {
		t.Errorf("pending after decision: %q", got)
	}

	// Log out forgets the token.
	b.do(chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	if got := b.eval(`String(sessionStorage.getItem('clawd-token'))`); got != "null" {
		t.Errorf("token kept after logout: %q", got)
	}
	b.clean()
}

func TestBrowserDenyWithReasonAndGrant(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	a1 := f.add(pending("ap1", "First", "agent-1"))
	a2 := pending("ap2", "Second", "agent-2")
	a2.GrantsAllowed = true
	f.add(a2)
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()

	b.login(srv.URL, testToken)
	b.waitJS(`document.querySelectorAll('#pending .card').length === 2`)
	if got := b.eval(`Array.from(document.querySelectorAll('#pending .card[data-id="ap2"] button')).map(b => b.textContent).join('|')`); got != "Approve once|Approve for 15 min|Deny" {
		t.Errorf("buttons with grants: %q", got)
	}
	b.do(
		chromedp.SendKeys(chromedp.CSS(`.card[data-id="ap1"] input.reason`), "not on a Friday"),
		chromedp.Click(chromedp.CSS(`.card[data-id="ap1"] button[data-act="d"]`)),
	)
	b.waitJS(`document.querySelector('#recent .card .why') !== null`)
	if got := b.text("#recent .card .why"); got != "not on a Friday" {
		t.Errorf("reason shown %q", got)
	}
	if got := b.text("#message"); got != "Denied." {
		t.Errorf("message %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS(`.card[data-id="ap2"] button[data-act="g"]`)))
	b.waitJS(`document.querySelectorAll('#recent .card').length === 2`)
	if got := b.text("#message"); got != "Approved for 15 minutes." {
		t.Errorf("message %q", got)
	}
	want := []approval.Decision{
		{ID: "ap1", Digest: a1.Digest, Channel: "api", Display: "web page", Reason: "not on a Friday"},
		{ID: "ap2", Digest: a2.Digest, Approve: true, GrantFor: 15 * time.Minute, Channel: "api", Display: "web page"},
	}
	if got := f.calls(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("decisions %+v, want %+v", got, want)
	}
	// Newest first.
	if got := b.eval(`Array.from(document.querySelectorAll('#recent .card')).map(c => c.dataset.id).join(',')`); got != "ap2,ap1" {
		t.Errorf("recent order %q", got)
	}
	b.clean()
}

func TestBrowserRefusalShowsMessage(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	f.add(pending("ap1", "First", "agent-1"))
	f.result = &approval.Result{Outcome: approval.ResultNotApprover, Message: "You are not asked to decide this request."}
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()
	b.login(srv.URL, testToken)
	b.do(chromedp.Click(chromedp.CSS(`#pending .card button[data-act="a"]`)))
	b.waitJS(`!document.querySelector('#pending .card .card-message').hidden`)
	if got := b.text("#pending .card .card-message"); got != "You are not asked to decide this request." {
		t.Errorf("card message %q", got)
	}
	if got := b.text("#message"); got != "You are not asked to decide this request." {
		t.Errorf("message %q", got)
	}
	// The buttons come back for another try.
	if got := b.eval(`String(document.querySelector('#pending .card button[data-act="a"]').disabled)`); got != "false" {
		t.Errorf("button disabled after a refusal: %s", got)
	}
	b.clean()
}

// xss are payloads an agent can put in what it sends; none may become markup.
var xss = []string{
	`<img src=x id=xss1 onerror="alert('summary')">`,
	`"><script id=xss2>alert('url')</script>`,
	`</pre><b id=xss3>body</b><img src=x onerror=alert('body')>`,
	`<svg id=xss4 onload=alert('header')>`,
	`<iframe id=xss5 src="javascript:alert('container')">`,
	`<a id=xss6 href="javascript:alert('rule')">x</a>`,
}

func TestBrowserXSSIsText(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	a := pending("ap1", xss[0], xss[4])
	a.URL = "https://evil.example/" + xss[1] + "?q=" + xss[1]
	a.Method = `GET<b id=xss7>`
	a.Body = xss[2]
	a.Header = map[string][]string{"X-Evil": {xss[3]}, xss[3]: {"v"}}
	a.Rule = xss[5]
	a.GrantsAllowed = true
	a.Required = 2
	a.Votes = []approval.Vote{{By: "slack:U1", Display: xss[0]}}
	f.add(a)
	d := pending("ap0", xss[0], xss[4])
	d.Status, d.By, d.Reason, d.Decided = approval.Denied, "slack:"+xss[3], xss[2], time.Now()
	f.recent = append(f.recent, d)
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()

	b.login(srv.URL, testToken)
	b.waitJS(`document.querySelector('#pending .card') !== null && document.querySelector('#recent .card') !== null`)
	injected := `String(document.querySelectorAll('#xss1,#xss2,#xss3,#xss4,#xss5,#xss6,#xss7,img,svg,iframe,script:not([src]),main a[href^="javascript"]').length)`
	if n := b.eval(injected); n != "0" {
		t.Errorf("%s elements injected", n)
	}
	checks := map[string]string{
		`#pending .card .summary`:   xss[0],
		`#pending .card .url`:       a.URL,
		`#pending .card .method`:    a.Method,
		`#pending .card .container`: xss[4],
		`#pending .card .rule`:      xss[5],
		`#recent .card .by`:         "slack:" + xss[3],
		`#recent .card .why`:        xss[2],
	}
	for sel, want := range checks {
		if got := b.eval(`document.querySelector('` + sel + `').textContent`); got != want {
			t.Errorf("%s shows %q, want %q", sel, got, want)
		}
	}
	if got := b.eval(`document.querySelector('#pending .card details[open] pre').textContent`); got != xss[2] {
		t.Errorf("body shows %q", got)
	}
	if got := b.eval(`document.querySelector('#pending .card details pre').textContent`); !strings.Contains(got, "X-Evil: "+xss[3]) {
		t.Errorf("headers show %q", got)
	}
	if got := b.eval(`document.querySelector('#pending .card .votes').textContent`); !strings.Contains(got, xss[0]) {
		t.Errorf("votes show %q", got)
	}
	// Deciding with a payload as reason keeps it text too.
	b.do(
		chromedp.SendKeys(chromedp.CSS(`#pending .card input.reason`), xss[1]),
		chromedp.Click(chromedp.CSS(`#pending .card button[data-act="d"]`)),
	)
	b.waitJS(`document.querySelectorAll('#recent .card').length === 2`)
	if got := b.eval(`document.querySelector('#recent .card .why').textContent`); got != xss[1] {
		t.Errorf("reason shows %q", got)
	}
	if n := b.eval(injected); n != "0" {
		t.Errorf("%s elements injected after deciding", n)
	}
	b.clean()
}

func TestBrowserLink(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	a1 := f.add(pending("ap1", "Open a pull request", "agent-1"))
	a1.GrantsAllowed = true
	f.add(pending("ap2", "Delete the repository", "agent-2"))
	f.addLink("ap1", "approve", "1900000000", "goodsig")
	f.addLink("ap2", "deny", "1900000000", "denysig")
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()

	// A forged link shows an error and no approval.
	b.do(chromedp.Navigate(srv.URL + LinkPath("ap1", "approve") + "?exp=1900000000&sig=forged"))
	if got := b.text("#link-error"); got != "invalid or expired link" {
		t.Errorf("forged link shows %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll('.card').length)`); n != "0" {
		t.Errorf("forged link shows %s cards", n)
	}
	// A deny link does not approve.
	b.do(chromedp.Navigate(srv.URL + LinkPath("ap1", "deny") + "?exp=1900000000&sig=goodsig"))
	if got := b.text("#link-error"); got != "invalid or expired link" {
		t.Errorf("approve signature on a deny link shows %q", got)
	}

	// The approve link shows that approval only, with only its action.
	b.do(chromedp.Navigate(srv.URL + LinkPath("ap1", "approve") + "?exp=1900000000&sig=goodsig"))
	if got := b.text("#link .card .summary"); got != "Open a pull request" {
		t.Errorf("link card %q", got)
	}
	if got := b.eval(`Array.from(document.querySelectorAll('.card button')).map(b => b.textContent).join('|')`); got != "Approve once" {
		t.Errorf("link buttons %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll('.card').length)`); n != "1" {
		t.Errorf("link page shows %s cards", n)
	}
	if b.eval(`String(document.getElementById('board').hidden)`) != "true" {
		t.Errorf("board shown on a link page")
	}
	b.do(chromedp.Click(chromedp.CSS(`#link .card button[data-act="a"]`)))
	b.waitJS(`document.querySelector('#link .card .by') !== null`)
	if got := b.text("#message"); got != "Approved." {
		t.Errorf("message %q", got)
	}
	if got := b.text("#link .card .by"); got != "link" {
		t.Errorf("by %q", got)
	}

	// The deny link denies with a reason.
	b.do(chromedp.Navigate(srv.URL + LinkPath("ap2", "deny") + "?exp=1900000000&sig=denysig"))
	b.waitJS(`document.querySelector('#link .card button') !== null`)
	if got := b.eval(`(b => b ? b.textContent : '')(document.querySelector('#link .card button'))`); got != "Deny" {
		t.Fatalf("deny link button %q", got)
	}
	b.do(
		chromedp.SendKeys(chromedp.CSS(`#link .card input.reason`), "no"),
		chromedp.Click(chromedp.CSS(`#link .card button[data-act="d"]`)),
	)
	b.waitJS(`document.querySelector('#link .card .why') !== null`)
	want := []approval.Decision{
		{ID: "ap1", Digest: a1.Digest, Approve: true, Channel: "link", Display: "web page"},
		{ID: "ap2", Digest: digestOf("ap2"), Channel: "link", Display: "web page", Reason: "no"},
	}
	if got := f.calls(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("decisions %+v, want %+v", got, want)
	}
	// The link page never needed the token.
	if got := b.eval(`String(sessionStorage.getItem('clawd-token'))`); got != "null" {
		t.Errorf("sessionStorage %q", got)
	}
	b.clean()
}

// TestBrowserScreenshot draws the page with two pending cards and one
// decided; CLAWD_SCREENSHOT=path writes it (docs/approvals-page.png).
func TestBrowserScreenshot(t *testing.T) {
	b := newBrowser(t)
	f := newFake()
	a1 := pending("ap1", "Open a pull request on acme/site: \"Bump deps\" (bump → main)", "agent-1")
	a1.GrantsAllowed = true
	f.add(a1)
	a2 := pending("ap2", "Stripe: create a charge of 49.00 USD", "billing-bot")
	a2.Method, a2.URL, a2.Rule = "POST", "https://api.stripe.com/v1/charges", "stripe-payments"
	a2.Header = map[string][]string{"Authorization": {"Bearer [redacted]"}, "Content-Type": {"application/x-www-form-urlencoded"}}
	a2.Body, a2.BodySize = "amount=4900&currency=usd&source=tok_visa&description=Pro+plan", 61
	a2.Expires = time.Now().Add(4*time.Minute + 10*time.Second)
	f.add(a2)
	d := pending("ap0", "Delete a branch of acme/site: old-release", "agent-1")
	d.Method, d.URL = "DELETE", "https://api.github.com/repos/acme/site/git/refs/heads/old-release"
	d.Body, d.BodySize = "", 0
	d.Status, d.By, d.Reason, d.Decided = approval.Denied, "api", "keep it until the audit", time.Now().Add(-2*time.Minute)
	f.recent = append(f.recent, d)
	srv := httptest.NewServer(Handler(f, Options{Token: testToken}))
	defer srv.Close()

	b.login(srv.URL, testToken)
	b.waitJS(`document.querySelectorAll('#pending .card').length === 2 && document.querySelectorAll('#recent .card').length === 1`)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	b.must(err)
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("not a PNG (%d bytes)", len(png))
	}
	if p := os.Getenv("CLAWD_SCREENSHOT"); p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", p)
	}
	b.clean()
}
