package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of what FilterTools reads of a server's answer: tool results may
// be larger and deeper than requests, but not without bound.
const (
	MaxResponseDepth  = 256
	MaxResponseValues = 500000
)

// utf8BOM is a byte order mark: fetch's response.json() and the event
// stream parsers skip one, so clawd does too.
var utf8BOM = []byte("\xef\xbb\xbf")

// FilterTools rewrites one JSON value from a server (a JSON-RPC message or
// a batch of them) so that every tools/list result (a message whose
// result is an object with "tools") lists only the tools visible says yes
// to. It returns the body to forward and whether it differs from body.
// It reads strictly, as Parse does (valid UTF-8, one value, no member name
// twice at any depth after unescaping, no U+FFFD in a member name, bounded
// depth and size; one leading BOM is skipped), and returns an error for
// anything it cannot read exactly that way: the caller must not forward
// such a body, since a lenient client might read a tools list in it.
// A "tools" that is not a list, and tool entries that are not objects with
// a name of valid text, are not forwarded.
func FilterTools(body []byte, visible func(name string) bool) ([]byte, bool, error) {
	orig := body
	body = bytes.TrimPrefix(body, utf8BOM)
	if !utf8.Valid(body) {
		return nil, false, errors.New("the answer is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	d := &decoder{dec: dec, maxDepth: MaxResponseDepth, maxValues: MaxResponseValues, strFFFDOK: true}
	v, err := d.value(0)
	if err != nil {
		return nil, false, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false, errors.New("data after the JSON value")
	}
	changed := false
	var ferr error
	filter := func(m any) {
		msg, ok := m.(map[string]any)
		if !ok {
			return
		}
		res, ok := msg["result"].(map[string]any)
		if !ok {
			return
		}
		tv, has := res["tools"]
		if !has {
			return
		}
		tools, ok := tv.([]any)
		if !ok {
			ferr = errors.New(`a result's "tools" is not a list`)
			return
		}
		kept := make([]any, 0, len(tools))
		for _, t := range tools {
			tm, ok := t.(map[string]any)
			name, _ := tm["name"].(string)
			if ok && name != "" && !strings.ContainsRune(name, utf8.RuneError) && visible(name) {
				kept = append(kept, t)
			}
		}
		if len(kept) != len(tools) {
			res["tools"] = kept
			changed = true
		}
	}
	switch t := v.(type) {
	case []any:
		for _, m := range t {
			filter(m)
		}
	default:
		filter(t)
	}
	if ferr != nil {
		return nil, false, ferr
	}
	if !changed {
		return body, len(body) != len(orig), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, false, fmt.Errorf("re-encoding the filtered answer: %v", err)
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), true, nil
}
