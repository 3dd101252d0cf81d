package channels

import (
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// On ntfy only people with a topic can ever answer (their tokens are
// published to their topic). CheckRoutes, fed by Directory, accepts a
// route naming an ntfy person who has no topic: the request is held, the
// channel logs "asked person has no ntfy topic; not notified", and it
// silently times out, although "a rule with nobody configured to ask is a
// policy-check error".
func TestAttackNtfyPersonWithoutTopicPassesCheck(t *testing.T) {
	dir := Directory([]map[string]any{{
		"type": "ntfy", "name": "phone", "server": "https://ntfy.example",
		"topics": map[string]any{"alice": "clawd-alice-xyz"},
	}})
	p, err := policy.Parse([]byte(`
default:
  rules:
    - name: r
      hosts: a.example.com
      action: approve
      approvers: [{channel: phone, people: [carol]}]
`), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckRoutes(dir, nil); err == nil {
		t.Errorf("route asks ntfy person carol, who has no topic on channel phone (only alice has): passes CheckRoutes, nobody can answer")
	}
}

// The webhook channel only notifies: it has no callbacks and no listener,
// so nobody can decide "on" it (decisions come back through signed links,
// channel "link"). A route that asks only webhook people passes
// CheckRoutes and can never be answered.
func TestAttackWebhookOnlyRoutePassesCheck(t *testing.T) {
	dir := Directory([]map[string]any{{
		"type": "webhook", "name": "hook", "url": "https://x.example", "secret": "whsec_MDEyMzQ1Njc4OWFiY2RlZg==",
	}})
	p, err := policy.Parse([]byte(`
default:
  rules:
    - name: r
      hosts: a.example.com
      action: approve
      approvers: [{channel: hook, people: [bob]}]
`), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckRoutes(dir, nil); err == nil {
		t.Errorf("route asks only the webhook channel (which has no way to receive a decision, and no link is on the route): passes CheckRoutes, nobody can answer")
	}
}

// A Slack channel with neither app-token nor signing-secret posts cards
// whose buttons nobody can answer (slack.New only warns). A route asking
// only its people passes CheckRoutes: silent timeout.
func TestAttackSlackWithoutClickPathPassesCheck(t *testing.T) {
	dir := Directory([]map[string]any{{
		"type": "slack", "name": "slack", "bot-token": "xoxb-1", "channel": "C0123456789", "approvers": []any{"U1"},
	}})
	p, err := policy.Parse([]byte(`
default:
  rules:
    - name: r
      hosts: a.example.com
      action: approve
      approvers: [{channel: slack}]
`), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckRoutes(dir, nil); err == nil {
		t.Errorf("route asks only a Slack channel configured without app-token or signing-secret (no way to receive a click): passes CheckRoutes, nobody can answer")
	}
}
