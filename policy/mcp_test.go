package policy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

const mcpYAML = `
default:
  rules:
    - name: tools
      hosts: mcp.example.com
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: write_file
          action: deny
          args:
            path: {matches: "/etc/.*"}
        - name: write_file
          action: approve
        - name: read_file
          action: allow
          args:
            path: {matches: "/work/.*"}
        - name: search
          action: allow
          args:
            limit: {min: 1, max: 50}
            sort: {in: [asc, desc]}
        - name: exact
          action: allow
          args:
            n: {equals: 7}
            flag: {equals: true}
            s: {equals: "7"}
        - name: "get_*"
          action: allow
`

func mcpIn(body string) Input {
	return Input{Container: agent, Host: "mcp.example.com", DstPort: 443, DstIP: netip.MustParseAddr("203.0.113.9"),
		Method: "POST", Path: "/mcp", Body: []byte(body), BodyKnown: true}
}

func call(tool, args string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
}

func TestMCPDecide(t *testing.T) {
	p := mustParse(t, mcpYAML)
	tests := []struct {
		name, body string
		want       Action
		reason     string // substring
	}{
		{"initialize by rule action", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, Allow, "allowed by rule"},
		{"notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, Allow, ""},
		{"response to the server", `{"jsonrpc":"2.0","id":"s1","result":{}}`, Allow, ""},
		{"unlisted tool", call("rm_rf", `{}`), Deny, `tool "rm_rf" (with these arguments) is not allowed`},
		{"denied tool", call("delete_file", `{"path":"/work/a"}`), Deny, `tool "delete_file" denied by rule "tools"`},
		{"write outside etc approve", call("write_file", `{"path":"/work/a"}`), Approve, "requires human approval"},
		{"write etc denied", call("write_file", `{"path":"/etc/passwd"}`), Deny, "denied"},
		{"write etc path as array is unknown: deny entry holds", call("write_file", `{"path":["/etc/passwd"]}`), Deny, ""},
		{"write missing path: deny entry holds", call("write_file", `{}`), Deny, ""},
		{"read in work", call("read_file", `{"path":"/work/x"}`), Allow, ""},
		{"read anchored", call("read_file", `{"path":"/etc/x#/work/x"}`), Deny, ""},
		{"read missing path", call("read_file", `{}`), Deny, ""},
		{"read arguments absent", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file"}}`, Deny, ""},
		{"read path number", call("read_file", `{"path":5}`), Deny, ""},
		{"search in bounds", call("search", `{"limit":50,"sort":"asc"}`), Allow, ""},
		{"search over max", call("search", `{"limit":51,"sort":"asc"}`), Deny, ""},
		{"search fraction over max", call("search", `{"limit":50.0000000000000000001,"sort":"asc"}`), Deny, ""},
		{"search exponent", call("search", `{"limit":5e1,"sort":"asc"}`), Allow, ""},
		{"search huge exponent", call("search", `{"limit":1e999,"sort":"asc"}`), Deny, ""},
		{"search limit string", call("search", `{"limit":"5","sort":"asc"}`), Deny, ""},
		{"search bad sort", call("search", `{"limit":5,"sort":"ASC"}`), Deny, ""},
		{"exact", call("exact", `{"n":7.0,"flag":true,"s":"7"}`), Allow, ""},
		{"exact wrong types", call("exact", `{"n":"7","flag":true,"s":"7"}`), Deny, ""},
		{"glob", call("get_weather", `{}`), Allow, ""},
		{"tool name escaped", call(`get\u005fweather`, `{}`), Allow, ""},
		{"tool name escaped to denied", call(`delete\u005ffile`, `{}`), Deny, ""},
		{"tool name case", call("Delete_File", `{}`), Deny, "not allowed"},
		{"duplicate name key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","name":"delete_file"}}`, Deny, "appears twice"},
		{"duplicate escaped key", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","n\u0061me":"delete_file"}}`, Deny, "appears twice"},
		{"duplicate method", `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"delete_file"}}`, Deny, "appears twice"},
		{"method case", `{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"delete_file"}}`, Deny, "another case"},
		{"member case", `{"jsonrpc":"2.0","id":1,"Method":"tools/call","method":"ping"}`, Deny, "unknown member"},
		{"trailing garbage", call("get_x", `{}`) + `x`, Deny, "not JSON"},
		{"two values", call("get_x", `{}`) + call("delete_file", `{}`), Deny, "after the JSON value"},
		{"not json", `hello`, Deny, "not JSON"},
		{"empty post", ``, Deny, "not JSON"},
		{"lone surrogate", call(`get_\ud800`, `{}`), Deny, "U+FFFD"},
		{"invalid utf8", call("get_\xff", `{}`), Deny, "UTF-8"},
		{"name not string", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["get_x"]}}`, Deny, "params.name"},
		{"arguments not object", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","arguments":[1]}}`, Deny, "arguments"},
		{"arguments null", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","arguments":null}}`, Deny, "arguments"},
		{"params missing", `{"jsonrpc":"2.0","id":1,"method":"tools/call"}`, Deny, "params"},
		{"id object", `{"jsonrpc":"2.0","id":{},"method":"ping"}`, Deny, "id"},
		{"no jsonrpc", `{"id":1,"method":"ping"}`, Deny, "jsonrpc"},
		{"deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), Deny, "nested"},
		{"long number", call("search", `{"limit":`+strings.Repeat("1", 200)+`,"sort":"asc"}`), Deny, "number longer"},
		{"batch all allowed", `[` + call("get_a", `{}`) + `,{"jsonrpc":"2.0","method":"notifications/x"}]`, Allow, ""},
		{"batch with a denied call", `[` + call("get_a", `{}`) + `,` + call("delete_file", `{}`) + `]`, Deny, "batch message 2"},
		{"batch with approve", `[` + call("get_a", `{}`) + `,` + call("write_file", `{"path":"/w"}`) + `]`, Approve, ""},
		{"empty batch", `[]`, Deny, "empty batch"},
		{"nested batch", `[[` + call("get_a", `{}`) + `]]`, Deny, "must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(mcpIn(tt.body))
			if d.Action != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("Decide = %s (%s), want %s (%q)", d.Action, d.Reason, tt.want, tt.reason)
			}
			if d.MCP == nil {
				t.Fatal("no MCP decision")
			}
		})
	}
}

