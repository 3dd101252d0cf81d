// Package mcp reads the JSON-RPC 2.0 messages of the Model Context Protocol
// exactly, so that clawd decides on the same tool name and arguments the
// server will act on: a body that some parser could read in more than one
// way (duplicate keys, invalid UTF-8, lone surrogates, trailing bytes,
// members in another case) is refused rather than guessed at. It also
// filters tools/list results. It does no I/O.
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

// Kind is what a JSON-RPC message is.
type Kind int

const (
	Request      Kind = iota // has a method and an id: the server answers it
	Notification             // has a method and no id
	Response                 // has result or error and an id (a client answering the server)
)

// ToolsCall is the MCP method that runs a tool.
const ToolsCall = "tools/call"

// Limits of what Parse reads: MCP messages are small and flat, and a body
// that passes these is not an attack on clawd's memory or stack.
const (
	MaxDepth     = 64  // nesting of arrays and objects
	MaxBatch     = 100 // messages in one batch
	MaxNumberLen = 100 // digits and signs of one number
	MaxNameLen   = 256 // bytes of a method or tool name (MCP says tool names are 1-128 characters)
	// MaxValues bounds the JSON values (scalars, arrays, objects) of one
	// body: parsed values cost far more memory than their bytes, and
	// tool arguments are a handful of fields, however long their strings.
	MaxValues = 100000
)

// Item is one JSON-RPC message of a body.
type Item struct {
	Kind   Kind
	ID     json.RawMessage // the id as sent (a string, number or null); nil for notifications
	Method string          // "" for responses
	// Tool and Args are set for tools/call: params.name and
	// params.arguments (an empty map when arguments is absent). Values are
	// string, json.Number, bool, nil, []any or map[string]any; every
	// json.Number is exactly the float64 Float gives (see number.go).
	Tool string
	Args map[string]any
}

// Message is a parsed request body: one message, or a batch.
type Message struct {
	Batch bool
	Items []Item
}

// Parse reads body as one JSON-RPC 2.0 message or a batch, strictly: valid
// UTF-8, exactly one JSON value, no duplicate member names at any depth (after
// unescaping), no U+FFFD in any string (an invalid escape that parsers
// would decode differently), only numbers that are exactly the float64 a
// JSON.parse server reads (Float), only the members JSON-RPC defines at the
// message level, at most MaxValues values nested at most MaxDepth,
// "jsonrpc": "2.0", an id that is a string, number or null,
// and for tools/call a params object whose name is a non-empty string and
// whose arguments, if present, are an object.
func Parse(body []byte) (*Message, error) {
	v, err := decodeStrict(body)
	if err != nil {
		return nil, err
	}
	msg := &Message{}
	switch t := v.(type) {
	case []any:
		msg.Batch = true
		if len(t) == 0 {
			return nil, errors.New("empty batch")
		}
		if len(t) > MaxBatch {
			return nil, fmt.Errorf("batch of more than %d messages", MaxBatch)
		}
		for i, e := range t {
			it, err := item(e)
			if err != nil {
				return nil, fmt.Errorf("batch message %d: %w", i+1, err)
			}
			msg.Items = append(msg.Items, it)
		}
	default:
		it, err := item(v)
		if err != nil {
			return nil, err
		}
		msg.Items = []Item{it}
	}
	return msg, nil
}

var requestMembers = []string{"jsonrpc", "method", "params", "id"}

