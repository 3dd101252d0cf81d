package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

// FuzzFraming is the differential test of clawd's HTTP/1 framing. Each
// input is served by the real path an agent connection takes (the framer,
// net/http, the handler, ReverseProxy, the upstream transport) to a fake
// upstream that records what it receives, and the same bytes are parsed by
// Node's llhttp (testdata/llhttp.js) and by Go's http.ReadRequest. If
// clawd decides a request, it must be the request llhttp and Go read from
// those bytes (method, target, Host, the headers a rule can match), and
// whatever reaches the upstream must be a decided request, unchanged, with
// the body llhttp read. A refusal is always fine. Every input runs twice:
// in one read and in small reads, which splits heads and bodies anywhere.
//
// Seeds (one per ambiguity the framer knows) are in
// testdata/fuzz/FuzzFraming; `go test ./proxy/` runs them, `make fuzz`
// fuzzes for longer.
func FuzzFraming(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 16<<10 {
			return
		}
		checkFraming(t, data)
	})
}

// checkFraming runs data through clawd (whole and in small reads) and
// checks the differential rule; it returns the whole-read run.
func checkFraming(t *testing.T, data []byte) *frameRun {
	t.Helper()
	node := llhttpParse(t, data)
	ref := goParse(data)
	var first *frameRun
	for _, chunk := range []int{0, 1 + len(data)%7} {
		r := runFraming(t, data, chunk, nil)
		r.check(t, node, ref)
		if first == nil {
			first = r
		}
	}
	return first
}

// --- clawd's side ---

// frameDst is the destination the test agent dialled.
var frameDst = netip.MustParseAddrPort("192.0.2.1:80")

// recDecider allows everything (or asks inner) and records every input.
type recDecider struct {
	mu     sync.Mutex
	inner  Decider
	inputs []policy.Input
}

func (d *recDecider) Decide(in policy.Input) policy.Decision {
	in.Header = in.Header.Clone()
	d.mu.Lock()
	d.inputs = append(d.inputs, in)
	d.mu.Unlock()
	if d.inner != nil {
		return d.inner.Decide(in)
	}
	return policy.Decision{Action: policy.Allow, Rule: "fuzz-allow"}
}

func (d *recDecider) HTTPLevel(policy.Container, string, netip.Addr, uint16) bool { return false }

func (d *recDecider) CIDRCovers(policy.Container, netip.Addr, uint16) bool { return false }

// anyName is consistent with every name (IP literals must still be the
// destination's).
type anyName struct{}

func (anyName) Consistent(string, string, netip.Addr) bool { return true }
func (anyName) NamesFor(string, netip.Addr) []string       { return nil }

type auditList struct {
	mu sync.Mutex
	e  []audit.Entry
}

func (a *auditList) Log(e audit.Entry) {
	a.mu.Lock()
	a.e = append(a.e, e)
	a.mu.Unlock()
}

// fwdReq is a request the fake upstream received in full.
type fwdReq struct {
	req  *http.Request
	body []byte
}

// frameRun is one input served by clawd.
type frameRun struct {
	data      []byte
	audits    []audit.Entry
	inputs    []policy.Input
	forwarded []fwdReq
	upRaw     [][]byte // bytes each upstream connection received
	answer    []byte   // what the agent received
}

// frameUpstream is the fake upstream: every dial is an in-memory
// connection whose requests are parsed by http.ReadRequest and answered
// 200 (or, with upgrade set, 101 to a WebSocket request, then recorded
// raw).
type frameUpstream struct {
	upgrade bool
	mu      sync.Mutex
	wg      sync.WaitGroup
	conns   []net.Conn
	raw     []*bytes.Buffer
	fwd     []fwdReq
}

