package mcp

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, body string
		err        string // substring; "" = parses
		tool       string
	}{
		{"call", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1}}}`, "", "a"},
		{"member order", `{"params":{"arguments":{},"name":"a"},"method":"tools/call","id":"x","jsonrpc":"2.0"}`, "", "a"},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"a"}}`, "", "a"},
		{"unicode escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"a"}}`, "", "a"},
		{"whitespace", " \n\t{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} \r\n", "", ""},
		{"duplicate in arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"p":"/work","p":"/etc"}}}`, "appears twice", ""},
		{"duplicate deep", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"b":1,"b":2}]}}`, "appears twice", ""},
		{"duplicate jsonrpc", `{"jsonrpc":"2.0","jsonrpc":"1.0","id":1,"method":"x"}`, "appears twice", ""},
		{"duplicate id", `{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, "appears twice", ""},
		{"BOM", "\ufeff{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}", "not JSON", ""},
		{"NUL after", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}\x00", "", ""},
		{"comment", `{"jsonrpc":"2.0","id":1,"method":"x"}//`, "", ""},
		{"single quotes", `{'jsonrpc':'2.0'}`, "not JSON", ""},
		{"NaN", `{"jsonrpc":"2.0","id":NaN,"method":"x"}`, "not JSON", ""},
		{"bool id", `{"jsonrpc":"2.0","id":true,"method":"x"}`, `"id"`, ""},
		{"method number", `{"jsonrpc":"2.0","id":1,"method":5}`, `"method"`, ""},
		{"params string", `{"jsonrpc":"2.0","id":1,"method":"x","params":"a"}`, `"params"`, ""},
		{"tools/call params array", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["a"]}`, `params`, ""},
		{"empty name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}`, `params.name`, ""},
		{"method with space", `{"jsonrpc":"2.0","id":1,"method":"tools/call ","params":{"name":"a"}}`, "", ""},
		{"response with both", `{"jsonrpc":"2.0","id":1,"result":{},"error":{}}`, "exactly one", ""},
		{"response without id", `{"jsonrpc":"2.0","result":{}}`, "exactly one", ""},
		{"response extra", `{"jsonrpc":"2.0","id":1,"result":{},"method2":1}`, "unknown member", ""},
		{"too big batch", "[" + strings.Repeat(`{"jsonrpc":"2.0","method":"x"},`, MaxBatch) + `{"jsonrpc":"2.0","method":"x"}]`, "more than", ""},
		{"key with U+FFFD", `{"jsonrpc":"2.0","id":1,"method":"x","params":{"\ufffd":1}}`, "U+FFFD", ""},
		{"long tool name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + strings.Repeat("a", MaxNameLen+1) + `"}}`, "at most", ""},
		{"long method", `{"jsonrpc":"2.0","id":1,"method":"` + strings.Repeat("a", MaxNameLen+1) + `"}`, "at most", ""},
		{"truncated", `{"jsonrpc":"2.0","id":1,"method":"x"`, "not JSON", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.body))
			if tt.err == "" {
				if tt.name == "NUL after" || tt.name == "comment" {
					// Trailing bytes are refused.
					if err == nil {
						t.Fatal("trailing bytes accepted")
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if tt.tool != "" && m.Items[0].Tool != tt.tool {
					t.Fatalf("tool %q", m.Items[0].Tool)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestParseKinds(t *testing.T) {
	m, err := Parse([]byte(`[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":null,"error":{"code":1}},{"jsonrpc":"2.0","id":1.5e3,"method":"tools/call","params":{"name":"t"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		k  Kind
		id string
	}{{Request, `"a"`}, {Notification, ""}, {Response, "null"}, {Request, "1.5e3"}}
	for i, w := range want {
		if it := m.Items[i]; it.Kind != w.k || string(it.ID) != w.id {
			t.Errorf("item %d: %+v", i, it)
		}
	}
	if !m.Batch || m.Items[3].Args == nil || len(m.Items[3].Args) != 0 {
		t.Errorf("%+v", m.Items[3])
	}
}

func TestArgsJSON(t *testing.T) {
	if got := ArgsJSON(map[string]any{"b": json.Number("1.50"), "a": "<x>&"}); got != `{"a":"<x>&","b":1.50}` {
		t.Fatalf("%s", got)
	}
}

