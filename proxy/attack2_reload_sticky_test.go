package proxy

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
	pdns "github.com/clawd-dev/clawd/proxy/dns"
)

// atk2Swap is a policy that a reload replaces, as policy.Engine does.
type atk2Swap struct{ p atomic.Pointer[policy.Policy] }

func (s *atk2Swap) Decide(in policy.Input) policy.Decision { return s.p.Load().Decide(in) }
func (s *atk2Swap) HTTPLevel(c policy.Container, h string, ip netip.Addr, port uint16) bool {
	return s.p.Load().HTTPLevel(c, h, ip, port)
}
func (s *atk2Swap) CIDRCovers(c policy.Container, ip netip.Addr, port uint16) bool {
	return s.p.Load().CIDRCovers(c, ip, port)
}

const atk2Before = `
version: 1
default:
  default_action: allow
  rules:
    - name: strict-plain
      hosts: strict.example
      action: allow
`

// The agent resolves strict.example while the policy treats it at the
// connection level; the operator then reloads a policy that intercepts it
// and denies DELETE and /admin/**. The 24 h memory is written only at query
// time, by the rules of that time, so it never learns the address; once
// the ordinary answer memory expires, TLS without SNI to the address is
// spliced raw under the new policy.
func TestAttack2ReloadToHTTPLevelNotRemembered(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	ip := up.addr().Addr()
	before, err := policy.Parse([]byte(atk2Before), "before.yaml")
	if err != nil {
		t.Fatal(err)
	}
	after, err := policy.Parse([]byte(atkPolicy), "after.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sw := &atk2Swap{}
	sw.p.Store(before)
	r, lookup, clk := atkResolver(t, ip, func(c *pdns.Config) {
		c.HTTPLevel = func(name string) bool { return sw.p.Load().HTTPLevelInAnySet(name) }
	})
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = sw
		c.Names = r
		c.UpstreamRoots = upstreamPool(up)
		c.PeekTimeout = 50 * time.Millisecond
	})
	lookup("strict.example")
	sw.p.Store(after)
	e.srv.Recheck("policy reloaded")
	del := func() (int, error) { return atkNoSNIDelete(e.dial(up.addr())) }
	if code, err := del(); err == nil {
		t.Fatalf("control: right after the reload, TLS without SNI got %d", code)
	}
	clk.add(6 * time.Minute)
	if code, err := del(); err == nil || up.hits.Load() != 0 {
		t.Errorf("6 min after a reload made strict.example HTTP-level, TLS without SNI to its address was spliced raw: DELETE /admin/everything got %d", code)
	}
}

func (s *atk2Swap) UpstreamProxyAddrs() []netip.AddrPort { return s.p.Load().UpstreamProxyAddrs() }
