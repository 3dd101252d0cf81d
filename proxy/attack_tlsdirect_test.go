package proxy

// Attacks on the direct path over TLS (intercepted HTTP/1.1 agents'
// bodyless requests on clawd's own HTTP/1.1-over-TLS upstream connection).
// docs/attacks/tlsdirect.md has the table of results.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/secrets"
)

// holdConn is an upstream's TCP connection whose writes can be held back
// and sent as one write (several TLS records in one TCP segment: they
// arrive at clawd's socket together).
type holdConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
}

func (h *holdConn) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *holdConn) start() { h.mu.Lock(); h.hold = true; h.mu.Unlock() }

func (h *holdConn) flush() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = false
	h.Conn.SetWriteDeadline(time.Time{}) // tls CloseWrite leaves one in the past
	if len(h.buf) > 0 {
		h.Conn.Write(h.buf)
		h.buf = nil
	}
}

// tlsRawUpstream is an HTTPS upstream (certificate for example.com) that
// answers with bytes the test writes itself.
type tlsRawUpstream struct {
	ln    net.Listener
	cert  *x509.Certificate
	mu    sync.Mutex
	conns int
	paths [][]string // per connection, the paths it received
	seen  chan string
}

type tlsAnswer func(i int, req *http.Request, tc *tls.Conn, hc *holdConn) (keep bool)

func newTLSRawUpstream(t *testing.T, cfg *tls.Config, answer tlsAnswer) *tlsRawUpstream {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS()
	cert, leaf := hs.TLS.Certificates[0], hs.Certificate()
	hs.Close()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.NextProtos == nil {
		// As real HTTP/1.1 servers do: the direct path needs the ack.
		cfg.NextProtos = []string{"http/1.1"}
	}
	if len(cfg.Certificates) == 0 {
		cfg.Certificates = []tls.Certificate{cert}
	} else {
		leaf, _ = x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &tlsRawUpstream{ln: ln, cert: leaf, seen: make(chan string, 100)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c, cfg, answer)
		}
	}()
	return u
}

func (u *tlsRawUpstream) serve(c net.Conn, cfg *tls.Config, answer tlsAnswer) {
	defer c.Close()
	hc := &holdConn{Conn: c}
	tc := tls.Server(hc, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	u.mu.Lock()
	idx := u.conns
	u.conns++
	u.paths = append(u.paths, nil)
	u.mu.Unlock()
	br := bufio.NewReader(tc)
	for i := 0; ; i++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		u.mu.Lock()
		u.paths[idx] = append(u.paths[idx], req.Method+" "+req.URL.Path)
		u.mu.Unlock()
		u.seen <- req.Method + " " + req.URL.Path
		if !answer(i, req, tc, hc) {
			return
		}
	}
}

func (u *tlsRawUpstream) addr() netip.AddrPort { return netip.MustParseAddrPort(u.ln.Addr().String()) }

func (u *tlsRawUpstream) received() [][]string {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([][]string, len(u.paths))
	for i, p := range u.paths {
		out[i] = append([]string(nil), p...)
	}
	return out
}

// interceptRawEnv is a proxy that intercepts example.com and trusts roots
// for the upstream; agent dials an intercepted HTTP/1.1 TLS connection
// (SNI example.com) to dst.
func interceptRawEnv(t *testing.T, roots *x509.CertPool, dec *fakeDecider) (*env, func(dst netip.AddrPort) *tls.Conn) {
	t.Helper()
	if dec == nil {
		dec = newDecider(policy.Allow)
	}
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = roots })
	clawdPool := x509.NewCertPool()
	clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
	return e, func(dst netip.AddrPort) *tls.Conn {
		tc := tls.Client(e.dial(dst), &tls.Config{ServerName: "example.com", RootCAs: clawdPool, NextProtos: []string{"http/1.1"}})
		if err := tc.Handshake(); err != nil {
			t.Fatalf("agent handshake: %v", err)
		}
		return tc
	}
}

func rootsOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

const (
	tlsEdgeHost = "Host: example.com\r\n"
	evilAnswer  = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nEVIL"
)

