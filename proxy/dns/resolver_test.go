package dns

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/policy"
)

func TestForwarding(t *testing.T) {
	f := newFixture(t, nil)
	udpAddr := f.serveUDP(t, agent)
	tcpAddr := f.serveTCP(t, agent)

	tests := []struct {
		name  string
		net   string
		qname string
		qtype uint16
		rcode int
		want  []string
	}{
		{"udp A", "udp", "example.test.", mdns.TypeA, mdns.RcodeSuccess, []string{"192.0.2.1"}},
		{"udp AAAA", "udp", "example.test.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"2001:db8::1"}},
		{"udp CNAME chain", "udp", "www.cdn.test.", mdns.TypeA, mdns.RcodeSuccess, []string{"198.51.100.7"}},
		{"udp upstream NXDOMAIN", "udp", "nothing.test.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"udp mixed case", "udp", "ExAmPlE.TeSt.", mdns.TypeA, mdns.RcodeSuccess, []string{"192.0.2.1"}},
		{"tcp A", "tcp", "example.test.", mdns.TypeA, mdns.RcodeSuccess, []string{"192.0.2.1"}},
		{"tcp CNAME chain", "tcp", "www.cdn.test.", mdns.TypeA, mdns.RcodeSuccess, []string{"198.51.100.7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := new(mdns.Msg).SetQuestion(tt.qname, tt.qtype)
			q.Id = 0xbeef
			addr := udpAddr
			if tt.net == "tcp" {
				addr = tcpAddr
			}
			resp, _, err := (&mdns.Client{Net: tt.net}).Exchange(q, addr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Id != 0xbeef {
				t.Errorf("ID = %#x, want 0xbeef", resp.Id)
			}
			if resp.Rcode != tt.rcode {
				t.Errorf("rcode = %s, want %s", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tt.rcode])
			}
			if len(resp.Question) != 1 || resp.Question[0].Name != tt.qname {
				t.Errorf("question = %v, want the client's %s", resp.Question, tt.qname)
			}
			var got []string
			for _, a := range addrs(resp) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("addresses = %v, want %v", got, tt.want)
			}
		})
	}
	if got := f.metric(t, resultForwarded); got != float64(len(tests)) {
		t.Errorf("forwarded metric = %v, want %d", got, len(tests))
	}
}

// The answer carries the ID of the query it answers, whatever ID the
// forwarder used upstream.
func TestIDPreserved(t *testing.T) {
	f := newFixture(t, nil)
	addr := f.serveUDP(t, agent)
	for _, id := range []uint16{0, 1, 0x1234, 0xffff} {
		q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
		q.Id = id
		if resp := exchangeUDP(t, addr, pack(t, q)); resp.Id != id {
			t.Errorf("ID = %#x, want %#x", resp.Id, id)
		}
	}
}

// Several queries on one TCP connection are all answered.
func TestTCPSeveralQueriesPerConn(t *testing.T) {
	f := newFixture(t, nil)
	conn, err := mdns.Dial("tcp", f.serveTCP(t, agent))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, name := range []string{"a.test.", "b.test.", "c.test."} {
		q := new(mdns.Msg).SetQuestion(name, mdns.TypeA)
		q.Id = uint16(100 + i)
		if err := conn.WriteMsg(q); err != nil {
			t.Fatal(err)
		}
		resp, err := conn.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Id != q.Id || len(addrs(resp)) != 1 {
			t.Errorf("%s: id %d answers %v", name, resp.Id, resp.Answer)
		}
	}
}

func TestRefusedNames(t *testing.T) {
	tests := []struct {
		name      string
		rcode     int // Config.RefuseRcode
		qname     string
		wantRcode int
		wantHost  string
	}{
		{"default is NXDOMAIN", 0, "blocked.test.", mdns.RcodeNameError, "blocked.test"},
		{"subdomain", 0, "x.y.blocked.test.", mdns.RcodeNameError, "x.y.blocked.test"},
		{"case does not help", 0, "BLOCKED.Test.", mdns.RcodeNameError, "blocked.test"},
		{"REFUSED configured", RcodeRefused, "blocked.test.", mdns.RcodeRefused, "blocked.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.RefuseRcode = tt.rcode })
			addr := f.serveUDP(t, agent)
			q := new(mdns.Msg).SetQuestion(tt.qname, mdns.TypeA)
			resp := exchangeUDP(t, addr, pack(t, q))
			if resp.Rcode != tt.wantRcode {
				t.Errorf("rcode = %s, want %s", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tt.wantRcode])
			}
			if resp.Id != q.Id || len(resp.Answer) != 0 {
				t.Errorf("answer id %d (want %d), records %v", resp.Id, q.Id, resp.Answer)
			}
			if n := f.up.total(); n != 0 {
				t.Errorf("upstream saw %d queries, want none", n)
			}
			entries := f.audit.all()
			if len(entries) != 1 {
				t.Fatalf("audit entries = %v, want one", entries)
			}
			e := entries[0]
			if e.Event != "dns" || e.Action != "deny" || e.Host != tt.wantHost || e.ContainerID != agent.ID || e.Time.IsZero() {
				t.Errorf("audit entry = %+v", e)
			}
			if got := f.metric(t, resultRefused); got != 1 {
				t.Errorf("refused metric = %v, want 1", got)
			}
			if f.r.Consistent(agent.Key(), strings.TrimSuffix(tt.qname, "."), netip.MustParseAddr("192.0.2.66")) {
				t.Error("refused name is consistent with an address")
			}
		})
	}
}

