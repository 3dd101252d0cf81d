package dns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

// Addresses the fake host and the fake other container hold (public by
// range, special by Config.Special).
var (
	hostAddr  = netip.MustParseAddr("203.0.113.1")
	ctrAddr   = netip.MustParseAddr("203.0.113.6")
	coveredIP = netip.MustParsePrefix("10.20.0.0/16")
)

// rebindFixture is a resolver whose upstream answers each name with the
// records given (whatever the query type), knows hostAddr as the host's and
// ctrAddr as a container's, and whose policy names 10.20.0.0/16 in cidrs for
// agent only.
func rebindFixture(t *testing.T, records map[string][]string, mod func(*Config)) *fixture {
	t.Helper()
	f := newFixture(t, func(c *Config) {
		c.Special = addrclass.Extra{
			Host:      func(a netip.Addr) bool { return a == hostAddr },
			Container: func(a netip.Addr) bool { return a == ctrAddr },
		}
		c.CIDRCovers = func(ct policy.Container, ip netip.Addr) bool {
			return ct.Key() == agent.Key() && coveredIP.Contains(ip)
		}
		if mod != nil {
			mod(c)
		}
	})
	f.r.exchange = func(_ context.Context, q *mdns.Msg) (*mdns.Msg, error) {
		m := new(mdns.Msg).SetReply(q)
		rrs, ok := records[strings.ToLower(q.Question[0].Name)]
		if !ok {
			m.Rcode = mdns.RcodeNameError
			return m, nil
		}
		for _, s := range rrs {
			rr, err := mdns.NewRR(s)
			if err != nil {
				t.Fatalf("bad test record %q: %v", s, err)
			}
			switch {
			case strings.Contains(s, " NS ") || strings.Contains(s, " SOA "):
				m.Ns = append(m.Ns, rr)
			case strings.HasPrefix(s, "glue."):
				m.Extra = append(m.Extra, rr)
			default:
				m.Answer = append(m.Answer, rr)
			}
		}
		return m, nil
	}
	return f
}

// drops returns the addresses of the drop-record audit lines for name.
func (f *fixture) drops(name string) map[string]audit.Entry {
	out := map[string]audit.Entry{}
	for _, e := range f.audit.all() {
		if e.Event == audit.EventDNS && e.Action == audit.ActionDNSDropRecord && e.Host == name {
			out[e.Dst] = e
		}
	}
	return out
}

// Every special class is left out of the answer, audited with its class,
// and never remembered.
func TestSpecialAnswersDropped(t *testing.T) {
	tests := []struct {
		addr  string
		class addrclass.Class
	}{
		{"127.0.0.1", addrclass.Loopback},
		{"127.1.2.3", addrclass.Loopback},
		{"::1", addrclass.Loopback},
		{"0.0.0.0", addrclass.Unspecified},
		{"::", addrclass.Unspecified},
		{"169.254.169.254", addrclass.LinkLocal},
		{"fe80::1", addrclass.LinkLocal},
		{"10.1.2.3", addrclass.Private},
		{"172.16.0.1", addrclass.Private},
		{"192.168.1.1", addrclass.Private},
		{"fd00::1", addrclass.Private},
		{"100.64.0.1", addrclass.Shared},
		{"239.1.2.3", addrclass.Multicast},
		{"ff05::1", addrclass.Multicast},
		{"ff02::1", addrclass.LinkLocal},
		{"240.0.0.1", addrclass.Reserved},
		{"198.18.0.1", addrclass.Reserved},
		{"203.0.113.1", addrclass.Host},
		{"203.0.113.6", addrclass.Container},
		// IPv6 forms carrying one of those IPv4 addresses.
		{"64:ff9b::a9fe:a9fe", addrclass.LinkLocal}, // NAT64 of the metadata address
		{"64:ff9b::7f00:1", addrclass.Loopback},     // NAT64 of 127.0.0.1
		{"64:ff9b::cb00:7101", addrclass.Host},      // NAT64 of the host's address
		{"64:ff9b:1:a9fe:a9:fe00::", addrclass.LinkLocal},
		{"2002:a9fe:a9fe::1", addrclass.LinkLocal}, // 6to4
		{"2002:a00:1::1", addrclass.Private},
		{"2002:cb00:7106::1", addrclass.Container},
		{"::ffff:127.0.0.1", addrclass.Loopback}, // v4-mapped in an AAAA record
		{"::ffff:169.254.169.254", addrclass.LinkLocal},
		{"::ffff:203.0.113.1", addrclass.Host},
		{"::a9fe:a9fe", addrclass.LinkLocal},                        // v4-compatible
		{"2001:0:4136:e378:8000:63bf:f5ff:fffe", addrclass.Private}, // Teredo, client 10.0.0.1
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.addr)
			typ, qtype := "A", mdns.TypeA
			if !ip.Is4() {
				typ, qtype = "AAAA", mdns.TypeAAAA
			}
			f := rebindFixture(t, map[string][]string{
				"evil.test.":  {"evil.test. 60 IN " + typ + " " + tt.addr},
				"mixed.test.": {"mixed.test. 60 IN " + typ + " " + tt.addr, "mixed.test. 60 IN A 198.51.100.7", "mixed.test. 60 IN AAAA 2001:db8::7"},
			}, nil)
			resp := f.ask(t, agent, "evil.test.", qtype)
			if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 0 {
				t.Errorf("answer = %s %v, want NOERROR with no records", mdns.RcodeToString[resp.Rcode], resp.Answer)
			}
			resp = f.ask(t, agent, "mixed.test.", qtype)
			if got := addrs(resp); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::7")}) {
				t.Errorf("mixed answer addresses = %v, want only the public ones", got)
			}
			for _, name := range []string{"evil.test", "mixed.test"} {
				if f.r.Consistent(agent.Key(), name, ip) {
					t.Errorf("%s is remembered as %s", name, ip)
				}
			}
			if got := f.r.NamesFor(agent.Key(), ip.Unmap()); got != nil {
				t.Errorf("NamesFor(%s) = %v", ip, got)
			}
			if !f.r.Consistent(agent.Key(), "mixed.test", netip.MustParseAddr("198.51.100.7")) {
				t.Error("the public address of mixed.test is not remembered")
			}
			f.r.FlushAudit()
			for _, name := range []string{"evil.test", "mixed.test"} {
				e, ok := f.drops(name)[ip.String()]
				if !ok {
					t.Fatalf("no drop-record audit line for %s %s: %+v", name, ip, f.audit.all())
				}
				if !strings.Contains(e.Reason, string(tt.class)) || e.Container != agent.Name || e.QType != typ || e.Count != 1 || e.Proto != audit.ProtoDNS {
					t.Errorf("drop line = %+v, want class %q in the reason, container %s, qtype %s, count 1", e, tt.class, agent.Name, typ)
				}
			}
		})
	}
}