// Bytes an upstream sends past the end of an answer, in the same TCP
// segment (a second TLS record, or the rest of the same record), never
// become the answer to the agent's next request. On plain HTTP the direct
// path sees them in its bufio buffer or in the socket (MSG_PEEK); over TLS
// they can sit inside crypto/tls (its raw-input buffer, or the decrypted
// rest of a record) where neither check looks.
func TestAttackTLSDirectStrayBytesBecomeNextAnswer(t *testing.T) {
	big := strings.Repeat("b", 12000)
	for _, tc := range []struct {
		name, method string
		records      []string // TLS records, sent in one TCP write
		oneRecord    bool     // the server sends full-size records (no dynamic sizing)
	}{
		{"past length, next record", "GET", []string{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", evilAnswer}, false},
		{"HEAD body, next record", "HEAD", []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello" + evilAnswer}, false},
		{"204, next record", "GET", []string{"HTTP/1.1 204 No Content\r\n\r\n", evilAnswer}, false},
		{"304, next record", "GET", []string{"HTTP/1.1 304 Not Modified\r\n\r\n", evilAnswer}, false},
		{"chunked, next record", "GET", []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", evilAnswer}, false},
		{"Content-Length 0, next record", "GET", []string{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", evilAnswer}, false},
		// One record, one write: a body bigger than the 4 KiB bufio
		// buffer is read straight from tls.Conn, which keeps the
		// stray rest of the record.
		{"past length, same record (big body)", "GET", []string{"HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n" + big + evilAnswer}, true},
		// Go's dynamic record sizing cuts the same write into ~1 KiB
		// records: the last, small one is read whole into bufio (seen).
		{"past length, big body, small records", "GET", []string{"HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n" + big + evilAnswer}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withDirect(t, func(t *testing.T) {
				up := newTLSRawUpstream(t, &tls.Config{DynamicRecordSizingDisabled: tc.oneRecord}, func(_ int, req *http.Request, c *tls.Conn, hc *holdConn) bool {
					if req.URL.Path == "/next" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
						return true
					}
					hc.start()
					for _, r := range tc.records {
						io.WriteString(c, r)
					}
					hc.flush()
					return true
				})
				_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
				c := dial(up.addr())
				first := exchangeRaw(t, c, tc.method+" /first HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
				if strings.Contains(first, "EVIL") {
					t.Fatalf("first answer: %s", first)
				}
				a := exchangeRaw(t, c, "GET /next HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
				if strings.Contains(a, "EVIL") || !strings.Contains(a, `body="good"`) {
					t.Errorf("HOLE: the agent's GET /next got the upstream's stray bytes as its answer: %s (upstream saw %v)", a, up.received())
				}
			})
		})
	}
}

// The same stray answer, checked against what the upstream was asked: the
// agent's /second gets an answer written before the upstream ever saw
// /second (the upstream's real answer to /second then sits in the socket,
// where the peek sees it: /third goes on a new connection).
func TestAttackTLSDirectStrayAnswersUnaskedRequest(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, hc *holdConn) bool {
			if req.URL.Path == "/first" {
				hc.start()
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nfor-nothing")
				hc.flush()
				return true
			}
			body := "answer-to " + req.URL.Path
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(body))+"\r\n\r\n"+body)
			return true
		})
		_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
		c := dial(up.addr())
		got := exchangeRaw(t, c,
			"GET /first HTTP/1.1\r\n"+tlsEdgeHost+"\r\n",
			"GET /second HTTP/1.1\r\n"+tlsEdgeHost+"\r\n",
			"GET /third HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
		for i, p := range []string{"/second", "/third"} {
			if !strings.Contains(got[i+1], `body="answer-to `+p+`"`) {
				t.Errorf("HOLE: GET %s answered with %s", p, got[i+1])
			}
		}
	})
}

// An upstream that ends its side with close_notify right after an answer
// (in the same segment) but keeps TCP open: the connection must not be
// reused. Otherwise the next, non-replayable request is written to it
// (the upstream reads it), finds EOF, and the agent gets a 502 that the
// fallback (its reader sees the close_notify while idle) never gives.
func TestAttackTLSDirectCloseNotifyNotReused(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, hc *holdConn) bool {
			if req.URL.Path == "/next" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
				return true
			}
			hc.start()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			c.CloseWrite() // close_notify, TCP stays open
			hc.flush()
			return true // keeps reading
		})
		_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
		c := dial(up.addr())
		exchangeRaw(t, c, "GET /first HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
		a := exchangeRaw(t, c, "DELETE /next HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
		if !strings.Contains(a, `body="good"`) {
			t.Errorf("HOLE: DELETE after close_notify: %s; upstream connections saw %v", a, up.received())
		}
	})
}

