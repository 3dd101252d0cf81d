package approval

// How a held MCP tools/call is shown (issue 16, "mcp"): the approver must
// see every argument key whatever the arguments' size, so long values (and
// long key names) are cut one by one with a marker and their length, never
// the whole text at a byte count that could hide the keys after a long
// first value; each call carries a keyed digest of its redacted canonical
// arguments (shownDigest).

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/clawd-dev/clawd/internal/progtext"
)

const (
	maxShownKey  = 64  // bytes of one key name on a card
	minShownVal  = 16  // bytes every value gets, however many keys
	maxShownKeys = 200 // keys named per call; more are counted, not named
)

// argKV is one top-level argument, redacted, as JSON text.
type argKV struct {
	key string // unescaped, redacted, escaped for people (toolText)
	val string // the value's JSON text, redacted, escaped for people
}

// toolText is how a tool name or argument string the agent chose is
// shown: redacted as decoded text (so a secret holding a quote or a
// backslash is found, not its JSON escape), then written by
// progtext.Escape, the one owner of escaping text for people: line and
// paragraph separators (U+2028, U+2029, U+0085), controls, bidi marks and
// zero-width or other invisible characters become \uXXXX escapes, never
// new lines or hidden text.
func (m *Manager) toolText(s string) string {
	red := m.red
	if red == nil {
		red = identity{}
	}
	return redactSecretShapes(red.RedactString(s))
}

// redactString redacts a decoded string; one that is itself a JSON object
// or array (a body or a config passed as text) is redacted value by value
// and written again, so a secret it holds escaped is found too.
func (m *Manager) redactString(s string, depth int) string {
	if t := strings.TrimSpace(s); depth < 4 && len(t) > 1 && (t[0] == '{' || t[0] == '[') {
		dec := json.NewDecoder(strings.NewReader(t))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) == nil && !dec.More() {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false)
			if enc.Encode(m.redactNested(v, depth+1)) == nil {
				return m.toolText(strings.TrimSuffix(buf.String(), "\n"))
			}
		}
	}
	return m.toolText(s)
}

func (m *Manager) redactNested(v any, depth int) any {
	switch x := v.(type) {
	case string:
		return m.redactString(x, depth)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = m.redactNested(e, depth)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[m.toolText(k)] = m.redactNested(e, depth)
		}
		return out
	}
	return m.redactValue(v)
}

// redactValue redacts every string (and object key) of a decoded JSON
// value, and numbers whose text the redactor would change (a numeric PIN).
func (m *Manager) redactValue(v any) any {
	switch x := v.(type) {
	case string:
		return m.redactString(x, 0)
	case json.Number:
		if r := m.toolText(string(x)); r != string(x) {
			return r
		}
		return x
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = m.redactValue(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[m.toolText(k)] = m.redactValue(e)
		}
		return out
	}
	return v
}

// encodeShown writes a redacted value as compact JSON (keys sorted, no
// HTML escapes, U+2028/U+2029 escaped by encoding/json) and escapes what is
// left invisible (progtext.Escape).
func encodeShown(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return "null"
	}
	return progtext.Escape(strings.TrimSuffix(buf.String(), "\n"))
}

// redactedArgs decodes a call's canonical arguments and redacts every
// decoded string in them (redactor first, then secret shapes), before any
// cut. ok is false when they are not a JSON object.
func (m *Manager) redactedArgs(args string) (any, bool) {
	dec := json.NewDecoder(strings.NewReader(args))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	v = m.redactValue(v)
	_, ok := v.(map[string]any)
	return v, ok
}

// toolArgs is a call's arguments as shown: every key with its value,
// redacted as decoded text, in canonical (sorted) order. ok is false when
// they are not a JSON object (then kvs holds the redacted text as one value
// with no key).
func (m *Manager) toolArgs(args string) (kvs []argKV, ok bool) {
	v, isObj := m.redactedArgs(args)
	if !isObj {
		text := ""
		if v != nil {
			text = encodeShown(v)
		} else {
			// Not JSON (the proxy always gives JSON): the text, redacted.
			text = progtext.Escape(m.toolText(args))
		}
		return []argKV{{val: text}}, false
	}
	obj := v.(map[string]any)
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kvs = append(kvs, argKV{key: progtext.Escape(k), val: encodeShown(obj[k])})
	}
	return kvs, true
}

