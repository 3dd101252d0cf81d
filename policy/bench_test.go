package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// benchPolicy has n rules over n distinct hosts, a glob every tenth rule
// and a CIDR rule every hundredth, like a large organisation's allow list.
func benchPolicy(b *testing.B, n int) *Policy {
	var sb strings.Builder
	sb.WriteString("default:\n  rules:\n")
	for i := 0; i < n; i++ {
		switch {
		case i%100 == 99:
			fmt.Fprintf(&sb, "    - name: r%d\n      cidrs: 10.%d.%d.0/24\n      ports: 5432\n      action: allow\n", i, i/256%256, i%256)
		case i%10 == 9:
			fmt.Fprintf(&sb, "    - name: r%d\n      hosts: \"*.svc%d.example.com\"\n      action: allow\n", i, i)
		default:
			fmt.Fprintf(&sb, "    - name: r%d\n      hosts: host%d.example.com\n      ports: 443\n      action: allow\n", i, i)
		}
	}
	p, err := Parse([]byte(sb.String()), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	if p.Rules() != n {
		b.Fatalf("rules = %d", p.Rules())
	}
	return p
}

func benchDecide(b *testing.B, n int) {
	p := benchPolicy(b, n)
	ins := []Input{
		{Container: agent, Host: fmt.Sprintf("host%d.example.com", n/2), DstPort: 443, DstIP: netip.MustParseAddr("203.0.113.5")},
		{Container: agent, Host: fmt.Sprintf("a.b.svc%d.example.com", n-1), DstPort: 443, DstIP: netip.MustParseAddr("203.0.113.6")},
		{Container: agent, DstIP: netip.MustParseAddr("10.0.99.1"), DstPort: 5432},
		{Container: agent, Host: "unknown.example.org", DstPort: 443, DstIP: netip.MustParseAddr("203.0.113.7")},
	}
	for _, in := range ins {
		if d := p.Decide(in); d.Reason == "" {
			b.Fatal("no reason")
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Decide(ins[i%len(ins)])
	}
}

func BenchmarkDecide10(b *testing.B)    { benchDecide(b, 10) }
func BenchmarkDecide10000(b *testing.B) { benchDecide(b, 10000) }
