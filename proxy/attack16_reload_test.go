package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const wsPolicyTmpl = `
sets:
  - name: learning
    match: {name: agent-1}
    mode: MODE
    rules:
      - name: no-ws
        hosts: api.example.com
        intercept: true
        paths: ["/ws"]
        action: deny
        reason: no websockets
      - name: rest
        hosts: api.example.com
        action: allow
`

func wsPolicy(mode string) string {
	return strings.ReplaceAll(wsPolicyTmpl, "MODE", mode)
}

// A websocket (HTTP/1 Upgrade, then a raw tunnel) that an audit set let
// through is cut when a reload switches the set to enforce.
func TestAttack16AuditReload_WebSocketCut(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(conn, "echo: "+line)
		}
	})
	dec := &swapDecider{}
	dec.p.Store(mustPolicy(t, wsPolicy("audit")))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec })
	c := e.dial(up.addr())
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("audit mode upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if l, err := br.ReadString('\n'); err != nil || l != "echo: ping\n" {
		t.Fatalf("echo %q %v", l, err)
	}
	dec.p.Store(mustPolicy(t, wsPolicy("enforce")))
	e.srv.Recheck("policy reloaded")
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "after\n")
	if l, err := br.ReadString('\n'); err == nil {
		t.Fatalf("websocket still open after the switch to enforce: %q", l)
	}
}

// An HTTP/2 stream (intercepted TLS) an audit set let through is cut on
// the switch to enforce, and a new stream on the same connection refused.
func TestAttack16AuditReload_H2StreamCut(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := newUpstream(t, true, true, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	dec := &swapDecider{}
	dec.p.Store(mustPolicy(t, wsPolicy("audit")))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec; c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
	resp := do(t, cl, "GET", "https://api.example.com/ws")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); resp.StatusCode != 200 || l != "first chunk\n" || resp.ProtoMajor != 2 {
		t.Fatalf("audit mode h2 stream: %d %s %q %v", resp.StatusCode, resp.Proto, l, err)
	}
	dec.p.Store(mustPolicy(t, wsPolicy("enforce")))
	e.srv.Recheck("policy reloaded")
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(br); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the h2 stream ended cleanly: it was not cut")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the h2 stream is still open after the switch to enforce")
	}
	r2 := do(t, cl, "GET", "https://api.example.com/ws")
	if r2.StatusCode != 403 {
		t.Errorf("new stream after the switch: %d, want 403", r2.StatusCode)
	}
	if m := jsonBody(t, r2); !strings.Contains(fmt.Sprint(m["reason"]), "no websockets") || m["next_steps"] == "" {
		t.Errorf("refusal %v lacks the author's reason or next_steps", m)
	}
}

// A held keep-alive connection: the first request under audit, the next
// on the same connection after the switch is refused.
func TestAttack16AuditReload_KeepAliveRefusedAfterSwitch(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	dec := &swapDecider{}
	dec.p.Store(mustPolicy(t, wsPolicy("audit")))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec })
	c := e.dial(up.addr())
	br := bufio.NewReader(c)
	get := func() int {
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return -1
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(); s != 200 {
		t.Fatalf("audit: %d", s)
	}
	dec.p.Store(mustPolicy(t, wsPolicy("enforce")))
	e.srv.Recheck("policy reloaded")
	if s := get(); s == 200 {
		t.Fatal("a kept-alive connection still gets through after the switch to enforce")
	}
}
