package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// connectProxy is a tiny HTTP CONNECT proxy on loopback: it records each
// CONNECT target and Proxy-Authorization, answers status (200 opens the
// tunnel to the target), and refuses anything that is not CONNECT.
type connectProxy struct {
	l      net.Listener
	status atomic.Int64
	mu     sync.Mutex
	seen   []connectSeen
	other  []string // non-CONNECT request lines (absolute-form etc.)
}

type connectSeen struct{ target, host, auth string }

func newConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{l: l}
	p.status.Store(200)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		p.mu.Lock()
		p.other = append(p.other, req.Method+" "+req.RequestURI)
		p.mu.Unlock()
		io.WriteString(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, connectSeen{target: req.RequestURI, host: req.Host, auth: req.Header.Get("Proxy-Authorization")})
	p.mu.Unlock()
	st := int(p.status.Load())
	if st != 200 {
		io.WriteString(c, "HTTP/1.1 "+itoa(st)+" "+http.StatusText(st)+"\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", req.RequestURI)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

func (p *connectProxy) connects() []connectSeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]connectSeen(nil), p.seen...)
}

func (p *connectProxy) route(cred string) string {
	if cred == "" {
		return "http://" + p.l.Addr().String()
	}
	return "{url: \"http://" + p.l.Addr().String() + "\", credential: " + cred + "}"
}

// livePolicy is a reloadable real policy.
type livePolicy struct{ p atomic.Pointer[policy.Policy] }

func (l *livePolicy) Decide(in policy.Input) policy.Decision { return l.p.Load().Decide(in) }
func (l *livePolicy) HTTPLevel(c policy.Container, h string, ip netip.Addr, port uint16) bool {
	return l.p.Load().HTTPLevel(c, h, ip, port)
}
func (l *livePolicy) CIDRCovers(c policy.Container, ip netip.Addr, port uint16) bool {
	return l.p.Load().CIDRCovers(c, ip, port)
}

func (l *livePolicy) load(t *testing.T, y string) {
	t.Helper()
	p, err := policy.Parse([]byte(y), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l.p.Store(p)
}

const proxyCred = "corp-user:hunter2-proxy-pass"

// upstreamProxyPolicy: example.com intercepted, tls.example.com spliced
// (not intercepted), api.example.com plain HTTP with the set's proxy,
// direct.example.com with upstream_proxy: none.
func upstreamProxyPolicy(route string) string {
	return `
default:
  default_action: deny
  upstream_proxy: ` + route + `
  rules:
    - name: tls-api
      hosts: [example.com]
      intercept: true
      action: allow
    - name: passthrough
      hosts: [tls.example.com]
      action: allow
    - name: direct
      hosts: [direct.example.com]
      action: allow
      upstream_proxy: none
    - name: api
      hosts: [api.example.com]
      action: allow
`
}

// splicePolicy: nothing is intercepted (every test name shares 127.0.0.1,
// so one intercepted name would make the address HTTP-level).
func splicePolicy(route string) string {
	return strings.Replace(upstreamProxyPolicy(route), "intercept: true", "intercept: false", 1)
}

type proxyEnv struct {
	*env
	pol  *livePolicy
	logs *observer.ObservedLogs
}

func newProxyEnv(t *testing.T, route string, mod func(*Config)) *proxyEnv {
	return newProxyEnvPolicy(t, upstreamProxyPolicy(route), mod)
}

func newProxyEnvPolicy(t *testing.T, pol0 string, mod func(*Config)) *proxyEnv {
	pol := &livePolicy{}
	pol.load(t, pol0)
	core, logs := observer.New(zap.DebugLevel)
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = pol
		c.Log = zap.New(core)
		c.ProxyCredential = func(name string) (string, error) {
			if name == "corp" {
				return proxyCred, nil
			}
			return "", errNoSuchCred
		}
		lo := netip.MustParseAddr("127.0.0.1")
		c.Names = fakeNames{"example.com": lo, "api.example.com": lo, "tls.example.com": lo, "direct.example.com": lo}
		if mod != nil {
			mod(c)
		}
	})
	return &proxyEnv{env: e, pol: pol, logs: logs}
}

