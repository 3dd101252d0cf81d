package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

func upstreamPool(u *upstream) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(u.Certificate())
	return p
}

func TestTLSPassthrough(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	tests := []struct {
		name    string
		def     policy.Action
		sni     string
		names   fakeNames
		wantErr string // "" = handshake with the upstream's own certificate
	}{
		{name: "allowed", def: policy.Allow, sni: "example.com"},
		{name: "denied by policy", def: policy.Deny, sni: "example.com", wantErr: "access denied"},
		{name: "SNI not resolved to destination", def: policy.Allow, sni: "example.com", names: fakeNames{"example.com": netip.MustParseAddr("10.9.9.9")}, wantErr: "access denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, newDecider(tt.def), func(c *Config) {
				if tt.names != nil {
					c.Names = tt.names
				}
			})
			hits := up.hits.Load()
			raw := e.dial(up.addr())
			// The agent trusts only the upstream's CA: passthrough must not
			// touch the TLS session.
			tc := tls.Client(raw, &tls.Config{ServerName: tt.sni, RootCAs: upstreamPool(up)})
			err := tc.Handshake()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("handshake err = %v, want %q", err, tt.wantErr)
				}
				if up.hits.Load() != hits {
					t.Error("upstream reached")
				}
				ent := e.audit.next(t)
				if ent.Proto != "tls" || ent.SNI != tt.sni || ent.Action != "deny" {
					t.Errorf("audit = %+v", ent)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if !tc.ConnectionState().PeerCertificates[0].Equal(up.Certificate()) {
				t.Error("agent did not get the upstream's own certificate")
			}
			io.WriteString(tc, "GET /pass HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if string(b) != "hello from upstream /pass" {
				t.Errorf("body = %q", b)
			}
			tc.Close()
			ent := e.audit.next(t)
			if ent.Proto != "tls" || ent.Action != "allow" || ent.BytesIn == 0 || ent.BytesOut == 0 {
				t.Errorf("audit = %+v", ent)
			}
		})
	}
}

func TestTLSPassthroughApprove(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	for _, approved := range []bool{true, false} {
		ap := &fakeApprover{holds: make(chan approval.Hold, 1), out: approval.Outcome{Approved: approved, Status: map[bool]string{true: "approved", false: "denied"}[approved]}}
		e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap })
		tc := tls.Client(e.dial(up.addr()), &tls.Config{ServerName: "example.com", RootCAs: upstreamPool(up)})
		err := tc.Handshake()
		h := <-ap.holds
		if h.URL != "tls://example.com:"+itoa(int(up.addr().Port())) || h.Method != "" {
			t.Errorf("hold = %+v", h)
		}
		if (err == nil) != approved {
			t.Errorf("approved=%v: handshake err %v", approved, err)
		}
		tc.Close()
	}
}

