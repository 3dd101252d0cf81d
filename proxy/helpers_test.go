package proxy

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/ca"
)

// waitLimit only guards against a hung test; no assertion depends on it.
const waitLimit = 10 * time.Second

var testContainer = policy.Container{ID: "c0ffee", Name: "agent-1", Runtime: "docker", Namespace: "moby", Labels: map[string]string{"team": "a"}}

// rule is a miniature policy rule, enough to exercise the proxy the way the
// real engine does (order, enabled flag, body conditions, rate limits).
type rule struct {
	name         string
	disabled     bool
	host         string // "" = any
	method       string // "" = any
	pathPrefix   string // "" = any
	bodyContains string // "" = no body condition
	action       policy.Action
	limit        int // requests allowed before rate limiting; 0 = none
	timeout      time.Duration
	byCIDR       bool // the rule names the destination in cidrs
}

type fakeDecider struct {
	mu        sync.Mutex
	rules     []rule
	def       policy.Action
	intercept map[string]bool
	used      map[string]int
	inputs    []policy.Input
}

func newDecider(def policy.Action, rules ...rule) *fakeDecider {
	return &fakeDecider{rules: rules, def: def, intercept: map[string]bool{}, used: map[string]int{}}
}

func (f *fakeDecider) set(def policy.Action, rules ...rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.def = rules, def
}

func (f *fakeDecider) HTTPLevel(_ policy.Container, host string, _ netip.Addr, _ uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.intercept[host]
}

func (f *fakeDecider) CIDRCovers(_ policy.Container, _ netip.Addr, _ uint16) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.byCIDR && r.action != policy.Deny {
			return true
		}
	}
	return false
}

func (f *fakeDecider) Decide(in policy.Input) policy.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	in.Header = in.Header.Clone()
	f.inputs = append(f.inputs, in)
	path := in.Path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	for _, r := range f.rules {
		if r.disabled ||
			(r.host != "" && r.host != in.Host) ||
			(r.method != "" && !strings.EqualFold(r.method, in.Method)) || // as policy does
			(r.pathPrefix != "" && !strings.HasPrefix(path, r.pathPrefix)) {
			continue
		}
		if r.bodyContains != "" {
			if !in.BodyKnown {
				return policy.Decision{NeedBody: true}
			}
			if !strings.Contains(string(in.Body), r.bodyContains) {
				continue
			}
		}
		if r.limit > 0 {
			if f.used[r.name] >= r.limit {
				return policy.Decision{Action: policy.Deny, Rule: r.name, Reason: "rate limit", RateLimited: true, RetryAfter: 2500 * time.Millisecond}
			}
			f.used[r.name]++
		}
		return policy.Decision{Action: r.action, Rule: r.name, Reason: "rule " + r.name, ApprovalTimeout: r.timeout, ByCIDR: r.byCIDR}
	}
	return policy.Decision{Action: f.def, Rule: "default", Reason: "default action"}
}

type fakeNames map[string]netip.Addr // name -> the IP clawd's DNS answered

func (n fakeNames) Consistent(_ string, host string, ip netip.Addr) bool {
	a, ok := n[host]
	return ok && a == ip
}

func (n fakeNames) NamesFor(_ string, ip netip.Addr) []string {
	var out []string
	for name, a := range n {
		if a == ip {
			out = append(out, name)
		}
	}
	return out
}

type auditRec struct{ ch chan audit.Entry }

func (a *auditRec) Log(e audit.Entry) { a.ch <- e }

func (a *auditRec) next(t *testing.T) audit.Entry {
	t.Helper()
	select {
	case e := <-a.ch:
		return e
	case <-time.After(waitLimit):
		t.Fatal("no audit entry")
		return audit.Entry{}
	}
}

type env struct {
	t     *testing.T
	srv   *Server
	dec   *fakeDecider
	audit *auditRec
	ca    *ca.CA
}

// newEnv builds a Server; mod adjusts the config before New.
func newEnv(t *testing.T, dec *fakeDecider, mod func(*Config)) *env {
	var d Decider = dec
	if dec == nil {
		d = nil
	}
	t.Helper()
	authority, err := ca.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec := &auditRec{ch: make(chan audit.Entry, 1000)}
	cfg := Config{
		Decider: d,
		Names:   fakeNames{"example.com": netip.MustParseAddr("127.0.0.1"), "api.example.com": netip.MustParseAddr("127.0.0.1")},
		CA:      authority,
		Audit:   rec,
		// Upstreams in these tests live on loopback, which the gate
		// refuses for name rules; the address guard has its own tests.
		Classify: func(netip.Addr) addrclass.Class { return addrclass.Public },
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return &env{t: t, srv: srv, dec: dec, audit: rec, ca: authority}
}

// dial returns the agent's end of a loopback TCP connection whose other end
// is being served by the proxy as if the agent had dialled dst.
func (e *env) dial(dst netip.AddrPort) net.Conn {
	e.t.Helper()
	c := serveLoopback(e.t, e.srv, dst)
	e.t.Cleanup(func() { c.Close() })
	return c
}

// serveLoopback connects to a one-shot loopback listener whose accepted
// connection srv serves as the test container's connection to dst.
func serveLoopback(tb testing.TB, srv *Server, dst netip.AddrPort) net.Conn {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go func() {
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		srv.ServeConn(context.Background(), c, ConnMeta{Container: testContainer, OrigDst: dst})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// client is an agent HTTP client whose every connection goes through the
// proxy to dst. It never follows redirects.
func (e *env) client(dst netip.AddrPort, tlsCfg *tls.Config, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return e.dial(dst), nil
		},
		TLSClientConfig:    tlsCfg,
		ForceAttemptHTTP2:  h2,
		DisableCompression: true,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// upstream is an httptest server counting the requests it saw.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	reqs []*http.Request
	body [][]byte
}

func newUpstream(t *testing.T, tlsOn, h2 bool, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, r)
		u.body = append(u.body, b)
		u.mu.Unlock()
		u.hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("X-Upstream-Proto", r.Proto)
		io.WriteString(w, "hello from upstream "+r.URL.Path)
	}))
	if tlsOn {
		u.EnableHTTP2 = h2
		u.StartTLS()
		// As a real server lists them (httptest offers h2 alone).
		u.TLS.NextProtos = append(u.TLS.NextProtos, "http/1.1")
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) addr() netip.AddrPort {
	return netip.MustParseAddrPort(u.Listener.Addr().String())
}

func (u *upstream) last() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil, nil
	}
	return u.reqs[len(u.reqs)-1], u.body[len(u.body)-1]
}

// jsonBody decodes a clawd error answer.
func jsonBody(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("decode JSON: %v", err)
	}
	return m
}

func mustGet(t *testing.T, c *http.Client, url string) *http.Response {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp
}

// freeAddr returns a loopback address nobody listens on.
func freeAddr(t *testing.T) netip.AddrPort {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddrPort(l.Addr().String())
	l.Close()
	return a
}

func (f *fakeDecider) UpstreamProxyAddrs() []netip.AddrPort { return nil }
