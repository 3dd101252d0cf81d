package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

var discardLog = log.New(io.Discard, "", 0)

// flushInterval bounds how long a slowly arriving response body with a known
// length may sit in the agent connection's write buffer.
const flushInterval = 10 * time.Millisecond

// copyBuffers recycles ReverseProxy's 32 KiB copy buffers: one allocation per
// request otherwise, and the garbage collector's largest cost under load.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { return new([copyBufSize]byte) }}}

const copyBufSize = 32 << 10

// bufferPool pools the buffers as array pointers: putting a pointer back
// into the pool allocates nothing (a *[]byte made in Put would).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte { return b.p.Get().(*[copyBufSize]byte)[:] }
func (b *bufferPool) Put(p []byte) {
	if cap(p) >= copyBufSize {
		b.p.Put((*[copyBufSize]byte)(p[:copyBufSize]))
	}
}

// handler decides and forwards the HTTP requests of one agent connection
// (plain HTTP/1.x, or HTTP inside intercepted TLS).
type handler struct {
	cc     *conn
	scheme string             // "http" or "https"
	sni    string             // intercepted server name; "" for plain HTTP
	tr     *upstreamTransport // the direct route's
	// routes are the transports through upstream proxies, one per route
	// the connection's requests were decided to take (created on first
	// use): a connection to one upstream is never reused for another
	// route.
	routesMu  sync.Mutex
	routes    map[policy.UpstreamProxy]*upstreamTransport
	rp        *httputil.ReverseProxy
	key       string      // the container's Key
	budgetKey string      // the container's BudgetKey
	base      audit.Entry // the connection's part of every request's entry
}

// reqInfo travels in the request context from ServeHTTP to the proxy hooks.
type reqInfo struct {
	host    string
	route   policy.UpstreamProxy // the decision's upstream proxy; zero: direct
	inj     Injection
	e       *audit.Entry
	counter *countingBody
	out     http.Header   // the agent's response header (rw.Header())
	charge  *budgetCharge // LLM budgets (issue 16): nil when no budget applies
	// mcp is the decision of an `mcp: true` rule (issue 16, "mcp"): its
	// tools/list answers are filtered (proxy/mcp.go).
	mcp *policy.MCPDecision
}

type reqInfoKey struct{}

func newHandler(cc *conn, scheme, sni string) *handler {
	s := cc.s
	dst := cc.meta.OrigDst.String()
	h := &handler{cc: cc, scheme: scheme, sni: sni, key: cc.meta.Container.Key(), budgetKey: cc.meta.Container.BudgetKey(), base: s.entry(cc.meta, scheme)}
	h.tr = h.newTransport(policy.UpstreamProxy{})
	h.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = scheme
			pr.Out.URL.Host = pr.In.Host
			if pr.Out.URL.Host == "" {
				pr.Out.URL.Host = dst
			}
			pr.Out.Host = pr.In.Host
		},
		Transport: h,
		// Responses of unknown length and event streams are flushed at once
		// by ReverseProxy itself; a response with a Content-Length goes out
		// in one write when it is complete (or every flushInterval while it
		// trickles), instead of one write for the header and one per chunk.
		FlushInterval:  flushInterval,
		BufferPool:     copyBuffers,
		ErrorLog:       discardLog,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.upstreamError,
	}
	return h
}

// newTransport is the upstream transport of one route. Every dial goes to
// OrigDst, directly or by CONNECT through the route's proxy: the Host
// header is the agent's word, not an address.
func (h *handler) newTransport(route policy.UpstreamProxy) *upstreamTransport {
	s := h.cc.s
	orig := h.cc.meta.OrigDst
	dial := func(ctx context.Context) (net.Conn, error) { return s.dialRoute(ctx, route, orig) }
	fallback := &http.Transport{
		Proxy:               nil, // never an environment proxy: the route says
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		TLSClientConfig:     h.upstreamTLS(),
		ForceAttemptHTTP2:   h.scheme == "https",
		DisableCompression:  true, // pass bodies as they are
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: tlsHandshakeTimeout,
	}
	// The direct path checks idle connections on their socket; a tunnel
	// inside TLS to an https proxy has none it could peek at, so such
	// routes keep http.Transport's pooling.
	direct := h.scheme == "http" && directUpstream && route.Scheme != "https"
	return newUpstreamTransport(fallback, direct, dial)
}