func (u *frameUpstream) dial(context.Context, string, string) (net.Conn, error) {
	c, s := net.Pipe()
	rec := &bytes.Buffer{}
	u.mu.Lock()
	u.conns = append(u.conns, c, s)
	u.raw = append(u.raw, rec)
	u.mu.Unlock()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		defer s.Close()
		br := bufio.NewReader(io.TeeReader(s, lockedBuf{&u.mu, rec}))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, err := io.ReadAll(req.Body)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.fwd = append(u.fwd, fwdReq{req, body})
			u.mu.Unlock()
			if u.upgrade && strings.EqualFold(req.Header.Get("Upgrade"), "websocket") {
				io.WriteString(s, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
				io.Copy(io.Discard, br) // recorded by the tee
				return
			}
			if _, err := io.WriteString(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
				return
			}
		}
	}()
	return c, nil
}

// runFraming serves data as one plain HTTP agent connection through
// serveHTTP (the sniffer, which picks that path, is not under test here)
// and returns what happened. chunk > 0 delivers data in reads of at most
// chunk bytes. inner, if set, decides instead of allowing everything.
func runFraming(t testing.TB, data []byte, chunk int, inner Decider) *frameRun {
	return runFramingUp(t, data, chunk, inner, &frameUpstream{})
}

func runFramingUp(t testing.TB, data []byte, chunk int, inner Decider, up *frameUpstream) *frameRun {
	t.Helper()
	dec := &recDecider{inner: inner}
	al := &auditList{}
	srv, err := New(Config{Decider: dec, Names: anyName{}, Audit: al, Dial: up.dial})
	if err != nil {
		t.Fatal(err)
	}
	agent := newFakeAgent(data, chunk)
	ctx, cancel := context.WithCancel(context.Background())
	cc := &conn{s: srv, c: agent, meta: ConnMeta{Container: testContainer, OrigDst: frameDst},
		ctx: ctx, cancel: cancel, st: &connState{}, start: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		cc.serveHTTP(agent, newHandler(cc, "http", ""))
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		cancel()
		agent.Close()
		t.Fatalf("clawd did not finish serving %q", data)
	}
	cancel()
	up.mu.Lock()
	for _, c := range up.conns {
		c.Close()
	}
	up.mu.Unlock()
	up.wg.Wait()
	r := &frameRun{data: data, inputs: dec.inputs, forwarded: up.fwd, answer: agent.written()}
	al.mu.Lock()
	r.audits = al.e
	al.mu.Unlock()
	for _, b := range up.raw {
		r.upRaw = append(r.upRaw, b.Bytes())
	}
	return r
}

// fakeAgent is the agent's connection as clawd sees it: it delivers the
// input, then behaves like an agent waiting for its answers: net/http's
// background read (1 byte, no deadline) blocks until net/http ends it, and
// the next read of a head, or a body read, sees EOF (the agent sent all it
// had).
type fakeAgent struct {
	mu     sync.Mutex
	cond   *sync.Cond
	in     []byte
	chunk  int
	out    bytes.Buffer
	rdl    time.Time
	closed bool
}

func newFakeAgent(in []byte, chunk int) *fakeAgent {
	a := &fakeAgent{in: in, chunk: chunk}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *fakeAgent) Read(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		switch {
		case a.closed:
			return 0, net.ErrClosed
		case !a.rdl.IsZero() && !time.Now().Before(a.rdl):
			return 0, os.ErrDeadlineExceeded
		case len(a.in) > 0:
			q := p
			if a.chunk > 0 && len(q) > a.chunk {
				q = q[:a.chunk]
			}
			n := copy(q, a.in)
			a.in = a.in[n:]
			return n, nil
		case a.rdl.IsZero() && len(p) == 1:
			a.cond.Wait()
		default:
			return 0, io.EOF
		}
	}
}

func (a *fakeAgent) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, net.ErrClosed
	}
	return a.out.Write(p)
}

func (a *fakeAgent) written() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return bytes.Clone(a.out.Bytes())
}

func (a *fakeAgent) Close() error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.cond.Broadcast()
	return nil
}

