package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

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
//
// An agent cannot make a request cost less than the upstream bills by its
// shape or by hanging up (docs/attacks/16-budget-r2.md):
//   - an OpenAI chat stream that did not ask for its usage is forwarded
//     asking for it (stream_options.include_usage; askUsage), and the
//     extra usage chunk is kept from the agent that did not ask;
//   - an agent that hangs up after the answer's head does not stop the
//     upstream: clawd reads the answer to its end (discarding it, at most
//     budgetDrainBytes and budgetDrainTime after the agent left) for its closing
//     usage. One that hangs up before the head cancels the request, which
//     costs its estimate;
//   - a websocket session (opted in: policy.Budget.Websocket) costs the
//     usage its server events report (usage.WSMeter).

// budgetCharge is one admitted request.
type budgetCharge struct {
	s          *Server
	key        string           // the container's
	budgets    []*policy.Budget // every budget it was admitted under
	est        usage.Estimate   // reserved in each
	e          *audit.Entry
	forwarded  bool         // the request went to the upstream
	status     int          // the upstream's status; 0: no answer
	meter      *usage.Meter // nil: no body was read
	body       *tapBody
	upgraded   bool // a 101: bytes clawd does not read
	ws         *usage.WSMeter
	abandoned  bool        // the agent went away before the answer's head
	head       atomic.Bool // the answer's head arrived
	done       bool
	usageAdded bool // include_usage was added for the meter, not the agent
}

// Bounds of the reading of an answer the agent hung up on.
const (
	budgetDrainBytes = 64 << 20
	budgetDrainTime  = 2 * time.Minute // Config.BudgetDrain's default
)

// context is the forwarded request's context for a budgeted request
// (parent: the agent's): the agent hanging up before the answer's head
// cancels it; after the head it is cancelled budgetDrainTime later, so the
// answer's closing usage can still be read (tapBody.Close).
func (c *budgetCharge) context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		if !c.head.Load() {
			cancel()
			return
		}
		t := time.AfterFunc(c.s.cfg.BudgetDrain, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}

func (s *Server) admitted(key string, d policy.Decision, e *audit.Entry) *budgetCharge {
	if len(d.Budgets) == 0 || d.Action == policy.Deny {
		return nil
	}
	return &budgetCharge{s: s, key: key, budgets: d.Budgets, est: usage.Estimate{In: d.BudgetIn, Out: d.BudgetOut, Referenced: d.BudgetReferenced}, e: e}
}

// prepare makes the forwarded request ask for an answer the meter reads.
func (c *budgetCharge) prepare(r *http.Request) {
	c.forwarded = true
	r.Header.Set("Accept-Encoding", "identity")
	// An opted-in websocket session is metered from its frames: no
	// compression (permessage-deflate) may be negotiated.
	r.Header.Del("Sec-WebSocket-Extensions")
}

// askUsage rewrites the body of an OpenAI chat stream that did not ask for
// its usage (policy.Decision.BudgetAskUsage) to ask for it:
// stream_options.include_usage = true, the rest of the JSON as it was
// (the last of repeated keys kept, as the upstream reads them), with its
// exact Content-Length. A body clawd does not have whole and identity
// encoded is left alone: its answer costs its estimate.
func (c *budgetCharge) askUsage(r *http.Request) {
	var body []byte
	switch b := r.Body.(type) {
	case *bufferedBody:
		body = b.decoded
	case *peekedBody:
		if b.encoded || b.n != int64(len(b.peek)) {
			return
		}
		body = b.peek
	default:
		return
	}
	nb, ok := withIncludeUsage(body)
	if !ok {
		return
	}
	if bb, isBuf := r.Body.(*bufferedBody); isBuf {
		bb.raw, bb.decoded, bb.codings = nb, nb, nil
		bb.r = bytes.NewReader(nb)
	} else {
		r.Body = struct {
			io.Reader
			io.Closer
		}{bytes.NewReader(nb), r.Body}
	}
	r.Header.Del("Content-Encoding")
	r.ContentLength = int64(len(nb))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(len(nb)))
	c.usageAdded = true
}

// withIncludeUsage is body (a JSON object) with
// stream_options.include_usage set to true.
func withIncludeUsage(body []byte) ([]byte, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil || m == nil {
		return nil, false
	}
	so := map[string]json.RawMessage{}
	if raw, ok := m["stream_options"]; ok && string(raw) != "null" {
		if json.Unmarshal(raw, &so) != nil || so == nil {
			return nil, false
		}
	}
	so["include_usage"] = json.RawMessage("true")
	enc := func(v any) ([]byte, bool) {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetEscapeHTML(false)
		if e.Encode(v) != nil {
			return nil, false
		}
		return bytes.TrimSuffix(b.Bytes(), []byte("\n")), true
	}
	sb, ok := enc(so)
	if !ok {
		return nil, false
	}
	m["stream_options"] = sb
	return enc(m)
}

