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

// Bodies an MCP server on the official TypeScript SDK (1.32, Streamable
// HTTP) was sent directly, with the tool it ran ("" for none), recorded
// against the real server: method spellings (case, spaces, \/ and \u
// escapes), jsonrpc missing or 1.0, ids 1.0, 1e0, null, params as an
// array, arguments as a JSON string, _meta and task beside the name,
// batches (of a notification, nested, mixed), tool names with a trailing
// space, a zero-width space, another case or a fullwidth letter, and
// members in another case. Whenever the SDK ran a tool, clawd decided that
// same tool (and denied it, as the policy says) or refused the body.
// (Passes: a regression test.)
func TestAttackMCPSDKReadings(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: tools
      hosts: mcp.example.com
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: "*"
          action: allow
`)
	for i, tt := range []struct{ body, sdkRan string }{
		{`{"jsonrpc":"2.0","id":1,"method":"Tools/call","params":{"name":"delete_file","arguments":{"path":"/b1"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":" tools/call","params":{"name":"delete_file","arguments":{"path":"/b2"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{"name":"delete_file","arguments":{"path":"/b3"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"delete_file","arguments":{"path":"/b4"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"delete_file","arguments":{"path":"/b5"}}}`, "delete_file"},
		{`{"id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b6"}}}`, ""},
		{`{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b7"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b8"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1e0,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b9"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b10"}}}`, ""},
		{`{"jsonrpc":"2.0","id":"x","method":"tools/call","params":["delete_file",{"path":"/b11"}]}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":"{\"path\":\"/b12\"}"}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b13"},"_meta":{"name":"echo","progressToken":1}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b14"},"task":{"ttl":1000}}}`, ""},
		{`[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b15"}}}]`, ""},
		{`[[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b16"}}}]]`, ""},
		{`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b17"}}}]`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file ","arguments":{"path":"/b18"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u200b_file","arguments":{"path":"/b19"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"DELETE_FILE","arguments":{"path":"/b20"}}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b21"},"Name":"echo"}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b22","Path":"/x"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b23"}},"Method":"ping"}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/b24"}},"result":{}}`, ""},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ｄelete_file","arguments":{"path":"/b25"}}}`, ""},
	} {
		d := p.Decide(mcpIn(tt.body))
		if tt.sdkRan == "" || d.Action == Deny && d.MCP != nil && d.MCP.Invalid != "" {
			continue
		}
		found := false
		for _, c := range d.MCP.Calls {
			if c.Tool == tt.sdkRan && c.Action == Deny {
				found = true
			}
		}
		if !found || d.Action != Deny {
			t.Errorf("body %d %s: the SDK ran %s; clawd decided %s (%s)", i+1, tt.body, tt.sdkRan, d.Action, d.Reason)
		}
	}
}
