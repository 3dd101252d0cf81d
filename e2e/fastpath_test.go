package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// fastPolicy allows one address and port by cidr alone (%d: the port).
const fastPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: direct
      cidrs: [198.51.100.10]
      ports: [%d]
      action: allow
`

const fastPort = 9100

// fastServer listens in the upstream namespace on 198.51.100.10:fastPort:
// it records each connection's source, answers the first line with
// "world", then reads until the connection ends.
type fastServer struct {
	mu     sync.Mutex
	remote []string
	ended  []error
}

func startFastServer(t *testing.T, up *harness.Upstream) *fastServer {
	t.Helper()
	return startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(fastPort)))
}

func startFastServerIn(t *testing.T, netns, addr string) *fastServer {
	t.Helper()
	ln, err := harness.ListenIn(netns, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &fastServer{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.remote = append(s.remote, c.RemoteAddr().String())
			s.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 6)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write([]byte("world"))
				}
				_, err := io.Copy(io.Discard, c)
				if err == nil {
					err = io.EOF
				}
				s.mu.Lock()
				s.ended = append(s.ended, err)
				s.mu.Unlock()
			}()
		}
	}()
	return s
}

func (s *fastServer) seen() ([]string, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.remote...), append([]error(nil), s.ended...)
}

// TestFastPathBypassesProxyAuditsAndIsRevoked is the user's view of the
// kernel fast path (issue 18): a connection allowed by cidr and port alone
// reaches the server from the container's own address (clawd's proxy, which
// dials from the host, never sees it), the audit log gets a "decision" line
// with path "kernel" for its connect and a "closed" line with the
// connection's bytes once it closes, and a reload that
// revokes the rule cuts the open connection and sends new ones to the
// proxy, which refuses them.
func TestFastPathBypassesProxyAuditsAndIsRevoked(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startFastServer(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort)})
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range cl.LogLines() {
				if m := fmt.Sprint(l["msg"]); strings.Contains(m, "fast") || strings.Contains(m, "polic") {
					t.Logf("daemon: %v", l)
				}
			}
		}
	})
	ct := ctd.Run(t, "fastpath", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)

	dial := fmt.Sprintf("echo hello | timeout 10 nc -w 2 %s %d", up.IPv4, fastPort)
	before := cl.List()[0]
	if out, _ := sh(t, ct, dial); !strings.Contains(out, "world") {
		t.Fatalf("the fast-path connection got %q", out)
	}
	after := cl.List()[0]
	if after.Counters.Redirected != before.Counters.Redirected || after.FastPath.Fast != before.FastPath.Fast+1 {
		t.Fatalf("counters before %+v %+v, after %+v %+v: want one fast-path connect and no redirect to the proxy",
			before.Counters, before.FastPath, after.Counters, after.FastPath)
	}
	remote, _ := srv.seen()
	if len(remote) == 0 || !strings.HasPrefix(remote[len(remote)-1], ct.IPv4.String()+":") {
		t.Fatalf("the server saw %v; want the container's own address %s (no proxy)", remote, ct.IPv4)
	}
	// Its connect line (a decision) and its close line with the bytes,
	// tied by the source address, which is the one the server saw.
	var conn, closed audit.Entry
	eventually(t, `a "closed" line with path "kernel" and the bytes`, func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Event == audit.EventClosed && e.Dst == fmt.Sprintf("%s:%d", up.IPv4, fastPort) {
				closed = e
				return true
			}
		}
		return false
	})
	if closed.Action != audit.ActionAllow || closed.Rule != "direct" || closed.Container != ct.Name || closed.BytesOut != 6 || closed.BytesIn != 5 ||
		closed.Src != remote[len(remote)-1] || closed.PID == 0 {
		t.Fatalf("kernel close line = %+v; want allow by rule direct for %s from %s, with its pid, 6 bytes out, 5 in", closed, ct.Name, remote[len(remote)-1])
	}
	n := 0
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" && e.Event == audit.EventDecision && e.Src == closed.Src {
			conn = e
			n++
		}
		if e.Path == "kernel" && e.Event == audit.EventClosed && e.Src == closed.Src && n == 0 {
			t.Fatalf("the close line came before the connect line: %+v", e)
		}
	}
	if n != 1 || conn.Action != audit.ActionAllow || conn.Rule != "direct" || conn.Container != ct.Name || conn.Dst != closed.Dst ||
		conn.PID != closed.PID || conn.BytesOut != 0 || conn.DurationMS != 0 {
		t.Fatalf("%d connect lines, the last %+v; want one decision line, allow by rule direct for %s to %s, before the close line", n, conn, ct.Name, closed.Dst)
	}
	if closed.DurationMS <= 0 {
		t.Fatalf("close line without a duration: %+v", closed)
	}
	for _, e := range cl.AuditEntries() {
		if e.Path != "kernel" && strings.HasSuffix(e.Dst, fmt.Sprintf(":%d", fastPort)) {
			t.Fatalf("the proxy audited a fast-path connection: %+v", e)
		}
	}

	// A connection held open, then the rule revoked by a reload.
	sh(t, ct, fmt.Sprintf("((echo hello; sleep 60) | { timeout 60 nc %s %d > /tmp/held 2>&1; echo rc=$? >> /tmp/held; }) </dev/null >/dev/null 2>&1 &", up.IPv4, fastPort))
	eventually(t, "the held connection to be answered", func() bool {
		o, _ := sh(t, ct, "cat /tmp/held")
		return strings.Contains(o, "world")
	})
	_, endedBefore := srv.seen()
	remoteBefore, _ := srv.seen()
	cl.WritePolicy(fmt.Sprintf(fastPolicy, fastPort+1))
	eventually(t, "the held connection to be cut at the server", func() bool {
		_, ended := srv.seen()
		return len(ended) > len(endedBefore)
	})
	eventually(t, "the held connection to be cut in the container", func() bool {
		o, _ := sh(t, ct, "cat /tmp/held")
		return strings.Contains(o, "rc=")
	})
	revoked := false
	for _, e := range cl.AuditEntries() {
		if e.Event == audit.EventRevoked && e.Path == "kernel" && e.Container == ct.Name {
			revoked = true
		}
	}
	if !revoked {
		t.Fatal(`no "revoked" audit line with path "kernel" for the cut connection`)
	}
	// New connections now go to the proxy, which denies them.
	if o, _ := sh(t, ct, dial); strings.Contains(o, "world") {
		t.Fatalf("a revoked destination answered: %q", o)
	}
	if remote, _ := srv.seen(); len(remote) != len(remoteBefore) {
		t.Fatalf("the server got a connection after the revocation: %v", remote[len(remoteBefore):])
	}
	eventually(t, "the proxy's deny line", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path != "kernel" && e.Event == audit.EventDecision && e.Action == audit.ActionDeny && e.Dst == fmt.Sprintf("%s:%d", up.IPv4, fastPort) {
				return true
			}
		}
		return false
	})
}

// TestFastPathOffKeepsTheProxy: with fast-path: false the same policy's
// connection goes through the proxy, as before issue 18 (the server sees
// the host's address, and the audit line is the proxy's).
func TestFastPathOffKeepsTheProxy(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startFastServer(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort), Extra: "fast-path: false\n"})
	ct := ctd.Run(t, "fastoff", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	eventually(t, "a proxied connection to be answered", func() bool {
		out, _ := sh(t, ct, fmt.Sprintf("echo hello | timeout 10 nc -w 2 %s %d", up.IPv4, fastPort))
		return strings.Contains(out, "world")
	})
	remote, _ := srv.seen()
	if len(remote) == 0 || strings.HasPrefix(remote[len(remote)-1], ct.IPv4.String()+":") {
		t.Fatalf("the server saw %v: the container's own address, so no proxy", remote)
	}
	eventually(t, "the proxy's audit line", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Dst == fmt.Sprintf("%s:%d", up.IPv4, fastPort) && e.Action == audit.ActionAllow {
				if e.Path == "kernel" {
					t.Fatalf("fast path used with fast-path: false: %+v", e)
				}
				return true
			}
		}
		return false
	})
}

// fastAll allows every address by cidr: only public ones may be fast.
const fastAll = `version: 1
default:
  default_action: deny
  rules:
    - name: everything
      cidrs: ["0.0.0.0/0", "::/0"]
      action: allow
