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

// clawd's DNS hands the agent the addresses in an HTTPS (SVCB) record's
// ipv4hint for strict.example (filter.go keeps public hints; clients dial
// them), but neither the answer memory nor the 24 h memory records hint
// addresses: only A/AAAA. The agent asks for strict.example's HTTPS
// record, dials the hint address with TLS without SNI, and since no name
// is known there the connection is decided by the address alone and
// spliced raw to strict.example's server.
func TestAttack2HTTPSRecordHintNotRemembered(t *testing.T) {
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
		if q.Question[0].Qtype == mdns.TypeHTTPS {
			rr, err := mdns.NewRR(fmt.Sprintf("%s 60 IN HTTPS 1 . alpn=h2 ipv4hint=%s", q.Question[0].Name, ip))
			if err != nil {
				panic(err)
			}
			m.Answer = append(m.Answer, rr)
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
	q := new(mdns.Msg).SetQuestion("strict.example.", mdns.TypeHTTPS)
	in, err := mdns.Exchange(q, pc.LocalAddr().String())
	if err != nil || len(in.Answer) != 1 {
		t.Fatalf("lookup: %v %v", in, err)
	}
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = r
		c.UpstreamRoots = upstreamPool(up)
		c.PeekTimeout = 50 * time.Millisecond
	})
	del := func() (int, error) { return atkNoSNIDelete(e.dial(up.addr())) }
	_ = clk
	t.Logf("agent was given %v", in.Answer)
	code, err := del()
	if err == nil || up.hits.Load() != 0 {
		t.Errorf("TLS without SNI to the ipv4hint clawd's DNS gave for strict.example was spliced raw: DELETE /admin/everything got %d (upstream hits %d)", code, up.hits.Load())
	}
}