// upstreamTLS is how an intercepted connection's upstream is verified:
// the agent's server name against UpstreamRoots (the system's when nil).
func (h *handler) upstreamTLS() *tls.Config {
	return &tls.Config{
		ServerName: h.sni,
		RootCAs:    h.cc.s.cfg.UpstreamRoots,
		MinVersion: tls.VersionTLS12,
	}
}

// transport returns the route's transport.
func (h *handler) transport(route policy.UpstreamProxy) *upstreamTransport {
	if route.IsZero() {
		return h.tr
	}
	h.routesMu.Lock()
	defer h.routesMu.Unlock()
	t := h.routes[route]
	if t == nil {
		if h.routes == nil {
			h.routes = make(map[policy.UpstreamProxy]*upstreamTransport)
		}
		t = h.newTransport(route)
		h.routes[route] = t
	}
	return t
}

// RoundTrip sends req on the transport of the route it was decided to take.
func (h *handler) RoundTrip(req *http.Request) (*http.Response, error) {
	var route policy.UpstreamProxy
	if ri, _ := req.Context().Value(reqInfoKey{}).(*reqInfo); ri != nil {
		route = ri.route
	}
	return h.transport(route).RoundTrip(req)
}

// closeIdle closes the idle upstream connections of every route.
func (h *handler) closeIdle() {
	h.tr.CloseIdleConnections()
	h.routesMu.Lock()
	defer h.routesMu.Unlock()
	for _, t := range h.routes {
		t.CloseIdleConnections()
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.cc.s
	g0 := s.gen.Load() // before the decision: see trackChecked
	meta := &h.cc.meta // not a copy: it would escape with the closures below
	start := s.cfg.Now()
	rw := &respWriter{ResponseWriter: w}
	bodyRead := false // readBody was called (a 100 Continue went out if asked)
	rw.before = func() { h.drainUnread(rw, r, bodyRead) }
	host := hostname.Normalize(r.Host)
	if host == "" {
		host = meta.OrigDst.Addr().String()
	}
	e := h.base
	e.SNI, e.Host, e.Method, e.Path = h.sni, host, r.Method, r.URL.Path
	var d policy.Decision
	var out approval.Outcome // of the hold, when d is Approve
	var counter *countingBody
	defer func() {
		e.Status = rw.status
		e.BytesIn = rw.n
		if counter != nil {
			e.BytesOut = counter.n.Load()
		}
		if rw.reason != "" {
			e.Reason = rw.reason
		}
		if d.MCP != nil {
			s.recordMCP(e, d, start)
			return
		}
		s.record(e, d, start)
	}()

	target := r.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = r.URL.RequestURI()
	}
	if resolved, ok := policy.ResolveDotSegments(target); ok {
		// The path the policy decides on (dot segments resolved) is the
		// path the upstream gets: one that routes on the raw path
		// cannot read another rule's path into it (LLM budgets, issue 16).
		if u, err := url.ParseRequestURI(resolved); err == nil {
			target = resolved
			r.URL.Path, r.URL.RawPath, r.RequestURI = u.Path, u.RawPath, resolved
		}
	}
	info := errInfo{Method: r.Method, Host: host, Path: r.URL.Path}

	f := reqFacts{key: h.key, sni: h.sni, cls: &h.cc.cls, names: h.cc.allNames, body: func() (int64, bool, []byte) {
		bodyRead = true // a 100 Continue may go out
		return peekBody(r)
	}, encodedBody: hasEncodedBody(r), in: policy.Input{
		Container: meta.Container,
		DstIP:     meta.OrigDst.Addr(),
		DstPort:   meta.OrigDst.Port(),
		Host:      host,
		Method:    r.Method,
		Path:      target,
		Header:    r.Header,
		Program:   meta.Program,
	}}
	d = s.gateRequest(f, meta.OrigDst)
	if d.Rule == ruleHostMismatch {
		info.Error, info.Reason = "host_mismatch", d.Reason
		writeJSON(rw, http.StatusForbidden, info)
		return
	}
	in := &f.in
	var body []byte
	buffered := false
	if d.NeedBody {
		var ok bool
		bodyRead = true
		if body, ok = h.readBody(rw, r, info); !ok {
			e.Action = audit.ActionDeny
			return
		}
		buffered = true
		in.Body, in.BodyKnown = body, true
		d = s.gateRequest(f, meta.OrigDst)
	}
	info.Rule, info.Reason = d.Rule, d.Reason
	ruleSteps := d.NextSteps // the author's text, for refusals by this rule
	// LLM budgets (issue 16): an admitted request is settled once, however
	// it ends (before the audit line above is written: it carries tokens).
	charge := s.admitted(h.budgetKey, d, &e)
	defer charge.finish()

	switch d.Action {
	case policy.Allow:
	case policy.Approve:
		if s.cfg.Approver == nil {
			e.Action, e.Reason = audit.ActionDeny, "approval not configured"
			info.Error, info.Reason = "blocked_by_policy", e.Reason
			writeJSON(rw, http.StatusForbidden, info)
			return
		}
		if !buffered {
			var ok bool
			bodyRead = true
			if body, ok = h.readBody(rw, r, info); !ok {
				e.Action = audit.ActionDeny
				return
			}
			buffered = true
		}
		// A held request's head stays in memory too (and a copy on the
		// card): it counts against the same budget as held bodies.
		headLease := s.budget.lease(h.key)
		defer headLease.release()
		if err := headLease.grow(2 * headBytes(r)); err != nil {
			be := err.(*bodyError)
			e.Action, e.Reason = audit.ActionDeny, be.reason
			be.write(rw, info)
			return
		}
		out = h.hold(r, body, host, target, d)
		e.By, e.ApprovalID = out.By, out.ID
		e.Action = out.Status
		if e.Action == "" {
			e.Action = "denied"
		}
		if !out.Approved {
			e.Reason = out.Reason
			if out.Status != approval.StatusRestarting && out.Status != approval.StatusLimit {
				info.NextSteps = ruleSteps
			}
			if !mcpNotApproved(rw, r, d, out) {
				writeOutcome(rw, out, info)
			}
			return
		}
	default:
		info.NextSteps = ruleSteps
		if d.BudgetRefused != "" {
			// Not the rule's refusal: clawd's own next_steps.
			info.NextSteps = ""
			status := http.StatusForbidden
			switch d.BudgetRefused {
			case "budget_unreadable_body":
				info.Error, status = "budget_unreadable_body", http.StatusBadRequest
			default:
				info.Error = "budget_unmeterable"
			}
			writeJSON(rw, status, info)
			return
		}
		if d.BudgetSpent {
			if !d.BudgetBusy {
				s.m.budgetDenied.WithLabelValues(d.Budget.ID).Inc()
			}
			writeBudgetSpent(rw, d, info)
			return
		}
		if d.RateLimited {
			info.Error = "rate_limited"
			secs := retrySeconds(d)
			info.RetryAfter = secs
			rw.Header().Set("Retry-After", itoa(secs))
			writeJSON(rw, http.StatusTooManyRequests, info)
			return
		}
		if mcpDenied(rw, r, d) {
			return
		}
		if d.MCP != nil && d.MCP.ContentTypeRefused != "" {
			info.Error = "mcp_content_type_refused"
			writeJSON(rw, http.StatusUnsupportedMediaType, info)
			return
		}
		info.Error = "blocked_by_policy"
		writeJSON(rw, http.StatusForbidden, info)
		return
	}

	// A compressed body the injector must see (placeholders, misuse) is
	// buffered and decoded like a held one.
	if !buffered && hasEncodedBody(r) && s.injectorScans(host) {
		bodyRead = true
		if _, ok := h.readBody(rw, r, info); !ok {
			e.Action = audit.ActionDeny
			return
		}
		buffered = true
	}
	if d.BudgetAskUsage && charge != nil {
		// LLM budgets: the stream is asked for its usage (usage.go).
		charge.askUsage(r)
	}
	// Exactly the bytes that were decided on (and approved) go upstream.
	bb := forwardBuffered(r)
	if r.Body != nil && r.Body != http.NoBody {
		counter = &countingBody{rc: r.Body}
		r.Body = counter
	}
	stripH2CUpgrade(r.Header)
	ri := &reqInfo{host: host, route: d.UpstreamProxy, e: &e, counter: counter, out: rw.Header(), mcp: d.MCP}
	if d.Audit {
		// Mode audit refuses nothing (invariant 5): the agent sees every
		// tool the server lists; the audit lines say which calls would
		// have been refused.
		ri.mcp = nil
	}
	if ri.mcp != nil {
		// tools/list answers are filtered: clawd reads them uncompressed.
		r.Header.Set("Accept-Encoding", "identity")
	}
	if d.MCP != nil && d.MCP.ContentType != "" {
		// The body goes on labelled as what clawd read it as: UTF-8,
		// no parameters a server could decode it by.
		r.Header.Set("Content-Type", d.MCP.ContentType)
	}
	if inj := s.cfg.Injector; inj != nil {
		var injection Injection
		var err error
		if bb.encoded() {
			if injection, err = h.injectDecoded(inj, r, host, bb); err == nil && r.Body != nil && r.Body != http.NoBody {
				counter = &countingBody{rc: r.Body}
				r.Body, ri.counter = counter, counter
			}
		} else {
			injection, err = inj.Inject(r, host)
		}
		if err != nil {
			var be *bodyError
			if errors.As(err, &be) {
				e.Action, e.Reason = audit.ActionDeny, be.reason
				info.Rule = ""
				be.write(rw, info)
				return
			}
			if IsPlaceholderMisuse(err) {
				e.Event, e.Action, e.Reason = audit.EventExfiltration, audit.ActionDeny, "placeholder sent to a host it is not bound to"
				info.Error, info.Rule, info.Reason = "placeholder_misuse", "", e.Reason
				writeJSON(rw, http.StatusForbidden, info)
				return
			}
			// The error text may come from secret handling: keep it out
			// of logs and responses.
			e.Action, e.Reason = audit.ActionDeny, "secret injection failed"
			info.Error, info.Rule, info.Reason = "injection_failed", "", e.Reason
			writeJSON(rw, http.StatusInternalServerError, info)
			return
		}
		ri.inj = injection
	}
	// Every forwarded request is tracked while it lasts (its body and its
	// response may stream for hours, an upgrade turns it into a tunnel):
	// re-decided as this request on reload and revocation, with no rate
	// limit charged again; decided again at once if the policy changed
	// while it was held.
	rq := &requestRecheck{s: s, f: f, was: d, out: out, dst: meta.OrigDst}
	rq.f.in.Header, rq.f.in.Recheck = r.Header.Clone(), true
	if !rq.f.in.BodyKnown {
		rq.f.in.Body, rq.f.in.BodyKnown = nil, true
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if charge != nil {
		// LLM budgets: an agent that hangs up after the answer's head does
		// not stop the upstream (usage.go).
		ctx, cancel = charge.context(r.Context())
	} else {
		ctx, cancel = context.WithCancel(r.Context())
	}
	defer cancel()
	kill := cancel // HTTP/2: this stream only
	if r.ProtoMajor == 1 {
		kill = func() { cancel(); h.cc.kill() }
	}
	untrack, ok := s.trackChecked(&live{entry: e, kill: kill, recheck: rq.recheck}, g0)
	defer untrack()
	if !ok {
		e.Action, e.Reason = audit.ActionDeny, "the policy or approvals changed before the request was forwarded"
		info.Error, info.Reason = "blocked_by_policy", e.Reason
		writeJSON(rw, http.StatusForbidden, info)
		return
	}
	rw.before = nil // from here the body goes upstream
	if charge != nil {
		charge.prepare(r)
		ri.charge = charge
	}
	h.rp.ServeHTTP(rw, r.WithContext(context.WithValue(ctx, reqInfoKey{}, ri)))
}

// requestRecheck re-decides a forwarded request as it was decided (its
// live.recheck): the facts it was decided on, with no rate limit charged
// again, kept while it streams. One allocation per request, instead of a
// closure and the copies it would capture.
type requestRecheck struct {
	s   *Server
	f   reqFacts
	was policy.Decision
	out approval.Outcome // of the hold, when was is Approve
	dst netip.AddrPort
}

func (q *requestRecheck) recheck() (policy.Decision, bool) {
	nd := q.s.gateRequest(q.f, q.dst)
	if nd.Action == policy.Deny || !q.s.stillAllowed(q.was, q.out, nd) {
		return nd, false
	}
	return routeKept(q.was, nd)
}

// budgetPeek is how much of a request body the estimate of a budgeted
// request reads before it is forwarded (LLM budgets, issue 16): enough for
// the head of any LLM API request, where SDKs put max_tokens.
const budgetPeek = 64 << 10

// peekBody gives a budget's estimate the body's facts (reqFacts.body): a
// buffered body whole (decoded), else its first budgetPeek bytes, read
// and put back in front of the rest, unchanged.
func peekBody(r *http.Request) (n int64, encoded bool, peek []byte) {
	if bb, ok := r.Body.(*bufferedBody); ok {
		return int64(len(bb.decoded)), false, bb.decoded
	}
	if r.Body == nil || r.Body == http.NoBody {
		return 0, false, nil
	}
	if pb, ok := r.Body.(*peekedBody); ok {
		return pb.n, pb.encoded, pb.peek
	}
	encoded = hasEncodedBody(r)
	buf := make([]byte, budgetPeek)
	k, err := io.ReadFull(r.Body, buf)
	buf = buf[:k]
	rest := io.Reader(r.Body)
	n = r.ContentLength
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		n, rest = int64(k), eofReader{}
	default:
		rest = errReader{err}
	}
	pb := &peekedBody{Reader: io.MultiReader(bytes.NewReader(buf), rest), c: r.Body, n: n, encoded: encoded, peek: buf}
	r.Body = pb
	return n, encoded, buf
}