// Ordinary public answers pass untouched and leave no drop line.
func TestPublicAnswersKept(t *testing.T) {
	f := rebindFixture(t, map[string][]string{
		"ok.test.": {"ok.test. 60 IN A 198.51.100.7", "ok.test. 60 IN A 192.0.2.1", "ok.test. 60 IN AAAA 2001:db8::7"},
	}, nil)
	resp := f.ask(t, agent, "ok.test.", mdns.TypeA)
	if len(addrs(resp)) != 3 {
		t.Errorf("answer = %v", resp.Answer)
	}
	f.r.FlushAudit()
	if d := f.drops("ok.test"); len(d) != 0 {
		t.Errorf("drop lines for public answers: %v", d)
	}
}

// A rule naming the range in cidrs lets the special address through, for
// that container only, and it is remembered.
func TestSpecialAnswerCoveredByCIDR(t *testing.T) {
	f := rebindFixture(t, map[string][]string{
		"db.test.":  {"db.test. 60 IN A 10.20.0.5"},
		"db6.test.": {"db6.test. 60 IN AAAA ::ffff:10.20.0.5"},
	}, nil)
	ip := netip.MustParseAddr("10.20.0.5")
	if got := addrs(f.ask(t, agent, "db.test.", mdns.TypeA)); !slices.Equal(got, []netip.Addr{ip}) {
		t.Errorf("agent's answer = %v, want 10.20.0.5 (its rule names 10.20.0.0/16)", got)
	}
	if !f.r.Consistent(agent.Key(), "db.test", ip) {
		t.Error("covered answer not remembered")
	}
	if got := addrs(f.ask(t, agent, "db6.test.", mdns.TypeAAAA)); len(got) != 1 {
		t.Errorf("v4-mapped form of a covered address: answer %v", got)
	}
	if got := addrs(f.ask(t, other, "db.test.", mdns.TypeA)); len(got) != 0 {
		t.Errorf("other container's answer = %v: its set names no range", got)
	}
	if f.r.Consistent(other.Key(), "db.test", ip) {
		t.Error("dropped answer remembered for the other container")
	}
	f.r.FlushAudit()
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSDropRecord && e.Container == agent.Name {
			t.Errorf("covered address audited as dropped: %+v", e)
		}
	}
	if _, ok := f.drops("db.test")["10.20.0.5"]; !ok {
		t.Error("no drop line for the other container")
	}
}

// Without CIDRCovers every special address is left out.
func TestNilCIDRCoversDropsAllSpecial(t *testing.T) {
	f := rebindFixture(t, map[string][]string{"db.test.": {"db.test. 60 IN A 10.20.0.5"}},
		func(c *Config) { c.CIDRCovers = nil })
	if got := addrs(f.ask(t, agent, "db.test.", mdns.TypeA)); len(got) != 0 {
		t.Errorf("answer = %v", got)
	}
}