// Numbers are decided as the float64 a JSON.parse server reads; a number
// whose text is not exactly that float64 (or is Infinity) is refused, so
// no matcher judges one value while the server acts on another.
func TestParseNumbers(t *testing.T) {
	body := func(n string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"n":` + n + `}}}`)
	}
	for _, n := range []string{"1", "1.0", "-0", "0", "0.0e5", "0.1", "0.3", "1e2", "1E+2", "100", "-2.5e-3", "9007199254740992",
		"5e-324", "1.7976931348623157e308", "0.30000000000000004", "1e22", "0e999999999999"} {
		if _, err := Parse(body(n)); err != nil {
			t.Errorf("%s refused: %v", n, err)
		}
	}
	for n, want := range map[string]string{
		"1e400":                          "Infinity",
		"-1e400":                         "Infinity",
		"1e999999999":                    "Infinity",
		"1e99999999999999999999":         "Infinity",
		"1.8e308":                        "Infinity",
		"0.30000000000000001":            "would read 0.3",
		"9007199254740993":               "would read 9007199254740992",
		"100.0000000000000001":           "would read 100",
		"99.99999999999999999":           "would read 100",
		"1e-400":                         "would read 0",
		"1e-99999999999":                 "would read 0",
		"123456789012345678901234":       "not exactly a float64",
		strings.Repeat("1", 101):         "longer than",
		"1" + strings.Repeat("0", 1<<20): "longer than",
	} {
		_, err := Parse(body(n))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.30s: err = %v, want %q", n, err, want)
		}
		// Anywhere in the body: ids and nested arguments too.
		if _, err := Parse([]byte(`{"jsonrpc":"2.0","id":` + n + `,"method":"ping"}`)); err == nil {
			t.Errorf("%.30s accepted as an id", n)
		}
		if _, err := Parse(body(`{"deep":[` + n + `]}`)); err == nil {
			t.Errorf("%.30s accepted nested", n)
		}
	}
	for _, c := range []struct {
		n string
		f float64
	}{{"1.0", 1}, {"1e2", 100}, {"-0", 0}, {"0.1", 0.1}} {
		if f, err := Float(c.n); err != nil || f != c.f {
			t.Errorf("Float(%s) = %v, %v", c.n, f, err)
		}
	}
}

// Escaped member names are decoded before anything looks at them: a key
// written \u0070ath is path, and path twice is refused.
func TestParseEscapedKeys(t *testing.T) {
	m, err := Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"\u0070ath":"/etc/passwd"}}}`))
	if err != nil || m.Items[0].Args["path"] != "/etc/passwd" {
		t.Fatalf("%+v %v", m, err)
	}
	_, err = Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"path":"/work/a","\u0070ath":"/etc/passwd"}}}`))
	if err == nil || !strings.Contains(err.Error(), `member "path" appears twice`) {
		t.Fatalf("err = %v", err)
	}
}

// The attack on parse cost: a body built to make clawd spend time or
// memory (a huge exponent, a megabyte of digits, deep nesting, millions of
// tiny values) is refused with a reason, reading each byte about once and
// holding little more than the body.
func TestParseLimits(t *testing.T) {
	args := func(a string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":` + a + `}}}`
	}
	many := func(item string, n int) string {
		return "[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]"
	}
	tests := []struct{ name, body, err string }{
		{"huge exponent", args("1e999999999"), "Infinity"},
		{"huge negative exponent", args("1e-999999999"), "would read 0"},
		{"exponent of a million digits", args("1e" + strings.Repeat("9", 1<<20)), "longer than"},
		{"megabyte number", args(strings.Repeat("7", 1<<20)), "longer than"},
		{"megabyte fraction", args("0." + strings.Repeat("0", 1<<20) + "1"), "longer than"},
		{"deep arrays", args(strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20)), "nested deeper than"},
		{"deep objects", args(strings.Repeat(`{"a":`, 1<<18) + "1" + strings.Repeat("}", 1<<18)), "nested deeper than"},
		{"deep unclosed", args(strings.Repeat("[", 1<<20)), "nested deeper than"},
		{"millions of values", args(many("0", 3<<20)), "more than"},
		{"millions of empty objects", args(many("{}", 2<<20)), "more than"},
		{"huge batch", many(`{"jsonrpc":"2.0","method":"x"}`, 200000), "batch of more than"},
		{"huge batch of nothing", many(`0`, 4<<20), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := []byte(tt.body)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := Parse(b)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(4*len(b))+(8<<20) {
				t.Fatalf("Parse allocated %d bytes for a body of %d", alloc, len(b))
			}
		})
	}
}
