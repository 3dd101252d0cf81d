package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// polPolicy: set "web" (hosts only, so unknown names get NXDOMAIN) for
// containers polweb-*, set "raw" (a CIDR rule: every name resolves) for
// polraw-*.
const polPolicy = `version: 1
default:
  default_action: deny
  rules: []
sets:
  - name: web
    match: {name: "polweb-*"}
    rules:
      - name: v1-read
        hosts: api.upstream.test
        ports: 8080
        methods: [GET]
        paths: /v1/**
        action: allow
      - name: v1-no-writes
        hosts: api.upstream.test
        ports: 8080
        paths: /v1/**
        action: deny
        reason: the v1 API is read-only
      - name: admin-block
        hosts: api.upstream.test
        ports: 8080
        paths: /admin/**
        action: deny
      - name: toggle
        enabled: false
        hosts: api.upstream.test
        ports: 8080
        paths: /toggle/**
        action: allow
      - name: limited
        hosts: api.upstream.test
        ports: 8080
        paths: /limited
        rate_limit: 2/minute
        action: allow
      - name: no-drop
        hosts: api.upstream.test
        ports: 8080
        methods: [POST]
        paths: /sql
        body_contains: "drop table"
        action: deny
      - name: sql-post
        hosts: api.upstream.test
        ports: 8080
        methods: [POST]
        paths: /sql
        action: allow
      - name: hop
        hosts: api.upstream.test
        ports: 8080
        paths: /hop
        action: allow
      - name: ws-block
        hosts: stream.upstream.test
        ports: 8081
        paths: /ws-blocked
        action: deny
      - name: stream
        hosts: stream.upstream.test
        ports: 8081
        action: allow
      - name: pass
        hosts: pass.upstream.test
        ports: 8443
        action: allow
      - name: mitm-secret
        hosts: mitm.upstream.test
        ports: 8443
        paths: /secret/**
        action: deny
      - name: mitm
        hosts: mitm.upstream.test
        ports: 8443
        intercept: true
        methods: [GET]
        action: allow
  - name: raw
    match: {name: "polraw-*"}
    rules:
      - name: echo
        cidrs: [198.51.100.10/32]
        ports: 9000
        action: allow
`

func polExpectDeny(t *testing.T, a AgentAnswer, status int, errCode, rule string) denyBody {
	t.Helper()
	if a.Status != status {
		t.Fatalf("status %d, want %d: %+v", a.Status, status, a)
	}
	d := parseDeny(t, a)
	if d.Error != errCode || (rule != "" && d.Rule != rule) {
		t.Fatalf("deny body %+v, want error %q rule %q", d, errCode, rule)
	}
	if status == 403 {
		if got := a.Headers["X-Should-Retry"]; len(got) != 1 || got[0] != "false" {
			t.Fatalf("x-should-retry = %v, want false (headers %v)", got, a.Headers)
		}
	}
	return d
}

// upCount counts the requests the harness upstream (:8080) saw for path.
func upCount(up *harness.Upstream, path string) int {
	n := 0
	for _, s := range up.Requests() {
		if strings.SplitN(s.Path, "?", 2)[0] == path {
			n++
		}
	}
	return n
}

// TestPolicyEnforcedEndToEnd runs the policy scenarios (and a port
// of the OneCLI gateway's black-box cases) through one real daemon and two
// attached busybox containers: each subtest asserts what the agent got, what
// the upstream saw and, at the end, what the audit log says. The subtests
// share the daemon and run in order (the audit subtest reads the lines the
// earlier ones caused).
// rawHTTP sends stream (printf format: %% for %) with busybox nc from ct to
// host:port and returns what came back. It keeps its side open until n
// status lines arrived (bounded), as a real client does: a half-closed
// request is cancelled by the proxy.
func rawHTTP(t *testing.T, ct *harness.Container, host string, port, n int, stream string) string {
	t.Helper()
	// The reader counts answers through cat, which prints nothing (and grep
	// then 0) before nc's redirection has created the file: a bare
	// `grep -c` on a missing file prints nothing, the test `[ "" -lt n ]`
	// fails, and the request would be cut short.
	out, _ := sh(t, ct, fmt.Sprintf("rm -f /tmp/raw; (printf -- '%s'; i=0; while [ $i -lt 50 ] && [ \"$(cat /tmp/raw 2>/dev/null | grep -c 'HTTP/1.1 ')\" -lt %d ]; do sleep 0.1; i=$((i+1)); done) | timeout 10 nc %s %d > /tmp/raw; cat /tmp/raw", stream, n, host, port))
	return out
}

