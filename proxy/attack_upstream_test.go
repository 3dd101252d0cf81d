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
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
)

// Red-team tests for issue 13 (upstream_proxy). Failing tests are findings;
// see ATTACK-REPORT.md.

// scriptProxy is a CONNECT proxy whose answer is scripted per test.
type scriptProxy struct {
	l    net.Listener
	mu   sync.Mutex
	seen []connectSeen
	// answer handles a CONNECT after it was recorded.
	answer func(c net.Conn, br *bufio.Reader, req *http.Request)
}

func newScriptProxy(t *testing.T, answer func(c net.Conn, br *bufio.Reader, req *http.Request)) *scriptProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &scriptProxy{l: l, answer: answer}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				p.mu.Lock()
				p.seen = append(p.seen, connectSeen{target: req.RequestURI, host: req.Host, auth: req.Header.Get("Proxy-Authorization")})
				p.mu.Unlock()
				p.answer(c, br, req)
			}()
		}
	}()
	return p
}

func (p *scriptProxy) connects() []connectSeen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]connectSeen(nil), p.seen...)
}

func (p *scriptProxy) url() string { return "http://" + p.l.Addr().String() }

// tunnel opens the CONNECT target and copies both ways.
func tunnel(c net.Conn, br *bufio.Reader, target string) {
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(c, up)
}

// rawExchange writes req on a fresh agent connection to dst and returns
// everything the agent reads back.
func rawExchange(t *testing.T, e *proxyEnv, dst netip.AddrPort, req string) string {
	t.Helper()
	c := e.dial(dst)
	c.SetDeadline(time.Now().Add(waitLimit))
	io.WriteString(c, req)
	b, _ := io.ReadAll(c)
	return string(b)
}

// FINDING. The proxy's own address is "not an agent destination" (README),
// but clawd does not refuse it the way it refuses its own API: an agent
// whose rules allow the proxy's address by cidrs (a routine
// `cidrs: 10.0.0.0/8` for internal services covers a corporate proxy at
// 10.x) opens a raw connection to it (nothing sent within the peek
// timeout, so it is spliced by the address rule) and then speaks CONNECT
// itself: the proxy, which trusts clawd's host (or, with the set's route,
// sees the tunnel coming from itself), opens any host:port the agent
// names. Here the target is an address:port no rule allows. Invariant: an
// agent must not be able to make clawd reach another host through the
// proxy; special/denied destinations stay unreachable.
func TestAttackUpstreamRelayViaProxyAddress(t *testing.T) {
	for _, route := range []string{"set", "none"} {
		t.Run(route, func(t *testing.T) {
			px := newConnectProxy(t)
			up := newUpstream(t, false, false, nil) // 127.0.0.1:UP: no rule allows its port
			pxAddr := netip.MustParseAddrPort(px.l.Addr().String())
			extra := ""
			if route == "none" {
				extra = "      upstream_proxy: none\n"
			}
			pol := "default:\n  default_action: deny\n  upstream_proxy: http://" + pxAddr.String() + "\n  rules:\n" +
				"    - name: internal-net\n      cidrs: [127.0.0.1/32]\n      ports: [" + itoa(int(pxAddr.Port())) + "]\n      action: allow\n" + extra
			e := newProxyEnvPolicy(t, pol, func(c *Config) {
				c.Names = fakeNames{}
				c.PeekTimeout = 50 * time.Millisecond
			})

			// Sanity: the upstream itself is denied.
			if got := rawExchange(t, e, up.addr(), "GET /direct HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"); strings.Contains(got, "hello from upstream") {
				t.Fatalf("the upstream is reachable directly: %q", got)
			}

			c := e.dial(pxAddr)
			c.SetDeadline(time.Now().Add(waitLimit))
			time.Sleep(300 * time.Millisecond) // silent: decided by the address, spliced
			io.WriteString(c, "CONNECT "+up.addr().String()+" HTTP/1.1\r\nHost: "+up.addr().String()+"\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Logf("relay refused (%v): held", err)
				return
			}
			if resp.StatusCode != 200 {
				t.Logf("relay refused with %d: held", resp.StatusCode)
				return
			}
			io.WriteString(c, "GET /relayed HTTP/1.1\r\nHost: forbidden.example\r\nConnection: close\r\n\r\n")
			rest, _ := io.ReadAll(br)
			if up.hits.Load() > 0 || strings.Contains(string(rest), "hello from upstream /relayed") {
				t.Errorf("route %s: the agent used the upstream proxy at %s as a relay to %s, which no rule allows; got %q",
					route, pxAddr, up.addr(), rest)
			}
		})
	}
}