// tap wraps the upstream's answer.
func (c *budgetCharge) tap(resp *http.Response) {
	c.status = resp.StatusCode
	c.head.Store(true)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// ReverseProxy needs the body's ReadWriteCloser for the tunnel.
		c.upgraded = true
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			// The gate let it through: every budget opted in.
			c.ws = usage.NewWSMeter()
			resp.Body = &wsTap{ReadWriteCloser: rwc, m: c.ws}
		}
		return
	}
	c.meter = usage.NewMeter(resp.Header.Get("Content-Type"), resp.Header.Get("Content-Encoding"))
	c.body = &tapBody{rc: resp.Body, m: c.meter}
	if c.usageAdded && resp.StatusCode < 300 {
		c.body.strip = &usageStripper{}
	}
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
	case c.ws != nil:
		tokens, unmetered, why = c.ws.Cost(c.est, floor)
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

// tapBody passes the upstream's bytes on unchanged (but for the usage
// chunk clawd asked for: strip) and lets the meter see each chunk as it
// goes.
type tapBody struct {
	rc    io.ReadCloser
	m     *usage.Meter
	eof   bool // the upstream ended the body
	strip *usageStripper
}

func (t *tapBody) Read(p []byte) (int, error) {
	if t.strip != nil {
		return t.strip.read(t, p)
	}
	return t.read(p)
}

func (t *tapBody) read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 {
		t.m.Write(p[:n])
	}
	if err == io.EOF {
		t.eof = true
	}
	return n, err
}

// Close ends the answer. Closed before its end (the agent hung up), the
// rest is read and discarded (bounded: budgetDrainBytes, and the request's
// context, budgetDrainTime after the agent left) until the closing usage was
// read or the upstream ends it: the upstream bills the whole generation.
func (t *tapBody) Close() error {
	if !t.eof {
		buf := make([]byte, 32<<10)
		for read := 0; read < budgetDrainBytes && !t.m.Final(); {
			n, err := t.read(buf)
			read += n
			if err != nil {
				break
			}
		}
	}
	return t.rc.Close()
}

// usageStripper keeps from the agent the SSE event carrying the usage of a
// chat stream clawd asked for (a chunk with no choices and a usage): the
// agent did not ask for it, and code that reads choices[0] of every chunk
// would fail on it. Events pass whole; only that one is dropped.
type usageStripper struct {
	pending []byte // upstream bytes not yet passed on (an incomplete event)
	out     []byte // bytes ready for the agent
	err     error
}

func (u *usageStripper) read(t *tapBody, p []byte) (int, error) {
	for len(u.out) == 0 {
		if u.err != nil {
			if len(u.pending) > 0 {
				u.out, u.pending = u.pending, nil
				break
			}
			return 0, u.err
		}
		buf := make([]byte, 32<<10)
		n, err := t.read(buf)
		u.pending = append(u.pending, buf[:n]...)
		u.err = err
		for {
			i, sep := bytes.Index(u.pending, []byte("\n\n")), 2
			if j := bytes.Index(u.pending, []byte("\r\n\r\n")); j >= 0 && (i < 0 || j < i) {
				i, sep = j, 4
			}
			if i < 0 {
				if len(u.pending) > 1<<20 {
					// Not an event stream clawd can split: pass it on.
					u.out, u.pending = append(u.out, u.pending...), nil
				}
				break
			}
			ev := u.pending[:i+sep]
			if !isUsageChunk(ev) {
				u.out = append(u.out, ev...)
			}
			u.pending = u.pending[i+sep:]
		}
	}
	n := copy(p, u.out)
	u.out = u.out[n:]
	return n, nil
}

// isUsageChunk says whether an SSE event is a chat stream's usage chunk:
// its data is a JSON object with a usage object and no choices.
func isUsageChunk(ev []byte) bool {
	var data []byte
	for _, l := range bytes.Split(ev, []byte("\n")) {
		if d, ok := bytes.CutPrefix(bytes.TrimSuffix(l, []byte("\r")), []byte("data:")); ok {
			data = append(data, bytes.TrimSpace(d)...)
		}
	}
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	return json.Unmarshal(data, &c) == nil && len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}

// wsTap lets a WSMeter see the upstream's half of a websocket tunnel.
type wsTap struct {
	io.ReadWriteCloser
	m *usage.WSMeter
}

func (w *wsTap) Read(p []byte) (int, error) {
	n, err := w.ReadWriteCloser.Read(p)
	if n > 0 {
		w.m.Write(p[:n])
	}
	return n, err
}

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