func (a *fakeAgent) SetDeadline(t time.Time) error { return a.SetReadDeadline(t) }
func (a *fakeAgent) SetReadDeadline(t time.Time) error {
	a.mu.Lock()
	a.rdl = t
	a.mu.Unlock()
	a.cond.Broadcast()
	return nil
}
func (a *fakeAgent) SetWriteDeadline(time.Time) error { return nil }
func (a *fakeAgent) LocalAddr() net.Addr              { return net.TCPAddrFromAddrPort(frameDst) }
func (a *fakeAgent) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 40000}
}

// refused reports whether clawd answered with its framing refusal.
func (r *frameRun) refused() bool {
	return bytes.Contains(r.answer, []byte(`"error":"ambiguous_request"`)) ||
		bytes.Contains(r.answer, []byte(`"error":"headers_too_large"`))
}

// statuses lists the status codes of the answers the agent got (final
// ones, and 101).
func (r *frameRun) statuses() []int {
	var out []int
	br := bufio.NewReader(bytes.NewReader(r.answer))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			out = append(out, resp.StatusCode)
		}
	}
}

// --- the real servers' side ---

type nodeReq struct {
	Method    string      `json:"method"`
	URL       string      `json:"url"`
	Major     int         `json:"major"`
	Minor     int         `json:"minor"`
	Headers   [][2]string `json:"headers"`
	Trailers  [][2]string `json:"trailers"`
	Body      string      `json:"body"`
	Upgrade   bool        `json:"upgrade"`
	KeepAlive bool        `json:"keepAlive"`
	Complete  bool        `json:"complete"`
}

type nodeResult struct {
	Requests []nodeReq `json:"requests"`
	Error    string    `json:"error"`
	Reason   string    `json:"reason"`
}

var llhttp struct {
	once sync.Once
	mu   sync.Mutex
	in   io.Writer
	out  *bufio.Reader
	err  error
}

// llhttpParse parses data with Node's HTTP parser. Node is required: the
// test fails (never skips) without it (scripts/deps.sh installs it).
func llhttpParse(t testing.TB, data []byte) nodeResult {
	t.Helper()
	llhttp.once.Do(func() {
		node, err := exec.LookPath("node")
		if err != nil {
			llhttp.err = fmt.Errorf("node (Node.js) is required for the differential framing test: %v (scripts/deps.sh installs it)", err)
			return
		}
		cmd := exec.Command(node, "testdata/llhttp.js")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			llhttp.err = err
			return
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			llhttp.err = err
			return
		}
		if err := cmd.Start(); err != nil {
			llhttp.err = err
			return
		}
		llhttp.in, llhttp.out = in, bufio.NewReaderSize(out, 1<<20)
	})
	if llhttp.err != nil {
		t.Fatal(llhttp.err)
	}
	llhttp.mu.Lock()
	defer llhttp.mu.Unlock()
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	if _, err := llhttp.in.Write(append(msg, data...)); err != nil {
		t.Fatalf("llhttp: %v", err)
	}
	line, err := llhttp.out.ReadBytes('\n')
	if err != nil {
		t.Fatalf("llhttp: %v", err)
	}
	var res nodeResult
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("llhttp: %v: %s", err, line)
	}
	return res
}

// latin1 turns Node's latin1 decoding back into the bytes.
func latin1(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		b = append(b, byte(r))
	}
	return string(b)
}

type goReq struct {
	req     *http.Request
	body    []byte
	bodyErr error
}

