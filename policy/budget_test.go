package policy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestBudgetOnDecision(t *testing.T) {
	p, err := Load("testdata/good/budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := Container{ID: "c1", Name: "agent", Runtime: "containerd", Namespace: "default"}
	in := Input{Container: c, DstIP: netip.MustParseAddr("203.0.113.7"), DstPort: 443, Host: "api.openai.com", Method: "POST", Path: "/v1/chat/completions"}
	d := p.Decide(in)
	if d.Action != Allow || d.Budget == nil {
		t.Fatalf("decision %+v, want allow with a budget", d)
	}
	b := d.Budget
	if b.ID != "default/openai" || b.Tokens != 500000 || b.Requests != 1000 || b.Per != 7*24*time.Hour || b.Unmetered != 8000 {
		t.Fatalf("budget %+v", *b)
	}
	if got := b.String(); got != "500000 tokens and 1000 requests per 7d" {
		t.Errorf("String() = %q", got)
	}
	if got := FormatDecision(d); !strings.Contains(got, "budget 500000 tokens and 1000 requests per 7d") {
		t.Errorf("FormatDecision = %q, want the budget shown", got)
	}
	in.Host = "api.anthropic.com"
	if b := p.Decide(in).Budget; b == nil || b.Unmetered != 0 || b.String() != "2000000 tokens per 24h" {
		t.Fatalf("anthropic budget %+v (unmetered must default to the whole token budget)", b)
	}
	// A budget can only be metered on HTTP: a raw connection (no method)
	// to the host is not allowed by the budget rule.
	in.Method, in.Path = "", ""
	if d := p.Decide(in); d.Action != Deny || d.Budget != nil {
		t.Fatalf("connection-level decision %+v, want the default deny", d)
	}
}

func TestFormatWindow(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 24 * time.Hour: "24h", 7 * 24 * time.Hour: "7d", 90 * time.Minute: "1h30m", time.Minute: "1m"} {
		if got := FormatWindow(d); got != want {
			t.Errorf("FormatWindow(%v) = %q, want %q", d, got, want)
		}
	}
}