func item(v any) (Item, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Item{}, errors.New("a JSON-RPC message must be an object")
	}
	if m["jsonrpc"] != "2.0" {
		return Item{}, errors.New(`"jsonrpc" must be "2.0"`)
	}
	var it Item
	if idv, has := m["id"]; has {
		switch idv.(type) {
		case string, json.Number, nil:
		default:
			return Item{}, errors.New(`"id" must be a string, a number or null`)
		}
		it.ID, _ = json.Marshal(idv)
	}
	mv, hasMethod := m["method"]
	if !hasMethod {
		// A response (the client answering a server request).
		for k := range m {
			if k != "jsonrpc" && k != "id" && k != "result" && k != "error" {
				return Item{}, fmt.Errorf("unknown member %q", k)
			}
		}
		_, r := m["result"]
		_, e := m["error"]
		if r == e || it.ID == nil {
			return Item{}, errors.New("a message without a method must be a response: an id and exactly one of result and error")
		}
		it.Kind = Response
		return it, nil
	}
	for k := range m {
		if !contains(requestMembers, k) {
			return Item{}, fmt.Errorf("unknown member %q", k)
		}
	}
	method, ok := mv.(string)
	if !ok || method == "" || len(method) > MaxNameLen {
		return Item{}, fmt.Errorf(`"method" must be a non-empty string of at most %d bytes`, MaxNameLen)
	}
	it.Method = method
	it.Kind = Request
	if it.ID == nil {
		it.Kind = Notification
	}
	params, hasParams := m["params"]
	if hasParams {
		switch params.(type) {
		case map[string]any, []any:
		default:
			return Item{}, errors.New(`"params" must be an object or an array`)
		}
	}
	if method != ToolsCall {
		if strings.EqualFold(method, ToolsCall) {
			return Item{}, fmt.Errorf("method %q is tools/call in another case", method)
		}
		return it, nil
	}
	p, ok := params.(map[string]any)
	if !ok {
		return Item{}, errors.New(`tools/call needs "params" as an object`)
	}
	name, ok := p["name"].(string)
	if !ok || name == "" || len(name) > MaxNameLen {
		return Item{}, fmt.Errorf(`tools/call needs "params.name" as a non-empty string of at most %d bytes`, MaxNameLen)
	}
	it.Tool = name
	switch a := p["arguments"].(type) {
	case map[string]any:
		it.Args = a
	case nil:
		if _, has := p["arguments"]; has {
			return Item{}, errors.New(`"params.arguments" must be an object`)
		}
		it.Args = map[string]any{}
	default:
		return Item{}, errors.New(`"params.arguments" must be an object`)
	}
	return it, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// decodeStrict decodes exactly one JSON value from b (see Parse).
func decodeStrict(b []byte) (any, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	d := &decoder{dec: dec, maxDepth: MaxDepth, maxValues: MaxValues, maxBatch: MaxBatch, numbers: checkFloat}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// checkFloat refuses a number that is not exactly a float64 (Float).
func checkFloat(n json.Number) error {
	_, err := Float(string(n))
	return err
}

// decoder reads one JSON value token by token with bounds on what it
// costs: nesting, the count of values, the elements of the top-level
// array (a batch), and each number (numbers).
type decoder struct {
	dec       *json.Decoder
	maxDepth  int
	maxValues int
	maxBatch  int // 0: no bound beyond maxValues
	numbers   func(json.Number) error
	// A member name holding U+FFFD (an invalid escape or lone surrogate
	// some parser reads otherwise) is always refused; strFFFDOK lets
	// string values hold one.
	strFFFDOK bool
	values    int
}

func (d *decoder) value(depth int) (any, error) {
	if depth > d.maxDepth {
		return nil, fmt.Errorf("nested deeper than %d", d.maxDepth)
	}
	if d.values++; d.values > d.maxValues {
		return nil, fmt.Errorf("more than %d JSON values", d.maxValues)
	}
	dec := d.dec
	tok, err := dec.Token()
	if err != nil {
		return nil, notJSON(err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, notJSON(err)
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("not JSON: object key is not a string")
				}
				if strings.ContainsRune(k, utf8.RuneError) {
					return nil, errors.New("a member name holds U+FFFD or an invalid escape")
				}
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("member %q appears twice in one object", truncate(k))
				}
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, notJSON(err)
			}
			return m, nil
		case '[':
			l := []any{}
			for dec.More() {
				if depth == 0 && d.maxBatch > 0 && len(l) == d.maxBatch {
					return nil, fmt.Errorf("batch of more than %d messages", d.maxBatch)
				}
				v, err := d.value(depth + 1)
				if err != nil {
					return nil, err
				}
				l = append(l, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, notJSON(err)
			}
			return l, nil
		}
		return nil, errors.New("not JSON")
	case string:
		if !d.strFFFDOK && strings.ContainsRune(t, utf8.RuneError) {
			return nil, errors.New("a string holds U+FFFD or an invalid escape")
		}
		return t, nil
	case json.Number:
		if d.numbers != nil {
			if err := d.numbers(t); err != nil {
				return nil, err
			}
		}
		return t, nil
	default: // bool, nil
		return t, nil
	}
}

func notJSON(err error) error {
	if err == io.EOF {
		return errors.New("not JSON: unexpected end")
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not JSON: %s at byte %d", se.Error(), se.Offset)
	}
	return fmt.Errorf("not JSON: %v", err)
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// ArgsJSON is the compact JSON of a tools/call's arguments with keys in
// sorted order, for cards and logs (redact it first).
func ArgsJSON(args map[string]any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // shown to people as written: a < stays a <
	if err := enc.Encode(args); err != nil {
		return "{}"
	}
	return strings.TrimSuffix(buf.String(), "\n")
}
