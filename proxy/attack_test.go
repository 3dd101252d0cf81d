package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

// atkApprover blocks every hold until release is closed, then approves.
type atkApprover struct {
	held    chan struct{}
	release chan struct{}
}

func (g *atkApprover) Request(ctx context.Context, _ approval.Hold) approval.Outcome {
	g.held <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
		return approval.Outcome{Status: "cancelled"}
	}
	return approval.Outcome{Approved: true, Status: approval.StatusApproved, By: "alice"}
}

// A connection held for approval when the policy is reloaded to deny it is
// approved by a human who saw the old card: the reload's Recheck ran while
// the connection was not yet tracked, so the splice opens under the verdict
// of a policy that no longer exists, and stays open until the next reload.
func TestAttackReloadDuringConnectionHold(t *testing.T) {
	dst, accepted := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	ap := &atkApprover{held: make(chan struct{}, 1), release: make(chan struct{})}
	dec := newDecider(policy.Deny, rule{name: "ask", action: policy.Approve})
	e := newEnv(t, dec, func(c *Config) { c.Approver = ap; c.Names = nil })
	c := e.dial(dst)
	io.WriteString(c, "\x00secret\n")
	select {
	case <-ap.held:
	case <-time.After(waitLimit):
		t.Fatal("no hold")
	}
	dec.set(policy.Deny) // reload: nothing is allowed any more
	e.srv.Recheck("policy reloaded")
	close(ap.release) // the human clicks approve on the stale card
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	select {
	case <-accepted:
		t.Errorf("upstream was dialled after a reload denied the destination (agent read %q, %v)", l, err)
	default:
	}
	if err == nil {
		t.Errorf("splice open under a verdict the reloaded policy no longer gives: %q", l)
	}
}

// The same race without a human: a reload lands between the gate's verdict
// and the splice's registration (the upstream dial is slow). The splice is
// never re-decided.
func TestAttackReloadDuringSpliceDial(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	dialing := make(chan struct{}, 1)
	goOn := make(chan struct{})
	dec := newDecider(policy.Deny, rule{name: "ok", action: policy.Allow})
	e := newEnv(t, dec, func(c *Config) {
		c.Names = nil
		c.Dial = func(ctx context.Context, n, a string) (net.Conn, error) {
			dialing <- struct{}{}
			<-goOn
			var d net.Dialer
			return d.DialContext(ctx, n, a)
		}
	})
	c := e.dial(dst)
	io.WriteString(c, "\x00one\n")
	<-dialing
	dec.set(policy.Deny)
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Logf("Recheck closed %d", n)
	}
	close(goOn)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Errorf("splice decided before a reload that denies it is open after it: %q", l)
	}
}

var _ = netip.Addr{}

// An HTTP request (here a WebSocket upgrade) held for approval while the
// policy is reloaded to deny it: once approved on the stale card it is
// forwarded, and the upgraded stream, registered only after the hold, is
// never re-decided by the reload that already happened.
func TestAttackReloadDuringRequestHold(t *testing.T) {
	dst := wsUpstream(t)
	ap := &atkApprover{held: make(chan struct{}, 1), release: make(chan struct{})}
	dec := newDecider(policy.Deny, rule{name: "ask-ws", host: "example.com", pathPrefix: "/ws", action: policy.Approve})
	e := newEnv(t, dec, func(c *Config) { c.Approver = ap; c.Names = fakeNames{"example.com": dst.Addr()} })
	c := e.dial(dst)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	select {
	case <-ap.held:
	case <-time.After(waitLimit):
		t.Fatal("no hold")
	}
	dec.set(policy.Deny, rule{name: "ws-closed", host: "example.com", pathPrefix: "/ws", action: policy.Deny})
	e.srv.Recheck("policy reloaded")
	close(ap.release)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		io.WriteString(c, "ping\n")
		l, err := br.ReadString('\n')
		t.Errorf("upgraded stream opened and kept after a reload denied it: %q %v", l, err)
	}
}

// A request whose body streams (chunked, of unknown length) is an
// open-ended channel to the upstream, like a WebSocket: the agent can keep
// writing for hours. It is registered with Recheck only when its response
// is a stream, so a reload that denies the request leaves the upload open
// and the upstream keeps receiving the agent's bytes.
func TestAttackReloadLeavesStreamingUploadOpen(t *testing.T) {
	got := make(chan string, 100)
	dst, _ := tcpUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		buf := make([]byte, 64)
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	dec := newDecider(policy.Deny, rule{name: "upload", host: "example.com", pathPrefix: "/upload", action: policy.Allow})
	e := newEnv(t, dec, func(c *Config) { c.Names = fakeNames{"example.com": dst.Addr()} })
	c := e.dial(dst)
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
	select {
	case s := <-got:
		if s != "first" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(waitLimit):
		t.Fatal("first chunk not forwarded")
	}
	dec.set(policy.Deny, rule{name: "upload-closed", host: "example.com", pathPrefix: "/upload", action: policy.Deny})
	n := e.srv.Recheck("policy reloaded")
	io.WriteString(c, "6\r\nsecond\r\n")
	select {
	case s := <-got:
		t.Errorf("after a reload denying POST /upload (Recheck closed %d), the streaming upload still delivers %q upstream", n, s)
	case <-time.After(time.Second):
	}
}
