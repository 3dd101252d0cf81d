package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/policy"
	pdns "github.com/clawd-dev/clawd/proxy/dns"
)

// The 24 h memory of strict.example's addresses (invariant 1) is written
// only when the *queried* name is HTTP-level. An agent asks for a name of
// its own, alias.attacker.example, which its operator made a CNAME of
// strict.example: clawd answers it (the default allows it), remembers
// strict.example at the address for the answer's TTL only, and never in
// the sticky memory. Minutes later (or after the agent evicts its own
// answer memory), TLS without SNI to the address is spliced raw to
// strict.example's server: DELETE /admin/** gets through.
func TestAttack2CNAMEAliasSkipsStickyMemory(t *testing.T) {
	up := newUpstream(t, true, false, nil)
	ip := up.addr().Addr()
	p, err := policy.Parse([]byte(atkPolicy), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	upPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dsrv := &mdns.Server{PacketConn: upPC, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg).SetReply(q)
		if q.Question[0].Qtype == mdns.TypeA {
			cn, _ := mdns.NewRR(fmt.Sprintf("%s 60 IN CNAME strict.example.", q.Question[0].Name))
			a, _ := mdns.NewRR(fmt.Sprintf("strict.example. 60 IN A %s", ip))
			m.Answer = append(m.Answer, cn, a)
		}
		w.WriteMsg(m)
	})}
	go dsrv.ActivateAndServe()
	t.Cleanup(func() { dsrv.Shutdown() })
	clk := &atkClock{t: time.Unix(1_800_000_000, 0)}
	r, err := pdns.New(pdns.Config{
		Upstreams:  []string{upPC.LocalAddr().String()},
		Now:        clk.Now,
		CIDRCovers: func(policy.Container, netip.Addr) bool { return true },
		HTTPLevel:  func(name string) bool { return p.HTTPLevelInAnySet(name) },
		Timeout:    2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go r.ServePacket(ctx, pc, testContainer)
	t.Cleanup(func() { cancel(); pc.Close() })
	q := new(mdns.Msg).SetQuestion("alias.attacker.example.", mdns.TypeA)
	in, err := mdns.Exchange(q, pc.LocalAddr().String())
	if err != nil || len(in.Answer) != 2 {
		t.Fatalf("lookup: %v %v", in, err)
	}
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = r
		c.UpstreamRoots = upstreamPool(up)
		c.PeekTimeout = 50 * time.Millisecond
	})
	del := func() (int, error) { return atkNoSNIDelete(e.dial(up.addr())) }
	if code, err := del(); err == nil {
		t.Fatalf("control: TLS without SNI to strict.example's address (via the CNAME) got %d", code)
	}
	clk.add(6 * time.Minute)
	code, err := del()
	if err == nil || up.hits.Load() != 0 {
		t.Errorf("6 min after resolving a CNAME of strict.example, TLS without SNI to its address was spliced raw: DELETE /admin/everything got %d (upstream hits %d)", code, up.hits.Load())
	}
}
