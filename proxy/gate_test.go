package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

// The gate's invariants, attacked at the proxy level. The root e2e suite
// attacks the same from inside real containers (e2e/gate_test.go).

// strictEnv is the realistic policy on an intercepted host: DELETE
// and /admin denied, the rest allowed.
func strictEnv(t *testing.T, up *upstream, mod func(*Config)) *env {
	dec := newDecider(policy.Allow,
		rule{name: "no-delete", method: "DELETE", action: policy.Deny},
		rule{name: "no-admin", pathPrefix: "/admin", action: policy.Deny})
	dec.intercept["example.com"] = true
	return newEnv(t, dec, func(c *Config) {
		if up != nil && up.TLS != nil {
			c.UpstreamRoots = upstreamPool(up)
		}
		c.PeekTimeout = 20 * time.Millisecond
		c.SlowClientWait = 10 * time.Second
		if mod != nil {
			mod(c)
		}
	})
}

func clawdTLS(e *env, sni string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	return &tls.Config{ServerName: sni, RootCAs: pool, NextProtos: []string{"http/1.1"}}
}

// nextDecision skips audit lines that are not decisions.
func nextDecision(t *testing.T, e *env) audit.Entry {
	t.Helper()
	for {
		if ent := e.audit.next(t); ent.Event == audit.EventDecision || ent.Event == audit.EventRevoked {
			return ent
		}
	}
}

func TestGateLateFirstByteIsStillDecided(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	e := strictEnv(t, up, nil)
	for _, late := range []string{"tls", "tls-first-byte-only"} {
		t.Run(late, func(t *testing.T) {
			c := e.dial(up.addr())
			// Well past the peek timeout: a downgrade would splice now.
			time.Sleep(100 * time.Millisecond)
			var raw net.Conn = c
			if late == "tls-first-byte-only" {
				raw = &firstByteLate{Conn: c}
			}
			tc := tls.Client(raw, clawdTLS(e, "example.com"))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("a late client must be intercepted, got %v", err)
			}
			io.WriteString(tc, "DELETE /x HTTP/1.1\r\nHost: example.com\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil || resp.StatusCode != 403 {
				t.Fatalf("late DELETE: %v %v", resp, err)
			}
		})
	}
	if up.hits.Load() != 0 {
		t.Errorf("upstream saw %d requests", up.hits.Load())
	}
}

// firstByteLate sends the first byte, waits, then the rest.
type firstByteLate struct {
	net.Conn
	done bool
}

func (c *firstByteLate) Write(p []byte) (int, error) {
	if c.done || len(p) < 2 {
		return c.Conn.Write(p)
	}
	c.done = true
	if _, err := c.Conn.Write(p[:1]); err != nil {
		return 0, err
	}
	time.Sleep(100 * time.Millisecond)
	n, err := c.Conn.Write(p[1:])
	return n + 1, err
}

func TestGateSilentClientOnHTTPLevelDestinationIsRefused(t *testing.T) {
	dst, accepted := tcpUpstream(t, func(c net.Conn) { io.WriteString(c, "220 hello\r\n") })
	e := strictEnv(t, nil, func(c *Config) {
		c.Names = fakeNames{"example.com": dst.Addr()}
		c.SlowClientWait = 50 * time.Millisecond
	})
	c := e.dial(dst)
	if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Fatal("a server-speaks-first splice opened to an HTTP-level destination")
	}
	if ent := nextDecision(t, e); ent.Action != "deny" || ent.Rule != ruleUnframable {
		t.Errorf("audit = %+v", ent)
	}
	select {
	case <-accepted:
		t.Error("the upstream was dialled")
	default:
	}
}

func TestGateTLSWithoutSNIToHTTPLevelDestination(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	e := strictEnv(t, up, func(c *Config) { c.Names = fakeNames{"example.com": up.addr().Addr()} })
	tc := tls.Client(e.dial(up.addr()), &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Fatal("TLS without SNI to an intercepted address was spliced")
	}
	if ent := nextDecision(t, e); ent.Action != "deny" || ent.Rule != ruleUnframable {
		t.Errorf("audit = %+v", ent)
	}
	if up.hits.Load() != 0 {
		t.Error("upstream reached")
	}
}

func TestGateClientHelloOverManyRecords(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	e := strictEnv(t, up, nil)
	for _, size := range []int{1, 7, 100} {
		c := e.dial(up.addr())
		tc := tls.Client(&recordSplitter{Conn: c, size: size}, clawdTLS(e, "example.com"))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("records of %d bytes: %v", size, err)
		}
		io.WriteString(tc, "GET /admin/x HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil || resp.StatusCode != 403 {
			t.Fatalf("records of %d bytes: %v %v", size, resp, err)
		}
		tc.Close()
	}
}