// An upstream behind a TLS terminator that ignores an ALPN offer it has no
// protocol for (BoringSSL's NOACK: no ALPN, handshake succeeds) and speaks
// only HTTP/2 (Envoy with an HTTP2 codec, say). The fallback offers h2 and
// gets it; the direct path's handshake succeeds, so it never falls back.
func TestAttackTLSDirectH2OnlyIgnoringALPN(t *testing.T) {
	hs := httptest.NewUnstartedServer(nil)
	hs.StartTLS()
	cert, leaf := hs.TLS.Certificates[0], hs.Certificate()
	hs.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"},
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			for _, p := range chi.SupportedProtos {
				if p == "h2" {
					return nil, nil
				}
			}
			return &tls.Config{Certificates: []tls.Certificate{cert}}, nil // no ALPN: NOACK
		}}
	h2s := &http2.Server{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, cfg)
				defer tc.Close()
				if tc.Handshake() != nil {
					return
				}
				h2s.ServeConn(tc, &http2.ServeConnOpts{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "h2 answer")
				})})
			}()
		}
	}()
	withDirect(t, func(t *testing.T) {
		_, dial := interceptRawEnv(t, rootsOf(leaf), nil)
		c := dial(netip.MustParseAddrPort(ln.Addr().String()))
		a := exchangeRaw(t, c, "GET /x HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
		if !strings.Contains(a, `body="h2 answer"`) {
			t.Errorf("HOLE (availability): an HTTP/2-only upstream that ignores the http/1.1-only ALPN offer gets no request: %s", a)
		}
	})
}

// selfSigned is a certificate for names (and, if ip, 127.0.0.1).
func selfSigned(t *testing.T, notAfter time.Time, names ...string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "example.com"}, // never used for names
		NotBefore:             time.Now().Add(-48 * time.Hour),
		NotAfter:              notAfter,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// Upstream certificates and versions clawd must refuse: on both paths the
// agent gets the same 502, the audit the same reason, and the upstream no
// request. Variants: a certificate for another name (valid for the
// destination IP, CN example.com), an expired one, one from an untrusted
// root, TLS 1.1 only, TLS 1.0 only.
func TestAttackTLSDirectBadUpstreamTLSRefused(t *testing.T) {
	good := func(_ int, _ *http.Request, c *tls.Conn, _ *holdConn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	}
	for _, tc := range []struct {
		name   string
		cfg    func() *tls.Config
		trust  bool // trust the upstream's certificate as a root
		reason string
	}{
		{"other name", func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{selfSigned(t, time.Now().Add(time.Hour), "other.example.net")}}
		}, true, "the upstream's TLS certificate did not verify"},
		{"expired", func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{selfSigned(t, time.Now().Add(-time.Hour), "example.com")}}
		}, true, "the upstream's TLS certificate did not verify"},
		{"untrusted root", func() *tls.Config { return &tls.Config{} }, false, "the upstream's TLS certificate did not verify"},
		{"TLS 1.1 only", func() *tls.Config { return &tls.Config{MaxVersion: tls.VersionTLS11} }, true, "the TLS handshake with the upstream failed"},
		{"TLS 1.0 only", func() *tls.Config { return &tls.Config{MaxVersion: tls.VersionTLS10} }, true, "the TLS handshake with the upstream failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var answers [2]string
			i := 0
			withDirect(t, func(t *testing.T) {
				up := newTLSRawUpstream(t, tc.cfg(), good)
				roots := x509.NewCertPool()
				if tc.trust {
					roots.AddCert(up.cert)
				}
				e, dial := interceptRawEnv(t, roots, nil)
				c := dial(up.addr())
				got := exchangeRaw(t, c, "GET /a HTTP/1.1\r\n"+tlsEdgeHost+"\r\n", "GET /b HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
				for j, a := range got {
					if !strings.HasPrefix(a, "502") || !strings.Contains(a, tc.reason) {
						t.Errorf("answer %d: %s", j, a)
					}
					if en := e.audit.next(t); en.Status != 502 || en.Reason != "upstream unreachable: "+tc.reason {
						t.Errorf("audit %d: %+v", j, en)
					}
				}
				if r := up.received(); len(r) != 0 {
					t.Errorf("HOLE: upstream got requests: %v", r)
				}
				answers[i] = strings.Join(got, "\n")
				i++
			})
			if answers[0] != answers[1] {
				t.Errorf("answers differ:\ndirect: %s\ntransport: %s", answers[0], answers[1])
			}
		})
	}
}

