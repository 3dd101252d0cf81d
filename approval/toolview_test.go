package approval

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// What the agent chose (tool names, argument keys and values) is shown
// escaped: line and paragraph separators, zero-width and bidi characters
// become \uXXXX, never new lines or hidden text, in the summary, the body
// and the API's tools.
func TestToolCardEscapesInvisibleCharacters(t *testing.T) {
	e := newEnv(t, nil)
	for _, c := range []string{"\u2028", "\u2029", "\u0085", "\u200b", "\u2060", "\ufeff", "\u202e", "\u2066", "\n", "\x1b"} {
		name := "echo" + c + "args: ok"
		args, _ := json.Marshal(map[string]string{"pa" + c + "th": "/etc/" + c + "passwd"})
		h := hold("a", "POST", "/mcp")
		h.Tools = []ToolCall{{Name: name, Args: string(args)}}
		a := e.m.view(&h)
		for field, s := range map[string]string{"summary": a.Summary, "body": a.Body, "tools.name": a.Tools[0].Name, "tools.args": a.Tools[0].Args} {
			if strings.Contains(s, c) && !(c == "\n" && field == "body") { // the body has a key per line
				t.Errorf("%U: %s keeps it: %q", []rune(c)[0], field, s)
			}
		}
		if esc := fmt.Sprintf(`\u%04x`, []rune(c)[0]); c[0] >= 0x80 && (!strings.Contains(a.Tools[0].Name, esc) || !strings.Contains(a.Tools[0].Args, esc)) {
			t.Errorf("%U is not shown as %s: %q %q", []rune(c)[0], esc, a.Tools[0].Name, a.Tools[0].Args)
		}
	}
}

// A secret is redacted as decoded text wherever it sits in the
// arguments: in a key, nested in arrays and objects, with quotes and
// backslashes, and inside a string that itself holds JSON.
func TestToolCardRedactsDecodedSecrets(t *testing.T) {
	secret := `q"u\ote-5e4d3c2b`
	e := newEnv(t, func(c *Config) { c.Redactor = strRedactor{secret: "[secret:db]"} })
	inner, _ := json.Marshal(map[string]string{"password": secret})
	args, _ := json.Marshal(map[string]any{
		"list":    []any{map[string]string{"dsn": "x:" + secret + "@y"}},
		secret:    "as a key",
		"payload": string(inner),
	})
	h := hold("a", "POST", "/mcp")
	h.Tools = []ToolCall{{Name: "q", Args: string(args)}, {Name: "q2", Args: `{"a":1}`}}
	a := e.m.view(&h)
	b, _ := json.Marshal(a)
	for _, s := range []string{a.Summary, a.Body, string(b)} {
		if strings.Contains(s, "5e4d3c2b") {
			t.Errorf("shows the secret: %s", s)
		}
	}
	if !strings.Contains(a.Tools[0].Args, "[secret:db]") {
		t.Errorf("no redaction marker: %s", a.Tools[0].Args)
	}
}

// A batch of the most calls clawd holds (policy.MaxHeldBatch), with long
// names alike but for their end, and long values:
// the summary says how many calls there are, the body section names every
// call (its number and tool) within a Slack section.
func TestToolCardBatchShowsEveryCall(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "POST", "/mcp")
	for i := 0; i < policy.MaxHeldBatch; i++ {
		h.Tools = append(h.Tools, ToolCall{Name: fmt.Sprintf("%s_%03d", strings.Repeat("n", 120), i), Args: `{"content":"` + strings.Repeat("x", 500) + `","path":"/work/f"}`})
	}
	h.Tools[9].Args = `{"path":"/etc/shadow"}`
	a := e.m.view(&h)
	if !strings.HasPrefix(a.Summary, "MCP batch of 10 tools/call on api.github.com: ") {
		t.Errorf("summary: %q", a.Summary)
	}
	if len(a.Body) > 3000 {
		t.Errorf("body section is %d bytes, past Slack's 3000", len(a.Body))
	}
	for i := 0; i < policy.MaxHeldBatch; i++ {
		if !strings.Contains(a.Body, fmt.Sprintf("\n#%d %s_%03d [", i+1, strings.Repeat("n", 120), i)) {
			t.Errorf("body lacks call %d: %q", i+1, a.Body)
			break
		}
	}
	if !strings.Contains(a.Body, "batch of 10 tools/call") || !strings.Contains(a.Body, `"/etc/shadow"`) {
		t.Errorf("body: %q", a.Body)
	}
}

// The body's sha256 is an oracle like the args digest was: a card that hid
// a secret in the body does not show it.
func TestCardBodyDigestHiddenWithSecret(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Redactor = strRedactor{"hunter22": "[secret:db]"} })
	h := hold("a", "POST", "/login")
	h.BodySHA256 = "aaaa"
	if a := e.m.view(&h); a.BodySHA256 != "aaaa" {
		t.Errorf("no secret: body_sha256 %q", a.BodySHA256)
	}
	h.Body = []byte(`{"password":"hunter22"}`)
	if a := e.m.view(&h); a.BodySHA256 != "" || strings.Contains(a.Body, "hunter22") {
		t.Errorf("a body with a secret: body_sha256 %q, body %q", a.BodySHA256, a.Body)
	}
}
