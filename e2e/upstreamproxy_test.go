package e2e

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const (
	upProxyPort  = 3128 // the company proxy, in the upstream netns on 198.51.100.10
	upProxyTLSUp = 8463 // an intercepted HTTPS upstream behind it
)

// upCONNECTProxy is a company egress proxy in the upstream netns: CONNECT
// only, Basic auth required (407 otherwise); it records every CONNECT.
type upCONNECTProxy struct {
	want string // the Proxy-Authorization it accepts

	mu   sync.Mutex
	seen []upConnect
}

type upConnect struct {
	Target, Auth string
	Status       int
}

func startUpCONNECTProxy(t *testing.T, up *harness.Upstream, want string) *upCONNECTProxy {
	t.Helper()
	l, err := up.Listen("tcp", net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(upProxyPort)))
	if err != nil {
		t.Fatalf("proxy listener in the upstream: %v", err)
	}
	p := &upCONNECTProxy{want: want}
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

func (p *upCONNECTProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	rec := upConnect{Target: req.RequestURI, Auth: req.Header.Get("Proxy-Authorization")}
	switch {
	case req.Method != http.MethodConnect:
		rec.Status = 405
	case rec.Auth != p.want:
		rec.Status = 407
	default:
		rec.Status = 200
	}
	p.mu.Lock()
	p.seen = append(p.seen, rec)
	p.mu.Unlock()
	if rec.Status != 200 {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n", rec.Status, http.StatusText(rec.Status))
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

func (p *upCONNECTProxy) connects() []upConnect {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]upConnect(nil), p.seen...)
}

func (p *upCONNECTProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = nil
}

// TestUpstreamProxy: an attached container's allowed traffic leaves through
// the company proxy named by the policy: CONNECT to the address the agent
// dialled (never its name), with the clawd-owned credential; a proxy that
// refuses is a 502 with the status in the audit line; the credential is in
// no log or audit line, and never reaches the agent or the upstream.
func TestUpstreamProxy(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	echo := secStartTLSEcho(t, up, upProxyTLSUp)
	cred := "corp-user:" + secRand(t)
	px := startUpCONNECTProxy(t, up, "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	proxyURL := "http://" + net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(upProxyPort))
	policy := fmt.Sprintf(`version: 1
default:
  default_action: deny
  upstream_proxy:
    url: %s
    credential: corp-proxy
  rules:
    - name: upstream-tls
      hosts: ["api.upstream.test"]
      ports: %d
      intercept: true
      action: allow
    - name: upstream-http
      hosts: ["upstream.test"]
      ports: %d
      action: allow
    - name: upstream-echo
      cidrs: ["%s"]
      ports: %d
      action: allow
`, proxyURL, upProxyTLSUp, harness.UpstreamHTTPPort, harness.UpstreamIPv4, harness.UpstreamEchoPort)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: policy, Extra: "upstream-ca-file: " + echo.CAFile + "\n"})
	if out, err := secCLIStdin(cl, cred, "secret", "set", "corp-proxy", "--clawd"); err != nil || strings.Contains(out, cred) {
		t.Fatalf("secret set --clawd: %v %q", err, secRedact(out, cred))
	}
	if ls := cl.MustCLI("secret", "ls"); !strings.Contains(ls, "(clawd-owned)") || strings.Contains(ls, cred) {
		t.Fatalf("secret ls:\n%s", secRedact(ls, cred))
	}
	caFile := secWriteCA(t, cl)
	ct := ctd.Run(t, "upproxy", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent", caFile: "/clawd-ca.pem"}})
	cl.MustCLI("attach", ct.Name)
	tlsTarget := net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(upProxyTLSUp))
	httpTarget := net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(harness.UpstreamHTTPPort))

	t.Run("intercepted HTTPS through the proxy", func(t *testing.T) {
		px.reset()
		echo.Reset()
		a := agent(t, ct, "-cacert", "/clawd-ca.pem", fmt.Sprintf("https://api.upstream.test:%d/v1/x", upProxyTLSUp))
		if a.Status != 200 {
			t.Fatalf("agent got %+v", a)
		}
		if got := echo.seenPath("/v1/x"); len(got) != 1 || got[0].Host != fmt.Sprintf("api.upstream.test:%d", upProxyTLSUp) {
			t.Fatalf("upstream saw %+v, want one request for api.upstream.test", got)
		}
		cs := px.connects()
		if len(cs) != 1 || cs[0].Target != tlsTarget || cs[0].Status != 200 {
			t.Fatalf("proxy saw %+v, want one accepted CONNECT %s", cs, tlsTarget)
		}
		for _, s := range echo.Requests() {
			if len(s.Headers["Proxy-Authorization"]) > 0 {
				t.Fatal("the upstream got a Proxy-Authorization header")
			}
		}
	})

	t.Run("plain HTTP through the proxy", func(t *testing.T) {
		px.reset()
		up.Reset()
		a := agent(t, ct, fmt.Sprintf("http://upstream.test:%d/plain", harness.UpstreamHTTPPort))
		if a.Status != 200 {
			t.Fatalf("agent got %+v", a)
		}
		cs := px.connects()
		if len(cs) != 1 || cs[0].Target != httpTarget {
			t.Fatalf("proxy saw %+v, want CONNECT %s", cs, httpTarget)
		}
		if n := len(up.Requests()); n != 1 {
			t.Fatalf("upstream saw %d requests", n)
		}
	})

	t.Run("raw TCP spliced through the proxy", func(t *testing.T) {
		px.reset()
		out, _ := sh(t, ct, fmt.Sprintf("printf 'hello-splice\\n' | timeout 10 nc -w 3 %s %d", harness.UpstreamIPv4, harness.UpstreamEchoPort))
		if !strings.Contains(out, "hello-splice") {
			t.Fatalf("echo through the tunnel: %q", out)
		}
		echoTarget := net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(harness.UpstreamEchoPort))
		cs := px.connects()
		if len(cs) != 1 || cs[0].Target != echoTarget || cs[0].Status != 200 {
			t.Fatalf("proxy saw %+v, want CONNECT %s", cs, echoTarget)
		}
	})

	t.Run("refused by the proxy", func(t *testing.T) {
		if out, err := secCLIStdin(cl, "corp-user:wrong-password", "secret", "set", "corp-proxy", "--clawd"); err != nil {
			t.Fatalf("secret set: %v %s", err, out)
		}
		px.reset()
		var a AgentAnswer
		eventually(t, "the daemon to use the new credential", func() bool {
			a = agent(t, ct, fmt.Sprintf("http://upstream.test:%d/refused", harness.UpstreamHTTPPort))
			cs := px.connects()
			return len(cs) > 0 && cs[len(cs)-1].Status == 407
		})
		if a.Status != 502 || !strings.Contains(a.Body, "upstream proxy refused: 407") {
			t.Fatalf("agent got %+v", a)
		}
		eventually(t, "an audit line with the proxy's refusal", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Container == ct.Name && e.Path == "/refused" && e.Reason == "upstream proxy refused: 407" && e.Status == 502 {
					return true
				}
			}
			return false
		})
	})

	t.Run("no credential in logs or audit", func(t *testing.T) {
		logB, _ := os.ReadFile(cl.LogPath)
		auditB, _ := os.ReadFile(cl.Audit)
		b64 := base64.StdEncoding.EncodeToString([]byte(cred))
		pw := strings.TrimPrefix(cred, "corp-user:")
		secNoLeak(t, []string{pw, b64, "wrong-password"}, map[string]string{
			"daemon log": string(logB), "audit log": string(auditB), "metrics": secScrapeMetrics(t, cl),
		})
	})
}