func TestPolicyEnforcedEndToEnd(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up, srv := polUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: polPolicy, Extra: "upstream-ca-file: " + srv.CAFile + "\n"})
	files := map[string]string{agentBin(t): "/agent", dnsqBin(t): "/dnsq", srv.CAFile: "/testca.pem"}
	web := ctd.Run(t, "polweb", harness.RunOpts{Files: files, Labels: map[string]string{"team": "e2e-pol"}})
	raw := ctd.Run(t, "polraw", harness.RunOpts{Files: files})
	cl.MustCLI("attach", "--trust-ca", web.Name)
	cl.MustCLI("attach", raw.Name)
	up.Reset()
	srv.Reset()

	const api = "http://api.upstream.test:8080"

	t.Run("dns", func(t *testing.T) {
		// A name the web set refuses never reaches the upstream resolver
		// (no way to leak data through queries).
		defer func() {
			raw := 0
			for _, q := range up.DNSQueries() {
				if strings.HasPrefix(q, "nope-web.") {
					t.Errorf("the upstream DNS saw a refused name: %q", q)
				}
				if strings.HasPrefix(q, "nope-raw.") {
					raw++
				}
			}
			if raw == 0 {
				t.Errorf("the upstream DNS saw none of the raw set's queries: %v", up.DNSQueries())
			}
		}()
		for _, proto := range []string{"udp", "tcp"} {
			flag := ""
			if proto == "tcp" {
				flag = "-tcp"
			}
			// A name the policy names resolves (clawd forwards to the upstream DNS).
			if a := dnsq(t, web, flag, "api.upstream.test"); a.Rcode != "NOERROR" || len(a.Answers) != 1 || a.Answers[0] != harness.UpstreamIPv4.String() {
				t.Fatalf("%s: api.upstream.test from the web set: %+v", proto, a)
			}
			// A name no rule of the web set could allow: NXDOMAIN, though the
			// upstream DNS knows it ...
			for _, qt := range []string{"A", "AAAA"} {
				if a := dnsq(t, web, flag, "-type", qt, "nope-web.upstream.test"); a.Rcode != "NXDOMAIN" || len(a.Answers) != 0 {
					t.Fatalf("%s: nope-web.upstream.test %s from the web set: %+v, want NXDOMAIN", proto, qt, a)
				}
			}
			// ... as the raw set (a CIDR rule: the address decides) shows.
			if a := dnsq(t, raw, flag, "nope-raw.upstream.test"); a.Rcode != "NOERROR" || len(a.Answers) != 1 {
				t.Fatalf("%s: nope-raw.upstream.test from the raw set: %+v, want an answer", proto, a)
			}
		}
		// The refusals are audited, with the container.
		eventually(t, "an audit line for the refused name", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Event == "dns" && e.Host == "nope-web.upstream.test" && e.Action == "deny" && e.Container == web.Name && e.Labels["team"] == "e2e-pol" {
					return true
				}
			}
			return false
		})
		// busybox's resolver (UDP) sees the same.
		if out, code := sh(t, web, "nslookup nope-web.upstream.test"); code == 0 || strings.Contains(out, "198.51.100.10") {
			t.Fatalf("busybox nslookup of a denied name: %d %s", code, out)
		}
	})

	t.Run("http-by-method-and-path", func(t *testing.T) {
		if a := agent(t, web, api+"/v1/items?x=1"); a.Status != 200 || !strings.Contains(a.Body, `"/v1/items?x=1"`) {
			t.Fatalf("allowed GET: %+v", a)
		}
		d := polExpectDeny(t, agent(t, web, "-X", "POST", "-d", "{}", api+"/v1/items"), 403, "blocked_by_policy", "v1-no-writes")
		if d.Method != "POST" || d.Path != "/v1/items" || !strings.Contains(d.Reason, "read-only") {
			t.Fatalf("deny body %+v", d)
		}
		polExpectDeny(t, agent(t, web, api+"/admin/users"), 403, "blocked_by_policy", "admin-block")
		// A path no rule names falls to the set's default deny.
		polExpectDeny(t, agent(t, web, api+"/other"), 403, "blocked_by_policy", "")
		if n := upCount(up, "/v1/items"); n != 1 {
			t.Fatalf("upstream saw /v1/items %d times, want 1 (the GET only)", n)
		}
		for _, p := range []string{"/admin/users", "/other"} {
			if n := upCount(up, p); n != 0 {
				t.Fatalf("upstream saw denied %s %d times", p, n)
			}
		}
	})

	t.Run("path-tricks", func(t *testing.T) {
		// Request targets an upstream could read as /admin/...: decided as
		// such (or refused), never forwarded. Sent raw, as a client could.
		up.Reset()
		for _, target := range []string{
			"/v1/../admin/users",
			"/v1/%2e%2e/admin/users",
			"/v1/..%2fadmin/users",
			"/v1/%252e%252e/admin",
			"/ADMIN/users",
			"/v1//../admin/users",
			"/v1/x/../../admin/users",
			"http://api.upstream.test:8080/v1/../admin/users",
			"//api.upstream.test:8080/admin/users",
		} {
			req := fmt.Sprintf(`GET %s HTTP/1.1\r\nHost: api.upstream.test:8080\r\nConnection: close\r\n\r\n`, target)
			req = strings.ReplaceAll(req, "%", "%%") // printf format
			out := rawHTTP(t, web, "api.upstream.test", 8080, 1, req)
			if !strings.HasPrefix(out, "HTTP/1.1 403 ") && !strings.HasPrefix(out, "HTTP/1.1 400 ") {
				t.Errorf("%s: %q, want 403 (or 400)", target, out)
			}
		}
		// Control: the same way of sending reaches the upstream when allowed.
		req := `GET /v1/raw-control HTTP/1.1\r\nHost: api.upstream.test:8080\r\nConnection: close\r\n\r\n`
		if out := rawHTTP(t, web, "api.upstream.test", 8080, 1, req); !strings.HasPrefix(out, "HTTP/1.1 200 ") {
			t.Fatalf("control request: %q", out)
		}
		// A client that half-closes after its request gets the real answer
		// or none, never an empty 200 the upstream did not send.
		half := `GET /v1/half-closed HTTP/1.1\r\nHost: api.upstream.test:8080\r\nConnection: close\r\n\r\n`
		if out, _ := sh(t, web, fmt.Sprintf("printf -- '%s' | timeout 5 nc api.upstream.test 8080", half)); strings.HasPrefix(out, "HTTP/1.1 200 ") && !strings.Contains(out, `"/v1/half-closed"`) {
			t.Errorf("half-closed request got a 200 without the upstream's body: %q", out)
		}
		// Pipelined requests and a CL.TE smuggling attempt: every request in
		// the stream is decided on its own.
		for _, c := range []struct{ name, stream string }{
			{"pipelined", `GET /v1/pipelined HTTP/1.1\r\nHost: api.upstream.test:8080\r\n\r\nGET /admin/pipelined HTTP/1.1\r\nHost: api.upstream.test:8080\r\nConnection: close\r\n\r\n`},
			{"smuggled", `POST /hop HTTP/1.1\r\nHost: api.upstream.test:8080\r\nContent-Length: 61\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/smuggled HTTP/1.1\r\nHost: api.upstream.test:8080\r\n\r\n`},
		} {
			out := rawHTTP(t, web, "api.upstream.test", 8080, 2, c.stream)
			if c.name == "pipelined" && (!strings.Contains(out, "HTTP/1.1 200 ") || !strings.Contains(out, "HTTP/1.1 403 ")) {
				t.Errorf("%s: want a 200 and a 403:\n%s", c.name, out)
			}
		}
		for _, s := range up.Requests() {
			if strings.Contains(strings.ToLower(s.Path), "admin") || strings.Contains(strings.ToLower(s.Body), "admin") {
				t.Errorf("upstream saw %s %s (body %q)", s.Method, s.Path, s.Body)
			}
		}
		if upCount(up, "/v1/raw-control") != 1 || upCount(up, "/v1/pipelined") != 1 || upCount(up, "/v1/half-closed") > 1 {
			t.Errorf("upstream saw the allowed requests %d and %d times, want once each", upCount(up, "/v1/raw-control"), upCount(up, "/v1/pipelined"))
		}
	})

	t.Run("disabled-rule", func(t *testing.T) {
		d := polExpectDeny(t, agent(t, web, api+"/toggle/a"), 403, "blocked_by_policy", "")
		if d.Rule == "toggle" {
			t.Fatalf("a disabled rule decided: %+v", d)
		}
		if n := upCount(up, "/toggle/a"); n != 0 {
			t.Fatalf("upstream saw /toggle/a %d times", n)
		}
	})

	t.Run("host-not-in-policy", func(t *testing.T) {
		// By address: the web set names hosts only.
		polExpectDeny(t, agent(t, web, upURL("/by-ip")), 403, "blocked_by_policy", "")
		polExpectDeny(t, agent(t, web, upURL6("/by-ip")), 403, "blocked_by_policy", "")
		// TLS by address (no SNI) is refused before any byte reaches the server.
		if a := agent(t, web, "-cacert", "/testca.pem", fmt.Sprintf("https://%s:%d/by-ip-tls", harness.UpstreamIPv4, polTLSPort)); a.Error == "" {
			t.Fatalf("TLS by address: %+v", a)
		}
		if n := srv.Count("", "/by-ip-tls"); n != 0 {
			t.Fatalf("TLS upstream saw /by-ip-tls %d times", n)
		}
		// Raw TCP to the echo port is no rule of the web set either.
		if out, _ := sh(t, web, "echo web-echo | timeout 5 nc 198.51.100.10 9000"); strings.Contains(out, "web-echo") {
			t.Fatalf("web set reached the TCP echo: %q", out)
		}
		// Not HTTP to a host whose rules all have HTTP conditions: refused
		// (the upstream HTTP server would answer 400).
		if out, _ := sh(t, web, "echo not-http | timeout 5 nc api.upstream.test 8080"); strings.Contains(out, "HTTP/1.1") {
			t.Fatalf("non-HTTP bytes reached the HTTP upstream: %q", out)
		}
		if n := upCount(up, "/by-ip"); n != 0 {
			t.Fatalf("upstream saw /by-ip %d times", n)
		}
	})

	t.Run("raw-set-names", func(t *testing.T) {
		// Every name resolves for the raw set, but only its CIDR rule allows.
		d := polExpectDeny(t, agent(t, raw, api+"/v1/from-raw"), 403, "blocked_by_policy", "")
		if !strings.Contains(d.Reason, `"raw"`) {
			t.Fatalf("deny reason %q does not name the raw set", d.Reason)
		}
		if n := upCount(up, "/v1/from-raw"); n != 0 {
			t.Fatalf("upstream saw /v1/from-raw %d times", n)
		}
	})

	t.Run("raw-tcp-by-cidr", func(t *testing.T) {
		if out, _ := sh(t, raw, "echo raw-echo-marker | timeout 5 nc 198.51.100.10 9000"); !strings.Contains(out, "raw-echo-marker") {
			t.Fatalf("raw set: TCP echo through the CIDR rule: %q", out)
		}
		// Same address, a port the rule does not list: the upstream HTTP
		// server would answer this garbage with a 400.
		if out, _ := sh(t, raw, "echo not-http | timeout 5 nc 198.51.100.10 8080"); strings.Contains(out, "HTTP/1.1") {
			t.Fatalf("raw set reached :8080: %q", out)
		}
	})

	t.Run("rate-limit", func(t *testing.T) {
		as := agentMulti(t, web, 3, api+"/limited")
		if len(as) != 3 || as[0].Status != 200 || as[1].Status != 200 {
			t.Fatalf("first two requests under 2/minute: %+v", as)
		}
		d := polExpectDeny(t, as[2], 429, "rate_limited", "limited")
		ra := as[2].Headers["Retry-After"]
		var secs int
		if len(ra) != 1 || func() bool { _, err := fmt.Sscan(ra[0], &secs); return err != nil }() || secs < 1 || secs > 60 {
			t.Fatalf("Retry-After %v (body %+v), want 1..60 seconds", ra, d)
		}
		if n := upCount(up, "/limited"); n != 2 {
			t.Fatalf("upstream saw /limited %d times, want 2", n)
		}
	})

	t.Run("body-condition", func(t *testing.T) {
		polExpectDeny(t, agent(t, web, "-X", "POST", "-d", "please DROP TABLE users", api+"/sql"), 403, "blocked_by_policy", "no-drop")
		if a := agent(t, web, "-X", "POST", "-d", "select 1", api+"/sql"); a.Status != 200 || !strings.Contains(a.Body, `"body":"select 1"`) {
			t.Fatalf("benign POST: %+v", a)
		}
		seen := 0
		for _, s := range up.Requests() {
			if s.Path == "/sql" {
				seen++
				if s.Body != "select 1" {
					t.Fatalf("upstream got body %q", s.Body)
				}
			}
		}
		if seen != 1 {
			t.Fatalf("upstream saw /sql %d times, want 1", seen)
		}
	})

	t.Run("hop-by-hop-response", func(t *testing.T) {
		a := agent(t, web, fmt.Sprintf("http://stream.upstream.test:%d/hop-response", polPlainPort))
		if a.Status != 200 || a.Headers["X-Resp-Keep"] == nil {
			t.Fatalf("hop-response: %+v", a)
		}
		if a.Headers["X-Resp-Hop"] != nil {
			t.Fatalf("hop-by-hop response header reached the agent: %v", a.Headers)
		}
	})

	t.Run("hop-by-hop", func(t *testing.T) {
		a := agent(t, web, "-H", "Connection: X-Hop-Secret", "-H", "X-Hop-Secret: 1",
			"-H", "Proxy-Authorization: Basic Zm9vOmJhcg==", "-H", "X-Keep: kept", api+"/hop")
		if a.Status != 200 {
			t.Fatalf("hop: %+v", a)
		}
		var got *harness.Seen
		for _, s := range up.Requests() {
			if s.Path == "/hop" {
				got = &s
			}
		}
		if got == nil {
			t.Fatal("upstream did not see /hop")
		}
		if got.Headers["X-Keep"] == nil {
			t.Fatalf("end-to-end header lost: %v", got.Headers)
		}
		for _, h := range []string{"X-Hop-Secret", "Proxy-Authorization"} {
			if got.Headers[h] != nil {
				t.Fatalf("hop-by-hop header %s reached the upstream: %v", h, got.Headers)
			}
		}
	})

	const stream = "stream.upstream.test"
	t.Run("redirect-passthrough", func(t *testing.T) {
		a := agent(t, web, fmt.Sprintf("http://%s:%d/redirect", stream, polPlainPort))
		if a.Status != 302 || len(a.Headers["Location"]) != 1 || a.Headers["Location"][0] != "http://elsewhere.upstream.test/landed" {
			t.Fatalf("redirect: %+v", a)
		}
		if n := srv.Count("", "/redirect"); n != 1 {
			t.Fatalf("upstream saw /redirect %d times", n)
		}
	})

	t.Run("sse-unbuffered", func(t *testing.T) {
		srv.Reset()
		defer srv.Release()
		req := fmt.Sprintf(`GET /sse HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n\r\n`, stream, polPlainPort)
		sh(t, web, fmt.Sprintf("((printf '%s'; sleep 20) | timeout 25 nc %s %d > /tmp/sse) </dev/null >/dev/null 2>&1 &", req, stream, polPlainPort))
		// The first event arrives while the upstream still holds the stream open.
		eventually(t, "the first SSE event before the stream ends", func() bool {
			out, _ := sh(t, web, "cat /tmp/sse")
			return strings.Contains(out, "data: sse-one")
		})
		if out, _ := sh(t, web, "cat /tmp/sse"); strings.Contains(out, "sse-two") || !strings.Contains(out, "text/event-stream") {
			t.Fatalf("SSE before release: %q", out)
		}
		srv.Release()
		eventually(t, "the second SSE event", func() bool {
			out, _ := sh(t, web, "cat /tmp/sse")
			return strings.Contains(out, "data: sse-two")
		})
		if n := srv.Count("", "/sse"); n != 1 {
			t.Fatalf("upstream saw /sse %d times", n)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		ws := func(path string) string {
			req := fmt.Sprintf(`GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, path, stream, polPlainPort)
			// Like a real client (RFC 6455 4.1), send data only after the
			// server's answer has arrived (bounded wait).
			sh(t, web, fmt.Sprintf("rm -f /tmp/ws; (printf '%s'; i=0; while [ $i -lt 100 ] && ! grep -q 'HTTP/1.1 ' /tmp/ws 2>/dev/null; do sleep 0.1; i=$((i+1)); done; printf ws-ping-marker; i=0; while [ $i -lt 50 ] && ! grep -q 'ECHO:\\|blocked_by_policy' /tmp/ws; do sleep 0.1; i=$((i+1)); done) | timeout 15 nc %s %d > /tmp/ws 2>&1", req, stream, polPlainPort))
			out, _ := sh(t, web, "cat /tmp/ws")
			return out
		}
		out := ws("/ws")
		if !strings.Contains(out, "101 Switching Protocols") || !strings.Contains(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") || !strings.Contains(out, "ECHO:ws-ping-marker") {
			t.Fatalf("allowed WebSocket: %q", out)
		}
		out = ws("/ws-blocked")
		if !strings.Contains(out, "403") || !strings.Contains(out, "blocked_by_policy") || strings.Contains(out, "101") {
			t.Fatalf("blocked WebSocket: %q", out)
		}
		if a, b := srv.Count("", "/ws"), srv.Count("", "/ws-blocked"); a != 1 || b != 0 {
			t.Fatalf("upstream saw /ws %d times (want 1), /ws-blocked %d times (want 0)", a, b)
		}
	})

	tlsAddr := fmt.Sprintf(":%d", polTLSPort)
	t.Run("tls-passthrough", func(t *testing.T) {
		a := agent(t, web, "-cacert", "/testca.pem", fmt.Sprintf("https://pass.upstream.test:%d/pt", polTLSPort))
		if a.Status != 200 || a.Cert != polTestCAName {
			t.Fatalf("passthrough: %+v, want 200 with the upstream's own certificate (issuer %q)", a, polTestCAName)
		}
		var sni string
		for _, s := range srv.Seen() {
			if s.Path == "/pt" {
				sni = s.SNI
			}
		}
		if srv.Count(tlsAddr, "/pt") != 1 || sni != "pass.upstream.test" {
			t.Fatalf("upstream saw /pt %d times with SNI %q", srv.Count(tlsAddr, "/pt"), sni)
		}
	})

	t.Run("trust-ca", func(t *testing.T) {
		// attach --trust-ca put the CA `clawd ca` prints into the
		// container's bundle.
		caPEM := cl.MustCLI("ca")
		block, _ := pem.Decode([]byte(caPEM))
		if block == nil {
			t.Fatalf("clawd ca printed no PEM: %q", caPEM)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil || cert.Subject.CommonName != "clawd interception CA" || !cert.IsCA {
			t.Fatalf("clawd ca: %v %+v", err, cert)
		}
		bundle, _ := sh(t, web, "cat /etc/ssl/certs/ca-certificates.crt")
		if !strings.Contains(bundle, strings.TrimSpace(string(pem.EncodeToMemory(block)))) {
			t.Fatalf("the container's bundle lacks clawd's CA:\n%s", bundle)
		}
	})

	t.Run("tls-intercept", func(t *testing.T) {
		mitm := fmt.Sprintf("https://mitm.upstream.test:%d", polTLSPort)
		for _, h2 := range []bool{true, false} {
			var args []string
			proto := "HTTP/1.1"
			if h2 {
				args, proto = []string{"-http2"}, "HTTP/2.0"
			}
			tag := strings.ReplaceAll(strings.ToLower(proto), "/", "")
			a := agent(t, web, append(args, mitm+"/ok-"+tag)...)
			if a.Status != 200 || a.Proto != proto || a.Cert != "clawd interception CA" {
				t.Fatalf("%s: intercepted GET: %+v (want 200 %s from clawd's CA)", proto, a, proto)
			}
			if a2 := agent(t, web, append(args, mitm+"/secret/"+tag)...); a2.Proto != proto {
				t.Fatalf("%s: deny answered over %s", proto, a2.Proto)
			} else {
				polExpectDeny(t, a2, 403, "blocked_by_policy", "mitm-secret")
			}
			polExpectDeny(t, agent(t, web, append(args, "-X", "POST", "-d", "x", mitm+"/ok-"+tag)...), 403, "blocked_by_policy", "")
			// Inside the intercepted connection, a Host other than the SNI
			// (here an allowed host of another port) is refused.
			polExpectDeny(t, agent(t, web, append(args, "-H", "Host: api.upstream.test:8080", mitm+"/v1/host-"+tag)...), 403, "host_mismatch", "")
			if n := srv.Count(tlsAddr, "/ok-"+tag); n != 1 {
				t.Fatalf("%s: upstream saw /ok-%s %d times, want 1 (the GET)", proto, tag, n)
			}
			if n := srv.Count("", "/v1/host-"+tag) + upCount(up, "/v1/host-"+tag); n != 0 {
				t.Fatalf("%s: a request with a mismatched Host reached an upstream", proto)
			}
			if n := srv.Count("", "/secret/"+tag); n != 0 {
				t.Fatalf("%s: upstream saw /secret %d times", proto, n)
			}
		}
	})

	t.Run("spoofed-host", func(t *testing.T) {
		// The spoofing target is reachable from the host: a proxy that
		// trusted Host/SNI would get an answer there.
		if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + polOtherIP + ":8080/control"); err != nil {
			t.Fatalf("control request to %s: %v", polOtherIP, err)
		} else {
			resp.Body.Close()
		}
		// Both names were resolved through clawd (to 198.51.100.10).
		for _, n := range []string{"api.upstream.test", "pass.upstream.test"} {
			if a := dnsq(t, web, n); a.Rcode != "NOERROR" {
				t.Fatalf("resolve %s: %+v", n, a)
			}
		}
		polExpectDeny(t, agent(t, web, "-connect-to", polOtherIP+":8080", api+"/v1/spoof"), 403, "host_mismatch", "")
		a := agent(t, web, "-cacert", "/testca.pem", "-connect-to", polOtherIP+":8443", fmt.Sprintf("https://pass.upstream.test:%d/spoof", polTLSPort))
		if a.Status != 0 || a.Error == "" {
			t.Fatalf("spoofed SNI got an answer: %+v", a)
		}
		for _, s := range srv.Seen() {
			if strings.HasPrefix(s.Addr, polOtherIP) && s.Path != "/control" {
				t.Fatalf("spoofed request reached %s: %+v", s.Addr, s)
			}
		}
	})

	t.Run("audit", func(t *testing.T) {
		up.Reset()
		if a := agent(t, web, "-d", "audit-body-0123456789", api+"/v1/audit-probe"); a.Status != 200 {
			t.Fatalf("probe: %+v", a)
		}
		polExpectDeny(t, agent(t, web, "-X", "DELETE", api+"/v1/audit-denied"), 403, "blocked_by_policy", "v1-no-writes")
		var allow, deny []audit.Entry
		eventually(t, "audit lines for the probe requests", func() bool {
			allow, deny = nil, nil
			for _, e := range cl.AuditEntries() {
				if e.Event != "decision" {
					continue
				}
				switch e.Path {
				case "/v1/audit-probe":
					allow = append(allow, e)
				case "/v1/audit-denied":
					deny = append(deny, e)
				}
			}
			return len(allow) > 0 && len(deny) > 0
		})
		// The TLS passthrough connection of an earlier subtest: SNI, bytes
		// both ways, no method or path.
		var tlsLines []audit.Entry
		for _, e := range cl.AuditEntries() {
			if e.Event == "decision" && e.SNI == "pass.upstream.test" && strings.HasSuffix(e.Dst, fmt.Sprintf(":%d", polTLSPort)) {
				tlsLines = append(tlsLines, e)
			}
		}
		if len(tlsLines) != 2 { // the passthrough and the spoofing attempt
			t.Errorf("want 2 audit lines for pass.upstream.test, got %+v", tlsLines)
		}
		for _, e := range tlsLines {
			switch {
			case e.Rule == "pass":
				if e.Action != "allow" || e.Method != "" || e.BytesIn <= 0 || e.BytesOut <= 0 || e.Container != web.Name {
					t.Errorf("passthrough audit line %+v", e)
				}
			case e.Rule == "host-mismatch":
				if e.Action != "deny" || !strings.HasPrefix(e.Dst, polOtherIP+":") || e.BytesIn != 0 {
					t.Errorf("spoofing audit line %+v", e)
				}
			default:
				t.Errorf("unexpected audit line %+v", e)
			}
		}
		// One line per request: the rate-limited path three times, each
		// intercepted HTTPS request on its own.
		var limited []int
		var h2 []audit.Entry
		for _, e := range cl.AuditEntries() {
			if e.Event != "decision" {
				continue
			}
			if e.Path == "/limited" {
				limited = append(limited, e.Status)
			}
			if e.Path == "/ok-http2.0" {
				h2 = append(h2, e)
			}
		}
		if fmt.Sprint(limited) != "[200 200 429]" {
			t.Errorf("audit statuses for /limited: %v, want [200 200 429]", limited)
		}
		if len(h2) != 2 { // the GET and the refused POST
			t.Errorf("audit lines for /ok-http2.0: %+v", h2)
		}
		for _, e := range h2 {
			if e.Proto != "https" || e.SNI != "mitm.upstream.test" || (e.Method == "GET") != (e.Status == 200 && e.Rule == "mitm") {
				t.Errorf("intercepted request's audit line %+v", e)
			}
		}
		if len(allow) != 1 || len(deny) != 1 {
			t.Fatalf("want one audit line per decision, got %d allow and %d deny lines: %+v %+v", len(allow), len(deny), allow, deny)
		}
		for _, c := range []struct {
			e      audit.Entry
			method string
			rule   string
			action string
			status int
		}{{allow[0], "GET", "v1-read", "allow", 200}, {deny[0], "DELETE", "v1-no-writes", "deny", 403}} {
			e := c.e
			host, port, err := net.SplitHostPort(e.Dst)
			if err != nil || port != "8080" || (host != harness.UpstreamIPv4.String() && host != harness.UpstreamIPv6.String()) {
				t.Errorf("audit dst %q, want the upstream's address and port 8080", e.Dst)
			}
			if e.Container != web.Name || e.Labels["team"] != "e2e-pol" {
				t.Errorf("audit container %q labels %v", e.Container, e.Labels)
			}
			if !strings.HasPrefix(e.Host, "api.upstream.test") || e.Method != c.method || e.Rule != c.rule || e.Action != c.action || e.Status != c.status {
				t.Errorf("audit line %+v, want host api.upstream.test %s rule %s action %s status %d", e, c.method, c.rule, c.action, c.status)
			}
			if e.Time.IsZero() || time.Since(e.Time) > 10*time.Minute || e.Time.After(time.Now().Add(time.Minute)) {
				t.Errorf("audit time %v", e.Time)
			}
			if e.BytesIn <= 0 || e.DurationMS <= 0 {
				t.Errorf("audit bytes_in %d duration %v: want both > 0", e.BytesIn, e.DurationMS)
			}
		}
		// The allowed GET carried a body upstream.
		if allow[0].BytesOut < int64(len("audit-body-0123456789")) {
			t.Errorf("bytes_out %d, want at least the body's %d bytes", allow[0].BytesOut, len("audit-body-0123456789"))
		}
		if n := upCount(up, "/v1/audit-probe"); n != 1 {
			t.Errorf("upstream saw the probe %d times", n)
		}
	})
}
