package proxy

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	pdns "github.com/clawd-dev/clawd/proxy/dns"

	"github.com/clawd-dev/clawd/policy"
)

// Container "a" (team a, the resolver's testContainer) may reach
// strict.example at the connection level; container "b" (team b) has
// HTTP-level rules for it (intercepted, DELETE and /admin/** denied).
const atk2TwoSets = `
version: 1
default:
  default_action: allow
  rules:
    - name: no-delete
      hosts: strict.example
      methods: DELETE
      action: deny
    - name: no-admin
      hosts: strict.example
      paths: /admin/**
      action: deny
    - name: strict
      hosts: strict.example
      intercept: true
      action: allow
sets:
  - name: team-a
    match: {labels: {team: a}}
    default_action: allow
    rules:
      - name: strict-plain
        hosts: strict.example
        action: allow
`

// Invariant 1 promises that addresses of names some rule treats at the
// HTTP level are remembered for 24 h "beyond the DNS memory's TTL and
// eviction", for names clawd's DNS gave this container "or any other".
// But the 24 h (sticky) memory is written only when the *querying*
// container's own set treats the name at the HTTP level. Container a
// resolves strict.example (connection-level for a); container b, whose
// set intercepts strict.example, dials the hard-coded address. While a's
// ordinary answer memory lasts, b is refused; once it expires (minutes),
// nothing remembers that the address is strict.example's, and b's TLS
// without SNI is spliced raw to strict.example's server, carrying DELETE
// /admin/** past b's rules.
func TestAttack2StickyMemoryOnlyForQueryingContainersRules(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	ip := up.addr().Addr()
	p, err := policy.Parse([]byte(atk2TwoSets), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, lookup, clk := atkResolver(t, ip, func(c *pdns.Config) {
		// As the daemon wires it (daemon/daemon.go).
		c.HTTPLevel = func(name string) bool { return p.HTTPLevelInAnySet(name) }
	})
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = r
		c.UpstreamRoots = upstreamPool(up)
		c.PeekTimeout = 50 * time.Millisecond
	})
	b := policy.Container{ID: "b0b", Name: "agent-b", Runtime: "docker", Namespace: "moby", Labels: map[string]string{"team": "b"}}
	if !p.HTTPLevel(b, "strict.example", netip.Addr{}, 0) || p.HTTPLevel(testContainer, "strict.example", netip.Addr{}, 0) {
		t.Fatal("policy setup: strict.example must be HTTP-level for b only")
	}
	dialB := func() net.Conn {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := l.Accept()
			l.Close()
			if err == nil {
				e.srv.ServeConn(context.Background(), c, ConnMeta{Container: b, OrigDst: up.addr()})
			}
		}()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	del := func() (int, error) { return atkNoSNIDelete(dialB()) } // no SNI: an IP
	lookup("strict.example")                                      // container a
	if code, err := del(); err == nil {
		t.Fatalf("control: b's TLS without SNI to strict.example's address got %d", code)
	}
	clk.add(6 * time.Minute) // a's answer memory expires; 24 h have not passed
	code, err := del()
	if err == nil || up.hits.Load() != 0 {
		t.Errorf("6 minutes after container a resolved strict.example, b's TLS without SNI to its address was spliced raw: DELETE /admin/everything got %d (upstream hits %d)", code, up.hits.Load())
	}
}