// recordSplitter re-frames the client's first TLS record (the ClientHello)
// into records of at most size payload bytes, each written on its own.
type recordSplitter struct {
	net.Conn
	size int
	done bool
}

func (c *recordSplitter) Write(p []byte) (int, error) {
	if c.done || len(p) < 5 || p[0] != 0x16 {
		return c.Conn.Write(p)
	}
	c.done = true
	n := int(p[3])<<8 | int(p[4])
	body, rest := p[5:5+n], p[5+n:]
	for len(body) > 0 {
		k := min(c.size, len(body))
		rec := append([]byte{0x16, p[1], p[2], byte(k >> 8), byte(k)}, body[:k]...)
		if _, err := c.Conn.Write(rec); err != nil {
			return 0, err
		}
		body = body[k:]
	}
	if _, err := c.Conn.Write(rest); err != nil {
		return 0, err
	}
	return len(p), nil
}

func TestGateOddRequestLinesAreFramed(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := strictEnv(t, up, func(c *Config) {
		c.Names = fakeNames{"example.com": up.addr().Addr()}
	})
	e.dec.intercept["example.com"] = true // HTTP-level on the plain port too
	for _, req := range []string{
		"delete /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"DeLeTe /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"\r\n\r\nDELETE /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
		"\x00DELETE /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
		" DELETE /x HTTP/1.1\r\nHost: example.com\r\n\r\n",
	} {
		c := e.dial(up.addr())
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode < 400 {
			t.Errorf("%q: %d", req, resp.StatusCode)
		}
		c.Close()
	}
	if up.hits.Load() != 0 {
		t.Errorf("upstream saw %d requests", up.hits.Load())
	}
}

func TestGateCoHostedNames(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	dec := newDecider(policy.Deny,
		rule{name: "strict-delete", host: "strict.example", method: "DELETE", action: policy.Deny},
		rule{name: "strict", host: "strict.example", action: policy.Allow},
		rule{name: "loose", host: "loose.example", action: policy.Allow},
		rule{name: "blocked", host: "blocked.example", action: policy.Deny})
	dec.intercept["strict.example"] = true
	ip := up.addr().Addr()
	e := newEnv(t, dec, func(c *Config) {
		c.UpstreamRoots = upstreamPool(up)
		c.Names = fakeNames{"strict.example": ip, "loose.example": ip}
	})
	// SNI of the passthrough name on an address shared with an intercepted
	// one: intercepted, and Host of the strict name is refused.
	tc := tls.Client(e.dial(up.addr()), clawdTLS(e, "loose.example"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if tc.ConnectionState().PeerCertificates[0].Issuer.CommonName != e.ca.Certificate().Subject.CommonName {
		t.Fatal("spliced: the co-hosted strict name is HTTP-level")
	}
	io.WriteString(tc, "DELETE /x HTTP/1.1\r\nHost: strict.example\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("fronted DELETE: %v %v", resp, err)
	}
	if up.hits.Load() != 0 {
		t.Fatal("upstream reached")
	}

	// Raw TCP to an address shared by an allowed and a denied name: the
	// most restrictive rule wins.
	dst, accepted := tcpUpstream(t, echo)
	e2 := newEnv(t, newDecider(policy.Deny,
		rule{name: "ok", host: "ok.example", action: policy.Allow},
		rule{name: "no", host: "no.example", action: policy.Deny}), func(c *Config) {
		c.Names = fakeNames{"ok.example": dst.Addr(), "no.example": dst.Addr()}
	})
	for i := 0; i < 5; i++ { // map order varies: every order must deny
		c := e2.dial(dst)
		io.WriteString(c, "\x00raw\n")
		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			t.Fatalf("co-hosted denied name let raw TCP through: %q", line)
		}
		if ent := nextDecision(t, e2); ent.Action != "deny" || ent.Rule != "no" {
			t.Errorf("audit = %+v", ent)
		}
	}
	select {
	case <-accepted:
		t.Error("upstream dialled")
	default:
	}
}

func TestGateSpecialAddresses(t *testing.T) {
	dst, accepted := tcpUpstream(t, echo)
	for _, tc := range []struct {
		name  string
		rule  rule
		allow bool
	}{
		{"name rule to loopback", rule{name: "by-name", host: "db.example", action: policy.Allow}, false},
		{"cidrs rule naming it", rule{name: "by-cidr", action: policy.Allow, byCIDR: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, newDecider(policy.Deny, tc.rule), func(c *Config) {
				c.Names = fakeNames{"db.example": dst.Addr()}
				c.Classify = nil // the real classifier: 127.0.0.1 is loopback
			})
			c := e.dial(dst)
			io.WriteString(c, "\x00hi\n")
			_, err := bufio.NewReader(c).ReadString('\n')
			if (err == nil) != tc.allow {
				t.Fatalf("allowed = %v, want %v", err == nil, tc.allow)
			}
			c.Close()
			ent := nextDecision(t, e)
			if !tc.allow && (ent.Rule != ruleSpecialAddress || !strings.Contains(ent.Reason, "loopback")) {
				t.Errorf("audit = %+v", ent)
			}
		})
	}
	// An HTTP request by name to a special address is refused too.
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.Names = fakeNames{"example.com": up.addr().Addr()}
		c.Classify = nil
	})
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://example.com/")
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["rule"] != ruleSpecialAddress {
		t.Errorf("HTTP by name to loopback: %d %v", resp.StatusCode, m)
	}
	if up.hits.Load() != 0 {
		t.Error("upstream reached")
	}
	_ = accepted
	// The classifier sees the host's own addresses.
	s, _ := New(Config{Decider: newDecider(policy.Allow), HostAddr: func(a netip.Addr) bool { return a == netip.MustParseAddr("198.51.100.1") }})
	if got := s.classify(netip.MustParseAddr("198.51.100.1")); got != addrclass.Host {
		t.Errorf("host address classified %q", got)
	}
}