func TestIntercept(t *testing.T) {
	for _, h2 := range []bool{true, false} {
		name := "http1.1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			up := newUpstream(t, true, true, nil)
			dec := newDecider(policy.Allow, rule{name: "no-admin", pathPrefix: "/admin", action: policy.Deny})
			dec.intercept["example.com"] = true
			e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = upstreamPool(up) })
			clawdPool := x509.NewCertPool()
			clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
			tlsCfg := &tls.Config{RootCAs: clawdPool}
			if !h2 {
				tlsCfg.NextProtos = []string{"http/1.1"}
			}
			cl := e.client(up.addr(), tlsCfg, h2)

			resp := mustGet(t, cl, "https://example.com/ok?q=1")
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "hello from upstream /ok" {
				t.Fatalf("ok: %d %q", resp.StatusCode, b)
			}
			if wantMajor := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantMajor {
				t.Errorf("agent spoke HTTP/%d, want %d", resp.ProtoMajor, wantMajor)
			}
			if resp.TLS.PeerCertificates[0].Issuer.CommonName != e.ca.Certificate().Subject.CommonName {
				t.Error("agent was not served clawd's leaf")
			}
			// An HTTP/2 agent is multiplexed onto HTTP/2; an HTTP/1.1 agent's
			// requests, one at a time, go on HTTP/1.1 (the direct path).
			if want := map[bool]string{true: "HTTP/2.0", false: "HTTP/1.1"}[h2]; resp.Header.Get("X-Upstream-Proto") != want {
				t.Errorf("upstream saw %s, want %s", resp.Header.Get("X-Upstream-Proto"), want)
			}
			ent := e.audit.next(t)
			if ent.Proto != "https" || ent.SNI != "example.com" || ent.Path != "/ok" || ent.Status != 200 {
				t.Errorf("audit = %+v", ent)
			}

			resp = mustGet(t, cl, "https://example.com/admin/x")
			if m := jsonBody(t, resp); resp.StatusCode != 403 || m["rule"] != "no-admin" {
				t.Errorf("admin: %d %v", resp.StatusCode, m)
			}
			if up.hits.Load() != 1 {
				t.Errorf("upstream saw %d requests, want 1", up.hits.Load())
			}
		})
	}
}

func TestInterceptHostMustMatchSNI(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	dec := newDecider(policy.Allow)
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	tc := tls.Client(e.dial(up.addr()), &tls.Config{ServerName: "example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	// Domain fronting: TLS for example.com, Host header for another name
	// that also resolves to this IP.
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["error"] != "host_mismatch" {
		t.Errorf("got %d %v", resp.StatusCode, m)
	}
	if up.hits.Load() != 0 {
		t.Error("fronted request reached the upstream")
	}
}

func TestInterceptUpstreamUntrusted(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	dec := newDecider(policy.Allow)
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = x509.NewCertPool() }) // trusts nothing
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	resp := mustGet(t, e.client(up.addr(), &tls.Config{RootCAs: pool}, true), "https://example.com/")
	if m := jsonBody(t, resp); resp.StatusCode != 502 || m["error"] != "upstream_unreachable" {
		t.Errorf("got %d %v", resp.StatusCode, m)
	}
	if up.hits.Load() != 0 {
		t.Error("request sent to an unverified upstream")
	}
}

// tcpUpstream accepts connections and runs serve on each.
func tcpUpstream(t *testing.T, serve func(net.Conn)) (netip.AddrPort, chan struct{}) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String()), accepted
}

func echo(c net.Conn) {
	line, _ := bufio.NewReader(c).ReadString('\n')
	io.WriteString(c, "echo: "+line)
}

func TestRawTCP(t *testing.T) {
	dst, accepted := tcpUpstream(t, echo)
	tests := []struct {
		name  string
		rules []rule
		names fakeNames
		ok    bool
	}{
		{name: "allowed by IP", rules: []rule{{name: "by-ip", action: policy.Allow}}, ok: true},
		{name: "default deny", ok: false},
		{name: "allowed through a DNS name for the IP", rules: []rule{{name: "db", host: "db.internal", action: policy.Allow}},
			names: fakeNames{"db.internal": netip.MustParseAddr("127.0.0.1"), "other.internal": netip.MustParseAddr("127.0.0.1")}, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, newDecider(policy.Deny, tt.rules...), func(c *Config) {
				c.Names = tt.names
				if tt.names == nil {
					c.Names = nil
				}
			})
			c := e.dial(dst)
			io.WriteString(c, "\x00\x01binary hello\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			if tt.ok {
				if err != nil || line != "echo: \x00\x01binary hello\n" {
					t.Fatalf("echo = %q, %v", line, err)
				}
				<-accepted
				c.Close()
			} else if err == nil {
				t.Fatalf("denied connection got %q", line)
			}
			ent := e.audit.next(t)
			if ent.Proto != "tcp" || ent.Dst != dst.String() {
				t.Errorf("audit = %+v", ent)
			}
			if tt.names != nil && ent.Host != "db.internal" {
				t.Errorf("audit host = %q, want the name that was allowed", ent.Host)
			}
		})
	}
	select {
	case <-accepted:
		t.Error("a denied connection reached the upstream")
	default:
	}
}

