package dns

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

var (
	agent = policy.Container{ID: "abc123", Name: "agent", Runtime: "docker", Namespace: "moby"}
	other = policy.Container{ID: "def456", Name: "other", Runtime: "docker", Namespace: "moby"}
)

// zone is the fake upstream's data, keyed by lower-case FQDN.
var zone = map[string][]string{
	"example.test.": {
		"example.test. 60 IN A 192.0.2.1",
		"example.test. 60 IN AAAA 2001:db8::1",
	},
	"www.cdn.test.": {
		"www.cdn.test. 30 IN CNAME edge.cdn.test.",
		"edge.cdn.test. 30 IN CNAME e1.akamai.test.",
		"e1.akamai.test. 20 IN A 198.51.100.7",
	},
	"long.test.":    {"long.test. 7200 IN A 192.0.2.50"},
	"a.test.":       {"a.test. 60 IN A 192.0.2.11"},
	"b.test.":       {"b.test. 60 IN A 192.0.2.12"},
	"c.test.":       {"c.test. 60 IN A 192.0.2.13"},
	"blocked.test.": {"blocked.test. 60 IN A 192.0.2.66"},
}

// bigName has more A records than fit in 512 bytes; over UDP the fake
// upstream answers it truncated, as real servers do.
const bigName = "big.test."

// upstream is a fake resolver on loopback, UDP and TCP on the same port.
type upstream struct {
	addr  string
	udp   atomic.Int64 // queries received over UDP
	tcp   atomic.Int64 // queries received over TCP
	names sync.Map     // query names seen
}

func (u *upstream) total() int64 { return u.udp.Load() + u.tcp.Load() }

func (u *upstream) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	isTCP := w.RemoteAddr().Network() == "tcp"
	if isTCP {
		u.tcp.Add(1)
	} else {
		u.udp.Add(1)
	}
	m := new(mdns.Msg).SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	u.names.Store(name, true)
	switch {
	case name == bigName && !isTCP:
		m.Truncated = true
	case name == bigName:
		for i := range 60 {
			rr, _ := mdns.NewRR("big.test. 60 IN A 203.0.113." + strconv.Itoa(i+1))
			m.Answer = append(m.Answer, rr)
		}
	case zone[name] != nil:
		for _, s := range zone[name] {
			rr, err := mdns.NewRR(s)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == mdns.TypeCNAME {
				m.Answer = append(m.Answer, rr)
			}
		}
	default:
		m.Rcode = mdns.RcodeNameError
	}
	w.WriteMsg(m)
}

// startUpstream starts a fake resolver on 127.0.0.1, UDP and TCP on one port.
func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		t.Fatal("no free port for UDP and TCP")
	}
	u.addr = pc.LocalAddr().String()
	for _, s := range []*mdns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
	}
	return u
}

// deadAddr is a loopback UDP address nobody listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// auditLog records audit entries.
type auditLog struct {
	mu      sync.Mutex
	entries []audit.Entry
}

func (a *auditLog) Log(e audit.Entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entries = append(a.entries, e)
}

func (a *auditLog) all() []audit.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]audit.Entry(nil), a.entries...)
}

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// denyBlocked is a policy that refuses blocked.test and its subdomains.
func denyBlocked(_ policy.Container, name string) bool {
	return name != "blocked.test" && !strings.HasSuffix(name, ".blocked.test")
}

type fixture struct {
	r     *Resolver
	up    *upstream
	audit *auditLog
	clock *clock
	reg   *prometheus.Registry
}

// newFixture returns a resolver forwarding to a fresh fake upstream; mod
// may adjust the config first.
func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{up: startUpstream(t), audit: &auditLog{}, clock: newClock(), reg: prometheus.NewRegistry()}
	cfg := Config{
		Upstreams:  []string{f.up.addr},
		MayResolve: denyBlocked,
		Audit:      f.audit,
		Registerer: f.reg,
		Now:        f.clock.Now,
		Timeout:    5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

// serveUDP runs ServePacket for c on a loopback socket and returns its address.
func (f *fixture) serveUDP(t *testing.T, c policy.Container) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.r.ServePacket(ctx, pc, c) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServePacket: %v", err)
		}
		pc.Close()
	})
	return pc.LocalAddr().String()
}

// serveTCP accepts connections on loopback and runs ServeConn for c on each.
func (f *fixture) serveTCP(t *testing.T, c policy.Container) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); f.r.ServeConn(ctx, conn, c) }()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// ask resolves name/qtype through the handler directly, as container c.
func (f *fixture) ask(t *testing.T, c policy.Container, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg).SetQuestion(name, qtype)
	b, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := f.r.handle(context.Background(), c, b, false, nil)
	if out == nil {
		t.Fatalf("no answer for %s", name)
	}
	m := new(mdns.Msg)
	if err := m.Unpack(out); err != nil {
		t.Fatal(err)
	}
	return m
}

// exchangeUDP sends raw datagrams to addr and returns the first answer.
func exchangeUDP(t *testing.T, addr string, packets ...[]byte) *mdns.Msg {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range packets {
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	m := new(mdns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m
}

func pack(t testing.TB, m *mdns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addrs(m *mdns.Msg) []netip.Addr {
	var out []netip.Addr
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			a, _ := netip.AddrFromSlice(rr.A.To4())
			out = append(out, a)
		case *mdns.AAAA:
			a, _ := netip.AddrFromSlice(rr.AAAA)
			out = append(out, a)
		}
	}
	return out
}

// metric returns clawd_dns_queries_total{result=result}.
func (f *fixture) metric(t *testing.T, result string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "clawd_dns_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