// Names whose presentation form could fool a string match are refused
// before the policy is asked: "evil\.example.test" ends in ".example.test"
// but is the two labels "evil.example" and "test", a name outside
// example.test.
func TestOddNamesRefused(t *testing.T) {
	for _, qname := range []string{
		`evil\.example.test.`,
		`a\000b.example.test.`,
		`sp\032ace.example.test.`,
		`x\..example.test.`,
		".",
		"192.0.2.1.",      // an IP literal is no name to resolve
		"example.test.1.", // nor a name IPv4 parsers read as an address
	} {
		t.Run(qname, func(t *testing.T) {
			asked := false
			f := newFixture(t, func(c *Config) {
				c.MayResolve = func(_ policy.Container, name string) bool {
					asked = true
					return strings.HasSuffix(name, ".example.test")
				}
			})
			resp := f.ask(t, agent, qname, mdns.TypeA)
			if resp.Rcode != mdns.RcodeNameError {
				t.Errorf("rcode = %s, want NXDOMAIN", mdns.RcodeToString[resp.Rcode])
			}
			if asked || f.up.total() != 0 {
				t.Errorf("policy asked %v, upstream queries %d; want neither", asked, f.up.total())
			}
			if e := f.audit.all(); len(e) != 1 || e[0].Action != "deny" {
				t.Errorf("audit = %+v, want one deny", e)
			}
		})
	}
}

func TestNilMayResolveAllowsAll(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MayResolve = nil })
	if resp := f.ask(t, agent, "blocked.test.", mdns.TypeA); resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("answer = %v", resp)
	}
}

// The policy sees the container the query came from.
func TestMayResolveSeesContainer(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.MayResolve = func(c policy.Container, _ string) bool { return c.ID == agent.ID }
	})
	if resp := f.ask(t, agent, "example.test.", mdns.TypeA); resp.Rcode != mdns.RcodeSuccess {
		t.Errorf("agent: rcode %s", mdns.RcodeToString[resp.Rcode])
	}
	if resp := f.ask(t, other, "example.test.", mdns.TypeA); resp.Rcode != mdns.RcodeNameError {
		t.Errorf("other: rcode %s", mdns.RcodeToString[resp.Rcode])
	}
}

// A truncated UDP answer from upstream is retried over TCP, and the client
// gets what fits in its own UDP limit, truncated, so it retries over TCP.
func TestTruncation(t *testing.T) {
	f := newFixture(t, nil)
	udpAddr := f.serveUDP(t, agent)

	q := new(mdns.Msg).SetQuestion(bigName, mdns.TypeA)
	resp := exchangeUDP(t, udpAddr, pack(t, q))
	if !resp.Truncated {
		t.Error("512-byte client: answer not truncated")
	}
	if f.up.udp.Load() != 1 || f.up.tcp.Load() != 1 {
		t.Errorf("upstream udp/tcp queries = %d/%d, want 1/1", f.up.udp.Load(), f.up.tcp.Load())
	}

	q.SetEdns0(4096, false)
	resp = exchangeUDP(t, udpAddr, pack(t, q))
	if resp.Truncated || len(addrs(resp)) != 60 {
		t.Errorf("EDNS client: truncated %v, %d addresses, want all 60", resp.Truncated, len(addrs(resp)))
	}

	resp, _, err := (&mdns.Client{Net: "tcp"}).Exchange(new(mdns.Msg).SetQuestion(bigName, mdns.TypeA), f.serveTCP(t, agent))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Truncated || len(addrs(resp)) != 60 {
		t.Errorf("TCP client: truncated %v, %d addresses, want all 60", resp.Truncated, len(addrs(resp)))
	}
	if !f.r.Consistent(agent.Key(), "big.test", netip.MustParseAddr("203.0.113.60")) {
		t.Error("last address of the TCP retry not remembered")
	}
}