// peekedBody is a request body whose first bytes were read for a budget's
// estimate: the same bytes, in order.
type peekedBody struct {
	io.Reader
	c       io.Closer
	n       int64
	encoded bool
	peek    []byte
}

func (p *peekedBody) Close() error { return p.c.Close() }

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// retrySeconds is a deny's RetryAfter in whole seconds, at least 1.
func retrySeconds(d policy.Decision) int {
	secs := int((d.RetryAfter + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	return secs
}

// Bounds of drainUnread: a bigger or slower body gets the connection closed.
const (
	drainLimit = 64 << 20
	drainTime  = 30 * time.Second
)

// drainUnread reads what is left of an HTTP/1.x request body before clawd
// answers the request itself (403, 413, 429, ...). net/http closes a
// connection with unread body bytes, and a client still sending its body
// then gets a reset, which on most TCP stacks discards the answer it had
// been sent: the agent would see "connection reset", not why it was
// refused. Drained to its end, the body leaves the connection usable. A
// client that asked "Expect: 100-continue" and was not sent the 100 yet is
// not read from (reading would invite the body); net/http closes instead.
func (h *handler) drainUnread(w http.ResponseWriter, r *http.Request, bodyRead bool) {
	if r.ProtoMajor != 1 || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return
	}
	if (!bodyRead || r.ContentLength > h.cc.s.cfg.MaxHoldBody) &&
		httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
		return
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(drainTime))
	io.Copy(io.Discard, io.LimitReader(r.Body, drainLimit))
	rc.SetReadDeadline(time.Time{})
}