func TestMCPNeedsBodyAndGet(t *testing.T) {
	p := mustParse(t, mcpYAML)
	in := mcpIn("")
	in.BodyKnown = false
	if d := p.Decide(in); !d.NeedBody {
		t.Fatalf("POST without body: %+v, want NeedBody", d)
	}
	in = mcpIn("")
	in.Method = "GET"
	if d := p.Decide(in); d.Action != Allow || d.MCP == nil || d.MCP.Invalid != "" {
		t.Fatalf("GET stream: %+v", d)
	}
	in.Method = "GET"
	in.Body = []byte("x")
	if d := p.Decide(in); d.Action != Deny {
		t.Fatalf("GET with a non-JSON-RPC body: %+v", d)
	}
	// Tunnels would carry calls clawd cannot read.
	in = mcpIn("")
	in.Method, in.Header = "GET", http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}
	if d := p.Decide(in); d.Action != Deny || !strings.Contains(d.Reason, "upgrades") {
		t.Fatalf("WebSocket upgrade: %+v", d)
	}
	in = mcpIn("")
	in.Method = "CONNECT"
	if d := p.Decide(in); d.Action != Deny {
		t.Fatalf("CONNECT: %+v", d)
	}
	// Raw TCP / TLS passthrough to the host never gets the rule's allow.
	if d := p.Decide(Input{Container: agent, Host: "mcp.example.com", DstPort: 443}); d.Action != Deny || d.Rule != "default" {
		t.Fatalf("connection-level: %+v", d)
	}
	if !p.Intercepts(agent, "mcp.example.com") {
		t.Fatal("mcp: true must imply intercept")
	}
}

