package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// The policy reports, never relaxes: a set in mode audit still decides
// deny and approve; Decision.Audit tells the proxy to carry out allow.
func TestAuditModeReportsWouldBeDecision(t *testing.T) {
	p, err := Parse([]byte(`
default:
  next_steps: "ask the operator on #agents"
sets:
  - name: learning
    match: {name: learner}
    mode: audit
    rules:
      - name: no-deletes
        hosts: api.example.com
        ports: 80
        methods: DELETE
        action: deny
        reason: deletes go through the release pipeline
        next_steps: open a ticket instead
      - name: writes
        hosts: api.example.com
        ports: 80
        methods: POST
        action: approve
      - name: reads
        hosts: api.example.com
        ports: 80
        action: allow
        rate_limit: 1/hour
        next_steps: wait an hour
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	learner := Container{ID: "1", Name: "learner"}
	other := Container{ID: "2", Name: "other"}
	in := func(c Container, m string) Input {
		return Input{Container: c, DstIP: netip.MustParseAddr("203.0.113.7"), DstPort: 80, Host: "api.example.com", Method: m, Path: "/x"}
	}
	if got := p.SetMode(learner); got != AuditMode {
		t.Fatalf("SetMode(learner) = %q", got)
	}
	if got := p.SetMode(other); got != Enforce {
		t.Fatalf("SetMode(other) = %q", got)
	}
	d := p.Decide(in(learner, "DELETE"))
	if d.Action != Deny || !d.Audit || d.Would != "" || d.NextSteps != "open a ticket instead" {
		t.Errorf("DELETE: %+v", d)
	}
	if d := p.Decide(in(learner, "POST")); d.Action != Approve || !d.Audit || d.NextSteps != "" {
		t.Errorf("POST: %+v", d)
	}
	if d := p.Decide(in(learner, "GET")); d.Action != Allow || !d.Audit {
		t.Errorf("GET 1: %+v", d)
	}
	if d := p.Decide(in(learner, "GET")); d.Action != Deny || !d.RateLimited || !d.Audit || d.NextSteps != "wait an hour" {
		t.Errorf("GET 2 (rate limited): %+v", d)
	}
	// The default section is enforced, and its next_steps is the default
	// decision's.
	if d := p.Decide(in(other, "GET")); d.Action != Deny || d.Audit || d.Rule != "default" || d.NextSteps != "ask the operator on #agents" {
		t.Errorf("other: %+v", d)
	}
	// DNS: an audit set resolves every name (the address decides later);
	// the enforced default refuses names no rule allows.
	if !p.MayResolve(learner, "unknown.example.net") {
		t.Error("MayResolve(learner, unknown) = false in audit mode")
	}
	if p.MayResolve(other, "unknown.example.net") {
		t.Error("MayResolve(other, unknown) = true")
	}
}

// clawd policy test says what audit mode does and what the agent is told.
func TestExplainAuditModeAndNextSteps(t *testing.T) {
	p, err := Parse([]byte(`
default:
  mode: audit
  rules:
    - name: no-deletes
      hosts: api.example.com
      intercept: true
      methods: DELETE
      action: deny
      next_steps: open a ticket instead
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Explain(p, Container{Name: "a"}, "DELETE", "https://api.example.com/x")
	if err != nil {
		t.Fatal(err)
	}
	got := FormatDecision(d)
	for _, want := range []string{"deny", `rule "no-deletes"`, "mode audit: let through and audited as would deny", "next steps: open a ticket instead"} {
		if !strings.Contains(got, want) {
			t.Errorf("FormatDecision = %q, want %q in it", got, want)
		}
	}
}
