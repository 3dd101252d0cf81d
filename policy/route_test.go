package policy

import (
	"strings"
	"testing"
	"time"
)

const routesPolicy = `
approver_groups:
  ops: [slack:U1, slack:U2, telegram:42]
default:
  approvers:
    - channel: slack
      groups: [ops]
  rules:
    - name: inherit
      hosts: a.example.com
      action: approve
    - name: own
      hosts: b.example.com
      action: approve
      approvers:
        - channel: telegram
          groups: [ops]
          people: ["7"]
        - channel: cli
      approvals_required: 2
      escalate:
        after: 5m
        approvers: [{channel: ntfy, people: [alice]}]
      grants: false
    - name: channel-default
      hosts: c.example.com
      action: approve
      approvers: [{channel: teams}]
    - name: allow
      hosts: d.example.com
      action: allow
`

func TestRoutes(t *testing.T) {
	p, err := Parse([]byte(routesPolicy), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := p.Decide(Input{Host: "a.example.com", DstPort: 443})
	if d.Route == nil || len(d.Route.Approvers) != 1 || strings.Join(d.Route.Approvers[0].People, ",") != "U1,U2" || d.Route.Required != 1 || d.Route.NoGrants {
		t.Fatalf("inherited route %+v", d.Route)
	}
	d = p.Decide(Input{Host: "b.example.com", DstPort: 443})
	r := d.Route
	if r == nil || len(r.Approvers) != 2 || r.Approvers[0].Channel != "telegram" || strings.Join(r.Approvers[0].People, ",") != "42,7" ||
		r.Required != 2 || !r.NoGrants || r.EscalateAfter != 5*time.Minute || r.Escalate[0].Channel != "ntfy" {
		t.Fatalf("own route %+v", r)
	}
	if d := p.Decide(Input{Host: "d.example.com", DstPort: 443}); d.Route != nil {
		t.Fatalf("allow decision carries a route: %+v", d.Route)
	}

	dir := Directory{"slack": {}, "telegram": {}, "cli": {Open: true}, "ntfy": {People: []string{"alice"}}, "teams": {People: []string{"aad-1"}}}
	if err := p.CheckRoutes(dir, nil); err != nil {
		t.Fatalf("answerable routes refused: %v", err)
	}
	// Channels missing from clawd.yaml, or with nobody to ask.
	err = p.CheckRoutes(Directory{"slack": {}, "cli": {Open: true}, "teams": {}}, nil)
	for _, want := range []string{
		`p.yaml:16: set "default": rule "own": approvers: channel "telegram" is not configured in clawd.yaml (configured: cli, slack, teams)`,
		`rule "own": escalate: channel "ntfy" is not configured`,
		`p.yaml:28: set "default": rule "channel-default": approvers: nobody on channel "teams" can answer`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckRoutes error %v\nwant %q", err, want)
		}
	}
	// Two approvals required but only one person can answer.
	one, err := Parse([]byte(`default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvals_required: 2
      approvers: [{channel: slack, people: [U1]}]
`), "one.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := one.CheckRoutes(dir, nil); err == nil || !strings.Contains(err.Error(), "approvals_required is 2 but only 1 different people can answer") {
		t.Fatalf("two-person rule with one person: %v", err)
	}
	// A rule without approvers is checked against the daemon's default route.
	none, _ := Parse([]byte("default:\n  default_action: approve\n  rules: []\n"), "none.yaml")
	if err := none.CheckRoutes(dir, &Route{Approvers: []Audience{{Channel: "gone"}}, Required: 1}); err == nil || !strings.Contains(err.Error(), `channel "gone" is not configured`) {
		t.Fatalf("default route: %v", err)
	}
}
