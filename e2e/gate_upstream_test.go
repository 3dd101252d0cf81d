package e2e

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// The gate upstream: servers the gate tests add to the shared upstream
// netns. Unlike the harness's Go HTTP server they record every byte they
// receive, and parse it as leniently as the most forgiving real servers
// (leading empty lines, lower-case and odd method tokens, tabs, bare LF or
// CR line ends, obs-fold, HTTP/0.9, Transfer-Encoding over Content-Length):
// whatever reaches them raw shows up, as bytes and as the requests a lenient
// server would act on.
//
//	198.51.100.10:8190, [2001:db8::10]:8190  plain HTTP (WebSocket upgrades: 101, then echo)
//	198.51.100.10:8593, [2001:db8::10]:8593  the same behind TLS (leaf of a test CA, any ALPN ignored)
//	198.51.100.10:9114                      banner "220 ..." then echo (server speaks first)
//	198.51.100.10:9110-9113, 9115 (+ v6)    TCP echo
const (
	gatePlainPort  = 8190
	gateTLSPort    = 8593
	gateBannerPort = 9114
	gateEchoA      = 9110
	gateEchoB      = 9111
	gateHoldPort   = 9112
	gateGrantPort  = 9113
	gateCoEcho     = 9115
)

// gateReq is one request a gate server parsed.
type gateReq struct {
	Method, Target, Version, Host string
	Header                        []string
	Body                          []byte
}

// gateConn is one connection a gate server accepted.
type gateConn struct {
	Listen string // listener address
	TLS    bool
	SNI    string
	HSErr  string // TLS handshake error
	Raw    []byte // bytes as received on the wire (capped)
	Reqs   []gateReq
}

type gateUpstream struct {
	CAFile string

	mu    sync.Mutex
	conns []*gateConn
}

const gateRawCap = 1 << 20

func startGateUpstream(t *testing.T, up *harness.Upstream) *gateUpstream {
	t.Helper()
	caCert, caKey, caPEM, err := polNewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := polLeaf(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	g := &gateUpstream{CAFile: filepath.Join(dir, "gate-ca.pem")}
	if err := os.WriteFile(g.CAFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS10}
	listen := func(ip string, port int, serve func(net.Conn, string)) {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		ln, err := up.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serve(c, addr)
			}
		}()
	}
	for _, ip := range []string{harness.UpstreamIPv4.String(), harness.UpstreamIPv6.String()} {
		listen(ip, gatePlainPort, func(c net.Conn, a string) { g.serve(c, a, nil) })
		listen(ip, gateTLSPort, func(c net.Conn, a string) { g.serve(c, a, tlsCfg) })
		for _, p := range []int{gateEchoA, gateEchoB, gateHoldPort, gateGrantPort, gateCoEcho} {
			listen(ip, p, func(c net.Conn, _ string) { defer c.Close(); io.Copy(c, c) })
		}
	}
	listen(harness.UpstreamIPv4.String(), gateBannerPort, func(c net.Conn, _ string) {
		defer c.Close()
		fmt.Fprintf(c, "220 hostile-banner\n")
		io.Copy(c, c)
	})
	return g
}

// teeConn records what is read from the wire.
type teeConn struct {
	net.Conn
	g   *gateUpstream
	rec *gateConn
}

func (c teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.g.mu.Lock()
		if len(c.rec.Raw) < gateRawCap {
			c.rec.Raw = append(c.rec.Raw, p[:min(n, gateRawCap-len(c.rec.Raw))]...)
		}
		c.g.mu.Unlock()
	}
	return n, err
}