func TestUpstreamFailure(t *testing.T) {
	live := startUpstream(t)
	tests := []struct {
		name      string
		upstreams func(t *testing.T) []string
		wantRcode int
	}{
		{"dead upstream", func(t *testing.T) []string { return []string{deadAddr(t)} }, mdns.RcodeServerFailure},
		{"all dead", func(t *testing.T) []string { return []string{deadAddr(t), deadAddr(t)} }, mdns.RcodeServerFailure},
		{"first dead, second answers", func(t *testing.T) []string { return []string{deadAddr(t), live.addr} }, mdns.RcodeSuccess},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.Upstreams = tt.upstreams(t) })
			q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
			q.Id = 4242
			resp := exchangeUDP(t, f.serveUDP(t, agent), pack(t, q))
			if resp.Rcode != tt.wantRcode || resp.Id != 4242 {
				t.Errorf("rcode %s id %d, want %s id 4242", mdns.RcodeToString[resp.Rcode], resp.Id, mdns.RcodeToString[tt.wantRcode])
			}
			wantServfail := 0.0
			if tt.wantRcode == mdns.RcodeServerFailure {
				wantServfail = 1
			}
			if got := f.metric(t, resultServfail); got != wantServfail {
				t.Errorf("servfail metric = %v, want %v", got, wantServfail)
			}
		})
	}
}

// An upstream answering SERVFAIL or a different question is not believed;
// the next upstream is asked.
func TestUpstreamBadAnswers(t *testing.T) {
	good := startUpstream(t)
	bad := func(t *testing.T, mutate func(*mdns.Msg)) string {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, req *mdns.Msg) {
			m := new(mdns.Msg).SetReply(req)
			rr, _ := mdns.NewRR(req.Question[0].Name + " 60 IN A 192.0.2.200")
			m.Answer = append(m.Answer, rr)
			mutate(m)
			w.WriteMsg(m)
		})}
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go s.ActivateAndServe()
		<-started
		t.Cleanup(func() { s.Shutdown() })
		return pc.LocalAddr().String()
	}
	tests := []struct {
		name   string
		mutate func(*mdns.Msg)
	}{
		{"servfail", func(m *mdns.Msg) { m.Rcode = mdns.RcodeServerFailure }},
		{"refused", func(m *mdns.Msg) { m.Rcode = mdns.RcodeRefused }},
		{"other question", func(m *mdns.Msg) { m.Question[0].Name = "evil.test." }},
		{"other qtype", func(m *mdns.Msg) { m.Question[0].Qtype = mdns.TypeTXT }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.Upstreams = []string{bad(t, tt.mutate), good.addr} })
			resp := f.ask(t, agent, "example.test.", mdns.TypeA)
			if got := addrs(resp); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.1") {
				t.Errorf("answer %v, want the good upstream's 192.0.2.1", resp.Answer)
			}
			if f.r.Consistent(agent.Key(), "example.test", netip.MustParseAddr("192.0.2.200")) {
				t.Error("bad upstream's address remembered")
			}
		})
	}
}