// HELD. Whatever Host, absolute-form target or CONNECT line the agent
// writes, the CONNECT clawd sends is the dialled address.
func TestAttackUpstreamHostCannotSteerConnect(t *testing.T) {
	px := newConnectProxy(t)
	up := newUpstream(t, false, false, nil)
	e := newProxyEnv(t, px.route("corp"), nil)
	reqs := []string{
		"GET http://api.example.com/a HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
		"GET /b HTTP/1.1\r\nHost: api.example.com:9\r\nConnection: close\r\n\r\n",
		"GET /c HTTP/1.1\r\nHost: API.EXAMPLE.COM.\r\nConnection: close\r\n\r\n",
		"GET http://evil.example:443/d HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
		"CONNECT evil.example:443 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"CONNECT api.example.com:9 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
		"GET /e HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\r\n",
		"GET /f HTTP/1.1\r\nHost: api.example.com\r\nConnection: close, Proxy-Authorization\r\n\r\n",
		"GET /g HTTP/1.1\r\nHost: api.example.com\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
	}
	for _, r := range reqs {
		rawExchange(t, e, up.addr(), r)
	}
	for _, c := range px.connects() {
		if c.target != up.addr().String() || c.host != up.addr().String() {
			t.Errorf("CONNECT %q Host %q, want %s", c.target, c.host, up.addr())
		}
		wantAuth(t, c)
	}
	if len(px.other) != 0 {
		t.Errorf("the proxy got non-CONNECT requests: %v", px.other)
	}
	up.mu.Lock()
	for _, r := range up.reqs {
		if strings.Contains(r.Host, "evil") || r.Header.Get("Proxy-Authorization") != "" {
			t.Errorf("upstream saw Host %q Proxy-Authorization %q", r.Host, r.Header.Get("Proxy-Authorization"))
		}
	}
	up.mu.Unlock()
	e.noCredential(t)
}

// HELD (mostly). The proxy's answer to CONNECT in odd forms: refusals never
// hand the proxy's body (or an echoed credential) to the agent; HTTP/1.0
// 200 and a 200 with headers open the tunnel.
func TestAttackUpstreamConnectAnswers(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(proxyCred))
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"
	tests := []struct {
		name   string
		answer string
		tunnel bool
		ok     bool // the agent gets the upstream's answer
	}{
		{"http10", "HTTP/1.0 200 Connection established\r\n\r\n", true, true},
		{"headers", "HTTP/1.1 200 OK\r\nProxy-Agent: squid\r\nContent-Length: 0\r\n\r\n", true, true},
		{"407-body", "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: " + itoa(len(smuggled)) + "\r\n\r\n" + smuggled, false, false},
		{"407-echo", "HTTP/1.1 407 No\r\nX-Echo: Basic " + b64 + "\r\nContent-Length: " + itoa(len(b64)) + "\r\n\r\n" + b64, false, false},
		{"407-open", "HTTP/1.1 407 No\r\n\r\n", false, false},
		{"1xx-then-200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n" + smuggled, false, false},
		{"garbage", "SSH-2.0-OpenSSH\r\n", false, false},
		{"close", "", false, false},
		{"huge", "HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 70<<10) + "\r\n\r\n", true, false},
		{"bad-status", "HTTP/1.1 2000 OK\r\n\r\n", true, false},
		{"negative-cl", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true, false}, // refused: fail closed
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			px := newScriptProxy(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
				io.WriteString(c, tt.answer)
				if tt.tunnel {
					tunnel(c, br, req.RequestURI)
					return
				}
				if tt.name == "407-open" {
					time.Sleep(2 * time.Second)
				}
			})
			e := newProxyEnv(t, "{url: \""+px.url()+"\", credential: corp}", nil)
			start := time.Now()
			got := rawExchange(t, e, up.addr(), "GET /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
			if tt.ok != strings.Contains(got, "hello from upstream /x") {
				t.Errorf("answer %q: agent got %q", tt.name, got)
			}
			if strings.Contains(got, "SMUGGLED") || strings.Contains(got, b64) || strings.Contains(got, "hunter2") {
				t.Errorf("the proxy's bytes reached the agent: %q", got)
			}
			if tt.name == "407-open" && time.Since(start) > 1500*time.Millisecond {
				t.Errorf("a 407 without length held the agent until the proxy closed (%v)", time.Since(start))
			}
			e.noCredential(t, got)
		})
	}
}