// headBytes is about what a request's head takes in memory.
func headBytes(r *http.Request) int64 {
	n := int64(len(r.Method) + len(r.RequestURI) + len(r.Host) + 16)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// hold asks the approver. The request context ends when the agent goes away
// (net/http cancels it on client close once the body has been read).
func (h *handler) hold(r *http.Request, body []byte, host, target string, d policy.Decision) approval.Outcome {
	s := h.cc.s
	u := target
	if strings.HasPrefix(target, "/") {
		u = h.scheme + "://" + r.Host + target
	}
	// body is the decoded content: the card shows what the upstream will
	// read; the hash is of the bytes as sent (and as they will be forwarded).
	preview := body
	if len(preview) > s.cfg.PreviewLimit {
		preview = preview[:s.cfg.PreviewLimit]
	}
	raw := body
	if bb, ok := r.Body.(*bufferedBody); ok {
		raw = bb.raw
	}
	sum := sha256.Sum256(raw)
	s.m.held.Inc()
	defer s.m.held.Dec()
	return s.cfg.Approver.Request(r.Context(), approval.Hold{
		Container:  h.cc.meta.Container,
		Method:     r.Method,
		URL:        u,
		Host:       host,
		Path:       r.URL.Path,
		Dst:        h.cc.meta.OrigDst.String(),
		Header:     r.Header.Clone(),
		Body:       bytes.Clone(preview),
		BodySize:   int64(len(body)),
		BodySHA256: hex.EncodeToString(sum[:]),
		Rule:       d.Rule,
		Timeout:    d.ApprovalTimeout,
		Route:      d.Route,
		Generation: d.Generation,
		Program:    h.cc.meta.Program,
		Tools:      holdTools(d.MCP),
	})
}

func (h *handler) modifyResponse(resp *http.Response) error {
	// A 101 passes only as the answer to the upgrade the agent asked for.
	// ReverseProxy refuses any other one too, but without closing the
	// upstream connection the Transport handed over with it; refused
	// here, ReverseProxy closes it (same errors, same 502).
	if resp.StatusCode == http.StatusSwitchingProtocols {
		asked, got := upgradeType(resp.Request.Header), upgradeType(resp.Header)
		if strings.IndexFunc(got, func(r rune) bool { return r < ' ' || r > '~' }) >= 0 {
			return fmt.Errorf("backend tried to switch to invalid protocol %q", got)
		}
		if asked == "" || !strings.EqualFold(asked, got) {
			return fmt.Errorf("backend tried to switch protocol %q when %q was requested", got, asked)
		}
	}
	ri, _ := resp.Request.Context().Value(reqInfoKey{}).(*reqInfo)
	if ri == nil {
		return nil
	}
	if ri.charge != nil {
		ri.charge.tap(resp) // the upstream's own bytes, before scrubbing
	}
	if ri.inj != nil {
		ri.inj.ScrubResponse(resp)
	}
	if ri.mcp != nil {
		filterMCPResponse(resp, ri.mcp, ri.e)
	}
	// The agent gets the upstream's Content-Type or none: net/http would
	// otherwise sniff one from the first body bytes, or not, depending on
	// whether ReverseProxy's periodic flush sends the header first (a
	// race). A nil value suppresses the sniffing and writes nothing.
	if _, ok := resp.Header["Content-Type"]; !ok {
		ri.out["Content-Type"] = nil
	}
	if inj := h.cc.s.cfg.Injector; inj != nil &&
		(resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) &&
		!inj.BoundTo(ri.host) {
		if hint := inj.Hint(ri.host); hint != "" {
			resp.Header.Set("x-clawd-hint", sanitizeHeader(hint))
		}
	}
	return nil
}

func (h *handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		// The agent went away, or only closed its write side after
		// sending (net/http cancels either way). Returning without a
		// write would make net/http send an empty "200 OK" the upstream
		// never gave: abort the connection instead. A budgeted request
		// the upstream had is charged (LLM budgets, issue 16).
		if ri, _ := r.Context().Value(reqInfoKey{}).(*reqInfo); ri != nil {
			ri.charge.abandon()
		}
		panic(http.ErrAbortHandler)
	}
	s := h.cc.s
	// A *url.Error would print the URL, whose query may now hold an
	// injected secret; only the cause is safe to show.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	why := upstreamFailure(err)
	s.log.Info("upstream request failed", zap.String("dst", h.cc.meta.OrigDst.String()), zap.String("why", why), zap.String("detail", logSafe(err.Error())))
	host := hostname.Normalize(r.Host)
	if ri, _ := r.Context().Value(reqInfoKey{}).(*reqInfo); ri != nil {
		host = ri.host
		if m, ok := ri.inj.(interface{ Misuse() error }); ok && m.Misuse() != nil {
			// The body carried a placeholder for another host; the
			// injector cut the upstream request off before its bytes.
			ri.e.Event, ri.e.Action, ri.e.Reason = audit.EventExfiltration, audit.ActionDeny, "placeholder sent to a host it is not bound to"
			writeJSON(w, http.StatusForbidden, errInfo{Error: "placeholder_misuse", Method: r.Method, Host: host, Path: r.URL.Path, Reason: ri.e.Reason})
			return
		}
		ri.e.Reason = "upstream unreachable: " + why
		if pr, ok := proxyReason(err); ok {
			ri.e.Reason = pr
		}
	}
	s.m.upstreamErrors.Inc()
	writeJSON(w, http.StatusBadGateway, errInfo{
		Error:  "upstream_unreachable",
		Method: r.Method,
		Host:   host,
		Path:   r.URL.Path,
		Reason: why, // a fixed text per class: never the upstream's own words
	})
}