func TestConsistent(t *testing.T) {
	f := newFixture(t, nil)
	f.ask(t, agent, "example.test.", mdns.TypeA)
	f.ask(t, agent, "example.test.", mdns.TypeAAAA)
	f.ask(t, agent, "www.cdn.test.", mdns.TypeA)
	f.ask(t, other, "a.test.", mdns.TypeA)

	tests := []struct {
		name string
		key  string
		host string
		ip   string
		want bool
	}{
		{"A", agent.Key(), "example.test", "192.0.2.1", true},
		{"AAAA", agent.Key(), "example.test", "2001:db8::1", true},
		{"wrong address", agent.Key(), "example.test", "192.0.2.2", false},
		{"upper case", agent.Key(), "EXAMPLE.Test", "192.0.2.1", true},
		{"trailing dot", agent.Key(), "example.test.", "192.0.2.1", true},
		{"v4-mapped address", agent.Key(), "example.test", "::ffff:192.0.2.1", true},
		{"CNAME chain query name", agent.Key(), "www.cdn.test", "198.51.100.7", true},
		{"CNAME chain middle", agent.Key(), "edge.cdn.test", "198.51.100.7", true},
		{"CNAME chain end", agent.Key(), "e1.akamai.test", "198.51.100.7", true},
		{"never asked", agent.Key(), "b.test", "192.0.2.12", false},
		{"other container's answer", agent.Key(), "a.test", "192.0.2.11", false},
		{"other container has its own", other.Key(), "a.test", "192.0.2.11", true},
		{"not agent's answers for other", other.Key(), "example.test", "192.0.2.1", false},
		{"unknown container", "docker/moby/nobody", "example.test", "192.0.2.1", false},
		{"IPv4 literal", agent.Key(), "192.0.2.99", "192.0.2.99", true},
		{"IPv4 literal mismatch", agent.Key(), "192.0.2.99", "192.0.2.98", false},
		{"IPv6 literal", agent.Key(), "2001:db8::5", "2001:db8::5", true},
		{"bracketed IPv6 literal", agent.Key(), "[2001:db8::5]", "2001:db8::5", true},
		{"bracketed mismatch", agent.Key(), "[2001:db8::5]", "2001:db8::6", false},
		{"literal for unknown container", "docker/moby/nobody", "192.0.2.99", "192.0.2.99", true},
		{"odd IPv4 form is a name", agent.Key(), "0xc0.0.2.99", "192.0.2.99", false},
		{"literal with port", agent.Key(), "192.0.2.99:443", "192.0.2.99", true}, // hostname.Normalize drops ports everywhere
		{"bracketed literal with port", agent.Key(), "[2001:db8::5]:443", "2001:db8::5", true},
		{"name with port", agent.Key(), "Example.test:443", "192.0.2.1", true},
		{"v4-mapped literal", agent.Key(), "::ffff:192.0.2.99", "192.0.2.99", true},
		{"zoned literal", agent.Key(), "fe80::1%eth0", "fe80::1", false},
		{"literal with bad port", agent.Key(), "192.0.2.99:x", "192.0.2.99", false},
		{"answered name with NUL", agent.Key(), "example.test\x00", "192.0.2.1", false},
		{"empty host", agent.Key(), "", "192.0.2.1", false},
		{"suffix of an answered name", agent.Key(), "test", "192.0.2.1", false},
		{"answered name with junk", agent.Key(), "example.test..", "192.0.2.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := f.r.Consistent(tt.key, tt.host, netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("Consistent(%q, %q, %s) = %v, want %v", tt.key, tt.host, tt.ip, got, tt.want)
			}
		})
	}
	if f.r.Consistent(agent.Key(), "example.test", netip.Addr{}) {
		t.Error("invalid address is consistent")
	}
}

// Answers are remembered for at least MinTTL, and longer when their TTL
// says so, measured on the injected clock.
func TestConsistentExpiry(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MinTTL = 10 * time.Minute })
	f.ask(t, agent, "example.test.", mdns.TypeA) // TTL 60s
	f.ask(t, agent, "long.test.", mdns.TypeA)    // TTL 2h
	ex, long := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.50")

	steps := []struct {
		advance  time.Duration
		wantEx   bool
		wantLong bool
	}{
		{0, true, true},
		{9*time.Minute + 59*time.Second, true, true},
		{time.Second, false, true}, // exactly MinTTL after the answer
		{110 * time.Minute, false, false},
	}
	for _, s := range steps {
		f.clock.Advance(s.advance)
		at := f.clock.Now()
		if got := f.r.Consistent(agent.Key(), "example.test", ex); got != s.wantEx {
			t.Errorf("at %v: example.test consistent = %v, want %v", at, got, s.wantEx)
		}
		if got := f.r.Consistent(agent.Key(), "long.test", long); got != s.wantLong {
			t.Errorf("at %v: long.test consistent = %v, want %v", at, got, s.wantLong)
		}
	}
	// Asking again renews the answer.
	f.ask(t, agent, "example.test.", mdns.TypeA)
	if !f.r.Consistent(agent.Key(), "example.test", ex) {
		t.Error("renewed answer not consistent")
	}
}