var errNoSuchCred = &proxyError{reason: "no such credential"}

// noCredential fails the test if the credential (or its Basic form) is in
// any audit entry, log line or response body.
func (e *proxyEnv) noCredential(t *testing.T, texts ...string) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString([]byte(proxyCred))
	check := func(where, s string) {
		if strings.Contains(s, "hunter2") || strings.Contains(s, b64) {
			t.Errorf("the proxy credential leaked into %s: %s", where, s)
		}
	}
	for _, s := range texts {
		check("a response", s)
	}
	for _, l := range e.logs.All() {
		check("a log line", l.Message+" "+strings.Join(func() []string {
			var out []string
			for k, v := range l.ContextMap() {
				out = append(out, k+"="+toString(v))
			}
			return out
		}(), " "))
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case error:
		return x.Error()
	}
	return ""
}

func wantAuth(t *testing.T, got connectSeen) {
	t.Helper()
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte(proxyCred)); got.auth != want {
		t.Errorf("Proxy-Authorization = %q, want %q", got.auth, want)
	}
}

// TestUpstreamProxyIntercepted: intercepted HTTPS goes through the proxy
// as CONNECT to the destination address (not the agent's Host), then TLS
// to the upstream verified for the agent's name; the upstream sees the
// request once.
func TestUpstreamProxyIntercepted(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		px := newConnectProxy(t)
		up := newUpstream(t, true, h2, nil)
		e := newProxyEnv(t, px.route("corp"), func(c *Config) { c.UpstreamRoots = upstreamPool(up) })
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(e.ca.CertPEM())
		cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, h2)
		resp := mustGet(t, cl, "https://example.com/v1/ok")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello from upstream /v1/ok" {
			t.Fatalf("h2=%v: %d %q", h2, resp.StatusCode, b)
		}
		if n := up.hits.Load(); n != 1 {
			t.Errorf("upstream saw %d requests, want 1", n)
		}
		if r, _ := up.last(); r.Host != "example.com" || (h2 && r.ProtoMajor != 2) {
			t.Errorf("upstream saw Host %q proto %s", r.Host, r.Proto)
		}
		cs := px.connects()
		if len(cs) != 1 || cs[0].target != up.addr().String() || cs[0].host != up.addr().String() {
			t.Fatalf("proxy saw %+v, want one CONNECT %s", cs, up.addr())
		}
		wantAuth(t, cs[0])
		if en := e.audit.next(t); en.Action != "allow" || en.Rule != "tls-api" || en.Status != 200 {
			t.Errorf("audit %+v", en)
		}
		e.noCredential(t, string(b))
	}
}

// TestUpstreamProxyVerifiesUpstream: inside the tunnel the upstream's
// certificate is still verified for the agent's name.
func TestUpstreamProxyVerifiesUpstream(t *testing.T) {
	px := newConnectProxy(t)
	up := newUpstream(t, true, false, nil)
	e := newProxyEnv(t, px.route(""), func(c *Config) { c.UpstreamRoots = x509.NewCertPool() }) // trusts nothing
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	resp := mustGet(t, e.client(up.addr(), &tls.Config{RootCAs: pool}, false), "https://example.com/")
	if m := jsonBody(t, resp); resp.StatusCode != 502 || m["error"] != "upstream_unreachable" {
		t.Errorf("unverifiable upstream via proxy: %d %v", resp.StatusCode, m)
	}
	if up.hits.Load() != 0 || len(px.connects()) != 1 {
		t.Errorf("upstream hits %d, connects %d", up.hits.Load(), len(px.connects()))
	}
}

