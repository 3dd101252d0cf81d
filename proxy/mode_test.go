package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

// swapDecider is a reloadable real policy (what policy.Engine does on a
// file change, without the file).
type swapDecider struct{ p atomic.Pointer[policy.Policy] }

func (s *swapDecider) Decide(in policy.Input) policy.Decision { return s.p.Load().Decide(in) }
func (s *swapDecider) HTTPLevel(c policy.Container, h string, ip netip.Addr, port uint16) bool {
	return s.p.Load().HTTPLevel(c, h, ip, port)
}
func (s *swapDecider) CIDRCovers(c policy.Container, ip netip.Addr, port uint16) bool {
	return s.p.Load().CIDRCovers(c, ip, port)
}
func (s *swapDecider) UpstreamProxyAddrs() []netip.AddrPort { return s.p.Load().UpstreamProxyAddrs() }

func mustPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src), "mode.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// modePolicy is the learning set of these tests in the given mode.
func modePolicy(mode string) string {
	return `
sets:
  - name: learning
    match: {name: agent-1}
    mode: ` + mode + `
    rules:
      - name: no-deletes
        hosts: api.example.com
        intercept: true
        methods: DELETE
        action: deny
        reason: deletes go through the release pipeline
        next_steps: open a ticket in RELEASES instead; do not retry
      - name: writes
        hosts: api.example.com
        intercept: true
        methods: POST
        action: approve
      - name: reads
        hosts: api.example.com
        action: allow
        rate_limit: 1/hour
        next_steps: wait an hour before reading again
`
}

// failApprover fails the test when anyone is asked.
type failApprover struct{ asked atomic.Int64 }

func (f *failApprover) Request(context.Context, approval.Hold) approval.Outcome {
	f.asked.Add(1)
	return approval.Outcome{Status: approval.StatusDenied, Reason: "test approver refuses"}
}

func do(t *testing.T, cl *http.Client, method, url string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader("x"))
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// In mode audit every request is let through and audited with what
// enforcement would have done; no approver is asked. Reloaded to enforce,
// the same requests are refused, and the agent reads the rule, the
// author's reason and next_steps.
func TestAuditModeThenEnforce(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	dec := &swapDecider{}
	dec.p.Store(mustPolicy(t, modePolicy("audit")))
	ap := &failApprover{}
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec; c.Approver = ap })
	cl := e.client(up.addr(), nil, false)

	for _, tc := range []struct{ method, rule, would string }{
		{"DELETE", "no-deletes", "deny"},
		{"POST", "writes", "approve"},
		{"GET", "reads", "allow"},
		{"GET", "reads", "deny"}, // rate limit exhausted: would 429
	} {
		resp := do(t, cl, tc.method, "http://api.example.com/v1/thing")
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello from upstream /v1/thing" {
			t.Errorf("audit %s: agent got %d %q, want the upstream's answer", tc.method, resp.StatusCode, b)
		}
		if r, _ := up.last(); r == nil || r.Method != tc.method {
			t.Errorf("audit %s: upstream did not see it", tc.method)
		}
		a := nextDecision(t, e)
		if a.Action != "allow" || a.Mode != "audit" || a.Would != tc.would || a.Rule != tc.rule || a.Status != 200 {
			t.Errorf("audit %s: line %+v, want action allow mode audit would %s rule %s", tc.method, a, tc.would, tc.rule)
		}
		if tc.would != "allow" && a.Reason == "" {
			t.Errorf("audit %s: no reason for would %s", tc.method, tc.would)
		}
	}
	if n := ap.asked.Load(); n != 0 {
		t.Errorf("approver asked %d times in audit mode", n)
	}
	hits := up.hits.Load()

	dec.p.Store(mustPolicy(t, modePolicy("enforce")))
	e.srv.Recheck("policy reloaded")
	resp := do(t, cl, "DELETE", "http://api.example.com/v1/thing")
	if resp.StatusCode != 403 {
		t.Fatalf("enforce DELETE: %d", resp.StatusCode)
	}
	m := jsonBody(t, resp)
	if m["error"] != "blocked_by_policy" || m["rule"] != "no-deletes" ||
		!strings.Contains(m["reason"].(string), "deletes go through the release pipeline") ||
		m["next_steps"] != "open a ticket in RELEASES instead; do not retry" {
		t.Errorf("enforce DELETE: agent got %v", m)
	}
	if a := nextDecision(t, e); a.Action != "deny" || a.Mode != "" || a.Would != "" {
		t.Errorf("enforce DELETE line: %+v", a)
	}
	resp = do(t, cl, "POST", "http://api.example.com/v1/thing")
	m = jsonBody(t, resp)
	if resp.StatusCode != 403 || m["error"] != "denied_by_approver" || m["next_steps"] != defaultNextSteps["denied_by_approver"] {
		t.Errorf("enforce POST: %d %v", resp.StatusCode, m)
	}
	if ap.asked.Load() != 1 {
		t.Errorf("approver asked %d times for the enforced POST, want 1", ap.asked.Load())
	}
	nextDecision(t, e)
	resp = do(t, cl, "GET", "http://api.example.com/v1/thing")
	resp.Body.Close()
	nextDecision(t, e)
	resp = do(t, cl, "GET", "http://api.example.com/v1/thing")
	m = jsonBody(t, resp)
	if resp.StatusCode != 429 || m["error"] != "rate_limited" || m["next_steps"] != "wait an hour before reading again" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("enforce second GET: %d %v", resp.StatusCode, m)
	}
	if got := up.hits.Load() - hits; got != 1 {
		t.Errorf("upstream saw %d requests under enforce, want 1 (the first GET)", got)
	}
}