func TestNamesFor(t *testing.T) {
	f := newFixture(t, nil)
	f.ask(t, agent, "www.cdn.test.", mdns.TypeA)
	f.ask(t, agent, "e1.akamai.test.", mdns.TypeA) // not in zone: NXDOMAIN, changes nothing
	f.ask(t, agent, "example.test.", mdns.TypeA)

	tests := []struct {
		key  string
		ip   string
		want []string
	}{
		{agent.Key(), "198.51.100.7", []string{"www.cdn.test", "e1.akamai.test", "edge.cdn.test"}},
		{agent.Key(), "192.0.2.1", []string{"example.test"}},
		{agent.Key(), "::ffff:192.0.2.1", []string{"example.test"}},
		{agent.Key(), "192.0.2.77", nil},
		{other.Key(), "192.0.2.1", nil},
	}
	for _, tt := range tests {
		if got := f.r.NamesFor(tt.key, netip.MustParseAddr(tt.ip)); !slices.Equal(got, tt.want) {
			t.Errorf("NamesFor(%s, %s) = %q, want %q", tt.key, tt.ip, got, tt.want)
		}
	}

	f.r.Forget(agent.Key())
	if got := f.r.NamesFor(agent.Key(), netip.MustParseAddr("192.0.2.1")); got != nil {
		t.Errorf("after Forget: NamesFor = %q", got)
	}
	if f.r.Consistent(agent.Key(), "example.test", netip.MustParseAddr("192.0.2.1")) {
		t.Error("after Forget: still consistent")
	}
}

// The oldest answers go first when a container exceeds MaxEntries.
func TestMaxEntries(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxEntries = 2 })
	for _, n := range []string{"a.test.", "b.test.", "a.test.", "c.test."} {
		f.ask(t, agent, n, mdns.TypeA)
	}
	want := map[string]bool{"a.test": true, "b.test": false, "c.test": true}
	ips := map[string]string{"a.test": "192.0.2.11", "b.test": "192.0.2.12", "c.test": "192.0.2.13"}
	for name, w := range want {
		if got := f.r.Consistent(agent.Key(), name, netip.MustParseAddr(ips[name])); got != w {
			t.Errorf("%s consistent = %v, want %v", name, got, w)
		}
	}
}

func TestMalformed(t *testing.T) {
	valid := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
	two := valid.Copy()
	two.Question = append(two.Question, mdns.Question{Name: "a.test.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	none := valid.Copy()
	none.Question = nil
	response := valid.Copy()
	response.Response = true
	update := valid.Copy()
	update.Opcode = mdns.OpcodeUpdate
	chaos := valid.Copy()
	chaos.Question[0].Qclass = mdns.ClassCHAOS
	axfr := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeAXFR)
	axfr.Id = valid.Id
	full := pack(t, valid)

	tests := []struct {
		name      string
		packet    []byte
		wantRcode int // -1: dropped
	}{
		{"empty", nil, -1},
		{"short header", []byte{1, 2, 3}, -1},
		{"cut question", full[:len(full)-3], -1},
		{"garbage", []byte(strings.Repeat("\xff", 40)), -1},
		{"response", pack(t, response), -1},
		{"two questions", pack(t, two), mdns.RcodeFormatError},
		{"no question", pack(t, none), mdns.RcodeFormatError},
		{"update opcode", pack(t, update), mdns.RcodeNotImplemented},
		{"chaos class", pack(t, chaos), mdns.RcodeRefused},
		{"zone transfer", pack(t, axfr), mdns.RcodeRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			out := f.r.handle(context.Background(), agent, tt.packet, true, nil)
			if tt.wantRcode < 0 {
				if out != nil {
					t.Errorf("answered %x, want dropped", out)
				}
				if got := f.metric(t, resultMalformed); got != 1 {
					t.Errorf("malformed metric = %v, want 1", got)
				}
			} else {
				m := new(mdns.Msg)
				if err := m.Unpack(out); err != nil {
					t.Fatalf("answer does not parse: %v", err)
				}
				if m.Rcode != tt.wantRcode || m.Id != valid.Id || !m.Response {
					t.Errorf("rcode %s id %d, want %s id %d", mdns.RcodeToString[m.Rcode], m.Id, mdns.RcodeToString[tt.wantRcode], valid.Id)
				}
			}
			if n := f.up.total(); n != 0 {
				t.Errorf("upstream saw %d queries, want none", n)
			}
		})
	}
}

