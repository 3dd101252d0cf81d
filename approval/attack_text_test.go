package approval

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// The proxy passes r.URL.Path, which is percent-DECODED: an agent sends
// /repos/o/r/git/refs/heads/tmp-%E2%80%AEnoitcudorp and the summary (first
// thing on every card) and path carry a RIGHT-TO-LEFT OVERRIDE: the branch
// reads "tmp-production" reversed in the approver's client. Nothing in the
// core strips bidi controls from summaries or paths.
func TestAttackSummaryCarriesLineBreaksAndBidi(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Summarizers = []Summarizer{ghLike{}} })
	// (Control bytes in the path are refused by the policy's path
	// normalisation before a hold; the bidi override is not a control byte.)
	for _, p := range []string{
		"/repos/o/r/git/refs/heads/tmp-\u202enoitcudorp",
	} {
		h := hold("a", "DELETE", p)
		h.URL = "https://api.github.com/repos/o/r/git/refs/heads/x"
		h.Route = &policy.Route{Required: 1, Approvers: []policy.Audience{{Channel: ChannelCLI}}}
		ctx, cancel := context.WithCancel(context.Background())
		ch := async(e.m, ctx, h)
		a := waitPending(t, e.m, 1)[0]
		for what, s := range map[string]string{"summary": a.Summary, "path": a.Path} {
			if strings.ContainsAny(s, "\n\r\u202e") {
				t.Errorf("%s shown to approvers keeps agent-controlled line breaks / bidi override: %q", what, s)
			}
		}
		cancel()
		recv(t, ch)
		waitPending(t, e.m, 0)
	}
}

// ghLike summarises like summary.GitHub's "Delete branch" (the summary
// package imports approval, so it cannot be used here).
type ghLike struct{}

func (ghLike) Summarize(h *Hold) (string, bool) {
	const pre = "/repos/o/r/git/refs/heads/"
	if !strings.HasPrefix(h.Path, pre) {
		return "", false
	}
	return "Delete branch " + strings.TrimPrefix(h.Path, pre) + " in o/r", true
}

// A grant is scoped by method, host and r.URL.Path (no query): the
// approver who pressed "Approve 15 min" on a card showing
// POST https://api.example/v1/run?cmd=ls also let through ?cmd=rm-rf for
// 15 minutes, a request nobody saw.
func TestAttackGrantIgnoresQuery(t *testing.T) {
	e := newEnv(t, nil)
	mk := func(q string) Hold {
		h := hold("a", "POST", "/v1/run") // the proxy's Path: no query
		h.Host, h.URL = "api.example", "https://api.example/v1/run?"+q
		h.Route = &policy.Route{Required: 1, Approvers: []policy.Audience{{Channel: ChannelCLI}}}
		return h
	}
	ch := async(e.m, context.Background(), mk("cmd=ls"))
	id := waitPending(t, e.m, 1)[0].ID
	if _, err := decideCompat(e.m, id, true, "cli", "", 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	recv(t, ch)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if out := e.m.Request(ctx, mk("cmd=rm+-rf+%2F")); out.Approved {
		t.Errorf("a grant given on a card for ?cmd=ls released ?cmd=rm -rf / (%s by %s): grants ignore the query", out.Status, out.By)
	}
}