// A CNAME chain whose final address is dropped leaves no remembered pair
// for any name on it, and the agent gets NODATA rather than a dangling chain.
func TestCNAMEToSpecialAddress(t *testing.T) {
	f := rebindFixture(t, map[string][]string{
		"www.evil.test.": {
			"www.evil.test. 60 IN CNAME edge.evil.test.",
			"edge.evil.test. 60 IN CNAME e1.cdn.test.",
			"e1.cdn.test. 60 IN A 169.254.169.254",
		},
		"www.half.test.": {
			"www.half.test. 60 IN CNAME e2.cdn.test.",
			"e2.cdn.test. 60 IN A 169.254.169.254",
			"e2.cdn.test. 60 IN A 198.51.100.8",
		},
	}, nil)
	meta := netip.MustParseAddr("169.254.169.254")
	resp := f.ask(t, agent, "www.evil.test.", mdns.TypeA)
	if resp.Rcode != mdns.RcodeSuccess || len(resp.Answer) != 0 {
		t.Errorf("answer = %s %v, want NODATA", mdns.RcodeToString[resp.Rcode], resp.Answer)
	}
	resp = f.ask(t, agent, "www.half.test.", mdns.TypeA)
	if got := addrs(resp); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("198.51.100.8")}) || len(resp.Answer) != 2 {
		t.Errorf("half answer = %v, want the CNAME and the public A", resp.Answer)
	}
	for _, name := range []string{"www.evil.test", "edge.evil.test", "e1.cdn.test", "www.half.test", "e2.cdn.test"} {
		if f.r.Consistent(agent.Key(), name, meta) {
			t.Errorf("%s remembered as the metadata address", name)
		}
	}
	if got := f.r.NamesFor(agent.Key(), meta); got != nil {
		t.Errorf("NamesFor(metadata) = %v", got)
	}
	if !f.r.Consistent(agent.Key(), "www.half.test", netip.MustParseAddr("198.51.100.8")) {
		t.Error("public end of the half chain not remembered")
	}
}

// Addresses outside the answer section (glue in additional, SVCB/HTTPS
// hints) are filtered too: clients use them.
func TestSpecialAddressesOutsideAnswers(t *testing.T) {
	f := rebindFixture(t, map[string][]string{
		"svc.test.": {
			`svc.test. 60 IN HTTPS 1 . alpn="h2" ipv4hint="127.0.0.1,198.51.100.9" ipv6hint="::1"`,
			"svc.test. 60 IN NS ns.svc.test.",
			"glue.svc.test. 60 IN A 10.0.0.53",
			"glue.svc.test. 60 IN A 198.51.100.53",
		},
	}, nil)
	resp := f.ask(t, agent, "svc.test.", mdns.TypeHTTPS)
	if len(resp.Answer) != 1 {
		t.Fatalf("answer = %v", resp.Answer)
	}
	h, ok := resp.Answer[0].(*mdns.HTTPS)
	if !ok {
		t.Fatalf("answer = %T", resp.Answer[0])
	}
	var v4 []string
	for _, kv := range h.Value {
		switch kv := kv.(type) {
		case *mdns.SVCBIPv4Hint:
			for _, ip := range kv.Hint {
				v4 = append(v4, ip.String())
			}
		case *mdns.SVCBIPv6Hint:
			t.Errorf("ipv6hint left with %v", kv.Hint)
		}
	}
	if !slices.Equal(v4, []string{"198.51.100.9"}) {
		t.Errorf("ipv4hint = %v, want only 198.51.100.9", v4)
	}
	var glue []string
	for _, rr := range resp.Extra {
		if a, ok := rr.(*mdns.A); ok {
			glue = append(glue, a.A.String())
		}
	}
	if !slices.Equal(glue, []string{"198.51.100.53"}) {
		t.Errorf("additional A = %v, want only the public one", glue)
	}
	f.r.FlushAudit()
	d := f.drops("svc.test")
	for _, ip := range []string{"127.0.0.1", "::1", "10.0.0.53"} {
		if _, ok := d[ip]; !ok {
			t.Errorf("no drop line for %s: %v", ip, d)
		}
	}
}

