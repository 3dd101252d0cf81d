package proxy

import (
	"io"
	"net/http"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/usage"
)

// LLM budgets (issue 16, budget). The gate admits a request under its
// rule's budget; this file carries the admission out: the request asks
// the upstream for an identity-encoded answer, the answer's bytes stream
// to the agent through a tap that feeds a usage.Meter (it copies, it never
// holds a byte back), and when the answer ends (or the agent or upstream
// cuts it off) the request is settled once: what the meter read, plus the
// budget's unmetered charge when the final usage was not among it.

// budgetCharge is one admitted request.
type budgetCharge struct {
	s         *Server
	key       string           // the container's
	budgets   []*policy.Budget // every budget it was admitted under
	est       usage.Estimate   // reserved in each
	e         *audit.Entry
	forwarded bool         // the request went to the upstream
	status    int          // the upstream's status; 0: no answer
	meter     *usage.Meter // nil: no body was read
	body      *tapBody
	upgraded  bool // a 101: bytes clawd does not read
	abandoned bool // the agent went away before the answer's head
	done      bool
}

func (s *Server) admitted(key string, d policy.Decision, e *audit.Entry) *budgetCharge {
	if len(d.Budgets) == 0 || d.Action == policy.Deny {
		return nil
	}
	return &budgetCharge{s: s, key: key, budgets: d.Budgets, est: usage.Estimate{In: d.BudgetIn, Out: d.BudgetOut}, e: e}
}

// prepare makes the forwarded request ask for an answer the meter reads.
func (c *budgetCharge) prepare(r *http.Request) {
	c.forwarded = true
	r.Header.Set("Accept-Encoding", "identity")
}

// tap wraps the upstream's answer.
func (c *budgetCharge) tap(resp *http.Response) {
	c.status = resp.StatusCode
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy needs the body's ReadWriteCloser for the tunnel.
		c.upgraded = true
		return
	}
	c.meter = usage.NewMeter(resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"))
	c.body = &tapBody{rc: resp.Body, m: c.meter}
	resp.Body = c.body
}

// finish settles the request (once) in each of its budgets and writes its
// tokens to the audit entry. An answered request (1xx/2xx, an upgrade)
// whose closing usage was not read is unmetered: it costs its estimate
// with what was read (usage.Meter.Cost), at least the rule's unmetered
// charge, and its audit line says `usage: unmetered` and why. An error
// answer (3xx and up), or none, costs only what it reported (usually
// nothing): the provider generated nothing the agent got.
func (c *budgetCharge) finish() {
	if c == nil || c.done {
		return
	}
	c.done = true
	var floor int64
	for _, b := range c.budgets {
		floor = max(floor, b.Unmetered)
	}
	var tokens int64
	unmetered, why := false, ""
	switch {
	case c.upgraded:
		tokens, unmetered, why = max(c.est.Total(), floor), true, usage.ReasonUpgrade
	case c.meter != nil:
		tokens, unmetered, why = c.meter.Cost(c.body.eof, c.est, floor)
	case c.abandoned:
		// The provider had the request and was working on it: a
		// generation the agent hung up on is billed all the same.
		tokens, unmetered, why = max(c.est.Total(), floor), true, usage.ReasonAbandoned
	}
	if unmetered && c.meter != nil && (c.status < 100 || c.status >= 300) {
		tokens, _ = c.meter.Result(c.body.eof)
		unmetered, why = false, ""
	}
	now := c.s.cfg.Now()
	for _, b := range c.budgets {
		c.s.usage.Settle(usage.Key{Container: c.key, Budget: b.ID}, b, c.est.Total(), c.forwarded, tokens, now)
		if tokens > 0 {
			c.s.m.budgetTokens.WithLabelValues(b.ID).Add(float64(tokens))
		}
	}
	c.e.Tokens = tokens
	if unmetered {
		c.e.Usage, c.e.UsageReason = "unmetered", why
	}
}

// abandon notes that the agent went away while the upstream had the
// request and had not answered yet.
func (c *budgetCharge) abandon() {
	if c != nil && c.status == 0 {
		c.abandoned = true
	}
}

// tapBody passes the upstream's bytes on unchanged and lets the meter see
// each chunk as it goes.
type tapBody struct {
	rc  io.ReadCloser
	m   *usage.Meter
	eof bool // the upstream ended the body
}

func (t *tapBody) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 {
		t.m.Write(p[:n])
	}
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}

func (t *tapBody) Close() error { return t.rc.Close() }

// writeBudgetSpent answers a request whose budget is spent: 429 with
// Retry-After (when the window ends) and x-should-retry: false, since
// retrying before then cannot help.
//
// A budget that is not spent, but whose remainder requests in flight have
// reserved, answers 429 budget_busy with a short Retry-After instead: a
// retry may fit once they settle.
func writeBudgetSpent(w http.ResponseWriter, d policy.Decision, info errInfo) {
	secs := retrySeconds(d)
	info.Error, info.RetryAfter = "budget_exhausted", secs
	if d.BudgetBusy {
		info.Error = "budget_busy"
	} else {
		w.Header().Set("x-should-retry", "false")
	}
	w.Header().Set("Retry-After", itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, info)
}