// HELD. Credential values: ':' in the password and non-ASCII go through
// Basic intact; malformed ones are never sent.
func TestAttackUpstreamCredentialForms(t *testing.T) {
	for _, tt := range []struct {
		v    string
		sent bool
	}{
		{"user:pa:ss:word", true},
		{"üser:pässwörd✓", true},
		{"user:", true},
		{"user", false},
		{":token-only", false}, // RFC 7617 allows an empty user-id; refused (fail closed)
		{"u:p\r\nX-Injected: 1", false},
		{"u:p\nX: 1", false},
	} {
		px := newConnectProxy(t)
		up := newUpstream(t, false, false, nil)
		e := newProxyEnv(t, px.route("odd"), func(c *Config) {
			c.ProxyCredential = func(name string) (string, error) { return tt.v, nil }
		})
		got := rawExchange(t, e, up.addr(), "GET /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
		cs := px.connects()
		if !tt.sent {
			if len(cs) != 0 {
				t.Errorf("%q: sent %+v", tt.v, cs)
			}
			if _, pw, ok := strings.Cut(tt.v, ":"); ok && len(pw) > 2 && strings.Contains(got, pw) {
				t.Errorf("%q echoed to the agent: %q", tt.v, got)
			}
			continue
		}
		if len(cs) != 1 || cs[0].auth != "Basic "+base64.StdEncoding.EncodeToString([]byte(tt.v)) {
			t.Errorf("%q: CONNECTs %+v", tt.v, cs)
		}
		for _, l := range e.logs.All() {
			if strings.Contains(l.Message, tt.v) {
				t.Errorf("%q in a log line", tt.v)
			}
		}
	}
}

// HELD. A reload that changes only the credential of the route ends the
// open request; the next takes the new credential.
func TestAttackUpstreamReloadCredentialOnly(t *testing.T) {
	px := newConnectProxy(t)
	release := make(chan struct{})
	defer close(release)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "plain")
			return
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	e := newProxyEnv(t, px.route("corp"), func(c *Config) {
		c.ProxyCredential = func(name string) (string, error) {
			if name == "corp" || name == "corp2" {
				return name + ":pw", nil
			}
			return "", errNoSuchCred
		}
	})
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/stream")
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || l != "first\n" {
		t.Fatalf("stream: %q %v", l, err)
	}
	e.pol.load(t, upstreamProxyPolicy(px.route("corp2")))
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Errorf("Recheck closed %d, want 1 (credential changed)", n)
	}
	io.ReadAll(br)
	resp.Body.Close()
	var ev audit.Entry
	for ev.Event != audit.EventRevoked {
		ev = e.audit.next(t)
	}
	resp = mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/after")
	resp.Body.Close()
	cs := px.connects()
	if len(cs) != 2 || cs[1].auth != "Basic "+base64.StdEncoding.EncodeToString([]byte("corp2:pw")) {
		t.Errorf("CONNECTs %+v", cs)
	}
}

// FINDING (functional, low). When the proxy's 200 arrives together with the
// first tunnel bytes (a server-speaks-first protocol: SMTP, SSH banners),
// dialViaProxy wraps the tunnel in a bufConn, which has no CloseWrite: the
// agent's half-close then tears the whole splice down and the server's
// last answer is lost. Direct (and through a proxy without early bytes)
// the half-close is passed on.
func TestAttackUpstreamHalfCloseWithEarlyBytes(t *testing.T) {
	bannerServer := func(c net.Conn, br io.Reader) {
		io.ReadAll(br) // until the client's half-close
		io.WriteString(c, "bye\n")
	}
	// Direct: an upstream that speaks first.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, "220 banner\r\n")
				bannerServer(c, c)
			}()
		}
	}()
	dst := netip.MustParseAddrPort(l.Addr().String())
	// Through a proxy that sends its 200 and the banner in one write.
	px := newScriptProxy(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n220 banner\r\n")
		bannerServer(c, br)
	})
	for _, route := range []string{"none", px.url()} {
		pol := "default:\n  default_action: deny\n  upstream_proxy: http://127.0.0.1:9\n  rules:\n    - name: smtp\n      cidrs: [127.0.0.1/32]\n      ports: [" + itoa(int(dst.Port())) + "]\n      action: allow\n      upstream_proxy: " + route + "\n"
		e := newProxyEnvPolicy(t, pol, func(c *Config) {
			c.Names = fakeNames{}
			c.PeekTimeout = 50 * time.Millisecond
		})
		c := e.dial(dst)
		c.SetDeadline(time.Now().Add(waitLimit))
		br := bufio.NewReader(c)
		if l, err := br.ReadString('\n'); err != nil || l != "220 banner\r\n" {
			t.Fatalf("route %s: banner %q %v", route, l, err)
		}
		io.WriteString(c, "QUIT\r\n")
		c.(*net.TCPConn).CloseWrite()
		rest, _ := io.ReadAll(br)
		if string(rest) != "bye\n" {
			t.Errorf("route %s: after the agent's half-close got %q, want %q (the half-close closed the splice)", route, rest, "bye\n")
		}
	}
}

// HELD. Intercepted HTTP/2: a reload that moves the route ends the open
// stream, and the next request on the same agent connection takes the new
// proxy (never the old tunnel).
func TestAttackUpstreamReloadH2Route(t *testing.T) {
	pxA, pxB := newConnectProxy(t), newConnectProxy(t)
	release := make(chan struct{})
	defer close(release)
	up := newUpstream(t, true, true, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stream" {
			io.WriteString(w, "plain")
			return
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	e := newProxyEnv(t, pxA.route("corp"), func(c *Config) { c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
	resp := mustGet(t, cl, "https://example.com/stream")
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); err != nil || l != "first\n" {
		t.Fatalf("stream: %q %v", l, err)
	}
	e.pol.load(t, upstreamProxyPolicy(pxB.route("corp")))
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Errorf("Recheck closed %d, want 1", n)
	}
	if _, err := io.ReadAll(br); err == nil {
		t.Error("h2 stream on the old route went on")
	}
	resp.Body.Close()
	resp = mustGet(t, cl, "https://example.com/after")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "plain" {
		t.Errorf("after: %d %q", resp.StatusCode, b)
	}
	if a, b := len(pxA.connects()), len(pxB.connects()); a != 1 || b != 1 {
		t.Errorf("CONNECTs A %d B %d, want 1 and 1", a, b)
	}
}