func (g *gateUpstream) serve(c net.Conn, listen string, tlsCfg *tls.Config) {
	defer c.Close()
	rec := &gateConn{Listen: listen, TLS: tlsCfg != nil}
	g.mu.Lock()
	g.conns = append(g.conns, rec)
	g.mu.Unlock()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	var rw net.Conn = teeConn{c, g, rec}
	if tlsCfg != nil {
		tc := tls.Server(rw, tlsCfg)
		err := tc.Handshake()
		g.mu.Lock()
		rec.SNI = tc.ConnectionState().ServerName
		if err != nil {
			rec.HSErr = err.Error()
		}
		g.mu.Unlock()
		if err != nil {
			// Keep reading: the record shows whatever else was sent.
			io.Copy(io.Discard, rw)
			return
		}
		rw = tc
	}
	var buf []byte
	b := make([]byte, 64<<10)
	for {
		n, err := rw.Read(b)
		buf = append(buf, b[:n]...)
		for {
			r, used, ok, stop := lenientNext(buf)
			if !ok {
				if stop { // not HTTP (any more): record the rest raw
					io.Copy(io.Discard, rw)
					return
				}
				break
			}
			buf = buf[used:]
			g.mu.Lock()
			rec.Reqs = append(rec.Reqs, r)
			g.mu.Unlock()
			if r.Version == "" { // HTTP/0.9: the body, then close
				fmt.Fprintf(rw, "seen %s %s\n", r.Method, r.Target)
				return
			}
			if hdrHas(r, "upgrade", "websocket") {
				h := sha1.Sum([]byte(hdrGet(r, "sec-websocket-key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
				fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Gate-Upstream: reached\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
				rw.Write(buf)
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				io.Copy(rw, rw) // echo
				return
			}
			body := fmt.Sprintf("seen %s %s\n", r.Method, r.Target)
			fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Gate-Upstream: reached\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			if stop {
				io.Copy(io.Discard, rw)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func hdrGet(r gateReq, name string) string {
	for _, h := range r.Header {
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func hdrHas(r gateReq, name, token string) bool {
	for _, h := range r.Header {
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) &&
			strings.Contains(strings.ToLower(v), token) {
			return true
		}
	}
	return false
}

// gateLine reads one line at i ending in CRLF, LF or a lone CR.
func gateLine(b []byte, i int) (string, int, bool) {
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '\n':
			return string(b[i:j]), j + 1, true
		case '\r':
			if j+1 == len(b) {
				return "", 0, false // CRLF or lone CR: wait
			}
			if b[j+1] == '\n' {
				return string(b[i:j]), j + 2, true
			}
			return string(b[i:j]), j + 1, true
		}
	}
	return "", 0, false
}

func isTokenByte(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune("()<>@,;:\\\"/[]?={}", rune(c))
}

// lenientHead parses the request line and headers at the start of b. i is
// where the body starts; ok false: incomplete; stop: not HTTP/1.x (or an
// HTTP/0.9 or h2 preface line, complete at i).
func lenientHead(b []byte) (r gateReq, i int, ok, stop bool) {
	for i < len(b) && (b[i] == '\r' || b[i] == '\n' || b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i == len(b) {
		return r, 0, false, false
	}
	line, i, lok := gateLine(b, i)
	if !lok {
		return r, 0, false, len(b) > 64<<10
	}
	f := strings.Fields(line)
	if len(f) < 2 || len(f) > 3 {
		return r, 0, false, true
	}
	for k := 0; k < len(f[0]); k++ {
		if !isTokenByte(f[0][k]) {
			return r, 0, false, true
		}
	}
	r.Method, r.Target = f[0], f[1]
	if len(f) == 2 {
		return r, i, true, true // HTTP/0.9
	}
	r.Version = f[2]
	if strings.HasPrefix(strings.ToUpper(r.Version), "HTTP/2") {
		return r, i, true, true // h2 preface: frames follow
	}
	for {
		l, next, lok := gateLine(b, i)
		if !lok {
			return r, 0, false, false
		}
		i = next
		if l == "" {
			break
		}
		if (l[0] == ' ' || l[0] == '\t') && len(r.Header) > 0 {
			r.Header[len(r.Header)-1] += " " + strings.TrimSpace(l)
			continue
		}
		r.Header = append(r.Header, l)
	}
	r.Host = hdrGet(r, "host")
	return r, i, true, false
}

// lenientNext parses the first request in b. ok: a whole request (n bytes);
// stop: b is not (or no longer) HTTP/1.x, so nothing more will parse.
func lenientNext(b []byte) (r gateReq, n int, ok, stop bool) {
	r, i, ok, stop := lenientHead(b)
	if !ok || stop {
		return r, i, ok, stop
	}
	if hdrHas(r, "transfer-encoding", "chunked") {
		for {
			l, next, lok := gateLine(b, i)
			if !lok {
				return r, 0, false, false
			}
			sz, _, _ := strings.Cut(l, ";")
			size, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 64)
			if err != nil || size < 0 || size > 64<<20 {
				return r, 0, false, true
			}
			i = next
			if size == 0 {
				for { // trailer
					l, next, lok := gateLine(b, i)
					if !lok {
						return r, 0, false, false
					}
					i = next
					if l == "" {
						return r, i, true, false
					}
				}
			}
			if int64(len(b)-i) < size {
				return r, 0, false, false
			}
			r.Body = append(r.Body, b[i:i+int(size)]...)
			i += int(size)
			if _, next, lok := gateLine(b, i); lok {
				i = next
			} else {
				return r, 0, false, false
			}
		}
	}
	if cl := hdrGet(r, "content-length"); cl != "" {
		v, _, _ := strings.Cut(cl, ",")
		size, err := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(v), "+"), 10, 64)
		if err != nil || size < 0 {
			return r, 0, false, true
		}
		if int64(len(b)-i) < size {
			return r, 0, false, false
		}
		r.Body = append(r.Body, b[i:i+int(size)]...)
		i += int(size)
	}
	return r, i, true, false
}

// Conns returns a copy of what the servers recorded.
func (g *gateUpstream) Conns() []gateConn {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]gateConn, len(g.conns))
	for i, c := range g.conns {
		out[i] = *c
		out[i].Raw = append([]byte(nil), c.Raw...)
		out[i].Reqs = append([]gateReq(nil), c.Reqs...)
	}
	return out
}

// gateMarker matches "hostile-<vector>" and nothing longer (vector names
// are prefixes of one another: c1-tls-no-sni, c1-tls-no-sni-v6).
func gateMarker(vector string) *regexp.Regexp {
	return regexp.MustCompile(`hostile-` + regexp.QuoteMeta(vector) + `($|[^a-z0-9-])`)
}

// Seen returns the requests carrying vector's marker (target or body), with
// their connection.
func (g *gateUpstream) Seen(vector string) []gateSeen {
	re := gateMarker(vector)
	var out []gateSeen
	for _, c := range g.Conns() {
		for _, r := range c.Reqs {
			if re.MatchString(r.Target) || re.Match(r.Body) {
				out = append(out, gateSeen{c.Listen, c.TLS, c.SNI, r})
			}
		}
	}
	return out
}

type gateSeen struct {
	Listen string
	TLS    bool
	SNI    string
	Req    gateReq
}

// gateDenied reports whether the policy denies r outright on the
// intercepted host: DELETE, or a path under /admin (as a server would
// read the target: absolute form, query and fragment cut off, percent
// decoded, dot segments resolved, case folded).
func gateDenied(r gateReq) bool {
	if strings.EqualFold(r.Method, "DELETE") {
		return true
	}
	p := r.Target
	if i := strings.Index(p, "://"); i >= 0 {
		rest := p[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			p = rest[j:]
		} else {
			p = "/"
		}
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	p = strings.ToLower(path.Clean("/" + strings.ReplaceAll(p, "\\", "/")))
	return p == "/admin" || strings.HasPrefix(p, "/admin/")
}

func gateNormHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return strings.TrimSuffix(strings.Trim(h, "[]"), ".")
}

// gateAllowed is an audit action that let a request through.
func gateAllowed(action string) bool {
	return action == "allow" || action == "approved" || action == "granted"
}

// Escapes lists how vector's bytes reached the gate upstream without the
// decision the invariant demands:
//
//   - a TLS connection whose wire bytes carry the marker: the agent's own
//     ClientHello (its ALPN list holds the marker) reached the upstream, so
//     the connection was spliced, not intercepted;
//   - a plain connection whose bytes carry the marker in no request a
//     server would parse: raw bytes, no decision;
//   - a request carrying the marker that the policy denies (DELETE, /admin);
//   - a request carrying the marker for which the audit log has no HTTP
//     decision letting that method and path through for the Host the
//     upstream saw.
//
// allowSplice skips the first rule (the passthrough control).
func (g *gateUpstream) Escapes(vector string, entries []audit.Entry, allowSplice bool) []string {
	re := gateMarker(vector)
	var out []string
	for _, c := range g.Conns() {
		var hits []gateReq
		for _, r := range c.Reqs {
			if re.MatchString(r.Target) || re.Match(r.Body) {
				hits = append(hits, r)
			}
		}
		if allowSplice { // the passthrough control: only denied requests count
			for _, r := range hits {
				if gateDenied(r) {
					out = append(out, fmt.Sprintf("A DENIED REQUEST REACHED THE UPSTREAM: %s %s (Host %q) at %s", r.Method, r.Target, r.Host, c.Listen))
				}
			}
			continue
		}
		raw := re.Match(c.Raw)
		switch {
		case c.TLS && raw:
			out = append(out, fmt.Sprintf("the agent's own TLS handshake reached %s (spliced, not intercepted; sni %q)", c.Listen, c.SNI))
		case !c.TLS && raw && len(hits) == 0:
			// A decided request whose body then failed (clawd answers 502)
			// leaves only its head upstream: that head was decided.
			if h, _, ok, _ := lenientHead(c.Raw); ok && re.MatchString(h.Target) {
				hits = append(hits, h)
				break
			}
			out = append(out, fmt.Sprintf("raw bytes with the marker reached %s and no HTTP decision covers them: %q", c.Listen, tail(string(c.Raw), 160)))
		}
		for _, r := range hits {
			desc := fmt.Sprintf("%s %s (Host %q) at %s", r.Method, r.Target, r.Host, c.Listen)
			if gateDenied(r) {
				out = append(out, "A DENIED REQUEST REACHED THE UPSTREAM: "+desc)
			}
			if !gateDecided(entries, r, re) {
				out = append(out, "reached the upstream without an HTTP decision for it: "+desc)
			}
		}
	}
	return out
}

// gateDecided reports whether an audit line lets r through: same method,
// a path with the marker, the same host, an allowing action.
func gateDecided(entries []audit.Entry, r gateReq, re *regexp.Regexp) bool {
	for _, e := range entries {
		if e.Method == "" || !strings.EqualFold(e.Method, r.Method) || !re.MatchString(e.Path) || !gateAllowed(e.Action) {
			continue
		}
		if r.Host != "" && gateNormHost(e.Host) != gateNormHost(r.Host) {
			continue
		}
		return true
	}
	return false
}

// The lenient parser reads what forgiving servers read (no root needed).
func TestGateLenientParser(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "GET /a h"},
		{"\r\n\ndelete /a HTTP/1.1\nHost: h\n\n", "delete /a h"},
		{"DELETE\t/a\tHTTP/1.1\r\nHost: h\r\n\r\n", "DELETE /a h"},
		{"GET /a HTTP/1.1\r\nHost: x\r\n h\r\n\r\n", "GET /a x h"},
		{"GET /admin/x\r\n", "GET /admin/x"},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nDELETE /b HTTP/1.1\r\nHost: h\r\n\r\n", "POST /a h|DELETE /b h"},
		{"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 5\r\n\r\nGET /b HTTP/1.1\r\n\r\n", "POST /a h|GET /b"},
		{"GET /a HTTP/1.1\r\nHost: h\r\nX: y\rDELETE /b HTTP/1.1\r\n\r\n", "GET /a h"},
		{"\x00\x01junk\r\n\r\n", ""},
	} {
		var got []string
		b := []byte(tc.in)
		for {
			r, n, ok, stop := lenientNext(b)
			if !ok {
				break
			}
			got = append(got, strings.TrimSpace(r.Method+" "+r.Target+" "+r.Host))
			b = b[n:]
			if stop {
				break
			}
		}
		if g := strings.Join(got, "|"); g != tc.want {
			t.Errorf("%q: parsed %q, want %q", tc.in, g, tc.want)
		}
	}
	if !gateDenied(gateReq{Method: "GET", Target: "http://x/%61dmin/./y?z"}) || !gateDenied(gateReq{Method: "get", Target: "/ADMIN#frag"}) || gateDenied(gateReq{Method: "GET", Target: "/administrator"}) {
		t.Error("gateDenied misreads /admin paths")
	}
	if re := gateMarker("c1-tls-no-sni"); re.MatchString("/hostile-c1-tls-no-sni-v6") || !re.MatchString("/hostile-c1-tls-no-sni") || !re.MatchString("/admin/hostile-c1-tls-no-sni/x") {
		t.Error("gateMarker matches a longer vector name")
	}
}