// goParse reads data as a sequence of requests with http.ReadRequest
// (empty lines before a request skipped, as llhttp and the framer do).
func goParse(data []byte) []goReq {
	var out []goReq
	br := bufio.NewReader(bytes.NewReader(data))
	for {
		for {
			if b, _ := br.Peek(2); string(b) != "\r\n" {
				break
			}
			br.Discard(2)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		body, err := io.ReadAll(req.Body)
		out = append(out, goReq{req, body, err})
		if err != nil {
			return out
		}
	}
}

// --- the rule ---

// view is a request as a rule can see it.
type view struct {
	method, target, host string
	header               map[string][]string
}

func (v view) String() string {
	return fmt.Sprintf("%s %s host=%q %v", v.method, v.target, v.host, v.header)
}

// notCompared are headers the comparison leaves out: framing (compared as
// the body), and Host (compared as host).
var notCompared = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Trailer": true}

func headerView(h map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, vv := range h {
		k = textproto.CanonicalMIMEHeaderKey(k)
		if !notCompared[k] {
			out[k] = append(out[k], vv...)
		}
	}
	return out
}

func inputView(in policy.Input) view {
	return view{in.Method, in.Path, in.Host, headerView(in.Header)}
}

// nodeView is what llhttp read, as clawd would decide it.
func nodeView(n nodeReq) view {
	h := map[string][]string{}
	host := ""
	for _, kv := range n.Headers {
		k := textproto.CanonicalMIMEHeaderKey(latin1(kv[0]))
		if k == "Host" && host == "" {
			host = latin1(kv[1])
		}
		h[k] = append(h[k], latin1(kv[1]))
	}
	target := latin1(n.URL)
	if n.Method == "CONNECT" {
		host, target = target, "/" // Go decides CONNECT host:port as path "/"
	} else if i := strings.Index(target, "://"); i > 0 && !strings.HasPrefix(target, "/") {
		rest := target[i+3:]
		j := strings.IndexAny(rest, "/?")
		if j < 0 {
			j = len(rest)
		}
		host, target = rest[:j], rest[j:]
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
	}
	hn := hostname.Normalize(host)
	if hn == "" {
		hn = frameDst.Addr().String()
	}
	return view{n.Method, target, hn, headerView(h)}
}

func goView(r *http.Request) view {
	target := r.RequestURI
	if !strings.HasPrefix(target, "/") {
		target = r.URL.RequestURI()
	}
	host := hostname.Normalize(r.Host)
	if host == "" {
		host = frameDst.Addr().String()
	}
	return view{r.Method, target, host, headerView(r.Header)}
}

func sameView(a, b view) bool {
	if a.method != b.method || a.target != b.target || a.host != b.host || len(a.header) != len(b.header) {
		return false
	}
	for k, v := range a.header {
		if !slices.Equal(v, b.header[k]) {
			return false
		}
	}
	return true
}

// hopByHop are the headers ReverseProxy does not forward.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// forwardedView is what the upstream must get for a decided view: the
// headers ReverseProxy drops (hop-by-hop, those Connection names, and the
// X-Forwarded ones Rewrite removes) left out, and an empty User-Agent,
// which Go does not send.
func forwardedView(v view) view {
	h := map[string][]string{}
	for k, vv := range v.header {
		h[k] = vv
	}
	for _, c := range v.header["Connection"] {
		for _, f := range strings.Split(c, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	up := http.Header{"Connection": v.header["Connection"], "Upgrade": v.header["Upgrade"]}
	stripH2CUpgrade(up)
	for _, k := range hopByHop {
		delete(h, k)
	}
	if t := upgradeType(up); t != "" { // ReverseProxy passes the upgrade on
		h["Connection"], h["Upgrade"] = []string{"Upgrade"}, []string{t}
	}
	if httpguts.HeaderValuesContainsToken(v.header["Te"], "trailers") {
		h["Te"] = []string{"trailers"} // and this one
	}
	if ua, ok := h["User-Agent"]; ok && len(ua) == 1 && ua[0] == "" {
		delete(h, "User-Agent")
	}
	v.header = h
	return v
}

// check applies the differential rule to the run.
func (r *frameRun) check(t *testing.T, node nodeResult, ref []goReq) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("input %q:\n"+format, append([]any{r.data}, args...)...)
	}
	// The requests the handler served, in order: each has one audit
	// line; those that reached the policy (all but Host mismatches)
	// one recorded input.
	type served struct {
		e  audit.Entry
		in *policy.Input
	}
	var handled []served
	inputs := r.inputs
	for _, e := range r.audits {
		if e.Rule == ruleAmbiguous {
			continue
		}
		s := served{e: e}
		if e.Rule != "host-mismatch" {
			if len(inputs) == 0 {
				fail("audit line %+v without a decision", e)
				return
			}
			s.in = &inputs[0]
			inputs = inputs[1:]
		}
		handled = append(handled, s)
	}
	if len(inputs) != 0 {
		fail("%d decisions without an audit line", len(inputs))
	}
	// llhttp's view stops after an upgrade (or CONNECT), where clawd,
	// whose upstream never switches here, reads on; an llhttp error on a
	// method it does not know (every token is a method to Go and nginx;
	// llhttp has a fixed list) stops the comparison with llhttp too.
	nodeUntil := len(node.Requests)
	nodeStopped := node.Error == "HPE_INVALID_METHOD"
	for i, n := range node.Requests {
		if n.Upgrade {
			nodeUntil, nodeStopped = i+1, true
			break
		}
	}
	for k, s := range handled {
		var v view
		if s.in != nil {
			v = inputView(*s.in)
		} else {
			v = view{method: s.e.Method, host: s.e.Host}
		}
		cmp := func(w view) bool {
			if s.in == nil {
				return v.method == w.method && v.host == w.host
			}
			return sameView(v, w)
		}
		switch {
		case k < nodeUntil:
			if w := nodeView(node.Requests[k]); !cmp(w) {
				fail("request %d: clawd decided\n  %v\nllhttp read\n  %v", k, v, w)
			}
		case !nodeStopped:
			fail("request %d: clawd decided\n  %v\nwhich llhttp refuses (%s: %s)", k, v, node.Error, node.Reason)
		}
		if k >= len(ref) {
			fail("request %d: clawd decided\n  %v\nwhich http.ReadRequest does not read", k, v)
		} else if w := goView(ref[k].req); !cmp(w) {
			fail("request %d: clawd decided\n  %v\nhttp.ReadRequest read\n  %v", k, v, w)
		}
	}
	// Everything the upstream received was decided, in order, unchanged,
	// with the body the real parsers read.
	next := 0
	for j, fw := range r.forwarded {
		got := goView(fw.req)
		found := -1
		for k := next; k < len(handled); k++ {
			if s := handled[k]; s.in != nil {
				if sameView(got, forwardedView(inputView(*s.in))) {
					found = k
					break
				}
			}
		}
		if found < 0 {
			fail("upstream received request %d that clawd did not decide:\n  %v\ndecided: %v", j, got, r.inputs)
			continue
		}
		next = found + 1
		if found < nodeUntil {
			n := node.Requests[found]
			body, _ := base64.StdEncoding.DecodeString(n.Body)
			if !n.Complete || !bytes.Equal(body, fw.body) {
				fail("request %d: upstream received body %q, llhttp read %q (complete %v)", found, fw.body, body, n.Complete)
			}
		}
		if found < len(ref) && (ref[found].bodyErr != nil || !bytes.Equal(ref[found].body, fw.body)) {
			fail("request %d: upstream received body %q, http.ReadRequest read %q (%v)", found, fw.body, ref[found].body, ref[found].bodyErr)
		}
	}
	// What clawd sends upstream is read the same way by llhttp.
	for _, raw := range r.upRaw {
		if len(raw) == 0 {
			continue
		}
		n := llhttpParse(t, raw)
		g := goParse(raw)
		for i := 0; i < len(g) && i < len(n.Requests) && !(i > 0 && n.Requests[i-1].Upgrade); i++ {
			if g[i].bodyErr != nil {
				break
			}
			if a, b := goView(g[i].req), nodeView(n.Requests[i]); !sameView(a, b) {
				fail("upstream bytes %q: Go reads\n  %v\nllhttp reads\n  %v", raw, a, b)
			}
		}
		if len(n.Requests) < len(g) && n.Error != "HPE_INVALID_METHOD" &&
			!(len(n.Requests) > 0 && n.Requests[len(n.Requests)-1].Upgrade) {
			fail("upstream bytes %q: llhttp refuses them: %s: %s", raw, n.Error, n.Reason)
		}
	}
}

func (d *recDecider) UpstreamProxyAddrs() []netip.AddrPort { return nil }