func TestMCPVisible(t *testing.T) {
	p := mustParse(t, mcpYAML)
	in := mcpIn("")
	in.Method = "GET"
	m := p.Decide(in).MCP
	for name, want := range map[string]bool{
		"delete_file": false, "write_file": true, "read_file": true, "get_x": true, "rm": false, "search": true,
	} {
		if got := m.Visible(name); got != want {
			t.Errorf("Visible(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestMCPCalls(t *testing.T) {
	p := mustParse(t, mcpYAML)
	d := p.Decide(mcpIn(`[` + call("get_a", `{"b":1,"a":"x"}`) + `,{"jsonrpc":"2.0","id":"z","method":"ping"},{"jsonrpc":"2.0","method":"notifications/n"}]`))
	m := d.MCP
	if !m.Batch || len(m.Calls) != 3 {
		t.Fatalf("%+v", m)
	}
	if c := m.Calls[0]; c.Tool != "get_a" || c.Args != `{"a":"x","b":1}` || string(c.ID) != "1" || c.Action != Allow {
		t.Errorf("call 0: %+v", c)
	}
	if c := m.Calls[1]; c.Tool != "" || c.Method != "ping" || string(c.ID) != `"z"` {
		t.Errorf("call 1: %+v", c)
	}
	if c := m.Calls[2]; c.ID != nil || c.Method != "notifications/n" {
		t.Errorf("call 2: %+v", c)
	}
}

func TestMCPParseErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"tools without mcp", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:6: default: rule "a": tools only applies to rules with mcp: true`},
		{"mcp without hosts", "default:\n  rules:\n    - name: a\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:4: default: rule "a": mcp: true needs hosts`},
		{"mcp without tools", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n", `x.yaml:5: default: rule "a": mcp: true needs tools`},
		{"mcp intercept false", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      intercept: false\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:6: default: rule "a": mcp: true reads request bodies`},
		{"tool unknown key", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          arg: {}\n", `x.yaml:10: default: rule "a": tools entry: unknown key "arg" (did you mean "args"?)`},
		{"tool no action", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n", `x.yaml:8: default: rule "a": tool "x": action is required`},
		{"bad regexp", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {matches: \"(\"}\n", `x.yaml:11: default: rule "a": tool "x": args: p: matches: error parsing regexp`},
		{"min string", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {min: \"3\"}\n", `x.yaml:11: default: rule "a": tool "x": args: p: min must be a number`},
		{"min over max", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {min: 5, max: 1}\n", `x.yaml:11: default: rule "a": tool "x": args: p: min is larger than max`},
		{"arg unknown matcher", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {regex: x}\n", `x.yaml:11: default: rule "a": tool "x": args: p: unknown key "regex"`},
		{"empty in", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {in: []}\n", `x.yaml:11: default: rule "a": tool "x": args: p: in must be a non-empty list`},
		{"readonly", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      readonly: true\n      tools: [{name: x, action: allow}]\n", `x.yaml:5: default: rule "a": mcp rules decide by tool`},
		{"approval_timeout ok with approve tool", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      approval_timeout: 5m\n      tools: [{name: x, action: approve}]\n", ""},
		{"allow rule before mcp rule", "default:\n  rules:\n    - name: early\n      hosts: \"*.example.com\"\n      action: allow\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:3: default: rule "early" comes before mcp rule "a" (line 6)`},
		{"any-host rule before mcp rule", "default:\n  rules:\n    - name: early\n      ports: 443\n      action: approve\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:3: default: rule "early" comes before mcp rule "a"`},
		{"deny and other hosts before mcp rule are fine", "default:\n  rules:\n    - name: d\n      hosts: a.example.com\n      action: deny\n    - name: o\n      hosts: b.example.com\n      action: allow\n    - name: c\n      cidrs: 10.0.0.0/8\n      action: deny\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n    - name: after\n      hosts: a.example.com\n      action: allow\n", ""},
		{"cidr rule after an mcp rule on other ports is fine", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      ports: 443\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n    - name: db\n      cidrs: 10.0.0.0/8\n      ports: 5432\n      action: allow\n", ""},
		// After the mcp rule too (round 3): the MCP server called by its
		// address names no host; a cidr or host-less allow on its ports
		// would carry the calls unread.
		{"cidr rule after mcp rule", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n    - name: late-net\n      cidrs: 10.0.0.0/8\n      action: allow\n", `x.yaml:8: default: rule "late-net" matches by cidrs (10.0.0.0/8) on the ports of mcp rule "a" (line 3)`},
		{"port rule after mcp rule", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      ports: 443\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n    - name: any443\n      ports: 443\n      action: approve\n", `x.yaml:9: default: rule "any443" matches without hosts on the ports of mcp rule "a"`},
		// A cidr rule matches a request to a named host whose address
		// is inside it (hosts and cidrs are either/or), and clawd cannot
		// know the mcp hosts' addresses: refused, with or without hosts.
		{"cidr rule before mcp rule", "default:\n  rules:\n    - name: c\n      cidrs: 10.0.0.0/8\n      action: allow\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:3: default: rule "c" comes before mcp rule "a" (line 6) and matches by cidrs (10.0.0.0/8)`},
		{"cidr and other hosts before mcp rule", "default:\n  rules:\n    - name: c\n      hosts: b.example.com\n      cidrs: 203.0.113.0/24\n      action: approve\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:3: default: rule "c" comes before mcp rule "a" (line 7) and matches by cidrs`},
		{"readonly cidr rule before mcp rule", "default:\n  rules:\n    - name: c\n      cidrs: 203.0.113.9/32\n      action: deny\n      readonly: true\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools: [{name: x, action: allow}]\n", `x.yaml:3: default: rule "c" comes before mcp rule "a"`},
		{"approval_timeout without approve", "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      approval_timeout: 5m\n      tools: [{name: x, action: allow}]\n", `x.yaml:7: default: rule "a": approval_timeout only applies`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "x.yaml")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// The attack on number semantics: a server reading JSON with JSON.parse
// acts on float64s, so a deny entry's bound or value must catch every
// text that becomes the denied float64, and a number clawd would read
// differently from the server is refused, never judged.
func TestMCPNumberSemantics(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: pay
      hosts: mcp.example.com
      mcp: true
      action: allow
      tools:
        - name: pay
          action: deny
          args:
            amount: {min: 100}
        - name: rate
          action: deny
          args:
            rate: {equals: 0.3}
        - name: account
          action: deny
          args:
            account: {in: [9007199254740992, 0, 1]}
        - name: pay
          action: allow
        - name: rate
          action: allow
        - name: account
          action: allow
        - name: fetch
          action: allow
          args:
            limit: {max: 100}
            path: {equals: /work/a}
`)
	tests := []struct {
		name, args string
		want       Action
		reason     string
	}{
		{"small amount", `{"amount":99}`, Allow, ""},
		{"amount at min", `{"amount":100}`, Deny, "denied"},
		{"amount as 1e2", `{"amount":1e2}`, Deny, "denied"},
		{"amount as 100.0", `{"amount":100.0}`, Deny, "denied"},
		{"amount that JSON.parse rounds to 100", `{"amount":99.99999999999999999}`, Deny, "would read 100"},
		{"amount Infinity", `{"amount":1e400}`, Deny, "Infinity"},
		{"amount -Infinity", `{"amount":-1e400}`, Deny, "Infinity"},
		{"amount huge exponent", `{"amount":1e999999999}`, Deny, "Infinity"},
		{"amount as string", `{"amount":"1000"}`, Deny, "denied"},
		{"rate 0.3", `{"rate":0.3}`, Deny, "denied"},
		{"rate that JSON.parse reads as 0.3", `{"rate":0.30000000000000001}`, Deny, "would read 0.3"},
		{"rate 0.30000000000000004 is another float64", `{"rate":0.30000000000000004}`, Allow, ""},
		{"account 2^53+1 reads as 2^53", `{"account":9007199254740993}`, Deny, "would read 9007199254740992"},
		{"account -0 is 0", `{"account":-0}`, Deny, "denied"},
		{"account 1.0 is 1", `{"account":1.0}`, Deny, "denied"},
		{"account 1e0 is 1", `{"account":1e0}`, Deny, "denied"},
		{"account string 1: the server may convert it", `{"account":"1"}`, Deny, "denied"},
		{"account 2", `{"account":2}`, Allow, ""},
		{"fetch at max", `{"limit":100,"path":"/work/a"}`, Allow, ""},
		{"fetch just over max that rounds to max", `{"limit":100.0000000000000001,"path":"/work/a"}`, Deny, "would read 100"},
		{"fetch over max", `{"limit":100.00000000000001,"path":"/work/a"}`, Deny, "not allowed"},
		{"fetch limit as string", `{"limit":"1","path":"/work/a"}`, Deny, "not allowed"},
		{"escaped key is the same key", `{"limit":1,"\u0070ath":"/work/a"}`, Allow, ""},
		{"escaped duplicate key", `{"limit":1,"path":"/work/a","\u0070ath":"/etc/passwd"}`, Deny, "appears twice"},
		{"escaped duplicate key in deny", `{"amount":1,"\u0061mount":1000}`, Deny, "appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tool := "pay"
			switch {
			case strings.Contains(tt.args, "limit"):
				tool = "fetch"
			case strings.Contains(tt.args, "rate"):
				tool = "rate"
			case strings.Contains(tt.args, "account"):
				tool = "account"
			}
			d := p.Decide(mcpIn(call(tool, tt.args)))
			if d.Action != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("Decide = %s (%s), want %s (%q)", d.Action, d.Reason, tt.want, tt.reason)
			}
		})
	}
}

// A policy number must be a float64 exactly, or the bound the author
// wrote is not the one the server's comparison enforces.
func TestMCPPolicyNumbers(t *testing.T) {
	y := func(v string) string {
		return "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {" + v + "}\n"
	}
	for v, want := range map[string]string{
		"max: 9007199254740993":         `x.yaml:11: default: rule "a": tool "x": args: p: max: number 9007199254740993 is not exactly a float64`,
		"equals: 0.30000000000000001":   "would read 0.3",
		"min: !!float 1e400":            "Infinity",
		"max: .inf":                     "not a number clawd can compare exactly",
		"max: 0x10":                     "not a number clawd can compare exactly",
		"in: [1, !!float -1e999999999]": "Infinity",
	} {
		_, err := Parse([]byte(y(v)), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", v, err, want)
		}
	}
	for _, v := range []string{"max: 100", "max: 1.5", "min: -0", "equals: 1e2", "in: [0.1, 0.3, 9007199254740992]", "max: 1_000"} {
		if _, err := Parse([]byte(y(v)), "x.yaml"); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// The attack on matches: a value holding a line break must not satisfy a
// pattern written for one line (nor dodge a deny pattern by a trailing
// newline the server may trim). matches is a full match of the whole
// string; a value with a line break satisfies only a (?s) pattern, and is
// otherwise unknown: an allow entry fails, a deny entry holds.
func TestMCPMatchesLineBreaks(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: files
      hosts: mcp.example.com
      mcp: true
      action: allow
      tools:
        - name: write
          action: deny
          args:
            path: {matches: "/etc/.*"}
        - name: write
          action: allow
        - name: tmp
          action: allow
          args:
            path: {matches: "^/tmp/.*$"}
        - name: multi
          action: allow
          args:
            path: {matches: "(?m)^/tmp/.*$"}
        - name: class
          action: allow
          args:
            path: {matches: "/tmp/[^/]*"}
        - name: notes
          action: allow
          args:
            text: {matches: "(?s)note:.*"}
        - name: alt
          action: allow
          args:
            path: {matches: "/tmp/x|/tmp/y"}
`)
	tests := []struct {
		tool, args string
		want       Action
	}{
		{"tmp", `{"path":"/tmp/x"}`, Allow},
		{"tmp", `{"path":"/tmp/x\n/etc/passwd"}`, Deny},
		{"tmp", `{"path":"/tmp/x\r\n/etc/passwd"}`, Deny},
		{"tmp", `{"path":"/tmp/x\r/etc/passwd"}`, Deny},
		{"tmp", `{"path":"/tmp/x\u2028/etc/passwd"}`, Deny},
		{"tmp", `{"path":"/tmp/x\u0085"}`, Deny},
		{"tmp", `{"path":"/tmp/x\n"}`, Deny},
		{"tmp", `{"path":"\n/tmp/x"}`, Deny},
		{"multi", `{"path":"/tmp/x\n/etc/passwd"}`, Deny},
		{"multi", `{"path":"/tmp/x"}`, Allow},
		{"class", `{"path":"/tmp/x\n"}`, Deny},
		{"class", `{"path":"/tmp/x"}`, Allow},
		{"notes", `{"text":"note: a\nb"}`, Allow},
		{"alt", `{"path":"/tmp/y"}`, Allow},
		{"alt", `{"path":"/tmp/xx"}`, Deny}, // full match: the alternation is inside the anchors
		{"alt", `{"path":"a/tmp/y"}`, Deny},
		{"write", `{"path":"/work/a"}`, Allow},
		{"write", `{"path":"/etc/passwd"}`, Deny},
		{"write", `{"path":"/etc/passwd\n"}`, Deny}, // the deny pattern cannot be dodged by a newline
		{"write", `{"path":"/etc\n/passwd"}`, Deny},
	}
	for _, tt := range tests {
		d := p.Decide(mcpIn(call(tt.tool, tt.args)))
		if d.Action != tt.want {
			t.Errorf("%s %s = %s (%s), want %s", tt.tool, tt.args, d.Action, d.Reason, tt.want)
		}
	}
	// A pattern cannot close the anchoring group.
	for _, re := range []string{`a)|(b`, `\Qa)|(.*`, `a)|(?:.*`} {
		y := "default:\n  rules:\n    - name: a\n      hosts: a.example.com\n      mcp: true\n      action: allow\n      tools:\n        - name: x\n          action: allow\n          args:\n            p: {matches: '" + re + "'}\n"
		if _, err := Parse([]byte(y), "x.yaml"); err == nil {
			t.Errorf("pattern %q accepted", re)
		}
	}
}

// A batch held for approval is approved whole on one card, which must show
// every call: up to MaxHeldBatch tools/call it is held, past that it is
// denied, each held call saying why; an allowed batch of any size is not
// affected.
func TestMCPHeldBatchLimit(t *testing.T) {
	p := mustParse(t, mcpYAML)
	batch := func(n int, tool, args string) string {
		var parts []string
		for i := 0; i < n; i++ {
			parts = append(parts, call(tool, args))
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	if d := p.Decide(mcpIn(batch(MaxHeldBatch, "write_file", `{"path":"/work/a"}`))); d.Action != Approve {
		t.Errorf("batch of %d held calls: %s (%s)", MaxHeldBatch, d.Action, d.Reason)
	}
	d := p.Decide(mcpIn(batch(MaxHeldBatch+1, "write_file", `{"path":"/work/a"}`)))
	if d.Action != Deny || !strings.Contains(d.Reason, "a batch of 11 tools/call needs approval") || !strings.Contains(d.Reason, "send the calls separately") {
		t.Errorf("batch of %d held calls: %s (%s)", MaxHeldBatch+1, d.Action, d.Reason)
	}
	for _, c := range d.MCP.Calls {
		if c.Action != Deny || !strings.Contains(c.Reason, "at most 10 calls") {
			t.Errorf("call: %s %s", c.Action, c.Reason)
		}
	}
	if d := p.Decide(mcpIn(batch(50, "get_a", `{}`))); d.Action != Allow {
		t.Errorf("allowed batch of 50: %s (%s)", d.Action, d.Reason)
	}
}
