package approval

// How a held MCP tools/call is shown (issue 16, "mcp"): the approver must
// see every argument key whatever the arguments' size, so long values (and
// long key names) are cut one by one with a marker and their length, never
// the whole text at a byte count that could hide the keys after a long
// first value; each call carries the sha256 of its full canonical
// arguments (before redaction, like the body's digest).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

const (
	maxShownKey  = 64  // bytes of one key name on a card
	minShownVal  = 16  // bytes every value gets, however many keys
	maxShownKeys = 200 // keys named per call; more are counted, not named
)

// argKV is one top-level argument, redacted, as JSON text.
type argKV struct {
	key string // unescaped, redacted, without control characters
	val string // the value's JSON text, redacted
}

// toolArgs reads a call's canonical arguments after redacting them whole
// (so no cut can split a secret). ok is false when the redacted text is not
// a JSON object (then kvs holds the text as one value with no key).
func (m *Manager) toolArgs(args string) (kvs []argKV, ok bool) {
	red := m.red
	if red == nil {
		red = identity{}
	}
	b := red.Redact([]byte(args))
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	fallback := []argKV{{val: stripControls(redactSecretShapes(string(b)))}}
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fallback, false
	}
	for dec.More() {
		kt, err := dec.Token()
		k, isStr := kt.(string)
		if err != nil || !isStr {
			return fallback, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fallback, false
		}
		var c bytes.Buffer
		if json.Compact(&c, v) != nil {
			return fallback, false
		}
		kvs = append(kvs, argKV{key: stripControls(redactSecretShapes(k)), val: stripControls(redactSecretShapes(c.String()))})
	}
	return kvs, true
}

func argsDigest(args string) string {
	sum := sha256.Sum256([]byte(args))
	return hex.EncodeToString(sum[:])
}

// cutText cuts s to about n bytes, saying what was cut and how long it was.
func cutText(s string, n int, what string) string {
	if len(s) <= n {
		return s
	}
	return truncate(s, n) + fmt.Sprintf(" [%s cut: %d bytes]", what, len(s))
}

// renderArgs writes kvs in about budget bytes: every key (up to
// maxShownKeys) named, each value cut to its share. multiline puts one key
// per line (card bodies); else one line (summaries, the API).
func renderArgs(kvs []argKV, ok bool, budget int, multiline bool) string {
	if !ok {
		return cutText(kvs[0].val, budget, "arguments")
	}
	shown := kvs
	if len(shown) > maxShownKeys {
		shown = shown[:maxShownKeys]
	}
	keys := make([]string, len(shown))
	fixed := 2
	for i, kv := range shown {
		kb, _ := json.Marshal(cutText(kv.key, maxShownKey, "name"))
		keys[i] = string(kb)
		fixed += len(keys[i]) + 3
		if multiline {
			fixed += 3
		}
	}
	// Water-filling: short values take what they need, long ones share
	// the rest equally.
	alloc := make([]int, len(shown))
	order := make([]int, len(shown))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(shown[order[a]].val) < len(shown[order[b]].val) })
	left := budget - fixed
	for n, i := range order {
		share := left / max(1, len(order)-n)
		v := len(shown[i].val)
		if v <= share {
			alloc[i] = v
			left -= v
			continue
		}
		// The cut text ends with "…" and the marker, within the share.
		marker := len(cutText(" ", 0, "value")) + len(fmt.Sprint(v)) - 1
		alloc[i] = max(minShownVal, share-marker)
		left -= alloc[i] + marker
	}
	var b strings.Builder
	b.WriteString("{")
	for i, kv := range shown {
		if i > 0 {
			b.WriteString(",")
		}
		if multiline {
			b.WriteString("\n  ")
		}
		b.WriteString(keys[i])
		b.WriteString(":")
		if multiline {
			b.WriteString(" ")
		}
		b.WriteString(cutText(kv.val, alloc[i], "value"))
	}
	if more := len(kvs) - len(shown); more > 0 {
		if multiline {
			b.WriteString("\n ")
		}
		fmt.Fprintf(&b, " … and %d more keys not named here (the args sha256 covers them)", more)
	}
	if multiline {
		b.WriteString("\n")
	}
	b.WriteString("}")
	return b.String()
}

// toolsBody is the body section of a card for the held tool calls: what
// every channel shows of the request, in place of the JSON-RPC body cut at
// a byte count.
func (m *Manager) toolsBody(tools []ToolCall) string {
	var b strings.Builder
	per := max(300, maxShownArgs/max(1, len(tools)))
	for i, t := range tools {
		if i > 0 {
			b.WriteString("\n\n")
		}
		kvs, ok := m.toolArgs(t.Args)
		fmt.Fprintf(&b, "tools/call %s\nargs sha256: %s (%d bytes)\n", truncate(m.sanitize(t.Name), maxShownTool), argsDigest(t.Args), len(t.Args))
		b.WriteString(renderArgs(kvs, ok, per, true))
	}
	return stripBidi(b.String())
}