// The direct path dials OrigDst and verifies the agent's SNI, whatever the
// request's Host or absolute-form target says (a mismatching Host is
// refused before anything goes out; the upstream's connection stays the
// one verified for example.com).
func TestAttackTLSDirectHostCannotRedirect(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, _ *holdConn) bool {
			b := "host=" + req.Host
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(b))+"\r\n\r\n"+b)
			return true
		})
		_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
		var got []string
		for _, r := range []string{
			"GET /a HTTP/1.1\r\n" + tlsEdgeHost + "\r\n",
			"GET /b HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
			"GET https://api.example.com/c HTTP/1.1\r\n" + tlsEdgeHost + "\r\n",
			"GET /d HTTP/1.1\r\nHost: example.com:1\r\n\r\n",
		} {
			got = append(got, exchangeRaw(t, dial(up.addr()), r)[0]) // one agent connection each
		}
		t.Logf("answers: %q", got)
		if !strings.Contains(got[0], `body="host=example.com"`) {
			t.Errorf("a: %s", got[0])
		}
		for j, a := range got[1:] {
			if !strings.HasPrefix(a, "403") && !strings.HasPrefix(a, "400") && !strings.Contains(a, `body="host=example.com`) {
				t.Errorf("HOLE? request %d: %s", j+1, a)
			}
		}
		for _, conn := range up.received() {
			for _, p := range conn {
				if p != "GET /a" && p != "GET /d" {
					t.Errorf("upstream got %q", p)
				}
			}
		}
	})
}