func TestServerSpeaksFirst(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) {
		io.WriteString(c, "220 smtp ready\r\n")
		echo(c)
	})
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) { c.PeekTimeout = 20 * time.Millisecond })
	c := e.dial(dst)
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != "220 smtp ready\r\n" {
		t.Fatalf("banner = %q, %v", line, err)
	}
	io.WriteString(c, "EHLO x\n")
	if line, _ = br.ReadString('\n'); line != "echo: EHLO x\n" {
		t.Errorf("reply = %q", line)
	}
}

func TestForbiddenDestination(t *testing.T) {
	dst, accepted := tcpUpstream(t, echo)
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) { c.Forbidden = []netip.AddrPort{dst} })
	c := e.dial(dst)
	io.WriteString(c, "hi\n")
	if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Error("forbidden destination answered")
	}
	if ent := e.audit.next(t); ent.Rule != "clawd-internal" || ent.Action != "deny" {
		t.Errorf("audit = %+v", ent)
	}
	// TLS to a forbidden address is refused even for an intercepted host.
	e.dec.intercept["example.com"] = true
	tc := tls.Client(e.dial(dst), &tls.Config{ServerName: "example.com", InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("handshake err = %v", err)
	}
	select {
	case <-accepted:
		t.Error("forbidden destination reached")
	default:
	}
}

func TestDrainContext(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), nil)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c, _ := l.Accept()
		e.srv.ServeConn(ctx, c, ConnMeta{Container: testContainer, OrigDst: up.addr()})
		close(done)
	}()
	c, _ := net.Dial("tcp", l.Addr().String())
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	cancel() // daemon draining: the idle keep-alive connection ends
	<-done
}

func TestParseClientHello(t *testing.T) {
	rec := captureHello(t, &tls.Config{ServerName: "Api.Example.COM", NextProtos: []string{"h2", "http/1.1"}})
	br := bufio.NewReader(bytes.NewReader(rec))
	got := sniff(br)
	if got.stage != stageTLS || got.sni != "api.example.com" || len(got.alpn) != 2 {
		t.Errorf("sniff = %+v", got)
	}
	if br.Buffered() != len(rec) {
		t.Error("sniff consumed bytes")
	}
}

// captureHello returns the first TLS record a client sends.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	a, b := net.Pipe()
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify = true
	go func() { tls.Client(a, cfg).Handshake(); a.Close() }()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	b.Close()
	return append(hdr, body...)
}

func TestSniffKinds(t *testing.T) {
	tests := []struct {
		in   string
		want stage
	}{
		{"GET / HTTP/1.1\r\n", stageHTTP},
		{"POST /x HTTP/1.0\r\n", stageHTTP},
		{"M-SEARCH * HTTP/1.1\r\n", stageHTTP},
		{"delete /x HTTP/1.1\r\n", stageHTTP}, // servers accept any token
		{"DeLeTe /x HTTP/1.1\r\n", stageHTTP},
		{"\r\n\r\nDELETE /x HTTP/1.1\r\n", stageHTTP}, // llhttp skips empty lines
		{"\nGET / HTTP/1.1\r\n", stageHTTP},
		{"DELETE\t/x HTTP/1.1\r\n", stageHTTP}, // the framer refuses it with 400
		{"SSH-2.0-OpenSSH\r\n", stageOther},
		{"HI\n", stageOther},
		{" GET /", stageOther},
		{"\r\r\nGET /", stageOther},
		{"\x16\x03\x01\x00\x05hello", stageBadTLS}, // TLS-looking garbage
		{"\x16\x03", stageBadTLS},
		{"", stageOther},
	}
	for _, tt := range tests {
		if got := sniff(bufio.NewReaderSize(strings.NewReader(tt.in), sniffBufSize)); got.stage != tt.want {
			t.Errorf("sniff(%q) = %v, want %v", tt.in, got.stage, tt.want)
		}
	}
}