// TestUpstreamProxySplice: TLS passthrough is spliced through the tunnel;
// the CONNECT names the address, the SNI stays inside.
func TestUpstreamProxySplice(t *testing.T) {
	px := newConnectProxy(t)
	up := newUpstream(t, true, false, nil)
	e := newProxyEnvPolicy(t, splicePolicy(px.route("corp")), nil)
	cl := e.client(up.addr(), &tls.Config{RootCAs: upstreamPool(up), ServerName: "example.com"}, false)
	// The test upstream's certificate is for example.com (its SNI here),
	// which splicePolicy does not intercept.
	req, _ := http.NewRequest("GET", "https://example.com/spliced", nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello from upstream /spliced" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	cl.Transport.(*http.Transport).CloseIdleConnections()
	en := e.audit.next(t)
	if en.Action != "allow" || en.Rule != "tls-api" || en.SNI != "example.com" || en.Proto != "tls" || en.BytesIn == 0 {
		t.Errorf("audit %+v", en)
	}
	cs := px.connects()
	if len(cs) != 1 || cs[0].target != up.addr().String() {
		t.Fatalf("proxy saw %+v, want CONNECT %s", cs, up.addr())
	}
	wantAuth(t, cs[0])
}

// TestUpstreamProxyPlainHTTP: plain HTTP is tunnelled too (never an
// absolute-form request to the proxy), per route on one agent connection:
// a rule with upstream_proxy: none goes direct.
func TestUpstreamProxyPlainHTTP(t *testing.T) {
	for _, direct := range []bool{true, false} {
		t.Run(map[bool]string{true: "fastpath", false: "transport"}[direct], func(t *testing.T) {
			old := directUpstream
			directUpstream = direct
			defer func() { directUpstream = old }()
			px := newConnectProxy(t)
			up := newUpstream(t, false, false, nil)
			e := newProxyEnv(t, px.route("corp"), nil)
			cl := e.client(up.addr(), nil, false)
			for _, u := range []string{"http://api.example.com/a", "http://direct.example.com/b", "http://api.example.com/c"} {
				resp := mustGet(t, cl, u)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "hello from upstream") {
					t.Fatalf("%s: %d %q", u, resp.StatusCode, b)
				}
			}
			if up.hits.Load() != 3 {
				t.Errorf("upstream saw %d, want 3", up.hits.Load())
			}
			cs := px.connects()
			if len(cs) == 0 || len(cs) > 2 {
				t.Fatalf("proxy saw %d CONNECTs (%+v), want 1 or 2 (only api.example.com's)", len(cs), cs)
			}
			for _, c := range cs {
				if c.target != up.addr().String() {
					t.Errorf("CONNECT %q, want %s", c.target, up.addr())
				}
				wantAuth(t, c)
			}
			if len(px.other) != 0 {
				t.Errorf("proxy got non-CONNECT requests %v", px.other)
			}
		})
	}
}

// TestUpstreamProxyRefused: a 407 (or any non-2xx) from the proxy is a 502
// for the agent and an audit reason naming the status, never the
// credential; a splice is closed.
func TestUpstreamProxyRefused(t *testing.T) {
	for _, st := range []int{407, 403, 502} {
		px := newConnectProxy(t)
		px.status.Store(int64(st))
		up := newUpstream(t, false, false, nil)
		e := newProxyEnv(t, px.route("corp"), nil)
		resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/x")
		m := jsonBody(t, resp)
		want := "upstream proxy refused: " + itoa(st)
		if resp.StatusCode != 502 || m["error"] != "upstream_unreachable" || m["reason"] != want {
			t.Errorf("%d: agent got %d %v", st, resp.StatusCode, m)
		}
		en := e.audit.next(t)
		if en.Reason != want || en.Status != 502 {
			t.Errorf("%d: audit %+v", st, en)
		}
		if up.hits.Load() != 0 {
			t.Errorf("upstream reached")
		}
		e.noCredential(t, en.Reason, toString(m["reason"]))
	}

	// Splice: the connection is closed, audited with the status.
	px := newConnectProxy(t)
	px.status.Store(407)
	up := newUpstream(t, true, false, nil)
	e := newProxyEnvPolicy(t, splicePolicy(px.route("corp")), nil)
	c := e.dial(up.addr())
	tc := tls.Client(c, &tls.Config{ServerName: "tls.example.com", RootCAs: upstreamPool(up)})
	tc.SetDeadline(time.Now().Add(waitLimit))
	if err := tc.Handshake(); err == nil {
		t.Fatal("TLS handshake through a refusing proxy succeeded")
	}
	en := e.audit.next(t)
	if en.Reason != "upstream proxy refused: 407" || en.Rule != "passthrough" {
		t.Errorf("splice audit %+v", en)
	}
	e.noCredential(t, en.Reason)
}

