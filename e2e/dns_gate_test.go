package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// Each container of the "pod" may resolve only its own name.
const gatePodPolicy = `version: 1
default:
  default_action: deny
  rules: []
sets:
  - name: gate-a
    match: {name: "gatea-*"}
    rules:
      - name: a-only
        hosts: a-only.upstream.test
        action: allow
  - name: gate-b
    match: {name: "gateb-*"}
    rules:
      - name: b-only
        hosts: b-only.upstream.test
        action: allow
`

// gateDNSAudit makes the aggregated DNS audit lines appear quickly.
const gateDNSAudit = "dns-audit-interval: 200ms\n"

func attachmentOf(t *testing.T, cl *Clawd, ct *harness.Container) daemon.AttachmentInfo {
	t.Helper()
	for _, a := range cl.List() {
		if a.Container.Name == ct.Name {
			if a.DNSPort == 0 || a.ProxyPort == 0 {
				t.Fatalf("clawd ls shows no listener ports for %s: %+v", ct.Name, a)
			}
			return a
		}
	}
	t.Fatalf("%s is not attached", ct.Name)
	return daemon.AttachmentInfo{}
}

// TestDNSGateSharedNetnsDecidesBySender: two attached containers share one
// network namespace (a pod), whose sandbox is not attached. Whatever way A
// sends a query to B's own DNS listener — UDP over IPv4, IPv6 or the
// v4-mapped address, connected or not, or TCP to B's proxy listener — it is
// never decided by B's rules: the kernel refuses it. The unattached sandbox,
// which runs no clawd program, gets REFUSED from the listener (the daemon
// asks the kernel which socket sent the datagram). Controls: B's own query
// for B's name works, A's goes by A's rules also at A's own listener port,
// and forwarded queries are audited.
func TestDNSGateSharedNetnsDecidesBySender(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: gatePodPolicy, Extra: gateDNSAudit})
	files := map[string]string{dnsqBin(t): "/dnsq"}
	sandbox := ctd.Run(t, "gatepod", harness.RunOpts{Network: "none", Files: files})
	a := ctd.Run(t, "gatea", harness.RunOpts{NetnsOf: sandbox, Files: files})
	b := ctd.Run(t, "gateb", harness.RunOpts{NetnsOf: sandbox, Files: files})
	cl.MustCLI("attach", a.Name)
	cl.MustCLI("attach", b.Name)
	la, lb := attachmentOf(t, cl, a), attachmentOf(t, cl, b)
	if la.DNSPort == lb.DNSPort {
		t.Fatalf("A and B share DNS port %d", la.DNSPort)
	}
	server53 := "-server " + harness.UpstreamDNS.String() + ":53"

	// Controls: each resolves its own name, the usual way, UDP and TCP.
	for _, flag := range []string{"", "-tcp"} {
		if r := dnsq(t, b, flag, server53, "b-only.upstream.test"); r.Rcode != "NOERROR" || len(r.Answers) != 1 {
			t.Fatalf("B's own query for its name %s: %+v", flag, r)
		}
		if r := dnsq(t, a, flag, server53, "a-only.upstream.test"); r.Rcode != "NOERROR" || len(r.Answers) != 1 {
			t.Fatalf("A's own query for its name %s: %+v", flag, r)
		}
		if r := dnsq(t, a, flag, server53, "b-only.upstream.test"); r.Rcode != "NXDOMAIN" {
			t.Errorf("A asked for B's name %s: %+v, want NXDOMAIN by A's rules", flag, r)
		}
	}
	// A at its own listener port directly: still A's rules.
	own := fmt.Sprintf("127.0.0.1:%d", la.DNSPort)
	if r := dnsq(t, a, "-socket", "4", "-sendto", "-server", own, "b-only.upstream.test"); r.Rcode != "NXDOMAIN" {
		t.Errorf("A at its own listener %s: %+v, want NXDOMAIN", own, r)
	}
	if r := dnsq(t, a, "-socket", "4", "-server", own, "a-only.upstream.test"); r.Rcode != "NOERROR" || len(r.Answers) != 1 {
		t.Errorf("A at its own listener %s for its own name: %+v", own, r)
	}
	up.Reset()

	// A straight at B's listeners: refused in the kernel, every way.
	p, pt := lb.DNSPort, lb.ProxyPort
	attacks := [][]string{
		{"-socket", "4", "-server", fmt.Sprintf("127.0.0.1:%d", p)},
		{"-socket", "4", "-sendto", "-server", fmt.Sprintf("127.0.0.1:%d", p)},
		{"-socket", "4", "-sendto", "-server", fmt.Sprintf("127.0.0.2:%d", p)},
		{"-socket", "6", "-server", fmt.Sprintf("[::1]:%d", p)},
		{"-socket", "6", "-sendto", "-server", fmt.Sprintf("[::1]:%d", p)},
		{"-socket", "6", "-server", fmt.Sprintf("[::ffff:127.0.0.1]:%d", p)},
		{"-socket", "6", "-sendto", "-server", fmt.Sprintf("[::ffff:127.0.0.1]:%d", p)},
		{"-tcp", "-server", fmt.Sprintf("127.0.0.1:%d", pt)},
		{"-tcp", "-server", fmt.Sprintf("[::1]:%d", pt)},
	}
	for _, args := range attacks {
		r := dnsq(t, a, append(args, "b-only.upstream.test")...)
		if r.Rcode == "NOERROR" || len(r.Answers) > 0 {
			t.Errorf("A %v to B's listener was answered by B's rules: %+v", args, r)
		} else if !strings.Contains(r.Error, "not permitted") {
			t.Errorf("A %v to B's listener: %+v, want EPERM from the kernel", args, r)
		}
	}

	// The sandbox runs no clawd program: the listener itself refuses it.
	for _, args := range [][]string{
		{"-socket", "4", "-sendto", "-server", fmt.Sprintf("127.0.0.1:%d", p)},
		{"-socket", "4", "-server", fmt.Sprintf("127.0.0.1:%d", p)},
		{"-socket", "6", "-sendto", "-server", fmt.Sprintf("[::1]:%d", p)},
		{"-socket", "6", "-server", fmt.Sprintf("[::ffff:127.0.0.1]:%d", p)},
	} {
		if r := dnsq(t, sandbox, append(args, "b-only.upstream.test")...); r.Rcode != "REFUSED" || len(r.Answers) != 0 {
			t.Errorf("unattached sandbox %v at B's listener: %+v, want REFUSED", args, r)
		}
	}
	for _, q := range up.DNSQueries() {
		if strings.HasPrefix(strings.ToLower(q), "b-only.") {
			t.Errorf("a query not B's own reached the upstream DNS under B's rules: %q", q)
		}
	}

	// Audited: the sandbox's refusals (on B's line, saying why) and the
	// forwarded queries, aggregated with a count.
	// fwdCount sums the aggregated forward lines of container c for name
	// (a window boundary may split them).
	fwdCount := func(c *harness.Container, name string) int64 {
		var n int64
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDNS && e.Action == audit.ActionDNSForward && e.Container == c.Name && e.Host == name && e.QType == "A" {
				n += e.Count
			}
		}
		return n
	}
	eventually(t, "audit lines for refused and forwarded queries", func() bool {
		refused := false
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDNS && e.Action == audit.ActionDNSDeny && e.Container == b.Name && e.Host == "b-only.upstream.test" && strings.Contains(e.Reason, "not container "+b.Name) {
				refused = true
			}
		}
		return refused && fwdCount(b, "b-only.upstream.test") >= 2 && fwdCount(a, "a-only.upstream.test") >= 3
	})
	// B's two own queries, none of A's or the sandbox's attempts.
	if n := fwdCount(b, "b-only.upstream.test"); n != 2 {
		t.Errorf("B's forwarded b-only.upstream.test count = %d, want 2 (its own UDP and TCP query)", n)
	}

	// A restarted daemon opens new listeners: the kernel learns the new
	// ports at re-adoption and forgets the old ones.
	cl.Stop()
	cl.Start()
	eventually(t, "both re-adopted", func() bool { return len(cl.List()) == 2 })
	lb2 := attachmentOf(t, cl, b)
	if r := dnsq(t, a, "-socket", "4", "-sendto", "-server", fmt.Sprintf("127.0.0.1:%d", lb2.DNSPort), "b-only.upstream.test"); !strings.Contains(r.Error, "not permitted") {
		t.Errorf("after restart, A at B's new listener: %+v, want EPERM", r)
	}
	if r := dnsq(t, b, server53, "b-only.upstream.test"); r.Rcode != "NOERROR" || len(r.Answers) != 1 {
		t.Errorf("after restart, B's own query: %+v", r)
	}
	if r := dnsq(t, sandbox, "-socket", "4", "-sendto", "-server", fmt.Sprintf("127.0.0.1:%d", lb2.DNSPort), "b-only.upstream.test"); r.Rcode != "REFUSED" {
		t.Errorf("after restart, the sandbox at B's new listener: %+v, want REFUSED", r)
	}
}

const gateRebindPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: upstream-names
      hosts: "*.upstream.test"
      action: allow
    - name: db-range
      cidrs: [10.20.0.0/16]
      ports: 5432
      action: allow
`

// TestDNSGateRebindingAnswersFiltered: names the policy allows, whose
// upstream answer points at loopback, the metadata address, a private
// range, the host's own veth address, another attached container, or an
// IPv6 form of those (NAT64, v4-mapped), reach the agent without those
// records, and the audit says why. Controls: a public answer passes, the
// public half of a mixed answer passes, and a private address that a rule
// names in cidrs passes.
func TestDNSGateRebindingAnswersFiltered(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	t.Cleanup(up.ClearDNSRecords)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: gateRebindPolicy, Extra: gateDNSAudit})
	files := map[string]string{dnsqBin(t): "/dnsq"}
	ct := ctd.Run(t, "gaterebind", harness.RunOpts{Files: files})
	other := ctd.Run(t, "gateother", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	cl.MustCLI("attach", other.Name)

	pub := harness.UpstreamIPv4.String()
	type tc struct {
		name, qtype string
		records     []string
		want        []string // addresses the agent gets
		dropped     []string // addresses audited as left out
		class       string   // in the reason
	}
	cases := []tc{
		{"loop", "A", []string{"A 127.0.0.1"}, nil, []string{"127.0.0.1"}, "loopback"},
		{"meta", "A", []string{"A 169.254.169.254"}, nil, []string{"169.254.169.254"}, "link-local"},
		{"priv", "A", []string{"A 10.1.2.3"}, nil, []string{"10.1.2.3"}, "private"},
		{"hostveth", "A", []string{"A " + ct.HostIPv4.String()}, nil, []string{ct.HostIPv4.String()}, "host"},
		{"upveth", "A", []string{"A 198.51.100.1"}, nil, []string{"198.51.100.1"}, "host"},
		{"neighbour", "A", []string{"A " + other.IPv4.String()}, nil, []string{other.IPv4.String()}, "container"},
		{"nat64", "AAAA", []string{"AAAA 64:ff9b::a9fe:a9fe"}, nil, []string{"64:ff9b::a9fe:a9fe"}, "link-local"},
		{"mapped", "AAAA", []string{"AAAA ::ffff:127.0.0.1"}, nil, []string{"::ffff:127.0.0.1"}, "loopback"},
		{"mixed", "A", []string{"A 10.1.2.3", "A " + pub}, []string{pub}, []string{"10.1.2.3"}, "private"},
		// Controls.
		{"pub", "A", []string{"A " + pub}, []string{pub}, nil, ""},
		{"db", "A", []string{"A 10.20.0.5"}, []string{"10.20.0.5"}, nil, ""},
	}
	for _, c := range cases {
		var rrs []string
		for _, r := range c.records {
			rrs = append(rrs, c.name+".upstream.test. 60 IN "+r)
		}
		if err := up.SetDNSRecords(c.name+".upstream.test", rrs...); err != nil {
			t.Fatal(err)
		}
	}
	// A CNAME chain ending at the metadata address: NODATA, chain and all.
	if err := up.SetDNSRecords("chain.upstream.test",
		"chain.upstream.test. 60 IN CNAME edge.upstream.test.",
		"edge.upstream.test. 60 IN A 169.254.169.254"); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, tc{"chain", "A", nil, nil, []string{"169.254.169.254"}, "link-local"})

	server := "-server " + harness.UpstreamDNS.String() + ":53"
	for _, c := range cases {
		for _, flag := range []string{"", "-tcp"} {
			r := dnsq(t, ct, flag, server, "-type", c.qtype, c.name+".upstream.test")
			if r.Rcode != "NOERROR" || strings.Join(r.Answers, ",") != strings.Join(c.want, ",") {
				t.Errorf("%s %s %s: %+v, want NOERROR with %v", c.name, c.qtype, flag, r, c.want)
			}
		}
	}
	eventually(t, "an audit line for every address left out", func() bool {
		seen := map[string]bool{}
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDNS && e.Action == audit.ActionDNSDropRecord && e.Container == ct.Name {
				seen[e.Host+" "+e.Dst] = true
			}
		}
		for _, c := range cases {
			for _, d := range c.dropped {
				if !seen[c.name+".upstream.test "+d] {
					return false
				}
			}
		}
		return true
	})
	for _, e := range cl.AuditEntries() {
		if e.Action != audit.ActionDNSDropRecord {
			continue
		}
		for _, c := range cases {
			if e.Host != c.name+".upstream.test" {
				continue
			}
			if c.dropped == nil {
				t.Errorf("%s: a control's address was left out: %+v", c.name, e)
			} else if !strings.Contains(e.Reason, "is "+c.class+":") || e.Proto != audit.ProtoDNS || e.QType != c.qtype || e.Count < 1 {
				t.Errorf("%s: drop line %+v, want class %s", c.name, e, c.class)
			}
		}
	}
}
