package approval

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// The attack on the card: a long first argument pushed the keys after it
// past the 2000-byte cut, so the approver never saw "path". Now the card
// (its summary, its body section that every channel shows, and the API's
// tools) names every key, cuts only long values with a marker and their
// length, and carries the sha256 of the full canonical arguments; secrets
// stay redacted.
func TestToolCallCardShowsEveryKey(t *testing.T) {
	e := newEnv(t, nil)
	long := strings.Repeat("A", 100000)
	args := `{"aaa_content":"` + long + `","path":"/etc/passwd","token":"SECRET-VALUE-123","zz_mode":"overwrite"}`
	h := hold("a", "POST", "/mcp")
	h.Body = []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":` + args + `}}`)
	h.BodySize = int64(len(h.Body))
	h.Tools = []ToolCall{{Name: "write_file", Args: args}}
	a := e.m.view(&h)
	// The digest shown is keyed and of the redacted arguments (round 2,
	// hole 7: a plain sha256 confirmed guesses of a redacted secret): the
	// same for the same call on every channel, another for other
	// arguments, never the plain sha256.
	sum := sha256.Sum256([]byte(args))
	digest := e.m.shownDigest(args)
	if len(a.Tools) != 1 || a.Tools[0].ArgsSHA256 != digest || digest == hex.EncodeToString(sum[:]) || len(digest) != 64 ||
		e.m.shownDigest(strings.Replace(args, "overwrite", "overwritE", 1)) == digest {
		t.Fatalf("tools %+v, want the keyed args digest %s", a.Tools, digest)
	}
	for name, s := range map[string]string{"summary": a.Summary, "tools.args": a.Tools[0].Args, "body": a.Body} {
		for _, want := range []string{`"aaa_content"`, `"path"`, `/etc/passwd`, `"token"`, `"zz_mode"`, `overwrite`, `cut: 100002 bytes`} {
			if !strings.Contains(s, want) {
				t.Errorf("%s lacks %q: %q", name, want, s)
			}
		}
		if strings.Contains(s, "SECRET-VALUE") {
			t.Errorf("%s shows the secret: %q", name, s)
		}
		if len(s) > 2500 {
			t.Errorf("%s is %d bytes", name, len(s))
		}
	}
	if !strings.Contains(a.Body, digest) {
		t.Errorf("body lacks the digest: %q", a.Body)
	}
	if len(a.Summary) > 300 {
		t.Errorf("summary of %d bytes", len(a.Summary))
	}
	// Many keys: every one is named, whatever the budget.
	var b strings.Builder
	b.WriteString(`{`)
	for i := range 60 {
		fmt.Fprintf(&b, `"k%02d":"%s",`, i, strings.Repeat("v", 200))
	}
	b.WriteString(`"last":1}`)
	h.Tools = []ToolCall{{Name: "write_file", Args: b.String()}}
	a = e.m.view(&h)
	for _, k := range []string{`"k00"`, `"k59"`, `"last": 1`} {
		if !strings.Contains(a.Body, k) || !strings.Contains(a.Tools[0].Args, strings.ReplaceAll(k, ": ", ":")) {
			t.Errorf("key %s missing: body %q", k, a.Body)
		}
	}
	// A long key name is cut with its length, too.
	h.Tools = []ToolCall{{Name: "write_file", Args: `{"` + strings.Repeat("k", 5000) + `":1,"path":"/etc/passwd"}`}}
	a = e.m.view(&h)
	if !strings.Contains(a.Body, "/etc/passwd") || !strings.Contains(a.Body, "name cut: 5000 bytes") {
		t.Errorf("long key: %q", a.Body)
	}
}