// Over UDP, a malformed datagram gets no answer and does not stop the
// server: the next query's answer is the first to arrive.
func TestMalformedUDPThenValid(t *testing.T) {
	f := newFixture(t, nil)
	q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
	q.Id = 777
	resp := exchangeUDP(t, f.serveUDP(t, agent), []byte{0xde, 0xad}, pack(t, q))
	if resp.Id != 777 || resp.Rcode != mdns.RcodeSuccess {
		t.Errorf("first answer id %d rcode %s, want the valid query's", resp.Id, mdns.RcodeToString[resp.Rcode])
	}
}

// A malformed message on a TCP connection ends it.
func TestMalformedTCPClosesConn(t *testing.T) {
	f := newFixture(t, nil)
	conn, err := net.Dial("tcp", f.serveTCP(t, agent))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0, 3, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(make([]byte, 10)); err == nil {
		t.Errorf("read %d bytes, want the connection closed", n)
	}
}

// Beyond MaxInFlight, further UDP queries of the container are dropped
// until earlier ones finish.
func TestInFlightLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxInFlight = 2 })
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	real := f.r.exchange
	f.r.exchange = func(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error) {
		entered <- struct{}{}
		<-release
		return real(ctx, q)
	}
	addr := f.serveUDP(t, agent)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 3 {
		q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
		q.Id = uint16(i + 1)
		conn.Write(pack(t, q))
	}
	<-entered
	<-entered
	for f.metric(t, resultDropped) != 1 {
		time.Sleep(time.Millisecond) // wait for the third datagram to be read
	}
	close(release)
	got := map[uint16]bool{}
	for range 2 {
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		got[m.Id] = true
	}
	if !got[1] || !got[2] {
		t.Errorf("answered IDs %v, want 1 and 2", got)
	}
}

func TestServePacketStopsOnClose(t *testing.T) {
	f := newFixture(t, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- f.r.ServePacket(context.Background(), pc, agent) }()
	pc.Close()
	if err := <-done; err != nil {
		t.Errorf("ServePacket after close: %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("# comment\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n"), 0o644)
	empty := filepath.Join(dir, "empty.conf")
	os.WriteFile(empty, []byte("search example\n"), 0o644)

	tests := []struct {
		name    string
		cfg     Config
		wantErr string
		want    []string
	}{
		{"resolv.conf", Config{ResolvConf: resolv}, "", []string{"127.0.0.53:53", "[::1]:53"}},
		{"explicit", Config{Upstreams: []string{"127.0.0.1:5353", "[::1]:53"}}, "", []string{"127.0.0.1:5353", "[::1]:53"}},
		{"no nameserver", Config{ResolvConf: empty}, "no nameserver", nil},
		{"missing resolv.conf", Config{ResolvConf: filepath.Join(dir, "nope")}, "read upstreams", nil},
		{"hostname upstream", Config{Upstreams: []string{"dns.example:53"}}, "not ip:port", nil},
		{"no port", Config{Upstreams: []string{"127.0.0.1"}}, "not ip:port", nil},
		{"port zero", Config{Upstreams: []string{"127.0.0.1:0"}}, "not ip:port", nil},
		{"bad rcode", Config{Upstreams: []string{"127.0.0.1:53"}, RefuseRcode: 99}, "invalid refuse rcode", nil},
		{"negative MinTTL", Config{Upstreams: []string{"127.0.0.1:53"}, MinTTL: -1}, "negative", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.upstreams, tt.want) {
				t.Errorf("upstreams = %v, want %v", r.upstreams, tt.want)
			}
		})
	}
}

// Two resolvers may share a registry (the daemon restarting its DNS side);
// they count on the same metric.
func TestSharedRegistry(t *testing.T) {
	f := newFixture(t, nil)
	g, err := New(Config{Upstreams: []string{f.up.addr}, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.ask(t, agent, "example.test.", mdns.TypeA)
	f.r = g
	f.ask(t, agent, "example.test.", mdns.TypeA)
	if got := f.metric(t, resultForwarded); got != 2 {
		t.Errorf("forwarded metric = %v, want 2", got)
	}
}