// serveHTTP serves HTTP/1.x on c (plain, or TLS-terminated) with net/http on
// a one-connection listener, and returns when the connection is done.
func (cc *conn) serveHTTP(c net.Conn, h *handler) {
	defer h.closeIdle()
	done := make(chan struct{})
	var once sync.Once
	var handlers sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			defer handlers.Done()
			h.ServeHTTP(w, r)
		}),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				once.Do(func() { close(done) })
			}
		},
		ReadHeaderTimeout: 30 * time.Second,
		// "OPTIONS *" is a request like any other: decided, audited and
		// forwarded, not answered by net/http itself.
		DisableGeneralOptionsHandler: true,
		IdleTimeout:                  5 * time.Minute,
		ErrorLog:                     discardLog,
	}
	l := newOneConnListener(frame(c, srv, h)) // proxy/framing.go: every request head is vetted first
	defer l.Close()
	drain := func() { go srv.Shutdown(context.Background()) }
	cc.s.setHooks(cc.st, drain, func() { srv.Close(); c.Close(); cc.c.Close() })
	go srv.Serve(l)
	select {
	case <-done:
	case <-cc.ctx.Done():
		drain()
		<-done
	}
	// A hijacked (upgraded) connection is still being copied by its handler.
	handlers.Wait()
}