`

// TestFastPathNeverPassesSpecialAddresses (attack): with cidrs covering
// every address, the host's own address (the container's gateway, where
// host services listen) never takes the fast path; the proxy decides it
// (it dials from the host, so the listener never sees the container's own
// address) and no "kernel" line names it. Public IPv6 and v4-mapped
// destinations do take it, judged as what they are.
func TestFastPathNeverPassesSpecialAddresses(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fastAll})
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range cl.LogLines() {
				if m := fmt.Sprint(l["msg"]); strings.Contains(m, "fast") && l["level"] != "debug" {
					t.Logf("daemon: %v", l)
				}
			}
		}
	})
	ct := ctd.Run(t, "fastspecial", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	host := startFastServerIn(t, "/proc/self/ns/net", net.JoinHostPort(ct.HostIPv4.String(), fmt.Sprint(fastPort)))
	v4 := startFastServer(t, up)
	v6 := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv6.String(), fmt.Sprint(fastPort)))

	for _, dst := range []string{ct.HostIPv4.String(), "::ffff:" + ct.HostIPv4.String()} {
		sh(t, ct, fmt.Sprintf("echo hello | timeout 10 nc -w 2 %s %d", dst, fastPort))
	}
	if remote, _ := host.seen(); len(remote) == 0 {
		t.Log("the proxy did not reach the host address (refused): fine")
	} else {
		for _, r := range remote {
			if strings.HasPrefix(r, ct.IPv4.String()+":") {
				t.Fatalf("the host's address saw the container's own address %s: a special address took the fast path", r)
			}
		}
	}
	for _, e := range cl.AuditEntries() {
		if e.Path == "kernel" && strings.Contains(e.Dst, ct.HostIPv4.String()) {
			t.Fatalf("a host address was audited as fast path: %+v", e)
		}
	}

	// Public destinations are fast, v4-mapped judged as IPv4.
	for _, c := range []struct {
		dst  string
		srv  *fastServer
		from string
	}{
		{up.IPv4.String(), v4, ct.IPv4.String() + ":"},
		{"::ffff:" + up.IPv4.String(), v4, ct.IPv4.String() + ":"},
		{up.IPv6.String(), v6, "[" + ct.IPv6.String() + "]:"},
	} {
		eventually(t, "a fast connection to "+c.dst, func() bool {
			out, _ := sh(t, ct, fmt.Sprintf("echo hello | timeout 10 nc -w 2 %s %d", c.dst, fastPort))
			return strings.Contains(out, "world")
		})
		remote, _ := c.srv.seen()
		if len(remote) == 0 || !strings.HasPrefix(remote[len(remote)-1], c.from) {
			t.Fatalf("%s: the server saw %v, want %s… (the container itself)", c.dst, remote, c.from)
		}
	}
	_ = time.Second
}

// TestFastPathAcrossDaemonRestart: while no daemon runs nothing new takes
// the fast path (the table is cleared at shutdown, so connects go to the
// absent proxy and fail: fail closed, nothing unaudited); a connection
// opened before keeps its record, and is audited with its bytes when it
// closes after the restart, which rebuilds the table.
func TestFastPathAcrossDaemonRestart(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startFastServer(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort)})
	ct := ctd.Run(t, "fastrestart", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	dial := fmt.Sprintf("echo hello | timeout 10 nc -w 2 %s %d", up.IPv4, fastPort)
	if out, _ := sh(t, ct, dial); !strings.Contains(out, "world") {
		t.Fatalf("fast-path connection before the restart: %q", out)
	}
	// Held open across the restart; it sends a last line once /tmp/go exists.
	sh(t, ct, fmt.Sprintf("((echo hello; i=0; while [ $i -lt 600 ] && [ ! -f /tmp/go ]; do sleep 0.1; i=$((i+1)); done; echo bye) | { timeout 90 nc -w 3 %s %d > /tmp/held 2>&1; echo rc=$? >> /tmp/held; }) </dev/null >/dev/null 2>&1 &", up.IPv4, fastPort))
	eventually(t, "the held connection to be answered", func() bool {
		o, _ := sh(t, ct, "cat /tmp/held")
		return strings.Contains(o, "world")
	})
	remote0, _ := srv.seen()
	cl.Stop()
	if out, _ := sh(t, ct, dial); strings.Contains(out, "world") {
		t.Fatalf("a new connection took the fast path while no daemon ran: %q", out)
	}
	if remote, _ := srv.seen(); len(remote) != len(remote0) {
		t.Fatalf("the server got a connection while no daemon ran: %v", remote[len(remote0):])
	}
	cl.Start()
	eventually(t, "the fast path after the restart", func() bool {
		out, _ := sh(t, ct, dial)
		return strings.Contains(out, "world")
	})
	if remote, _ := srv.seen(); !strings.HasPrefix(remote[len(remote)-1], ct.IPv4.String()+":") {
		t.Fatalf("after the restart the server saw %v, want the container's own address", remote)
	}
	sh(t, ct, "touch /tmp/go")
	eventually(t, "the held connection's kernel audit line with its bytes", func() bool {
		for _, e := range cl.AuditEntries() {
			// "hello\nbye\n": 10 bytes out.
			if e.Path == "kernel" && e.Event == audit.EventClosed && e.BytesOut == 10 && e.BytesIn == 5 {
				return true
			}
		}
		return false
	})
}