func TestGateRecheckClosesWhatTheNewPolicyDenies(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	dec := newDecider(policy.Deny,
		rule{name: "a", host: "a.example", action: policy.Allow},
		rule{name: "by-ip", action: policy.Allow})
	l, err := net.Listen("tcp", "127.0.0.2:0") // an address no name points at
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	other := netip.MustParseAddrPort(l.Addr().String())
	e := newEnv(t, dec, func(c *Config) {
		c.Names = fakeNames{"a.example": dst.Addr()}
	})
	// Two splices, both by name a... and one to another port by IP.
	ca := e.dial(dst)
	ra := bufio.NewReader(ca)
	io.WriteString(ca, "\x00one\n")
	if l, err := ra.ReadString('\n'); err != nil || l != "\x00one\n" {
		t.Fatalf("splice a: %q %v", l, err)
	}
	cb := e.dial(other)
	rb := bufio.NewReader(cb)
	io.WriteString(cb, "\x00two\n")
	if l, err := rb.ReadString('\n'); err != nil || l != "\x00two\n" {
		t.Fatalf("splice to the other address: %q %v", l, err)
	}
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("nothing changed, but Recheck closed %d", n)
	}
	dec.set(policy.Allow, rule{name: "a-now-denied", host: "a.example", action: policy.Deny})
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := ra.ReadString('\n'); err == nil {
		t.Error("the denied splice is still open")
	}
	io.WriteString(cb, "\x00three\n")
	if l, err := rb.ReadString('\n'); err != nil || l != "\x00three\n" {
		t.Errorf("the still-allowed splice was disturbed: %q %v", l, err)
	}
	for {
		ent := e.audit.next(t)
		if ent.Event == audit.EventRevoked {
			if ent.Rule != "a-now-denied" || ent.Host != "a.example" || !strings.Contains(ent.Reason, "policy reloaded") {
				t.Errorf("revocation line = %+v", ent)
			}
			break
		}
	}
}

// wsUpstream grants every Upgrade with 101 and then echoes.
func wsUpstream(t *testing.T) netip.AddrPort {
	dst, _ := tcpUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", req.Header.Get("Upgrade"))
		io.Copy(c, br)
	})
	return dst
}

func TestGateRecheckUpgradedStreams(t *testing.T) {
	dst := wsUpstream(t)
	dec := newDecider(policy.Deny, rule{name: "ws", host: "example.com", pathPrefix: "/ws", action: policy.Allow})
	e := newEnv(t, dec, func(c *Config) { c.Names = fakeNames{"example.com": dst.Addr()} })
	open := func(path string) (*bufio.Reader, net.Conn) {
		c := e.dial(dst)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", path)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade %s: %v %v", path, resp, err)
		}
		io.WriteString(c, "ping\n")
		if l, err := br.ReadString('\n'); err != nil || l != "ping\n" {
			t.Fatalf("echo on %s: %q %v", path, l, err)
		}
		return br, c
	}
	brA, cA := open("/ws/a")
	brB, cB := open("/ws/keep")
	dec.set(policy.Deny,
		rule{name: "ws-a-closed", host: "example.com", pathPrefix: "/ws/a", action: policy.Deny},
		rule{name: "ws", host: "example.com", pathPrefix: "/ws", action: policy.Allow})
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := brA.ReadString('\n'); err == nil {
		t.Error("the upgraded stream the policy now denies is still open")
	}
	io.WriteString(cB, "still\n")
	if l, err := brB.ReadString('\n'); err != nil || l != "still\n" {
		t.Errorf("the allowed stream was disturbed: %q %v", l, err)
	}
	_ = cA
}

