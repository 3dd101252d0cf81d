package policy

// Red team, round 2 (issue 16, MCP gate): policies that parse but leave an
// mcp rule's tool calls unread.

import (
	"strings"
	"testing"
)

// checkMCPShadow skips rules that match by cidrs only, so an allow rule
// for the MCP server's network placed before the mcp rule parses without
// a word, and decides every request to the MCP host first: tools/call of a
// tool the mcp rule denies is allowed, unread. First match wins, and a
// cidr rule does match a named host whose address is inside it.
func TestAttackMCPShadowedByCIDRRule(t *testing.T) {
	p, err := Parse([]byte(`
default:
  rules:
    - name: lab-network
      cidrs: [203.0.113.0/24]
      action: allow
    - name: tools
      hosts: mcp.example.com
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: "*"
          action: allow
`), "test.yaml")
	if err != nil {
		if strings.Contains(err.Error(), "mcp rule") {
			return // the fix: the policy is refused
		}
		t.Fatal(err)
	}
	d := p.Decide(mcpIn(call("delete_file", `{"path":"/work/a"}`)))
	if d.Action != Deny {
		t.Errorf("tools/call delete_file to the mcp host: %s by rule %q (%s); the mcp rule denies it and the policy parsed without a warning", d.Action, d.Rule, d.Reason)
	}
}
