package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// The policy for the HTTP tricks: GET /public/** on upstream.test (ports
// 8080 and 8082; 8081 is the policy tests' shared server), nothing else.
const tricksPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: public
      hosts: [upstream.test]
      ports: [8080, 8082]
      methods: [GET]
      paths: ["/public/**"]
      action: allow
`

// upgradeUpstream listens on 198.51.100.10:8082 in the upstream netns and
// agrees to every protocol upgrade (101), as an h2c or WebSocket server
// would; everything it receives on each connection is recorded.
type upgradeUpstream struct {
	mu  sync.Mutex
	got []*strings.Builder
}

func startUpgradeUpstream(t *testing.T, up *harness.Upstream) *upgradeUpstream {
	t.Helper()
	ln, err := up.Listen("tcp4", net.JoinHostPort(harness.UpstreamIPv4.String(), "8082"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &upgradeUpstream{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

func (u *upgradeUpstream) serve(c net.Conn) {
	defer c.Close()
	rec := &strings.Builder{}
	u.mu.Lock()
	u.got = append(u.got, rec)
	u.mu.Unlock()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(io.TeeReader(c, lockedWriter{&u.mu, rec}))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		if up := req.Header.Get("Upgrade"); up != "" {
			fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
			io.Copy(io.Discard, br) // a tunnel: record whatever comes
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (u *upgradeUpstream) received() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var all []string
	for _, b := range u.got {
		all = append(all, b.String())
	}
	return strings.Join(all, "\n----\n")
}

func (u *upgradeUpstream) reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = nil
}

// sendRaw writes parts (each after the previous answer) to addr from inside
// ct through the bypass program and returns everything that came back.
func sendRaw(t *testing.T, ct *harness.Container, addr string, parts ...string) string {
	t.Helper()
	args := []string{"-send", addr}
	for _, p := range parts {
		args = append(args, "-data", base64.StdEncoding.EncodeToString([]byte(p)))
	}
	r, ok := runBypass(t, ct, args...)["send"]
	if !ok {
		t.Fatalf("send to %s: no result", addr)
	}
	if r.Result == "blocked" {
		t.Fatalf("send to %s: %s", addr, r.Detail)
	}
	return r.Detail
}

var statusRE = regexp.MustCompile(`HTTP/1\.[01] (\d{3})`)

// statuses lists the status codes of every response in an answer stream.
func statuses(answer string) []string {
	var out []string
	for _, m := range statusRE.FindAllStringSubmatch(answer, -1) {
		out = append(out, m[1])
	}
	return out
}

// checkSeen fails for any request the upstream saw that the policy does not
// allow: only GET, Host upstream.test, decoded path under /public/.
func checkSeen(t *testing.T, up *harness.Upstream) []string {
	t.Helper()
	var paths []string
	for _, s := range up.Requests() {
		paths = append(paths, s.Path)
		host := strings.ToLower(s.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(host, ".") // the same name (policy hosts ignore it too)
		p := s.Path
		if u, err := url.ParseRequestURI(s.Path); err == nil {
			p = u.Path
		}
		clean := path.Clean(strings.ReplaceAll(p, "\\", "/"))
		if s.Method != "GET" || host != "upstream.test" || !strings.HasPrefix(strings.ToLower(clean)+"/", "/public/") ||
			strings.Contains(strings.ToLower(p), "private") {
			t.Errorf("UPSTREAM SAW A REQUEST THE POLICY DENIES: %s %s Host %q", s.Method, s.Path, s.Host)
		}
	}
	return paths
}

func TestHTTPTricks(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	upg := startUpgradeUpstream(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: tricksPolicy})
	ct := ctd.Run(t, "tricks", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})
	cl.MustCLI("attach", ct.Name)
	// The agent resolves the name through clawd, as a real client would.
	if out, code := sh(t, ct, "timeout 10 nslookup upstream.test"); code != 0 || !strings.Contains(out, harness.UpstreamIPv4.String()) {
		t.Fatalf("nslookup upstream.test: %d %s", code, out)
	}
	dst := net.JoinHostPort(harness.UpstreamIPv4.String(), "8080")
	const H = "Host: upstream.test:8080\r\n"
	const long = "@@LONG@@" // 2 MiB, expanded by the bypass program

	cases := []struct {
		name  string
		parts []string
		want  []string // status codes of the responses, in order; nil: any
		seen  []string // request targets the upstream must have seen
	}{
		{"allowed (control)", []string{"GET /public/a HTTP/1.1\r\n" + H + "\r\n"}, []string{"200"}, []string{"/public/a"}},
		{"denied path", []string{"GET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"POST denied", []string{"POST /public/a HTTP/1.1\r\n" + H + "Content-Length: 2\r\n\r\nhi"}, []string{"403"}, nil},
		{"Host of another name", []string{"GET /public/a HTTP/1.1\r\nHost: evil.test:8080\r\n\r\n"}, []string{"403"}, nil},
		{"Host is the IP", []string{"GET /public/a HTTP/1.1\r\nHost: 198.51.100.10:8080\r\n\r\n"}, []string{"403"}, nil},
		{"absolute-form to another host", []string{"GET http://other.upstream.test:8080/public/a HTTP/1.1\r\n" + H + "\r\n"}, []string{"400"}, nil},
		{"absolute-form to another port", []string{"GET http://upstream.test:9000/public/a HTTP/1.1\r\n" + H + "\r\n"}, []string{"400"}, nil},
		{"CONNECT", []string{"CONNECT upstream.test:9000 HTTP/1.1\r\nHost: upstream.test:9000\r\n\r\n", "GET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403", "403"}, nil},
		{"CONNECT to the allowed host", []string{"CONNECT upstream.test:8080 HTTP/1.1\r\n" + H + "\r\n", "GET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403", "403"}, nil},
		{"HTTP/1.0 without Host", []string{"GET /private HTTP/1.0\r\n\r\n"}, []string{"403"}, nil},
		{"CL and TE smuggling", []string{"GET /public/a HTTP/1.1\r\n" + H + "Content-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /private HTTP/1.1\r\nHost: upstream.test:8080\r\n\r\n"}, []string{"400"}, nil},
		{"TE and CL smuggling", []string{"GET /public/a HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n30\r\nGET /private HTTP/1.1\r\nHost: upstream.test:8080\r\n\r\n\r\n0\r\n\r\n"}, []string{"400"}, nil},
		{"obfuscated TE", []string{"GET /public/a HTTP/1.1\r\n" + H + "Content-Length: 48\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /private HTTP/1.1\r\nHost: upstream.test:8080\r\n\r\n"}, []string{"400"}, nil},
		{"duplicate Content-Length", []string{"GET /public/a HTTP/1.1\r\n" + H + "Content-Length: 0\r\nContent-Length: 44\r\n\r\nGET /private HTTP/1.1\r\nHost: upstream.test\r\n\r\n"}, []string{"400"}, nil},
		{"duplicate Host", []string{"GET /public/a HTTP/1.1\r\n" + H + "Host: evil.test\r\n\r\n"}, []string{"400"}, nil},
		{"Host header case", []string{"GET /public/a HTTP/1.1\r\nhOsT:   UPSTREAM.TEST:8080  \r\n\r\n"}, []string{"200"}, []string{"/public/a"}},
		{"space before colon", []string{"GET /public/a HTTP/1.1\r\nHost : evil.test\r\n" + H + "\r\n"}, []string{"400"}, nil},
		{"tab in request line", []string{"GET\t/private\tHTTP/1.1\r\n" + H + "\r\n"}, nil, nil},
		{"folded header", []string{"GET /public/a HTTP/1.1\r\nHost: upstream.test:8080\r\n evil.test\r\n\r\n"}, []string{"400"}, nil},
		{"path case", []string{"GET /PUBLIC/a HTTP/1.1\r\n" + H + "\r\n"}, []string{"200"}, []string{"/PUBLIC/a"}},
		{"encoded slash", []string{"GET /public/..%2fprivate HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"encoded dots", []string{"GET /public/%2e%2e/private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"raw dots", []string{"GET /public/../private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"double encoding", []string{"GET /public/%252e%252e/private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"backslash", []string{"GET /public/..\\private HTTP/1.1\r\n" + H + "\r\n"}, []string{"400"}, nil},
		{"dots above root", []string{"GET /../../public/a HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"NUL in path", []string{"GET /public/a%00/../../private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"very long header", []string{"GET /public/a HTTP/1.1\r\n" + H + "X-Long: " + long + "\r\n\r\n"}, []string{"431"}, nil},
		{"very long path", []string{"GET /public/" + long + " HTTP/1.1\r\n" + H + "\r\n"}, []string{"431"}, nil},
		{"pipelined: second denied", []string{"GET /public/a HTTP/1.1\r\n" + H + "\r\nGET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"200", "403"}, []string{"/public/a"}},
		{"keep-alive: second denied", []string{"GET /public/b HTTP/1.1\r\n" + H + "\r\n", "GET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"200", "403"}, []string{"/public/b"}},
		{"Host with userinfo", []string{"GET /public/a HTTP/1.1\r\nHost: upstream.test@evil.test:8080\r\n\r\n"}, []string{"400"}, nil},
		{"Host with trailing dot", []string{"GET /public/a HTTP/1.1\r\nHost: upstream.test.:8080\r\n\r\n"}, nil, nil},
		{"lower-case method", []string{"get /private HTTP/1.1\r\n" + H + "\r\n"}, nil, nil},
		{"dots in the query", []string{"GET /public/a?x=/../../private HTTP/1.1\r\n" + H + "\r\n"}, nil, nil},
		{"bare LF smuggling", []string{"GET /public/a HTTP/1.1\r\n" + H + "X: y\nGET /private HTTP/1.1\r\n\r\n"}, []string{"400"}, nil},
		// Decided like any request: no rule allows "*" here.
		{"OPTIONS star", []string{"OPTIONS * HTTP/1.1\r\n" + H + "\r\n"}, []string{"403"}, nil},
		{"h2 prior knowledge", []string{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"}, []string{"400"}, nil},
		{"WebSocket to a denied host", []string{"GET /public/ws HTTP/1.1\r\nHost: evil.test:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "GET /private HTTP/1.1\r\n" + H + "\r\n"}, []string{"403", "403"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up.Reset()
			ans := sendRaw(t, ct, dst, tc.parts...)
			got := statuses(ans)
			t.Logf("responses: %v", got)
			if tc.want != nil && strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("responses %v, want %v; answer:\n%s", got, tc.want, tail(ans, 800))
			}
			for _, s := range got {
				if s == "101" {
					t.Errorf("a protocol switch was granted: %s", tail(ans, 400))
				}
			}
			// clawd answered everything (no crash, no silent hang-up
			// without a status) unless it closed the connection.
			if len(got) == 0 && !strings.Contains(ans, "HTTP/1.") {
				t.Logf("no HTTP answer (connection closed): %q", tail(ans, 200))
			}
			seen := checkSeen(t, up)
			if tc.seen != nil || tc.want != nil {
				if strings.Join(seen, ",") != strings.Join(tc.seen, ",") {
					t.Errorf("upstream saw %v, want %v", seen, tc.seen)
				}
			}
		})
	}

	// h2c upgrade against an upstream that would agree: clawd must not open
	// a tunnel around per-request decisions. The denied request that
	// follows on the same connection must never reach the upstream.
	t.Run("h2c upgrade", func(t *testing.T) {
		upg.reset()
		dstUpg := net.JoinHostPort(harness.UpstreamIPv4.String(), "8082")
		ans := sendRaw(t, ct, dstUpg,
			"GET /public/a HTTP/1.1\r\nHost: upstream.test:8082\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			"GET /private HTTP/1.1\r\nHost: upstream.test:8082\r\n\r\n")
		got := statuses(ans)
		if strings.Join(got, ",") != "200,403" {
			t.Errorf("responses %v, want 200 then 403; answer:\n%s", got, tail(ans, 800))
		}
		rec := upg.received()
		if strings.Contains(rec, "/private") {
			t.Errorf("the denied request went through an h2c tunnel; upstream received:\n%s", rec)
		}
		if strings.Contains(strings.ToLower(rec), "upgrade: h2c") {
			t.Errorf("the h2c upgrade offer reached the upstream:\n%s", rec)
		}
		if !strings.Contains(rec, "GET /public/a") {
			t.Errorf("control: the allowed request did not reach the upgrade-happy upstream:\n%s", rec)
		}
	})
	t.Run("WebSocket to a denied path on an upgrading upstream", func(t *testing.T) {
		upg.reset()
		dstUpg := net.JoinHostPort(harness.UpstreamIPv4.String(), "8082")
		ans := sendRaw(t, ct, dstUpg,
			"GET /private/ws HTTP/1.1\r\nHost: upstream.test:8082\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
			"GET /private HTTP/1.1\r\nHost: upstream.test:8082\r\n\r\n")
		if got := statuses(ans); len(got) == 0 || got[0] != "403" {
			t.Errorf("responses %v, want 403 first; answer:\n%s", got, tail(ans, 800))
		}
		if rec := upg.received(); rec != "" {
			t.Errorf("upstream received:\n%s", rec)
		}
	})

	// clawd is still healthy after all of it, and the audit log recorded
	// the denials.
	up.Reset()
	if ans := sendRaw(t, ct, dst, "GET /public/after HTTP/1.1\r\n"+H+"\r\n"); !strings.Contains(ans, " 200 ") {
		t.Errorf("clawd no longer serves the allowed request: %s", tail(ans, 300))
	}
	denied := 0
	for _, e := range cl.AuditEntries() {
		if e.Action == "deny" {
			denied++
		}
	}
	if denied < 10 {
		t.Errorf("audit log has %d denials, want at least 10", denied)
	}
}
