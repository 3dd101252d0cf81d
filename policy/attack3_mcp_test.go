package policy

import (
	"net/netip"
	"strings"
	"testing"
)

// Red team, round 3 (issue 16): more bodies posted straight to the real SDK
// server (1.32.2, createMcpExpressApp + Streamable HTTP, the e2e server of
// e2e/attack_mcp_test.go) on 2026-12-03, with the tool each ran ("" for
// none): __proto__ in params, in arguments and at the message level
// (JSON.parse makes it an own member; zod neither copies it into the
// prototype nor reads names through it), a batch whose two calls share one
// id (the SDK runs both and answers one), ids -0 and 1e300 (the SDK runs
// -0 as id 0 and refuses 1e300, not a safe integer), and a NUL inside an
// argument. Whenever the SDK ran delete_file, clawd decided delete_file
// and denied it, or refused the body. (Passes: a regression test.)
func TestAttackMCPSDKReadingsRound3(t *testing.T) {
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
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a"},"__proto__":{"name":"delete_file"}}}`, "echo"},
		{`{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"__proto__":{"name":"delete_file"},"name":"echo","arguments":{"text":"q2"}}}`, "echo"},
		{`{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","__proto__":{"path":"/q1"}}}}`, "echo"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"__proto__":{"path":"/p1"}}}}`, ""},
		{`{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/q3","__proto__":null}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"echo","arguments":{"text":"q4"}},"__proto__":{"method":"x"}}`, ""},
		{" \r\n\t" + `[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"echo","arguments":{"text":"q5"}}},{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/q5"}}}]` + " \r\n", "delete_file"},
		{`{"jsonrpc":"2.0","id":1e300,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/q6"}}}`, ""},
		{`{"jsonrpc":"2.0","id":-0,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/q7"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/q8\u0000"}}}`, "delete_file"},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file\u0000","arguments":{"path":"/p2"}}}`, ""},
	} {
		d := p.Decide(mcpIn(tt.body))
		if d.MCP == nil {
			t.Fatalf("body %d: not decided as MCP", i+1)
		}
		if d.MCP.Invalid != "" {
			if tt.sdkRan == "echo" {
				t.Logf("body %d refused (%s) although the SDK ran only echo", i+1, d.MCP.Invalid)
			}
			continue
		}
		if tt.sdkRan == "delete_file" {
			found := false
			for _, c := range d.MCP.Calls {
				if c.Tool == "delete_file" && c.Action == Deny {
					found = true
				}
			}
			if !found || d.Action != Deny {
				t.Errorf("body %d %s: the SDK ran delete_file; clawd decided %s (%s)", i+1, tt.body, d.Action, d.Reason)
			}
		}
		if tt.sdkRan == "echo" {
			for _, c := range d.MCP.Calls {
				if c.Tool != "" && c.Tool != "echo" {
					t.Errorf("body %d: the SDK ran echo; clawd decided tool %q", i+1, c.Tool)
				}
			}
		}
	}
}

// Round 2's fix refuses a cidr rule placed before an mcp rule, and its
// error says "move the mcp rule first". Doing that leaves the hole open
// from the other side: the mcp rule matches by host name only, so a
// request to the MCP server by its address (Host: 203.0.113.9, or TLS with
// no SNI) skips it, and the cidr rule after it allows tools/call
// delete_file unread. The SDK's createMcpExpressApp({host: "0.0.0.0"})
// accepts any Host header, so the server runs the call. A fix should make
// this policy an error too (a cidr allow/approve rule anywhere in a set
// with an mcp rule may hold the MCP hosts' addresses), or decide requests
// to an address an mcp host resolved to as that host's.
func TestAttackMCPBypassedByAddressAfterMCPRule(t *testing.T) {
	for _, later := range []string{"cidrs: [203.0.113.0/24]", "ports: [443]"} {
		t.Run(later, func(t *testing.T) { mcpByAddress(t, later) })
	}
}

func mcpByAddress(t *testing.T, later string) {
	p, err := Parse([]byte(`
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
    - name: lab-network
      `+later+`
      action: allow
`), "test.yaml")
	if err != nil {
		if strings.Contains(err.Error(), "mcp") {
			return // the fix: the policy is refused
		}
		t.Fatal(err)
	}
	byName := p.Decide(mcpIn(call("delete_file", `{"path":"/work/a"}`)))
	if byName.Action != Deny {
		t.Fatalf("by name: %s (%s)", byName.Action, byName.Reason)
	}
	for _, in := range []Input{
		// Plain HTTP (or intercepted) by the server's address.
		func() Input {
			in := mcpIn(call("delete_file", `{"path":"/work/a"}`))
			in.Host = "203.0.113.9"
			return in
		}(),
		// TLS with no SNI: a raw connection to the address.
		{Container: agent, DstPort: 443, DstIP: netip.MustParseAddr("203.0.113.9")},
	} {
		d := p.Decide(in)
		if d.Action != Deny {
			t.Errorf("tools/call delete_file to the MCP server at its address (host %q, method %q): %s by rule %q (%s); the mcp rule denies it, and the policy parsed without an error", in.Host, in.Method, d.Action, d.Rule, d.Reason)
		}
	}
}
