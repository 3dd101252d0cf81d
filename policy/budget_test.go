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

// The budget's opt-ins (issue 16, round 2): websocket and batches are
// booleans, off by default; anything else is an error with its line.
func TestBudgetOptIns(t *testing.T) {
	src := func(b string) []byte {
		return []byte("default:\n  rules:\n    - name: llm\n      hosts: api.example.com\n      intercept: true\n      action: allow\n      budget: " + b + "\n")
	}
	p, err := Parse(src("{tokens: 10, per: 1h, websocket: true, batches: true}"), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(Input{DstIP: netip.MustParseAddr("203.0.113.7"), DstPort: 80, Host: "api.example.com", Method: "GET", Path: "/"})
	if d.Budget == nil || !d.Budget.Websocket || !d.Budget.Batches {
		t.Fatalf("budget %+v, want both opted in", d.Budget)
	}
	p, err = Parse(src("{tokens: 10, per: 1h}"), "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d := p.Decide(Input{DstIP: netip.MustParseAddr("203.0.113.7"), DstPort: 80, Host: "api.example.com", Method: "GET", Path: "/"}); d.Budget.Websocket || d.Budget.Batches {
		t.Fatalf("budget %+v, want neither by default", d.Budget)
	}
	for _, bad := range []string{"{tokens: 10, per: 1h, websocket: yes please}", "{tokens: 10, per: 1h, batches: 1}"} {
		if _, err := Parse(src(bad), "b.yaml"); err == nil || !strings.Contains(err.Error(), "b.yaml:7") || !strings.Contains(err.Error(), "true or false") {
			t.Errorf("%s: %v, want a b.yaml:7 error saying true or false", bad, err)
		}
	}
}

func TestBudgetKey(t *testing.T) {
	pod := func(id, ns string) Container {
		return Container{ID: id, Runtime: "containerd", Namespace: ns, Labels: map[string]string{"io.kubernetes.pod.uid": "u1", "io.kubernetes.container.name": "agent"}}
	}
	if a, b := pod("1", "k8s.io").BudgetKey(), pod("2", "k8s.io").BudgetKey(); a != b || a != "k8s/u1/agent" {
		t.Errorf("a pod's restarted container: %q and %q, want the same k8s/u1/agent", a, b)
	}
	other := pod("3", "k8s.io")
	other.Labels = map[string]string{"io.kubernetes.pod.uid": "u1", "io.kubernetes.container.name": "sidecar"}
	if other.BudgetKey() == pod("1", "k8s.io").BudgetKey() {
		t.Error("two containers of a pod share a budget")
	}
	// Labels outside the CRI namespace (any image or user can set them)
	// and Docker containers keep their runtime key.
	for _, c := range []Container{pod("4", "default"), {ID: "5", Runtime: "docker", Namespace: "moby", Labels: pod("", "").Labels}} {
		if c.BudgetKey() != c.Key() {
			t.Errorf("%+v: budget key %q, want %q", c, c.BudgetKey(), c.Key())
		}
	}
}