// argsDigest is the plain sha256 of a text.
func argsDigest(args string) string {
	sum := sha256.Sum256([]byte(args))
	return hex.EncodeToString(sum[:])
}

// shownDigest is the digest a card shows for a call's arguments: an
// HMAC-SHA256, under a key this Manager draws at start and never shows, of
// the redacted canonical arguments. Its purpose is the approver's: two
// calls whose cut values look alike on the card have different digests, and
// every channel shows the same one for the same call. A plain sha256 of
// the arguments let anyone who sees a card confirm guesses of a redacted
// secret offline (everything else in them is on the card); this one can be
// checked by nobody without the key, and is of text without secrets. The
// binding of an approval to the exact bytes stays the body's digest.
func (m *Manager) shownDigest(args string) string {
	text := args
	if v, _ := m.redactedArgs(args); v != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(v)
		text = buf.String()
	} else {
		text = m.toolText(args)
	}
	mac := hmac.New(sha256.New, m.digestKey[:])
	mac.Write([]byte(text))
	return hex.EncodeToString(mac.Sum(nil))
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
		fmt.Fprintf(&b, " … and %d more keys not named here (the args digest covers them)", more)
	}
	if multiline {
		b.WriteString("\n")
	}
	b.WriteString("}")
	return b.String()
}

// maxBatchBody bounds the body section of a held batch, so that every call
// of it shows within the smallest channel section (Slack's 3000 bytes,
// with its code fences and note); the policy holds batches of at most
// policy.MaxHeldBatch calls.
const maxBatchBody = 2700

// toolsBody is the body section of a card for the held tool calls: what
// every channel shows of the request, in place of the JSON-RPC body cut at
// a byte count. One call gets every key on its own line; a batch (approved
// or denied whole) says how many calls it holds and gives each one line
// (number, tool, a short digest, its arguments cut to a share of
// maxBatchBody), so no call is past a channel's limit.
func (m *Manager) toolsBody(tools []ToolCall) string {
	var b strings.Builder
	if len(tools) == 1 {
		t := tools[0]
		kvs, ok := m.toolArgs(t.Args)
		fmt.Fprintf(&b, "tools/call %s\nargs digest: %s (%d bytes)\n", m.toolName(t.Name), m.shownDigest(t.Args), len(t.Args))
		b.WriteString(renderArgs(kvs, ok, maxShownArgs, true))
		return stripBidi(b.String())
	}
	fmt.Fprintf(&b, "batch of %d tools/call, approved or denied whole (args digest, first 12 digits, in brackets):", len(tools))
	per := max(48, (maxBatchBody-b.Len())/len(tools))
	for i, t := range tools {
		line := fmt.Sprintf("\n#%d %s [%s] ", i+1, m.toolName(t.Name), m.shownDigest(t.Args)[:12])
		kvs, ok := m.toolArgs(t.Args)
		b.WriteString(line)
		b.WriteString(renderArgs(kvs, ok, max(minShownVal, per-len(line)), false))
	}
	return stripBidi(b.String())
}

// toolName is a tool name as shown: redacted, escaped (toolText), cut.
func (m *Manager) toolName(name string) string {
	return truncate(progtext.Escape(m.toolText(name)), maxShownTool)
}

// toolsRedacted reports whether redaction hid something in the arguments
// of one of the calls.
func (m *Manager) toolsRedacted(tools []ToolCall) bool {
	for _, t := range tools {
		v, _ := m.redactedArgs(t.Args)
		if v == nil {
			if m.toolText(t.Args) != t.Args {
				return true
			}
			continue
		}
		dec := json.NewDecoder(strings.NewReader(t.Args))
		dec.UseNumber()
		var raw any
		dec.Decode(&raw)
		a, _ := json.Marshal(v)
		b, _ := json.Marshal(raw)
		if !bytes.Equal(a, b) {
			return true
		}
	}
	return false
}