// serveH2 serves HTTP/2 on an intercepted TLS connection.
func (cc *conn) serveH2(c net.Conn, h *handler) {
	defer h.closeIdle()
	h2 := &http2.Server{IdleTimeout: 5 * time.Minute}
	base := &http.Server{ErrorLog: discardLog}
	// Registers h2's graceful GOAWAY on base.Shutdown.
	if err := http2.ConfigureServer(base, h2); err != nil {
		cc.s.log.Warn("configure http2", zap.Error(err))
	}
	var handlers sync.WaitGroup
	drain := func() { go base.Shutdown(context.Background()) }
	cc.s.setHooks(cc.st, drain, func() { c.Close(); cc.c.Close() })
	stop := context.AfterFunc(cc.ctx, drain)
	defer stop()
	h2.ServeConn(c, &http2.ServeConnOpts{
		Context:    context.Background(),
		BaseConfig: base,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handlers.Add(1)
			defer handlers.Done()
			h.ServeHTTP(w, r)
		}),
	})
	handlers.Wait()
}

// oneConnListener hands out a single connection, then blocks until closed.
type oneConnListener struct {
	mu     sync.Mutex
	c      net.Conn
	addr   net.Addr
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, addr: c.LocalAddr(), closed: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// respWriter records the status and body bytes sent to the agent. Unwrap
// lets http.ResponseController reach Flush and Hijack (streaming, upgrades).
type respWriter struct {
	http.ResponseWriter
	status int
	n      int64
	before func() // runs once before clawd's own answer goes out; nil when upstream answers
	reason string // why clawd refused the body (budget, size, encoding), for the audit line
}

func (w *respWriter) WriteHeader(code int) {
	if f := w.before; f != nil {
		w.before = nil
		f()
	}
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *respWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts request body bytes sent upstream. The transport
// may still be reading it when the handler's audit line is written (an
// agent that hung up): the count is atomic.
type countingBody struct {
	rc io.ReadCloser
	n  atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// stripH2CUpgrade removes HTTP/2 from an Upgrade offer. An upstream that
// accepted h2c would turn the connection into an HTTP/2 tunnel whose
// requests clawd never decides (ReverseProxy splices any 101); without the
// offer the request is answered as plain HTTP/1.1, as RFC 7540 allows.
// Other upgrades (WebSocket) stay: they were decided as this request.
func stripH2CUpgrade(h http.Header) {
	vals := h.Values("Upgrade")
	if len(vals) == 0 {
		return
	}
	var keep []string
	dropped := false
	for _, v := range vals {
		for _, tok := range strings.Split(v, ",") {
			tok = strings.TrimSpace(tok)
			name, ver, _ := strings.Cut(strings.ToLower(tok), "/")
			switch {
			case tok == "":
			case name == "h2c" || name == "h2" || name == "http" && strings.HasPrefix(ver, "2"):
				dropped = true
			default:
				keep = append(keep, tok)
			}
		}
	}
	if !dropped {
		return
	}
	h.Del("HTTP2-Settings")
	if len(keep) == 0 {
		h.Del("Upgrade")
		return
	}
	h.Set("Upgrade", strings.Join(keep, ", "))
}
