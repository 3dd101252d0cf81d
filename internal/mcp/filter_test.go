package mcp

import (
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFilterTools(t *testing.T) {
	vis := func(n string) bool { return n == "ok" }
	in := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok","x":1.50},{"name":"no"},{"name":5},"junk"],"nextCursor":"n"}}`
	out, changed, err := FilterTools([]byte(in), vis)
	if err != nil || !changed || string(out) != `{"id":1,"jsonrpc":"2.0","result":{"nextCursor":"n","tools":[{"name":"ok","x":1.50}]}}` {
		t.Fatalf("%s %v", out, err)
	}
	batch := `[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"no"}]}},{"jsonrpc":"2.0","id":2,"result":{"content":[]}}]`
	out, changed, err = FilterTools([]byte(batch), vis)
	var v []map[string]any
	if err := json.Unmarshal(out, &v); !changed || err != nil || len(v[0]["result"].(map[string]any)["tools"].([]any)) != 0 {
		t.Fatalf("%s", out)
	}
	for _, same := range []string{`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"}]}}`, `"a string"`, `{"result":{"content":[{"text":"\ud800"}]}}`, `{"error":{"tools":[{"name":"no"}]}}`} {
		if out, changed, err := FilterTools([]byte(same), vis); err != nil || changed || string(out) != same {
			t.Errorf("%s changed to %s (%v)", same, out, err)
		}
	}
}

// The attack on the tools/list filter: an answer in a shape the filter
// did not expect must never reach the agent unfiltered. What the filter
// cannot read exactly is an error (the caller refuses the answer).
func TestFilterToolsOddShapes(t *testing.T) {
	vis := func(n string) bool { return n == "ok" }
	tests := []struct{ name, body, err string }{
		{"escaped tools key", `{"jsonrpc":"2.0","id":1,"result":{"\u0074ools":[{"name":"ok"},{"name":"secret"}]}}`, ""},
		{"escaped result key", `{"jsonrpc":"2.0","id":1,"\u0072esult":{"tools":[{"name":"ok"},{"name":"secret"}]}}`, ""},
		{"escaped name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"n\u0061me":"secret"}]}}`, ""},
		{"BOM", "\ufeff" + `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"name":"secret"}]}}`, ""},
		{"batch", `[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"secret"}]}}]`, ""},
		{"duplicate tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"}],"tools":[{"name":"secret"}]}}`, "appears twice"},
		{"duplicate escaped tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"}],"\u0074ools":[{"name":"secret"}]}}`, "appears twice"},
		{"duplicate result", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"secret"}]}}`, "appears twice"},
		{"duplicate name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok","name":"secret"}]}}`, "appears twice"},
		{"invalid JSON", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret"}]}`, "not JSON"},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}} {"result":{"tools":[{"name":"secret"}]}}`, "after the JSON value"},
		{"two BOMs", "\ufeff\ufeff" + `{"result":{"tools":[{"name":"secret"}]}}`, "not JSON"},
		{"invalid UTF-8", `{"result":{"tools":[{"name":"secret` + "\xff" + `"}]}}`, "UTF-8"},
		{"tools not a list", `{"result":{"tools":{"secret":{"name":"secret"}}}}`, "not a list"},
		{"key with lone surrogate", `{"result":{"tools":[{"name":"ok"}],"tool\ud800":[{"name":"secret"}]}}`, "U+FFFD"},
		{"deep", `{"result":{"tools":[{"name":"secret"}]},"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, "nested deeper"},
		{"many values", `{"result":{"tools":[{"name":"secret"}]},"x":[` + strings.Repeat("0,", MaxResponseValues) + `0]}`, "more than"},
		{"UTF-16", "{\x00\"\x00r\x00", "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := FilterTools([]byte(tt.body), vis)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q; out %s", err, tt.err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(out), "secret") || strings.HasPrefix(string(out), "\ufeff") || hidden(out, "ok") {
				t.Fatalf("forwarded %s", out)
			}
		})
	}
	// A tool whose name holds a lone surrogate is another name to a
	// JavaScript client: never listed.
	out, _, err := FilterTools([]byte(`{"result":{"tools":[{"name":"ok\ud800"}]}}`), func(string) bool { return true })
	if err != nil || strings.Contains(string(out), "ok") {
		t.Fatalf("%s %v", out, err)
	}
}

func refuseFor(t *testing.T) func(string) []byte {
	return func(reason string) []byte {
		b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": -32010, "message": "clawd: " + reason}})
		return b
	}
}

func TestSSEFilter(t *testing.T) {
	vis := func(n string) bool { return n == "ok" }
	in := ": comment\n\nevent: message\r\nid: 7\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\r\ndata: \"result\":{\"tools\":[{\"name\":\"ok\"},{\"name\":\"no\"}]}}\r\n\r\n" +
		"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools\"}\n\ndata: {\"unfinished\":1}"
	want := ": comment\n\nevent: message\nid: 7\ndata: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"ok\"}]}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools\"}\n\ndata: {\"unfinished\":1}\n"
	for _, r := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader} {
		got, err := io.ReadAll(NewSSEFilter(io.NopCloser(r(strings.NewReader(in))), vis, refuseFor(t)))
		if err != nil || string(got) != want {
			t.Fatalf("got %q (%v)\nwant %q", got, err, want)
		}
	}
	big := "data: " + strings.Repeat("x", MaxEvent) + "\n\n"
	if _, err := io.ReadAll(NewSSEFilter(io.NopCloser(strings.NewReader(big)), vis, refuseFor(t))); err != ErrEventTooLarge {
		t.Fatalf("err = %v", err)
	}
	big = "data: x\n" + strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", MaxEvent/1000)
	if _, err := io.ReadAll(NewSSEFilter(io.NopCloser(strings.NewReader(big)), vis, refuseFor(t))); err != ErrEventTooLarge {
		t.Fatalf("many lines: err = %v", err)
	}
}

// The attack on the event-stream filter: every line ending and field
// spelling the event stream standard allows reaches the client filtered,
// and data clawd cannot read is replaced by a JSON-RPC error.
func TestSSEFilterOddShapes(t *testing.T) {
	vis := func(n string) bool { return n == "ok" }
	const list = `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"name":"secret"}]}}`
	const filtered = `data: {"id":1,"jsonrpc":"2.0","result":{"tools":[{"name":"ok"}]}}`
	tests := []struct{ name, in, want string }{
		{"LF", "data: " + list + "\n\n", filtered + "\n\n"},
		{"CRLF", "data: " + list + "\r\n\r\n", filtered + "\n\n"},
		{"CR only", "event: message\rdata: " + list + "\r\r", "event: message\n" + filtered + "\n\n"},
		{"CR only, nothing else", "data: " + list + "\r\rdata: " + list + "\r\r", filtered + "\n\n" + filtered + "\n\n"},
		{"mixed endings", "id: 1\r\ndata: " + list + "\r\n\n", "id: 1\n" + filtered + "\n\n"},
		{"CR then LF as two reads", "data: " + list + "\r" + "\n" + "\r\n", filtered + "\n\n"},
		{"no space after colon", "data:" + list + "\n\n", filtered + "\n\n"},
		{"two spaces after colon", "data:  " + list + "\n\n", filtered + "\n\n"},
		{"no final blank line", "data: " + list + "\n", filtered + "\n"},
		{"no final line end", "data: " + list, filtered + "\n"},
		{"multi-line data", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"ok\"},\ndata: {\"name\":\"secret\"}]}}\n\n", filtered + "\n\n"},
		{"multi-line data, CR", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\rdata: \"result\":{\"tools\":[{\"name\":\"ok\"},\rdata: {\"name\":\"secret\"}]}}\r\r", filtered + "\n\n"},
		{"escaped key", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"\\u0074ools\":[{\"name\":\"ok\"},{\"name\":\"secret\"}]}}\n\n", filtered + "\n\n"},
		{"BOM", "\ufeffdata: " + list + "\n\n", filtered + "\n\n"},
		{"other event type", "event: other\ndata: " + list + "\n\n", "event: other\n" + filtered + "\n\n"},
		{"field case", "Data: " + list + "\ndata: {}\n\n", "data: {}\n\n"},
		{"comment", ": " + list + "\n\n", ": " + list + "\n\n"},
	}
	for _, tt := range tests {
		for _, r := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader} {
			got, err := io.ReadAll(NewSSEFilter(io.NopCloser(r(strings.NewReader(tt.in))), vis, refuseFor(t)))
			if err != nil || string(got) != tt.want {
				t.Errorf("%s: got %q (%v)\nwant %q", tt.name, got, err, tt.want)
			}
		}
	}
	// Data clawd cannot read: the event is replaced by a JSON-RPC error.
	for name, in := range map[string]string{
		"invalid JSON":    "data: {\"result\":{\"tools\":[{\"name\":\"secret\"}]}\n\n",
		"duplicate tools": "data: {\"result\":{\"tools\":[],\"tools\":[{\"name\":\"secret\"}]}}\n\n",
		"message event":   "event: message\ndata: {\"result\":{\"tools\":[{\"name\":\"secret\"}]}} x\n\n",
		"invalid UTF-8":   "data: {\"result\":{\"tools\":[{\"name\":\"secret\xff\"}]}}\n\n",
		"unfinished":      "data: {\"result\":{\"tools\":[{\"name\":\"secret\"}]",
	} {
		got, _ := io.ReadAll(NewSSEFilter(io.NopCloser(strings.NewReader(in)), vis, refuseFor(t)))
		if strings.Contains(string(got), "secret") || !strings.Contains(string(got), `"error":{"code":-32010`) {
			t.Errorf("%s: %q", name, got)
		}
	}
	// The legacy transport's endpoint event holds a URL, not JSON.
	in := "event: endpoint\ndata: /messages?session=1\n\n"
	if got, _ := io.ReadAll(NewSSEFilter(io.NopCloser(strings.NewReader(in)), vis, refuseFor(t))); string(got) != in {
		t.Errorf("endpoint event: %q", got)
	}
}
