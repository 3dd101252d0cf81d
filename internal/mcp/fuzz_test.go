package mcp

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts encoding/json
// reads as the same single value (no parser-differential input gets in).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"a","name":"b"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"a"}}`,
		`[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"result":{}}]`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}`,
		`{"jsonrpc":"2.0","id":1e999,"method":"x"}`,
		`{"jsonrpc":"2.0","id":1,"method":"x"} x`,
		"[[[[[[[[[[]]]]]]]]]]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil || dec.More() {
			t.Fatalf("Parse accepted what encoding/json refuses: %v", err)
		}
		if len(m.Items) == 0 {
			t.Fatal("no items")
		}
		for _, it := range m.Items {
			if it.Method == ToolsCall && (it.Tool == "" || it.Args == nil) {
				t.Fatalf("tools/call without tool or args: %+v", it)
			}
		}
	})
}

// FuzzFilterTools: never panics; whatever it lets through is JSON in which
// encoding/json (a lenient reader: last duplicate wins) finds no hidden
// tool in any result's tools.
func FuzzFilterTools(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`))
	f.Add([]byte(`[{"result":{"tools":[{"name":"b"}]}}]`))
	f.Add([]byte(`{"result":{"\u0074ools":[{"name":"b"}]}}`))
	f.Add([]byte("\ufeff{\"result\":{\"tools\":[{\"name\":\"b\"}]}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _, err := FilterTools(b, func(n string) bool { return n == "a" })
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out: %q", out)
		}
		if hidden(out, "a") {
			t.Fatalf("hidden tool forwarded: %q from %q", out, b)
		}
	})
}

// hidden reports whether a lenient reader finds a tool other than visible
// in a result's tools.
func hidden(b []byte, visible string) bool {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	msgs, ok := v.([]any)
	if !ok {
		msgs = []any{v}
	}
	for _, m := range msgs {
		mm, _ := m.(map[string]any)
		r, _ := mm["result"].(map[string]any)
		tl, _ := r["tools"].([]any)
		for _, t := range tl {
			tm, _ := t.(map[string]any)
			if tm["name"] != visible {
				return true
			}
		}
	}
	return false
}

// FuzzSSEFilter: never panics; in what it sends, a reference event-stream
// reader (lines end at CRLF, LF or CR; data lines join with "\n"; the last
// event counts even without its blank line, as a lenient client might)
// finds no hidden tool in any event's data.
func FuzzSSEFilter(f *testing.F) {
	f.Add([]byte("data: {\"result\":{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}}\r\r"))
	f.Add([]byte("data:{\"result\":\n" + "data: {\"tools\":[{\"name\":\"b\"}]}}"))
	f.Add([]byte("\ufeffevent: message\r\ndata: {\"result\":{\"\\u0074ools\":[{\"name\":\"b\"}]}}\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _ := io.ReadAll(NewSSEFilter(io.NopCloser(bytes.NewReader(b)), func(n string) bool { return n == "a" }, func(string) []byte { return []byte(`{"error":{}}`) }))
		var data []string
		check := func() {
			if len(data) > 0 && hidden([]byte(strings.Join(data, "\n")), "a") {
				t.Fatalf("hidden tool in %q from %q", out, b)
			}
			data = nil
		}
		for _, l := range strings.Split(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(string(out)), "\n") {
			if l == "" {
				check()
				continue
			}
			if v, ok := strings.CutPrefix(l, "data:"); ok {
				data = append(data, strings.TrimPrefix(v, " "))
			}
		}
		check()
	})
}