// Attack: mode audit must not open what clawd itself refuses. A deny rule
// naming a special address in cidrs, relaxed by audit mode, lends it no
// allow (invariant 3); clawd's own addresses stay refused (invariant 4).
func TestAttackAuditModeKeepsClawdRefusals(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	for _, tc := range []struct {
		name, policy, rule string
		mod                func(*Config)
	}{
		{"special address by deny cidrs rule", `
default:
  mode: audit
  rules:
    - name: no-metadata
      cidrs: 127.0.0.0/8
      action: deny
`, ruleSpecialAddress, func(c *Config) {
			c.Classify = func(netip.Addr) addrclass.Class { return addrclass.Loopback }
		}},
		{"special address by default deny", `
default:
  mode: audit
  default_action: deny
`, ruleSpecialAddress, func(c *Config) {
			c.Classify = func(netip.Addr) addrclass.Class { return addrclass.Loopback }
		}},
		{"special address by name rule", `
default:
  mode: audit
  rules:
    - name: api
      hosts: api.example.com
      action: deny
`, ruleSpecialAddress, func(c *Config) {
			c.Classify = func(netip.Addr) addrclass.Class { return addrclass.LinkLocal }
		}},
		{"clawd's own address", `
default:
  mode: audit
  default_action: deny
`, ruleInternal, func(c *Config) { c.Forbidden = []netip.AddrPort{up.addr()} }},
		{"host mismatch", `
default:
  mode: audit
  default_action: deny
`, ruleHostMismatch, func(c *Config) { c.Names = fakeNames{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec := &swapDecider{}
			dec.p.Store(mustPolicy(t, tc.policy))
			e := newEnv(t, nil, func(c *Config) { c.Decider = dec; tc.mod(c) })
			hits := up.hits.Load()
			resp := do(t, e.client(up.addr(), nil, false), "GET", "http://api.example.com/")
			m := jsonBody(t, resp)
			if tc.rule == ruleHostMismatch {
				m["rule"] = map[string]any{"host_mismatch": ruleHostMismatch}[m["error"].(string)] // that answer names no rule
			}
			if resp.StatusCode != 403 || m["rule"] != tc.rule || m["next_steps"] == "" {
				t.Errorf("agent got %d %v, want 403 by %s with next_steps", resp.StatusCode, m, tc.rule)
			}
			if up.hits.Load() != hits {
				t.Error("upstream reached")
			}
			if a := nextDecision(t, e); a.Action != "deny" || a.Rule != tc.rule {
				t.Errorf("audit line %+v", a)
			}
			if tc.rule == ruleHostMismatch {
				return // raw TCP names no host to mismatch
			}
			// The same destination as raw TCP is refused too.
			c := e.dial(up.addr())
			io.WriteString(c, "\x00raw\n")
			c.SetReadDeadline(time.Now().Add(waitLimit))
			if n, err := c.Read(make([]byte, 1)); err == nil {
				t.Errorf("raw TCP read %d bytes", n)
			}
			if up.hits.Load() != hits {
				t.Error("upstream reached by raw TCP")
			}
		})
	}
}

// A raw TCP splice that a set in audit mode let through is cut when a
// reload switches the set to enforce, with a revoked audit line.
func TestAuditModeSpliceCutOnSwitchToEnforce(t *testing.T) {
	dst, _ := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	dec := &swapDecider{}
	src := func(mode string) string {
		return "default:\n  mode: " + mode + "\n  default_action: deny\n"
	}
	dec.p.Store(mustPolicy(t, src("audit")))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec; c.Names = nil })
	c := e.dial(dst)
	br := bufio.NewReader(c)
	io.WriteString(c, "\x00one\n")
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if l, err := br.ReadString('\n'); err != nil || l != "\x00one\n" {
		t.Fatalf("audit mode splice: %q %v", l, err)
	}
	// A reload that keeps audit mode keeps the splice.
	dec.p.Store(mustPolicy(t, src("audit")))
	if n := e.srv.Recheck("policy reloaded"); n != 0 {
		t.Fatalf("Recheck closed %d under audit mode", n)
	}
	io.WriteString(c, "\x00two\n")
	if l, err := br.ReadString('\n'); err != nil || l != "\x00two\n" {
		t.Fatalf("splice after audit reload: %q %v", l, err)
	}
	dec.p.Store(mustPolicy(t, src("enforce")))
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("splice still open after the switch to enforce")
	}
	var sawRevoked bool
	for !sawRevoked {
		a := e.audit.next(t)
		if a.Event == audit.EventRevoked {
			sawRevoked = a.Rule == "default" && a.Action == "deny"
			if !sawRevoked {
				t.Fatalf("revoked line %+v", a)
			}
		}
	}
}

// A forwarded request still streaming its response when a reload switches
// its audit set to enforce is cut, like a splice.
func TestAuditModeStreamCutOnSwitchToEnforce(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first chunk\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	dec := &swapDecider{}
	dec.p.Store(mustPolicy(t, modePolicy("audit")))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec })
	resp := do(t, e.client(up.addr(), nil, false), "DELETE", "http://api.example.com/v1/stream")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if l, err := br.ReadString('\n'); resp.StatusCode != 200 || l != "first chunk\n" {
		t.Fatalf("audit mode stream: %d %q %v", resp.StatusCode, l, err)
	}
	dec.p.Store(mustPolicy(t, modePolicy("enforce")))
	if n := e.srv.Recheck("policy reloaded"); n != 1 {
		t.Fatalf("Recheck closed %d, want 1", n)
	}
	if _, err := io.ReadAll(br); err == nil {
		t.Fatal("the stream ended cleanly: it was not cut")
	}
	for {
		a := e.audit.next(t)
		if a.Event == audit.EventRevoked {
			if a.Rule != "no-deletes" || a.Action != "deny" || a.Path != "/v1/stream" {
				t.Fatalf("revoked line %+v", a)
			}
			break
		}
	}
}