// grantApprover approves by a grant that can be revoked.
type grantApprover struct {
	mu     sync.Mutex
	active bool
}

func (g *grantApprover) Request(context.Context, approval.Hold) approval.Outcome {
	return approval.Outcome{Approved: true, Status: approval.StatusGranted, By: "grant:g1"}
}

func (g *grantApprover) GrantActive(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return id == "g1" && g.active
}

func TestGateRecheckRevokedGrant(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	ap := &grantApprover{active: true}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap; c.Names = nil })
	c := e.dial(dst)
	br := bufio.NewReader(c)
	io.WriteString(c, "\x00x\n")
	if l, err := br.ReadString('\n'); err != nil || l != "\x00x\n" {
		t.Fatalf("granted splice: %q %v", l, err)
	}
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("grant still active, Recheck closed %d", n)
	}
	ap.mu.Lock()
	ap.active = false
	ap.mu.Unlock()
	if n := e.srv.Recheck("grant revoked"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the splice let through by a revoked grant is still open")
	}
}

func TestGateRecheckStreamedResponses(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-release
	})
	defer close(release)
	dec := newDecider(policy.Allow)
	e := newEnv(t, dec, nil)
	cl := e.client(up.addr(), nil, false)
	open := func(path string) *bufio.Reader {
		resp, err := cl.Get("http://example.com" + path)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", path, resp, err)
		}
		br := bufio.NewReader(resp.Body)
		if l, err := br.ReadString('\n'); err != nil || l != "data: 1\n" {
			t.Fatalf("%s first event: %q %v", path, l, err)
		}
		br.ReadString('\n')
		return br
	}
	gone, kept := open("/events/gone"), open("/events/kept")
	dec.set(policy.Allow, rule{name: "no-gone", pathPrefix: "/events/gone", action: policy.Deny})
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := gone.ReadString('\n'); err == nil {
		t.Error("the stream the policy now denies is still open")
	}
	_ = kept
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Errorf("the allowed stream was closed (%d)", n)
	}
}

func TestUntrustedCAIsAuditedWithTheFix(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	e := strictEnv(t, up, nil)
	// A client with its own root list (an official Node build, say).
	tc := tls.Client(e.dial(up.addr()), &tls.Config{ServerName: "example.com"})
	if err := tc.Handshake(); err == nil {
		t.Fatal("a client without clawd's CA completed the handshake")
	}
	var ent audit.Entry
	for ent = e.audit.next(t); ent.Event != audit.EventTLSUntrusted; ent = e.audit.next(t) {
	}
	if ent.Host != "example.com" || ent.Container != testContainer.Name || !strings.Contains(ent.Reason, "NODE_EXTRA_CA_CERTS="+CAFile) ||
		!strings.Contains(ent.Reason, "clawd env") {
		t.Errorf("audit = %+v", ent)
	}
	if n := e.srv.Untrusted(testContainer.Key()); n != 1 {
		t.Errorf("Untrusted = %d", n)
	}
	// A client that trusts clawd is not counted.
	ok := tls.Client(e.dial(up.addr()), clawdTLS(e, "example.com"))
	if err := ok.Handshake(); err != nil {
		t.Fatal(err)
	}
	ok.Close()
	if n := e.srv.Untrusted(testContainer.Key()); n != 1 {
		t.Errorf("Untrusted = %d after a trusting client", n)
	}
	// Nor is a client that hangs up before the certificate was chosen.
	c := e.dial(up.addr())
	c.Write(captureHello(t, &tls.Config{ServerName: "example.com"})[:20])
	c.Close()
	if n := e.srv.Untrusted(testContainer.Key()); n != 1 {
		t.Errorf("Untrusted = %d after a hang-up", n)
	}
}

// anyNames are names other containers resolved (NamesForAny).
type anyNames struct {
	fakeNames
	others fakeNames
}

func (n anyNames) NamesForAny(ip netip.Addr) []string { return n.others.NamesFor("", ip) }

func TestGateHardCodedAddressOfAnHTTPLevelHost(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	dec := newDecider(policy.Allow, rule{name: "no-delete", host: "strict.example", method: "DELETE", action: policy.Deny})
	dec.intercept["strict.example"] = true
	e := newEnv(t, dec, func(c *Config) {
		c.UpstreamRoots = upstreamPool(up)
		// This container never looked the name up; another one did.
		c.Names = anyNames{fakeNames{}, fakeNames{"strict.example": up.addr().Addr()}}
	})
	tc := tls.Client(e.dial(up.addr()), &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Fatal("TLS without SNI to the address of an intercepted host was spliced")
	}
	if ent := nextDecision(t, e); ent.Rule != ruleUnframable {
		t.Errorf("audit = %+v", ent)
	}
	if up.hits.Load() != 0 {
		t.Error("upstream reached")
	}
}
