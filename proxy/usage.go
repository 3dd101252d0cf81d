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
	key       usage.Key
	b         *policy.Budget
	e         *audit.Entry
	forwarded bool         // the request went to the upstream
	status    int          // the upstream's status; 0: no answer
	meter     *usage.Meter // nil: no body was read
	body      *tapBody
	upgraded  bool // a 101: bytes clawd does not read
	done      bool
}

func (s *Server) admitted(key string, d policy.Decision, e *audit.Entry) *budgetCharge {
	if d.Budget == nil || d.Action == policy.Deny {
		return nil
	}
	return &budgetCharge{s: s, key: usage.Key{Container: key, Budget: d.Budget.ID}, b: d.Budget, e: e}
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

// finish settles the request (once) and writes its tokens to the audit
// entry. An answered request (1xx/2xx) that usage.Meter.Result calls
// unmetered (and an upgrade, whose bytes clawd does not read) costs what
// was read plus the budget's unmetered charge; an error answer (3xx and
// up), or none, costs only what it reported (usually nothing): the
// provider generated nothing the agent got.
func (c *budgetCharge) finish() {
	if c == nil || c.done {
		return
	}
	c.done = true
	var tokens int64
	unmetered := c.upgraded
	if c.meter != nil {
		tokens, unmetered = c.meter.Result(c.body.eof)
	}
	if unmetered && c.status >= 100 && c.status < 300 {
		tokens += c.b.Charge()
	}
	c.s.usage.Settle(c.key, c.b, c.forwarded, tokens, c.s.cfg.Now())
	c.e.Tokens = tokens
	if tokens > 0 {
		c.s.m.budgetTokens.WithLabelValues(c.b.ID).Add(float64(tokens))
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
func writeBudgetSpent(w http.ResponseWriter, d policy.Decision, info errInfo) {
	secs := retrySeconds(d)
	info.Error, info.RetryAfter = "budget_exhausted", secs
	w.Header().Set("Retry-After", itoa(secs))
	w.Header().Set("x-should-retry", "false")
	writeJSON(w, http.StatusTooManyRequests, info)
}
