package approval

import (
	"strings"
	"testing"
)

// An MCP tool call's card names the tool and shows its arguments, with
// secrets redacted; the digest changes with the tool and its arguments.
func TestToolCallCard(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"create_issue","arguments":{"repo":"acme/widgets","token":"SECRET-VALUE-123"}}}`)
	h.Tools = []ToolCall{{Name: "create_issue", Args: `{"repo":"acme/widgets","token":"SECRET-VALUE-123"}`}}
	a := e.m.view(&h)
	if !strings.HasPrefix(a.Summary, "MCP tool create_issue {") || !strings.Contains(a.Summary, `"repo":"acme/widgets"`) {
		t.Fatalf("summary %q", a.Summary)
	}
	if len(a.Tools) != 1 || a.Tools[0].Name != "create_issue" || !strings.Contains(a.Tools[0].Args, "acme/widgets") {
		t.Fatalf("tools %+v", a.Tools)
	}
	for _, s := range []string{a.Summary, a.Tools[0].Args, a.Body} {
		if strings.Contains(s, "SECRET-VALUE") {
			t.Fatalf("secret on the card: %q", s)
		}
	}
	d1 := requestDigest(&h)
	h2 := h
	h2.Tools = []ToolCall{{Name: "create_issue", Args: `{"repo":"acme/other","token":"SECRET-VALUE-123"}`}}
	if requestDigest(&h2) == d1 {
		t.Fatal("digest does not cover the tool's arguments")
	}
	h2.Tools = []ToolCall{{Name: "delete_issue", Args: h.Tools[0].Args}}
	if requestDigest(&h2) == d1 {
		t.Fatal("digest does not cover the tool name")
	}
}