func FuzzSniff(f *testing.F) {
	f.Add(captureHello(f, &tls.Config{ServerName: "example.com", NextProtos: []string{"h2"}}))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("\x16\x03\x01\xff\xff"))
	f.Add([]byte("\x16\x03\x01\x00\x04\x01\x00\x00\x00"))
	f.Add([]byte("SSH-2.0-x\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(b), sniffBufSize)
		got := sniff(br)
		if got.stage == stageTLS && len(got.sni) > 255 {
			t.Errorf("implausible SNI length %d", len(got.sni))
		}
		// Sniffing never consumes: everything read stays replayable.
		rest, _ := io.ReadAll(br)
		if !bytes.Equal(rest, b) {
			t.Error("sniff consumed or altered bytes")
		}
	})
}

func TestTLSWithoutSNIDecidedOnIP(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	dec := newDecider(policy.Deny, rule{name: "by-name", host: "example.com", action: policy.Allow})
	e := newEnv(t, dec, func(c *Config) { c.Names = fakeNames{"example.com": up.addr().Addr()} })
	// No ServerName: the client sends no SNI, so the IP's DNS names decide.
	tc := tls.Client(e.dial(up.addr()), &tls.Config{RootCAs: upstreamPool(up), InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	tc.Close()
	ent := e.audit.next(t)
	if ent.Proto != "tls" || ent.SNI != "" || ent.Host != "example.com" || ent.Rule != "by-name" {
		t.Errorf("audit = %+v", ent)
	}
}

func TestRawTCPApprove(t *testing.T) {
	dst, _ := tcpUpstream(t, echo)
	ap := &fakeApprover{holds: make(chan approval.Hold, 1), out: approval.Outcome{Approved: true, Status: "approved", By: "cli", ID: "x1"}}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap; c.Names = nil })
	c := e.dial(dst)
	io.WriteString(c, "hello\n")
	h := <-ap.holds
	if h.URL != "tcp://"+dst.String() || h.Method != "" || h.BodySize != -1 {
		t.Errorf("hold = %+v", h)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "echo: hello\n" {
		t.Fatalf("after approval: %q %v", line, err)
	}
	c.Close()
	if ent := e.audit.next(t); ent.Action != "approved" || ent.By != "cli" || ent.ApprovalID != "x1" {
		t.Errorf("audit = %+v", ent)
	}
}

func TestShutdownForcesSplicedConnections(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) }) // never ends on its own
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) { c.Names = nil })
	c := e.dial(dst)
	io.WriteString(c, "x")
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: close at once
	if err := e.srv.Shutdown(ctx); err == nil {
		t.Error("Shutdown with a live splice and a done ctx returned nil")
	}
	if _, err := c.Read(b); err == nil {
		t.Error("spliced connection still open after forced Shutdown")
	}
}

func TestAuditHasNoHeaderValuesOrQuery(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), nil)
	req, _ := http.NewRequest("POST", "http://api.example.com/p?token=QUERYSECRET", strings.NewReader("BODYSECRET"))
	req.Header.Set("Authorization", "Bearer HEADERSECRET")
	resp, err := e.client(up.addr(), nil, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ent := e.audit.next(t)
	line := fmt.Sprintf("%+v", ent)
	for _, s := range []string{"QUERYSECRET", "HEADERSECRET", "BODYSECRET"} {
		if strings.Contains(line, s) {
			t.Errorf("audit entry contains %s: %s", s, line)
		}
	}
	if ent.BytesOut != int64(len("BODYSECRET")) || ent.BytesIn == 0 || ent.Path != "/p" {
		t.Errorf("audit = %+v", ent)
	}
}
