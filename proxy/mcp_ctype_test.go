package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
)

// A request to an MCP host whose Content-Type clawd cannot be sure the
// server reads as UTF-8 is refused with what the agent needs: 415, a
// JSON-RPC error for its id naming the reason, next_steps, and a deny in
// the audit; it never reaches the server. One that passes goes on labelled
// application/json, with no parameters.
func TestMCPContentTypeRefused(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	for _, tc := range []struct {
		name string
		cts  []string
		want string
	}{
		{"utf-7", []string{"application/json; charset=utf-7"}, `charset \"utf-7\"`},
		{"quoted upper", []string{`application/json; CHARSET="UTF-7"`}, `charset \"UTF-7\"`},
		{"latin1", []string{"application/json; charset=iso-8859-1"}, `charset \"iso-8859-1\"`},
		{"duplicate parameter", []string{"application/json; charset=utf-7; charset=utf-8"}, "does not parse exactly"},
		{"two headers", []string{"application/json", "application/json; charset=utf-7"}, "2 Content-Type headers"},
		{"garbage", []string{"application/json, text/plain"}, "does not parse exactly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits := m.up.hits.Load()
			req, _ := http.NewRequest("POST", "http://api.example.com/mcp", strings.NewReader(mcpCall(5, "echo", `{"text":"hi"}`)))
			req.Header["Content-Type"] = tc.cts
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := m.cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			en := m.audit.next(t)
			if m.up.hits.Load() != hits {
				t.Errorf("forwarded")
			}
			var r rpcResponse
			if resp.StatusCode != http.StatusUnsupportedMediaType || json.Unmarshal(b, &r) != nil || string(r.ID) != "5" ||
				r.Error.Data.Error != "mcp_content_type_refused" || r.Error.Data.NextSteps == "" || !strings.Contains(string(b), tc.want) {
				t.Errorf("agent got %d %s, want 415 with a JSON-RPC error for id 5 saying %s", resp.StatusCode, b, tc.want)
			}
			if en.Action != "deny" || !strings.Contains(en.Reason, "Content-Type") {
				t.Errorf("audit: %s %q", en.Action, en.Reason)
			}
		})
	}
	// A body clawd cannot read at all with a bad charset: plain 415.
	resp, b := m.post(t, "", "application/json; charset=utf-16", strings.NewReader("\xff\xfe{\x00}\x00"))
	m.audit.next(t)
	if resp.StatusCode != http.StatusUnsupportedMediaType || !strings.Contains(string(b), `"error":"mcp_content_type_refused"`) || !strings.Contains(string(b), "next_steps") {
		t.Errorf("undecodable body with charset utf-16: %d %s", resp.StatusCode, b)
	}
	// Accepted spellings go on as application/json.
	for _, ct := range []string{"application/json; charset=UTF-8", `application/json; charset="utf-8"; foo=bar`} {
		resp, b := m.post(t, "", ct, strings.NewReader(mcpCall(1, "echo", `{"text":"hi"}`)))
		m.audit.next(t)
		r, _ := m.up.last()
		if resp.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s; the server got Content-Type %q, want application/json", ct, resp.StatusCode, b, r.Header.Get("Content-Type"))
		}
	}
}

// An MCP server's answer labelled with another charset than UTF-8 is not
// passed on (a client could decode it into a tools list clawd never
// filtered); a UTF-8 one goes on, filtered.
func TestMCPResponseCharsetRefused(t *testing.T) {
	for _, tc := range []struct{ ct, want string }{
		{"application/json; charset=utf-7", "refused"},
		{"text/event-stream; charset=utf-16", "refused"},
		{"application/json; charset=utf-8", "application/json; charset=utf-8"},
	} {
		var up *upstream
		m := newMCPEnv(t, approval.Outcome{})
		up = newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", tc.ct)
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"delete_file"}]}}`)
		})
		m.up, m.cl = up, m.client(up.addr(), nil, false)
		resp, b := m.post(t, "", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		m.audit.next(t)
		if tc.want == "refused" {
			if !strings.Contains(string(b), `"mcp_response_refused"`) || strings.Contains(string(b), "delete_file") || !strings.Contains(string(b), "charset") {
				t.Errorf("%s: agent got %d %s", tc.ct, resp.StatusCode, b)
			}
			continue
		}
		if resp.Header.Get("Content-Type") != tc.want || strings.Contains(string(b), "delete_file") {
			t.Errorf("%s: agent got %d %q %s", tc.ct, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
}

// A refused call reaches every client with its reason. A Streamable HTTP
// client (it accepts text/event-stream) reads the POST's 200 body as the
// answer; the legacy HTTP+SSE client (no such Accept) discards a 2xx
// body and waits on its GET stream, so it gets 403 with the same JSON-RPC
// error, which it reports.
func TestMCPRefusalStatusByClient(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	for _, tc := range []struct {
		accept string
		want   int
	}{
		{"application/json, text/event-stream", 200},
		{"text/event-stream;q=0.9, application/json", 200},
		{"", 403},
		{"application/json", 403},
		{"*/*", 403},
	} {
		req, _ := http.NewRequest("POST", "http://api.example.com/mcp?sessionId=abc", strings.NewReader(mcpCall(3, "delete_file", `{"path":"/work/a"}`)))
		req.Header.Set("Content-Type", "application/json")
		if tc.accept != "" {
			req.Header.Set("Accept", tc.accept)
		}
		resp, err := m.cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m.audit.next(t)
		var r rpcResponse
		if resp.StatusCode != tc.want || json.Unmarshal(b, &r) != nil || string(r.ID) != "3" || r.Error.Code != mcpDeniedCode || r.Error.Data.NextSteps == "" {
			t.Errorf("Accept %q: %d %s, want %d with the JSON-RPC error", tc.accept, resp.StatusCode, b, tc.want)
		}
	}
}
