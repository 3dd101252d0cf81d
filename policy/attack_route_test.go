package policy

import (
	"strings"
	"testing"
)

// routeDir is a clawd.yaml with one Slack channel whose own approver is U1,
// plus the built-in cli and link (as approval/channels.Directory builds it).
func routeDir() Directory {
	return Directory{"cli": {Open: true}, "link": {Open: true}, "slack": {People: []string{"U1"}}}
}

func checkRoute(t *testing.T, y string) error {
	t.Helper()
	p, err := Parse([]byte(y), "attack.yaml")
	if err != nil {
		return err // refused by the parser (fixed there): held
	}
	return p.CheckRoutes(routeDir(), nil) // the daemon passes def == nil
}

// The core refuses a signed link as one of the approvers of a two-person
// rule ("a signed link cannot count as one"), but CheckRoutes counts
// "link" as a person: a route with one real approver plus link passes the
// check and can never be approved (silent timeout).
func TestAttackRouteLinkCountsAsPersonInCheck(t *testing.T) {
	for name, y := range map[string]string{
		"slack+link": `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvers: [{channel: slack, people: [U1]}, {channel: link}]
      approvals_required: 2
`,
		"cli+link": `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvers: [{channel: cli}, {channel: link}]
      approvals_required: 2
`,
	} {
		if err := checkRoute(t, y); err == nil {
			t.Errorf("%s: approvals_required 2 with only one identity that can vote (links never count in a two-person rule) passes CheckRoutes: nobody can ever approve, the request silently times out", name)
		}
	}
}

// A rule that sets approvals_required but no approvers (nor its set) uses
// the daemon's default route; the daemon calls CheckRoutes with def == nil,
// so such a rule is not checked at all, whatever the number.
func TestAttackRouteRequiredWithoutApproversUnchecked(t *testing.T) {
	y := `
default:
  rules:
    - name: five
      hosts: a.example.com
      action: approve
      approvals_required: 5
`
	if err := checkRoute(t, y); err == nil {
		t.Errorf("approvals_required: 5 on the default route (cli, link, slack:U1: at most 2 distinct voters) passes CheckRoutes as the daemon calls it (def nil): silent timeout instead of a policy error")
	}
}

// Escalation people count toward approvals_required in CheckRoutes, but the
// core only schedules an escalation when after < the rule's timeout. A rule
// whose escalation comes after its timeout passes the check and can never
// collect its approvals.
func TestAttackRouteEscalationAfterTimeoutCounted(t *testing.T) {
	y := `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approval_timeout: 5m
      approvers: [{channel: slack, people: [U1]}]
      approvals_required: 2
      escalate:
        after: 30m
        approvers: [{channel: cli}]
`
	if err := checkRoute(t, y); err == nil {
		t.Errorf("escalate.after (30m) >= approval_timeout (5m) with the escalation needed to reach approvals_required passes CheckRoutes: the escalation never happens and nobody can approve")
	}
}

// User IDs are compared exactly by the core (the platform's ID); CheckRoutes
// counts "U1" and "u1" as two people, so a two-person rule that names one
// person twice in different case passes the check.
func TestAttackRouteCaseVariantsCountTwice(t *testing.T) {
	y := `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvers: [{channel: slack, people: [U1, u1]}]
      approvals_required: 2
`
	if err := checkRoute(t, y); err == nil {
		t.Errorf("approvals_required 2 satisfied in CheckRoutes by the same Slack ID in two cases (U1, u1): Slack IDs are upper case, only one person can answer")
	}
}

// An empty or null person parses and counts as a person in CheckRoutes
// ("slack:"), though no click ever carries an empty user ID.
func TestAttackRouteEmptyPersonCounts(t *testing.T) {
	for name, people := range map[string]string{"empty": `["", U1]`, "null": `[~, U1]`} {
		y := `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvers: [{channel: slack, people: ` + people + `}]
      approvals_required: 2
`
		p, err := Parse([]byte(y), "attack.yaml")
		if err != nil {
			continue // refused by the parser: held
		}
		if err := p.CheckRoutes(routeDir(), nil); err == nil {
			t.Errorf("%s: people %s parses and passes CheckRoutes with approvals_required 2: only U1 can ever answer", name, people)
		}
	}
}

// The README's own example: escalate after 10m with no approval_timeout
// (the default is 10m). The core schedules an escalation only when
// after < timeout, so this escalation never happens, and the two-person
// rule that needs the escalated person passes CheckRoutes.
func TestAttackRouteReadmeEscalationEqualsDefaultTimeout(t *testing.T) {
	y := `
default:
  rules:
    - name: two
      hosts: a.example.com
      action: approve
      approvers: [{channel: slack, people: [U1]}]
      approvals_required: 2
      escalate: {after: 10m, approvers: [{channel: cli}]}
`
	// Fixed in the parser: an escalation not before the timeout is refused.
	if _, err := Parse([]byte(y), "attack.yaml"); err == nil || !strings.Contains(err.Error(), "the escalation would never happen") {
		t.Errorf("escalate.after 10m with the default 10m approval timeout: the escalation can never fire, yet the policy loads (%v)", err)
	}
}