// The agent leaving while the upstream has not answered a direct TLS
// request closes the upstream connection; a policy reload that no longer
// allows a streaming answer cuts it.
func TestAttackTLSDirectCancelAndReload(t *testing.T) {
	t.Run("agent leaves", func(t *testing.T) {
		closed := make(chan struct{})
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, _ *holdConn) bool {
			go func() {
				io.Copy(io.Discard, c) // until clawd closes
				close(closed)
			}()
			return false
		})
		_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
		c := dial(up.addr())
		io.WriteString(c, "GET /hang HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
		select {
		case <-up.seen:
		case <-time.After(waitLimit):
			t.Fatal("request never reached upstream")
		}
		c.Close()
		select {
		case <-closed:
		case <-time.After(waitLimit):
			t.Fatal("HOLE: upstream connection left open after the agent left")
		}
	})
	t.Run("reload cuts stream", func(t *testing.T) {
		sent := make(chan struct{})
		cut := make(chan struct{})
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, _ *holdConn) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
			close(sent)
			for {
				if _, err := io.WriteString(c, "1\r\nx\r\n"); err != nil {
					close(cut)
					return false
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		dec := newDecider(policy.Allow)
		e, dial := interceptRawEnv(t, rootsOf(up.cert), dec)
		c := dial(up.addr())
		io.WriteString(c, "GET /stream HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		<-sent
		buf := make([]byte, 5)
		io.ReadFull(resp.Body, buf)
		dec.set(policy.Deny)
		if n := e.srv.Recheck("policy reloaded"); n != 1 {
			t.Errorf("Recheck closed %d, want 1", n)
		}
		c.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := io.Copy(io.Discard, resp.Body); err == nil {
			t.Error("HOLE: stream went on to its end after the reload")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Error("HOLE: stream not cut by the reload")
		}
		select {
		case <-cut:
		case <-time.After(waitLimit):
			t.Error("HOLE: upstream connection not closed after the reload")
		}
	})
}

// quiet(): EAGAIN alone means quiet; bytes, EOF, a closed socket are not.
func TestAttackTLSDirectQuietErrno(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mk := func() (*upConn, net.Conn) {
		acc := make(chan net.Conn, 1)
		go func() { c, _ := ln.Accept(); acc <- c }()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		srv := <-acc
		uc := &upConn{c: c}
		uc.rc, _ = c.(*net.TCPConn).SyscallConn()
		uc.peekFn = uc.peek
		uc.r = limitedConn{c: c, limit: -1}
		uc.br = bufio.NewReader(&uc.r)
		return uc, srv
	}
	uc, srv := mk()
	if !uc.quiet() {
		t.Error("silent open connection not quiet")
	}
	srv.Write([]byte("x"))
	waitReadable(t, uc)
	if uc.quiet() {
		t.Error("a pending byte counted as quiet")
	}
	if uc.quiet() {
		t.Error("a pending byte (second peek: MSG_PEEK must not consume) counted as quiet")
	}
	uc2, srv2 := mk()
	srv2.Close()
	waitReadable(t, uc2)
	if uc2.quiet() {
		t.Error("EOF counted as quiet")
	}
	uc3, _ := mk()
	uc3.c.Close()
	if uc3.quiet() {
		t.Error("closed socket counted as quiet")
	}
	srv.Close()
}

// waitReadable blocks until uc's socket has something to read (without
// reading it).
func waitReadable(t *testing.T, uc *upConn) {
	t.Helper()
	uc.rc.Read(func(fd uintptr) bool {
		uc.peek(fd)
		return uc.peekErr != 11 // EAGAIN: wait for readiness
	})
}

// The stray answer carries the secret clawd injected into the request
// before it (an echo of its Authorization header). Each answer is scrubbed
// of the secrets injected into its own request: the stray one is taken as
// the answer of the next request, which carried no placeholder, so the
// agent reads the real secret. (On the fallback the stray bytes are
// discarded.) The same echo in the first request's own answer is scrubbed.
func TestAttackTLSDirectStrayAnswerLeaksInjectedSecret(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		dir := t.TempDir()
		st, err := secrets.Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		const real = "sk-real-value-0123456789"
		sec, err := st.Set(secrets.Secret{Name: "api", Hosts: []string{"example.com"}}, []byte(real))
		if err != nil {
			t.Fatal(err)
		}
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, hc *holdConn) bool {
			echo := "auth=" + req.Header.Get("Authorization")
			if req.URL.Path != "/first" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
				return true
			}
			hc.start()
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(echo))+"\r\n\r\n"+echo)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Echo: "+echo+"\r\nContent-Length: "+itoa(len(echo))+"\r\n\r\n"+echo)
			hc.flush()
			return true
		})
		dec := newDecider(policy.Allow)
		dec.intercept["example.com"] = true
		e := newEnv(t, dec, func(c *Config) {
			c.UpstreamRoots = rootsOf(up.cert)
			c.Injector = storeInjector{st}
		})
		clawdPool := x509.NewCertPool()
		clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
		c := tls.Client(e.dial(up.addr()), &tls.Config{ServerName: "example.com", RootCAs: clawdPool, NextProtos: []string{"http/1.1"}})
		got := exchangeRaw(t, c,
			"GET /first HTTP/1.1\r\n"+tlsEdgeHost+"Authorization: Bearer "+sec.Placeholder+"\r\n\r\n",
			"GET /next HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")
		if strings.Contains(got[0], real) {
			t.Fatalf("first answer not scrubbed: %s", got[0])
		}
		if strings.Contains(got[1], real) {
			t.Errorf("HOLE: the agent read the injected secret in the answer to GET /next: %s", got[1])
		} else if !strings.Contains(got[1], `body="good"`) {
			t.Errorf("next answer: %s", got[1])
		}
	})
}

// Answers that must end the upstream connection over TLS: an unasked 101
// (502, connection closed), an answer without a length (read to the close,
// next request on a new connection), truncation without close_notify.
func TestAttackTLSDirectConnectionEndingAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"101 unasked", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n" + evilAnswer, "502"},
		{"no length", "HTTP/1.1 200 OK\r\n\r\nuntil-close", `body="until-close"`},
		{"truncated", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "error: unexpected EOF"}, // never a whole answer
	} {
		t.Run(tc.name, func(t *testing.T) {
			withDirect(t, func(t *testing.T) {
				up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, hc *holdConn) bool {
					if req.URL.Path == "/next" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
						return true
					}
					io.WriteString(c, tc.answer)
					if tc.name == "101 unasked" {
						io.Copy(io.Discard, c) // keeps it open until clawd closes
						return false
					}
					hc.Conn.Close() // TCP close, no close_notify
					return false
				})
				_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
				c := dial(up.addr())
				a := exchangeRaw(t, c, "GET /first HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
				if !strings.Contains(a, tc.want) || strings.Contains(a, "EVIL") {
					t.Errorf("first: %s", a)
				}
				if tc.name == "truncated" {
					return // the agent connection is cut (both paths)
				}
				a = exchangeRaw(t, c, "GET /next HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
				if !strings.Contains(a, `body="good"`) {
					t.Errorf("HOLE: next: %s", a)
				}
				if n := len(up.received()); n != 2 {
					t.Errorf("upstream connections: %v", up.received())
				}
			})
		})
	}
}