// TestUpstreamProxyCredentialUnavailable: a route whose credential cannot
// be resolved is never dialled without it.
func TestUpstreamProxyCredentialUnavailable(t *testing.T) {
	for _, nilResolver := range []bool{false, true} {
		px := newConnectProxy(t)
		up := newUpstream(t, false, false, nil)
		e := newProxyEnv(t, px.route("missing"), func(c *Config) {
			if nilResolver {
				c.ProxyCredential = nil
			}
		})
		resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/x")
		m := jsonBody(t, resp)
		if resp.StatusCode != 502 || m["reason"] != "upstream proxy credential missing unavailable" {
			t.Errorf("agent got %d %v", resp.StatusCode, m)
		}
		if len(px.connects()) != 0 || up.hits.Load() != 0 {
			t.Errorf("dialled without the credential: %+v", px.connects())
		}
		if en := e.audit.next(t); en.Reason != "upstream proxy credential missing unavailable" {
			t.Errorf("audit %+v", en)
		}
	}
}

// TestUpstreamProxyReload: a reload that changes the route ends the open
// request that took the old one (audited as revoked), and the next request
// takes the new one; a reload that keeps it leaves the stream alone.
func TestUpstreamProxyReload(t *testing.T) {
	pxA, pxB := newConnectProxy(t), newConnectProxy(t)
	release := make(chan struct{})
	defer close(release)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "plain")
			return
		}
		io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	e := newProxyEnv(t, pxA.route(""), nil)
	cl := e.client(up.addr(), nil, false)
	resp := mustGet(t, cl, "http://api.example.com/stream")
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || l != "first chunk\n" {
		t.Fatalf("stream start: %q %v", l, err)
	}

	// Same route, other wording: nothing closed.
	e.pol.load(t, strings.Replace(upstreamProxyPolicy(pxA.route("")), "deny", "deny  # reloaded", 1))
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("Recheck closed %d streams on an unchanged route", n)
	}
	// Route moves to proxy B: the open request ends.
	e.pol.load(t, upstreamProxyPolicy(pxB.route("")))
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d streams, want 1", n)
	}
	if _, err := io.ReadAll(br); err == nil {
		t.Error("the stream on the old route went on")
	}
	resp.Body.Close()
	var revoked audit.Entry
	for revoked.Event != audit.EventRevoked {
		revoked = e.audit.next(t)
	}
	if !strings.Contains(revoked.Reason, "the upstream proxy changed from http://"+pxA.l.Addr().String()+" to http://"+pxB.l.Addr().String()) {
		t.Errorf("revoked reason %q", revoked.Reason)
	}
	resp = mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/after")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "plain" {
		t.Fatalf("after reload: %d %q", resp.StatusCode, b)
	}
	if a, b := len(pxA.connects()), len(pxB.connects()); a != 1 || b != 1 {
		t.Errorf("CONNECTs: A %d, B %d; want 1 and 1", a, b)
	}
}

// TestUpstreamProxyReloadSplice: an open splice whose route changes is
// closed.
func TestUpstreamProxyReloadSplice(t *testing.T) {
	pxA := newConnectProxy(t)
	up := newUpstream(t, true, false, nil)
	e := newProxyEnvPolicy(t, splicePolicy(pxA.route("")), nil)
	c := e.dial(up.addr())
	tc := tls.Client(c, &tls.Config{ServerName: "tls.example.com", RootCAs: upstreamPool(up), InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(waitLimit))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	e.pol.load(t, splicePolicy(pxA.route(""))) // the same route: kept
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("Recheck closed %d on an unchanged route", n)
	}
	e.pol.load(t, splicePolicy("http://127.0.0.1:9")) // another proxy
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Error("splice still open")
	}
}

func (l *livePolicy) UpstreamProxyAddrs() []netip.AddrPort { return l.p.Load().UpstreamProxyAddrs() }
