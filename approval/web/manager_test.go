package web

import (
	"context"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/policy"
)

// TestBrowserRealManager: a held request is released by a click on the
// page (token) and another by its signed link, through the real core.
func TestBrowserRealManager(t *testing.T) {
	b := newBrowser(t)
	env := approvaltest.New(t, nil)
	srv := httptest.NewServer(Handler(env.M, Options{Token: testToken, Now: env.Clock.Now}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Token: approve once on the board.
	out := approvaltest.Async(env.M, ctx, approvaltest.Hold("agent-1", "PUT", "/repos/acme/site/pulls/7/merge"))
	a := approvaltest.WaitPending(t, env.M, 1)[0]
	b.login(srv.URL, testToken)
	if got := b.text("#pending .card .container"); got != "agent-1" {
		t.Errorf("container %q", got)
	}
	if got := b.text("#pending .card .request"); got != "PUT https://api.github.com/repos/acme/site/pulls/7/merge" {
		t.Errorf("request %q", got)
	}
	// The core redacted the header before the page got it.
	if got := b.eval(`document.querySelector('#pending .card details pre').textContent`); strings.Contains(got, "SECRET-VALUE-123") || !strings.Contains(got, "Authorization:") {
		t.Errorf("headers on the page: %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS(`#pending .card[data-id="` + a.ID + `"] button[data-act="a"]`)))
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.Status != approval.StatusApproved || o.By != "api" || o.ID != a.ID {
		t.Fatalf("outcome %+v", o)
	}
	b.waitJS(`document.querySelector('#recent .card .by') !== null`)
	if got := b.text("#recent .card .by"); got != "api" {
		t.Errorf("decided by %q", got)
	}
	if got := b.text("#message"); got != "Approved: the request is released." {
		t.Errorf("message %q", got)
	}

	// Signed link: the deny link of the next request denies it.
	out = approvaltest.Async(env.M, ctx, approvaltest.Hold("agent-2", "DELETE", "/repos/acme/site"))
	a = approvaltest.WaitPending(t, env.M, 1)[0]
	u, err := url.Parse(a.DenyURL)
	if err != nil || a.DenyURL == "" {
		t.Fatalf("deny URL %q: %v", a.DenyURL, err)
	}
	// A deny link's signature does not open the approve action.
	b.do(chromedp.Navigate(srv.URL + LinkPath(a.ID, "approve") + "?" + u.RawQuery))
	if got := b.text("#link-error"); got != "invalid or expired link" {
		t.Errorf("approve with a deny signature shows %q", got)
	}
	b.do(chromedp.Navigate(srv.URL + LinkPath(a.ID, "deny") + "?" + u.RawQuery))
	b.waitJS(`document.querySelector('#link .card button') !== null`)
	b.do(
		chromedp.SendKeys(chromedp.CSS(`#link .card input.reason`), "not this one"),
		chromedp.Click(chromedp.CSS(`#link .card button[data-act="d"]`)),
	)
	o = approvaltest.Recv(t, out)
	if o.Approved || o.Status != approval.StatusDenied || o.By != "link" || o.Reason != "not this one" {
		t.Fatalf("outcome %+v", o)
	}
	b.waitJS(`document.querySelector('#link .card .by') !== null`)
	if got := b.text("#link .card .why"); got != "not this one" {
		t.Errorf("reason shown %q", got)
	}
	if got := b.text("#message"); got != "Denied: the request was refused." {
		t.Errorf("message %q", got)
	}
	b.clean()
}

// TestBrowserRealManagerTwoPeople: on a two-person rule the page records the
// first approval, shows the vote and keeps the card; a signed link cannot
// be the second person; a named second approver releases the request.
func TestBrowserRealManagerTwoPeople(t *testing.T) {
	b := newBrowser(t)
	env := approvaltest.New(t, func(c *approval.Config) {
		c.DefaultRoute = &policy.Route{Required: 2, NoGrants: true, Approvers: []policy.Audience{
			{Channel: approval.ChannelCLI}, {Channel: approval.ChannelLink}, {Channel: "rec", People: []string{"U2"}}}}
	})
	srv := httptest.NewServer(Handler(env.M, Options{Token: testToken, Now: env.Clock.Now}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	out := approvaltest.Async(env.M, ctx, approvaltest.Hold("agent-1", "PUT", "/repos/acme/site/pulls/7/merge"))
	a := approvaltest.WaitPending(t, env.M, 1)[0]
	b.login(srv.URL, testToken)
	if got := b.text("#pending .card .votes"); got != "0 of 2 approvals" {
		t.Errorf("votes %q", got)
	}
	if got := b.eval(`Array.from(document.querySelectorAll('#pending .card button')).map(b => b.textContent).join('|')`); got != "Approve once|Deny" {
		t.Errorf("buttons on a no-grants rule: %q", got)
	}
	b.do(chromedp.Click(chromedp.CSS(`#pending .card button[data-act="a"]`)))
	b.waitJS(`(v => v && v.textContent.startsWith('1 of 2'))(document.querySelector('#pending .card .votes'))`)
	if got := b.text("#pending .card .votes"); got != "1 of 2 approvals: web page (api)" {
		t.Errorf("votes %q", got)
	}
	if got := b.text("#message"); got != "Approval 1 of 2 recorded; waiting for someone else." {
		t.Errorf("message %q", got)
	}
	select {
	case o := <-out:
		t.Fatalf("released after one approval: %+v", o)
	default:
	}

	u, err := url.Parse(a.ApproveURL)
	if err != nil || a.ApproveURL == "" {
		t.Fatalf("approve URL %q: %v", a.ApproveURL, err)
	}
	b.do(chromedp.Navigate(srv.URL + LinkPath(a.ID, "approve") + "?" + u.RawQuery))
	b.waitJS(`document.querySelector('#link .card button') !== null`)
	b.do(chromedp.Click(chromedp.CSS(`#link .card button[data-act="a"]`)))
	b.waitJS(`(m => m && m.textContent.includes('signed link cannot count'))(document.querySelector('#message'))`)
	select {
	case o := <-out:
		t.Fatalf("a signed link counted as the second person: %+v", o)
	default:
	}
	d, _ := approval.ParseButton(approval.ButtonValue(approval.ActApprove, a))
	d.Channel, d.User = "rec", "U2"
	if r := env.M.Decide(context.Background(), d); r.Outcome != approval.ResultDecided {
		t.Fatalf("second approver: %+v", r)
	}
	o := approvaltest.Recv(t, out)
	if !o.Approved || o.By != "api,rec:U2" {
		t.Fatalf("outcome %+v", o)
	}
	b.clean()
}