// The direct path's handshake timeout (no fallback) is classed as the
// fallback's TLSHandshakeTimeout is: same 502 reason, same audit text.
func TestAttackTLSDirectHandshakeTimeoutSameReason(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepts, never answers the ClientHello
		}
	}()
	tr := &http.Transport{TLSHandshakeTimeout: time.Nanosecond, TLSClientConfig: &tls.Config{ServerName: "example.com"}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+ln.Addr().String()+"/", nil)
	_, ferr := tr.RoundTrip(req)
	if ferr == nil {
		t.Fatal("no error")
	}
	derr := tlsRefused{context.DeadlineExceeded}
	if a, b := upstreamFailure(ferr), upstreamFailure(derr); a != b {
		t.Errorf("fallback %q (%v) vs direct %q", a, ferr, b)
	}
}

// Without an SNI the direct path is never used (the fallback, verifying
// the Host header's name, serves, or the interception fails): an
// HTTP/1.1 agent's GET reaches an h2-capable upstream on HTTP/2 or not at
// all, never on clawd's HTTP/1.1 connection.
func TestAttackTLSDirectNoSNIKeepsFallback(t *testing.T) {
	u, _ := tlsUpstream(t, false)
	e, _ := interceptEnv(t, u)
	tc := tls.Client(e.dial(mustAddrPort(u.Listener.Addr().String())), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := tc.Handshake(); err != nil {
		t.Logf("no interception without SNI: %v", err)
		return
	}
	a := exchangeRaw(t, tc, "GET /x HTTP/1.1\r\n"+tlsEdgeHost+"\r\n")[0]
	t.Logf("answer: %s", a)
	if strings.Contains(a, `X-Upstream-Proto=["HTTP/1.1"]`) {
		t.Errorf("HOLE: a request without SNI went on the direct path: %s", a)
	}
}

// An HTTP/2 agent stays on the fallback (HTTP/2 upstream).
func TestAttackTLSDirectH2AgentKeepsFallback(t *testing.T) {
	u, _ := tlsUpstream(t, false)
	roots := x509.NewCertPool()
	roots.AddCert(u.Certificate())
	dec := newDecider(policy.Allow)
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = roots })
	clawdPool := x509.NewCertPool()
	clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(mustAddrPort(u.Listener.Addr().String()), &tls.Config{RootCAs: clawdPool}, true)
	resp := mustGet(t, cl, "https://example.com/h2")
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.Header.Get("X-Upstream-Proto") != "HTTP/2.0" {
		t.Errorf("h2 agent: agent %s, upstream %s", resp.Proto, resp.Header.Get("X-Upstream-Proto"))
	}
}

// An agent that pipelines its requests (all written at once) gets each
// answer for its own request, in order, on the direct TLS path; a 1xx
// before an answer does not shift them.
func TestAttackTLSDirectAgentPipelining(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		up := newTLSRawUpstream(t, nil, func(_ int, req *http.Request, c *tls.Conn, _ *holdConn) bool {
			b := "answer-to " + req.URL.Path
			pre := ""
			if req.URL.Path == "/b" {
				pre = "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
			}
			io.WriteString(c, pre+"HTTP/1.1 200 OK\r\nContent-Length: "+itoa(len(b))+"\r\n\r\n"+b)
			return true
		})
		_, dial := interceptRawEnv(t, rootsOf(up.cert), nil)
		c := dial(up.addr())
		var all string
		for _, p := range []string{"/a", "/b", "/c", "/d"} {
			all += "GET " + p + " HTTP/1.1\r\n" + tlsEdgeHost + "\r\n"
		}
		io.WriteString(c, all)
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(waitLimit))
		for _, p := range []string{"/a", "/b", "/c", "/d"} {
			a := readAnswer(t, br, false)
			if !strings.Contains(a, `body="answer-to `+p+`"`) {
				t.Errorf("HOLE: %s answered with %s", p, a)
			}
		}
	})
}
