package approval

// Red team, round 2 (issue 16, MCP gate): what the approval card shows of
// a held tools/call.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// A held call's arguments reach the card as canonical JSON (mcp.ArgsJSON),
// where a secret value holding a quote or a backslash (both allowed in a
// secret, only control characters are refused) is written escaped: \" and
// \\. The redactor looks for the raw value, so it never matches, and the
// card (summary, body section, the API's tools) shows the secret, merely
// escaped. A secret pasted by the agent into an argument must be redacted
// whatever JSON escaping it went through.
func TestAttackToolCardSecretWithQuote(t *testing.T) {
	secret := `pa"ss\word-9f8e7d6c`
	e := newEnv(t, func(c *Config) { c.Redactor = strRedactor{secret: "[secret:db]"} })
	argsB, _ := json.Marshal(map[string]string{"dsn": "postgres://app:" + secret + "@db/prod"})
	args := string(argsB) // what policy.MCPCall.Args holds: {"dsn":"postgres://app:pa\"ss\\word-9f8e7d6c@db/prod"}
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"query","arguments":` + args + `}}`)
	h.BodySize = int64(len(h.Body))
	h.Tools = []ToolCall{{Name: "query", Args: args}}
	a := e.m.view(&h)
	escaped := strings.Trim(string(mustJSON(secret)), `"`) // pa\"ss\\word-9f8e7d6c
	for name, s := range map[string]string{"summary": a.Summary, "body": a.Body, "tools.args": a.Tools[0].Args} {
		if strings.Contains(s, escaped) || strings.Contains(s, secret) || strings.Contains(s, "word-9f8e7d6c") {
			t.Errorf("%s shows the secret (JSON-escaped): %q", name, s)
		}
	}
}

// The plain case holds: a secret without characters JSON escapes is
// redacted in every place the card shows arguments, also when the agent
// wrote it with \u escapes (the canonical arguments are unescaped). (Passes.)
func TestAttackToolCardSecretEscapedInBody(t *testing.T) {
	e := newEnv(t, nil)
	args := `{"token":"SECRET-VALUE-123"}` // canonical form of "\u0053ECRET-VALUE-123"
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"q","arguments":{"token":"\u0053ECRET-VALUE-123"}}}`)
	h.BodySize = int64(len(h.Body))
	h.Tools = []ToolCall{{Name: "q", Args: args}}
	a := e.m.view(&h)
	b, _ := json.Marshal(a)
	if strings.Contains(string(b), "ECRET-VALUE-123") {
		t.Errorf("the card's view shows the secret: %s", b)
	}
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

// A tool name is the agent's text: a name with U+2028/U+2029 (line and
// paragraph separators, which chat clients and browsers may break lines
// at; stripControls drops C0/C1 controls and bidi marks but not these)
// forges lines on the card, e.g. a fake "args" line under an innocent tool
// name, before the real arguments. The server runs no such tool (names are
// exact), so this spoofs the approver's reading only.
func TestAttackToolCardNameLineSeparators(t *testing.T) {
	e := newEnv(t, nil)
	name := "echo\u2028args: {\"text\": \"hello\"} (verified)\u2029\u2029"
	args := `{"path":"/etc/passwd"}`
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":` + args + `}}`)
	h.BodySize = int64(len(h.Body))
	h.Tools = []ToolCall{{Name: name, Args: args}}
	a := e.m.view(&h)
	for field, s := range map[string]string{"summary": a.Summary, "body": a.Body, "tools.name": a.Tools[0].Name} {
		if strings.ContainsAny(s, "\u2028\u2029") {
			t.Errorf("%s keeps a line separator from the tool name: %q", field, s)
		}
	}
}

// A batch held for approval is approved whole. With 20 calls, the card's
// summary (what chat notifications and the header show) must still say how
// many calls there are and name, or at least count, the last one: here the
// 20th call is the one that matters (write_file /etc/shadow) and the first
// 19 are decoys.
func TestAttackToolCardBatchSummaryCountsCalls(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "POST", "/mcp")
	var body []string
	for i := 0; i < 20; i++ {
		path := fmt.Sprintf("/work/notes-%02d.txt", i)
		if i == 19 {
			path = "/etc/shadow"
		}
		args := `{"content":"x","path":"` + path + `"}`
		h.Tools = append(h.Tools, ToolCall{Name: "write_file", Args: args})
		body = append(body, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"write_file","arguments":%s}}`, i, args))
	}
	h.Body = []byte("[" + strings.Join(body, ",") + "]")
	h.BodySize = int64(len(h.Body))
	a := e.m.view(&h)
	if !strings.Contains(a.Summary, "/etc/shadow") && !strings.Contains(a.Summary, "20") {
		t.Errorf("the summary neither shows the 20th call nor says there are 20: %q", a.Summary)
	}
	if !strings.Contains(a.Body, "/etc/shadow") {
		t.Errorf("the body section lacks the 20th call")
	}
	t.Logf("summary (%d bytes): %s", len(a.Summary), a.Summary)
	t.Logf("body: %d bytes", len(a.Body))
}

// The card redacts a secret in the arguments but shows "args sha256" of the
// arguments before redaction. Everything else in them is on the card, so
// anyone who sees the card (a chat channel) can test guesses of the secret
// offline: one sha256 per guess. A dictionary finds a weak one (secrets need
// only 8 bytes). The digest must not be a plain hash of text holding a
// redacted secret (hash the redacted arguments, or use a keyed MAC).
func TestAttackToolCardDigestConfirmsSecret(t *testing.T) {
	secret := "hunter22"
	e := newEnv(t, func(c *Config) { c.Redactor = strRedactor{secret: "[secret:db]"} })
	args := `{"password":"` + secret + `","user":"admin"}`
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"login","arguments":` + args + `}}`)
	h.BodySize = int64(len(h.Body))
	h.Tools = []ToolCall{{Name: "login", Args: args}}
	a := e.m.view(&h)
	if strings.Contains(a.Body, secret) {
		t.Fatalf("the card shows the secret: %q", a.Body)
	}
	for _, guess := range []string{"password", "letmein1", "hunter22"} {
		g := `{"password":"` + guess + `","user":"admin"}` // the card shows every other key and value
		if d := argsDigest(g); strings.Contains(a.Body, d) || a.Tools[0].ArgsSHA256 == d {
			t.Errorf("the card's args sha256 confirms the guess %q of the redacted secret", guess)
		}
	}
}