// Forwarded queries are audited in aggregate: one line per container, name,
// type and upstream rcode, with a count; Forget writes one container's.
func TestForwardedQueriesAudited(t *testing.T) {
	f := newFixture(t, nil)
	for range 3 {
		f.ask(t, agent, "example.test.", mdns.TypeA)
	}
	f.ask(t, agent, "example.test.", mdns.TypeAAAA)
	f.ask(t, agent, "nothing.test.", mdns.TypeA)
	f.ask(t, other, "example.test.", mdns.TypeA)
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSForward {
			t.Fatalf("forward line written before any flush: %+v", e)
		}
	}
	f.r.Forget(agent.Key())
	type line struct {
		container, host, qtype, reason string
		count                          int64
	}
	var got []line
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSForward {
			if e.Event != audit.EventDNS || e.Proto != audit.ProtoDNS || !e.Time.Equal(f.clock.Now()) {
				t.Errorf("forward line %+v", e)
			}
			got = append(got, line{e.Container, e.Host, e.QType, e.Reason, e.Count})
		}
	}
	want := []line{
		{"agent", "example.test", "A", "upstream NOERROR", 3},
		{"agent", "example.test", "AAAA", "upstream NOERROR", 1},
		{"agent", "nothing.test", "A", "upstream NXDOMAIN", 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("after Forget(agent): %v, want %v", got, want)
	}
	f.r.FlushAudit()
	n := 0
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSForward && e.Container == other.Name {
			n++
			if e.Count != 1 || e.Host != "example.test" {
				t.Errorf("other's line %+v", e)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d forward lines for other, want 1", n)
	}
	f.r.FlushAudit()
	if len(f.audit.all()) != len(want)+1 {
		t.Errorf("a second flush wrote again: %+v", f.audit.all())
	}
}

// Memory is bounded: past MaxAuditKeys distinct lines, everything pending
// is written at once; no count is lost.
func TestAuditAggregationBounded(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAuditKeys = 2 })
	names := []string{"a.test.", "b.test.", "c.test.", "a.test.", "b.test.", "c.test.", "c.test."}
	for _, n := range names {
		f.ask(t, agent, n, mdns.TypeA)
	}
	f.r.agg.mu.Lock()
	pending := len(f.r.agg.m)
	f.r.agg.mu.Unlock()
	if pending > 2 {
		t.Errorf("%d lines pending, bound is 2", pending)
	}
	f.r.FlushAudit()
	var total int64
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSForward {
			total += e.Count
		}
	}
	if total != int64(len(names)) {
		t.Errorf("counts add up to %d, want %d", total, len(names))
	}
}

// RunAudit writes on its interval, and once more when stopped.
func TestRunAuditFlushes(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AuditInterval = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.r.RunAudit(ctx); close(done) }()
	f.ask(t, agent, "example.test.", mdns.TypeA)
	deadline := time.Now().Add(10 * time.Second)
	for len(f.audit.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if len(f.audit.all()) != 1 {
		t.Fatalf("no periodic flush: %+v", f.audit.all())
	}
	f.ask(t, agent, "a.test.", mdns.TypeA)
	cancel()
	<-done
	if len(f.audit.all()) != 2 {
		t.Errorf("no final flush: %+v", f.audit.all())
	}
}

// A listener shared with others refuses whatever the sender check does not
// vouch for: REFUSED, audited, nothing forwarded; and passes the rest.
func TestSenderCheck(t *testing.T) {
	f := newFixture(t, nil)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	good, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	evil, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	bad := evil.LocalAddr().(*net.UDPAddr).AddrPort()
	seen := make(chan netip.AddrPort, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- f.r.ServePacketChecked(ctx, pc, agent, func(src netip.AddrPort) error {
			seen <- src
			if src == bad {
				return errors.New("sent by cgroup 42, not by this container")
			}
			return nil
		})
	}()
	defer func() { cancel(); <-done }()

	q := new(mdns.Msg).SetQuestion("example.test.", mdns.TypeA)
	q.Id = 7
	exchange := func(c net.Conn) *mdns.Msg {
		t.Helper()
		if _, err := c.Write(pack(t, q)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := exchange(evil); m.Rcode != mdns.RcodeRefused || m.Id != 7 || len(m.Answer) != 0 {
		t.Errorf("refused sender got %s %v", mdns.RcodeToString[m.Rcode], m.Answer)
	}
	if got := <-seen; got != bad {
		t.Errorf("check saw %v, want the sender's address %v", got, evil.LocalAddr())
	}
	if f.up.total() != 0 {
		t.Error("a refused query was forwarded")
	}
	if m := exchange(good); m.Rcode != mdns.RcodeSuccess || len(addrs(m)) != 1 {
		t.Errorf("vouched sender got %s %v", mdns.RcodeToString[m.Rcode], m.Answer)
	}
	<-seen
	var deny []audit.Entry
	for _, e := range f.audit.all() {
		if e.Action == audit.ActionDNSDeny {
			deny = append(deny, e)
		}
	}
	if len(deny) != 1 || deny[0].Host != "example.test" || deny[0].QType != "A" || !strings.Contains(deny[0].Reason, "cgroup 42") {
		t.Errorf("deny lines = %+v", deny)
	}
	if f.metric(t, resultRefused) != 1 {
		t.Errorf("refused metric = %v", f.metric(t, resultRefused))
	}
}
