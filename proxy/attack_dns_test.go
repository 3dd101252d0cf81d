package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/policy"
	pdns "github.com/clawd-dev/clawd/proxy/dns"
)

// atkClock is a settable clock.
type atkClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *atkClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *atkClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// atkResolver is a real proxy/dns Resolver whose upstream answers every
// name with ip (TTL 60) and which serves testContainer on a loopback
// socket; lookup asks it like the agent would.
func atkResolver(t *testing.T, ip netip.Addr, mod func(*pdns.Config)) (*pdns.Resolver, func(name string), *atkClock) {
	t.Helper()
	upPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := &mdns.Server{PacketConn: upPC, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg).SetReply(q)
		if q.Question[0].Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(fmt.Sprintf("%s 60 IN A %s", q.Question[0].Name, ip))
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	t.Cleanup(func() { up.Shutdown() })
	clk := &atkClock{t: time.Unix(1_800_000_000, 0)}
	cfg := pdns.Config{
		Upstreams:  []string{upPC.LocalAddr().String()},
		Now:        clk.Now,
		CIDRCovers: func(policy.Container, netip.Addr) bool { return true },    // loopback test upstreams
		HTTPLevel:  func(name string) bool { return name == "strict.example" }, // the daemon wires policy.Engine.HTTPLevelInAnySet
		Timeout:    2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := pdns.New(cfg)
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
	lookup := func(name string) {
		q := new(mdns.Msg).SetQuestion(mdns.Fqdn(name), mdns.TypeA)
		in, err := mdns.Exchange(q, pc.LocalAddr().String())
		if err != nil || len(in.Answer) == 0 {
			t.Fatalf("lookup %s: %v %v", name, in, err)
		}
	}
	return r, lookup, clk
}

const atkPolicy = `
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
`

// atkPolicyCIDR is the same with a deny default: the address is allowed
// by a cidrs rule for the service subnet the host lives in (here loopback,
// where the test upstreams are).
const atkPolicyCIDR = `
version: 1
default:
  default_action: deny
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
    - name: service-subnet
      cidrs: [127.0.0.0/8]
      action: allow
`

// DNS memory is the only thing that ties an address to the name whose
// rules are HTTP-level. It forgets: after MinTTL (or after the agent looks
// up MaxEntries other names, which evicts the pair), a TLS connection
// without SNI to the very same address is decided by the address alone and
// spliced raw. The agent then speaks TLS to strict.example's server itself
// and sends what the rules deny.
func TestAttackDNSMemoryExpiryDowngradesToSplice(t *testing.T) {
	for _, how := range []string{"expiry", "eviction", "expiry-cidr"} {
		t.Run(how, func(t *testing.T) {
			pol := atkPolicy
			if how == "expiry-cidr" {
				pol = atkPolicyCIDR
			}
			up := newUpstream(t, true, false, nil)
			ip := up.addr().Addr()
			r, lookup, clk := atkResolver(t, ip, func(c *pdns.Config) { c.MaxEntries = 64 })
			p, err := policy.Parse([]byte(pol), "attack.yaml")
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, nil, func(c *Config) {
				c.Decider = p
				c.Names = r
				c.UpstreamRoots = upstreamPool(up)
				c.PeekTimeout = 50 * time.Millisecond
			})
			lookup("strict.example")
			del := func() (int, error) { return atkNoSNIDelete(e.dial(up.addr())) }
			// Control: while clawd remembers the name, this is refused.
			if code, err := del(); err == nil {
				t.Fatalf("control: TLS without SNI to strict.example's address got %d", code)
			}
			if how != "eviction" {
				clk.add(6 * time.Minute)
			} else {
				for i := range 64 {
					lookup(fmt.Sprintf("n%d.filler.example", i))
				}
			}
			code, err := del()
			if err == nil || up.hits.Load() != 0 {
				var paths []string
				up.mu.Lock()
				for _, rq := range up.reqs {
					paths = append(paths, rq.Method+" "+rq.URL.Path)
				}
				up.mu.Unlock()
				t.Errorf("after the DNS memory of strict.example was lost (%s), a raw splice carried %v to its server (status %d)", how, strings.Join(paths, ","), code)
			}
		})
	}
}

// atkNoSNIDelete speaks TLS without SNI (and without checking the
// certificate) on c, an agent's connection the proxy serves, and sends
// DELETE /admin/everything for strict.example: the status it got, or the
// error that refused it.
func atkNoSNIDelete(c net.Conn) (int, error) {
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		return 0, err
	}
	io.WriteString(tc, "DELETE /admin/everything HTTP/1.1\r\nHost: strict.example\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}
