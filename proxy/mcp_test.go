package proxy

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

const mcpPolicy = `
default:
  rules:
    - name: mcp
      hosts: api.example.com
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: write_file
          action: approve
        - name: read_file
          action: allow
          args:
            path: {matches: "/work/.*"}
        - name: echo
          action: allow
`

// fakeMCP answers like an MCP server: tools/list with four tools, tools/call
// with the tool's name. ?sse answers as an event stream.
func fakeMCP(w http.ResponseWriter, r *http.Request, body []byte) {
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	json.Unmarshal(body, &msg)
	var res string
	switch msg.Method {
	case "tools/list":
		res = `{"tools":[{"name":"delete_file","inputSchema":{}},{"name":"write_file","inputSchema":{}},{"name":"read_file","inputSchema":{}},{"name":"echo","inputSchema":{}},{"name":"secret_tool","inputSchema":{}}],"nextCursor":"c2"}`
	default:
		res = fmt.Sprintf(`{"content":[{"type":"text","text":"ran %s"}]}`, msg.Params.Name)
	}
	out := fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, res)
	if r.URL.RawQuery == "sse" {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "event: message\nid: 1\ndata: %s\n\n", out)
		return
	}
	if r.URL.RawQuery == "gzip" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		z := gzip.NewWriter(w)
		io.WriteString(z, out)
		z.Close()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, out)
}

type mcpEnv struct {
	*env
	up *upstream
	cl *http.Client
	ap *fakeApprover
}

func newMCPEnv(t *testing.T, out approval.Outcome) *mcpEnv {
	return newMCPEnvPolicy(t, mcpPolicy, out)
}

func newMCPEnvPolicy(t *testing.T, pol string, out approval.Outcome) *mcpEnv {
	p, err := policy.Parse([]byte(pol), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var up *upstream
	up = newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		_, b := up.last()
		fakeMCP(w, r, b)
	})
	ap := &fakeApprover{out: out, holds: make(chan approval.Hold, 10)}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.Approver = ap })
	return &mcpEnv{env: e, up: up, cl: e.client(up.addr(), nil, false), ap: ap}
}

func (m *mcpEnv) post(t *testing.T, query, ctype string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://api.example.com/mcp"+query, body)
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Accept", "application/json, text/event-stream")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := m.cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b
}

func mcpCall(id int, tool, args string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":%s}}`, id, tool, args)
}

func TestMCPToolCalls(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	tests := []struct {
		name, body string
		forwarded  bool
		errMsg     string // substring of the JSON-RPC error message; "" when forwarded
		tool       string
		action     string
	}{
		{"allowed", mcpCall(1, "echo", `{"x":1}`), true, "", "echo", "allow"},
		{"allowed by argument", mcpCall(2, "read_file", `{"path":"/work/a"}`), true, "", "read_file", "allow"},
		{"denied tool", mcpCall(3, "delete_file", `{"path":"/work/a"}`), false, `tool "delete_file" denied by rule "mcp"`, "delete_file", "deny"},
		{"argument outside", mcpCall(4, "read_file", `{"path":"/etc/shadow"}`), false, "is not allowed by rule", "read_file", "deny"},
		{"hidden tool called by name", mcpCall(5, "secret_tool", `{}`), false, "is not allowed by rule", "secret_tool", "deny"},
		{"escaped name", `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"delete\u005ffile"}}`, false, "denied", "delete_file", "deny"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := m.up.hits.Load()
			resp, b := m.post(t, "", "application/json", strings.NewReader(tt.body))
			e := m.audit.next(t)
			if e.Tool != tt.tool || e.Action != tt.action || e.Rule != "mcp" {
				t.Errorf("audit = tool %q action %q rule %q, want %q %q mcp", e.Tool, e.Action, e.Rule, tt.tool, tt.action)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if tt.forwarded {
				if _, got := m.up.last(); m.up.hits.Load() != hits+1 || string(got) != tt.body {
					t.Fatalf("upstream saw %q", got)
				}
				if !strings.Contains(string(b), `"result"`) {
					t.Fatalf("agent got %s", b)
				}
				return
			}
			if m.up.hits.Load() != hits {
				t.Fatal("a refused call reached the upstream")
			}
			var r struct {
				ID    json.RawMessage
				Error struct {
					Code    int
					Message string
					Data    map[string]string
				}
			}
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("agent got %s: %v", b, err)
			}
			var want map[string]any
			json.Unmarshal([]byte(tt.body), &want)
			if string(r.ID) != fmt.Sprint(want["id"]) || r.Error.Code != mcpDeniedCode || !strings.Contains(r.Error.Message, tt.errMsg) ||
				r.Error.Data["tool"] != tt.tool || r.Error.Data["rule"] != "mcp" || r.Error.Data["error"] != "blocked_by_policy" {
				t.Fatalf("agent got %s", b)
			}
			if !strings.Contains(e.Reason, tt.errMsg) {
				t.Errorf("audit reason %q, want %q", e.Reason, tt.errMsg)
			}
		})
	}
}

// Bodies clawd cannot read exactly are refused (not forwarded), whatever
// the Content-Type says, with an audit line saying why.
func TestMCPUndecidableBodies(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	gz := func(s string) io.Reader {
		var buf bytes.Buffer
		z := gzip.NewWriter(&buf)
		io.WriteString(z, s)
		z.Close()
		return &buf
	}
	tests := []struct {
		name   string
		ctype  string
		body   io.Reader
		hdr    []string
		status int
		reason string
	}{
		{"duplicate name, last wins elsewhere", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file"}}`), nil, 403, "appears twice"},
		{"duplicate name, first wins elsewhere", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","name":"echo"}}`), nil, 403, "appears twice"},
		{"trailing garbage", "application/json", strings.NewReader(mcpCall(1, "echo", `{}`) + "]"), nil, 403, "after the JSON value"},
		{"content-type lie", "text/plain", strings.NewReader(mcpCall(1, "delete_file", `{}`)), nil, 200, ""},
		{"not json as form", "application/x-www-form-urlencoded", strings.NewReader("method=tools/call&name=delete_file"), nil, 403, "not JSON"},
		{"gzip body denied tool", "application/json", gz(mcpCall(1, "delete_file", `{}`)), []string{"Content-Encoding", "gzip"}, 200, ""},
		{"gzip body duplicate key", "application/json", gz(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_file"}}`), []string{"Content-Encoding", "gzip"}, 403, "appears twice"},
		{"unknown coding", "application/json", strings.NewReader(mcpCall(1, "echo", `{}`)), []string{"Content-Encoding", "compress"}, 415, "cannot be decoded"},
		{"chunked denied", "application/json", io.MultiReader(strings.NewReader(`{"jsonrpc":"2.0","id":1,`), strings.NewReader(`"method":"tools/call","params":{"name":"delete_file"}}`)), nil, 200, ""},
		{"notification only", "application/json", strings.NewReader(`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_file"}}`), nil, 403, "denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := m.up.hits.Load()
			resp, b := m.post(t, "", tt.ctype, tt.body, tt.hdr...)
			e := m.audit.next(t)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if m.up.hits.Load() != hits {
				t.Fatal("refused body reached the upstream")
			}
			if e.Action != audit.ActionDeny || !strings.Contains(e.Reason, tt.reason) {
				t.Fatalf("audit %q: %q, want deny with %q", e.Action, e.Reason, tt.reason)
			}
			if tt.status == 200 && !strings.Contains(string(b), `"error"`) {
				t.Fatalf("agent got %s", b)
			}
		})
	}
}

func TestMCPBodyOverLimit(t *testing.T) {
	p, _ := policy.Parse([]byte(mcpPolicy), "test.yaml")
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.MaxHoldBody = 1 << 10 })
	big := mcpCall(1, "echo", `{"x":"`+strings.Repeat("a", 2<<10)+`"}`)
	resp, err := e.client(up.addr(), nil, false).Post("http://api.example.com/mcp", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || up.hits.Load() != 0 {
		t.Fatalf("status %d, upstream hits %d", resp.StatusCode, up.hits.Load())
	}
}

func TestMCPBatch(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	body := `[` + mcpCall(1, "echo", `{}`) + `,` + mcpCall(2, "delete_file", `{"p":1}`) + `,{"jsonrpc":"2.0","method":"notifications/progress"}]`
	resp, b := m.post(t, "", "application/json", strings.NewReader(body))
	if resp.StatusCode != 200 || m.up.hits.Load() != 0 {
		t.Fatalf("status %d hits %d", resp.StatusCode, m.up.hits.Load())
	}
	var out []struct {
		ID    int
		Error struct {
			Message string
			Data    map[string]string
		}
	}
	if err := json.Unmarshal(b, &out); err != nil || len(out) != 2 || out[0].ID != 1 || out[1].ID != 2 {
		t.Fatalf("agent got %s (%v)", b, err)
	}
	if !strings.Contains(out[0].Error.Message, "not forwarded") || !strings.Contains(out[1].Error.Message, `tool "delete_file" denied`) {
		t.Fatalf("agent got %s", b)
	}
	var tools []string
	for i := 0; i < 3; i++ {
		e := m.audit.next(t)
		if e.Action != audit.ActionDeny || !strings.Contains(e.Reason, fmt.Sprintf("batch message %d of 3", i+1)) {
			t.Errorf("audit line %d: %+v", i, e)
		}
		tools = append(tools, e.Tool)
	}
	if fmt.Sprint(tools) != "[echo delete_file ]" {
		t.Errorf("audit tools %v", tools)
	}

	// An all-allowed batch goes upstream as it was sent.
	body = `[` + mcpCall(1, "echo", `{}`) + `,` + mcpCall(2, "read_file", `{"path":"/work/x"}`) + `]`
	m.post(t, "", "application/json", strings.NewReader(body))
	if _, got := m.up.last(); string(got) != body {
		t.Fatalf("upstream saw %q", got)
	}
	for i := 0; i < 2; i++ {
		if e := m.audit.next(t); e.Action != "allow" || e.Tool == "" {
			t.Errorf("audit %+v", e)
		}
	}
}

func TestMCPApprove(t *testing.T) {
	for _, approved := range []bool{true, false} {
		t.Run(fmt.Sprint(approved), func(t *testing.T) {
			out := approval.Outcome{Status: approval.StatusDenied, ID: "a1", By: "slack:U1", Reason: "not today"}
			if approved {
				out = approval.Outcome{Approved: true, Status: approval.StatusApproved, ID: "a1", By: "cli"}
			}
			m := newMCPEnv(t, out)
			body := mcpCall(7, "write_file", `{"path":"/work/x","content":"hi"}`)
			resp, b := m.post(t, "", "application/json", strings.NewReader(body))
			h := <-m.ap.holds
			if len(h.Tools) != 1 || h.Tools[0].Name != "write_file" || h.Tools[0].Args != `{"content":"hi","path":"/work/x"}` || h.Rule != "mcp" {
				t.Fatalf("hold tools %+v", h.Tools)
			}
			e := m.audit.next(t)
			if e.Tool != "write_file" || e.Action != out.Status {
				t.Errorf("audit %+v", e)
			}
			if approved {
				if _, got := m.up.last(); string(got) != body || !strings.Contains(string(b), "ran write_file") {
					t.Fatalf("upstream saw %q, agent got %s", got, b)
				}
				return
			}
			if m.up.hits.Load() != 0 || resp.StatusCode != 200 || !strings.Contains(string(b), `"id":7`) ||
				!strings.Contains(string(b), "not today") || !strings.Contains(string(b), `"denied_by_approver"`) {
				t.Fatalf("status %d, agent got %s", resp.StatusCode, b)
			}
		})
	}
}

func TestMCPToolsListFiltered(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	list := `{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{}}`
	for _, q := range []string{"", "?sse", "?gzip"} {
		t.Run(q, func(t *testing.T) {
			resp, b := m.post(t, q, "application/json", strings.NewReader(list), "Accept-Encoding", "gzip")
			m.audit.next(t)
			req, _ := m.up.last()
			if ae := req.Header.Get("Accept-Encoding"); ae != "identity" {
				t.Errorf("upstream was asked for %q", ae)
			}
			data := b
			if q == "?sse" {
				if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
					t.Fatalf("Content-Type %q", ct)
				}
				s := string(b)
				if !strings.HasPrefix(s, "event: message\nid: 1\ndata: ") || !strings.HasSuffix(s, "\n\n") {
					t.Fatalf("event stream %q", s)
				}
				data = []byte(strings.TrimSuffix(strings.TrimPrefix(s, "event: message\nid: 1\ndata: "), "\n\n"))
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("Content-Encoding %q", resp.Header.Get("Content-Encoding"))
			}
			var r struct {
				ID     int
				Result struct {
					Tools []struct{ Name string }
					Next  string `json:"nextCursor"`
				}
			}
			if err := json.Unmarshal(data, &r); err != nil {
				t.Fatalf("agent got %q: %v", b, err)
			}
			var names []string
			for _, tl := range r.Result.Tools {
				names = append(names, tl.Name)
			}
			if fmt.Sprint(names) != "[write_file read_file echo]" || r.ID != 9 || r.Result.Next != "c2" {
				t.Fatalf("agent saw tools %v (%s)", names, b)
			}
		})
	}
}

// An event stream keeps flowing: the first event reaches the agent
// while the server still holds the stream open, before it sends more.
func TestMCPStreamNotHeldBack(t *testing.T) {
	p, _ := policy.Parse([]byte(mcpPolicy), "test.yaml")
	got := make(chan struct{})
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n")
		w.(http.Flusher).Flush()
		<-got
		io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"delete_file\"},{\"name\":\"echo\"}]}}\n\n")
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	req, _ := http.NewRequest("GET", "http://api.example.com/mcp", nil)
	resp, err := e.client(up.addr(), nil, false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := io.ReadAtLeast(resp.Body, buf, 10)
	if err != nil || !strings.Contains(string(buf[:n]), "notifications/progress") {
		t.Fatalf("first event: %q %v", buf[:n], err)
	}
	close(got)
	rest, _ := io.ReadAll(resp.Body)
	if want := "data: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"echo\"}]}}\n\n"; string(rest) != want {
		t.Fatalf("second event %q, want %q", rest, want)
	}
}

// A WebSocket to an MCP host would carry calls clawd does not read.
func TestMCPUpgradeRefused(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	req, _ := http.NewRequest("GET", "http://api.example.com/mcp", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := m.cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e := m.audit.next(t)
	if resp.StatusCode != 403 || m.up.hits.Load() != 0 || e.Action != audit.ActionDeny || !strings.Contains(e.Reason, "upgrades") {
		t.Fatalf("status %d, upstream hits %d, audit %+v", resp.StatusCode, m.up.hits.Load(), e)
	}
}

// Over intercepted TLS and HTTP/2 (mcp: true implies intercept): the same
// refusals, filtering and forwarding.
func TestMCPOverH2(t *testing.T) {
	p, err := policy.Parse([]byte(strings.ReplaceAll(mcpPolicy, "hosts: api.example.com", "hosts: example.com")), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var up *upstream
	up = newUpstream(t, true, true, func(w http.ResponseWriter, r *http.Request) {
		_, b := up.last()
		fakeMCP(w, r, b)
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
	post := func(q, body string) (*http.Response, string) {
		resp, err := cl.Post("https://example.com/mcp"+q, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	resp, b := post("", mcpCall(1, "delete_file", `{}`))
	if resp.ProtoMajor != 2 || !strings.Contains(b, `"blocked_by_policy"`) || up.hits.Load() != 0 {
		t.Fatalf("HTTP/%d %s, upstream hits %d", resp.ProtoMajor, b, up.hits.Load())
	}
	if _, b = post("", mcpCall(2, "echo", `{}`)); !strings.Contains(b, "ran echo") {
		t.Fatalf("echo: %s", b)
	}
	if _, b = post("?sse", `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`); !strings.Contains(b, `"echo"`) || strings.Contains(b, "secret_tool") || strings.Contains(b, "delete_file") {
		t.Fatalf("tools/list: %s", b)
	}
}

// A set in mode audit refuses nothing (issue 16): a denied or held tool
// call reaches the server, tools/list is not filtered, and each call's
// audit line says what enforcement would have done.
func TestMCPAuditMode(t *testing.T) {
	m := newMCPEnvPolicy(t, strings.Replace(mcpPolicy, "default:\n", "default:\n  mode: audit\n", 1), approval.Outcome{})
	for _, c := range []struct{ tool, would string }{{"delete_file", "deny"}, {"write_file", "approve"}, {"echo", "allow"}} {
		resp, b := m.post(t, "", "application/json", strings.NewReader(mcpCall(1, c.tool, `{}`)))
		if resp.StatusCode != 200 || !strings.Contains(string(b), "ran "+c.tool) {
			t.Fatalf("%s: %d %s", c.tool, resp.StatusCode, b)
		}
		if got := m.audit.next(t); got.Tool != c.tool || got.Mode != "audit" || got.Would != c.would || got.Action != "allow" {
			t.Fatalf("%s: audit %+v, want would %s", c.tool, got, c.would)
		}
	}
	// A batch: each line its own call's verdict.
	batch := "[" + mcpCall(1, "delete_file", `{}`) + "," + mcpCall(2, "echo", `{}`) + "]"
	if resp, b := m.post(t, "", "application/json", strings.NewReader(batch)); resp.StatusCode != 200 {
		t.Fatalf("batch: %d %s", resp.StatusCode, b)
	}
	if a, b := m.audit.next(t), m.audit.next(t); a.Would != "deny" || b.Would != "allow" || a.Tool != "delete_file" || b.Tool != "echo" {
		t.Fatalf("batch audit %+v / %+v", a, b)
	}
	resp, b := m.post(t, "", "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`))
	if resp.StatusCode != 200 || !strings.Contains(string(b), "secret_tool") || !strings.Contains(string(b), "delete_file") {
		t.Fatalf("tools/list in audit mode: %d %s", resp.StatusCode, b)
	}
	select {
	case h := <-m.ap.holds:
		t.Fatalf("approver asked in audit mode: %+v", h)
	default:
	}
}

// A refused tools/call carries next_steps in error.data, as a 403 does: the
// tools entry's text, else the rule's, else clawd's hint for the error.
func TestMCPRefusalNextSteps(t *testing.T) {
	const pol = `
default:
  rules:
    - name: mcp
      hosts: api.example.com
      mcp: true
      action: allow
      next_steps: "ask in #agents for the tool you need"
      tools:
        - name: delete_file
          action: deny
          next_steps: "use move_to_trash instead"
        - name: echo
          action: allow
`
	m := newMCPEnvPolicy(t, pol, approval.Outcome{})
	for tool, want := range map[string]string{"delete_file": "use move_to_trash instead", "format_disk": "ask in #agents for the tool you need"} {
		_, b := m.post(t, "", "application/json", strings.NewReader(mcpCall(3, tool, `{}`)))
		m.audit.next(t)
		var r struct{ Error struct{ Data rpcDetail } }
		if err := json.Unmarshal(b, &r); err != nil || r.Error.Data.NextSteps != want {
			t.Errorf("%s: agent got %s, want next_steps %q", tool, b, want)
		}
	}
}

// The attack on the tools/list filter: a server's answer in any shape the
// filter did not expect (line endings, encodings, escapes, duplicate keys,
// a BOM, a batch, invalid JSON, another Content-Type) never shows the
// agent a hidden tool: it is filtered, or replaced by clawd's JSON-RPC
// error for the call.
func TestMCPToolsListOddShapes(t *testing.T) {
	const tools = `[{"name":"echo"},{"name":"secret_tool"},{"name":"delete_file"}]`
	msg := `{"jsonrpc":"2.0","id":9,"result":{"tools":` + tools + `}}`
	gz := func(s string) string {
		var b bytes.Buffer
		z := gzip.NewWriter(&b)
		io.WriteString(z, s)
		z.Close()
		return b.String()
	}
	type shape struct {
		name, ctype, coding, body string
		flushAt                   int  // > 0: flush after this many bytes (chunked)
		refused                   bool // else filtered
	}
	shapes := []shape{
		{"json", "application/json", "", msg, 0, false},
		{"json chunked", "application/json", "", msg, 20, false},
		{"json as text/plain", "text/plain", "", msg, 0, false},
		{"json without Content-Type", "", "", msg, 0, false},
		{"json as octet-stream", "application/octet-stream", "", msg, 0, false},
		{"json with charset and params", "Application/JSON; charset=utf-8", "", msg, 0, false},
		{"problem+json", "application/problem+json", "", msg, 0, false},
		{"BOM", "application/json", "", "\ufeff" + msg, 0, false},
		{"escaped tools key", "application/json", "", `{"jsonrpc":"2.0","id":9,"result":{"\u0074ools":` + tools + `}}`, 0, false},
		{"escaped names", "application/json", "", `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"echo"},{"name":"\u0073ecret_tool"},{"name":"delete\u005ffile"}]}}`, 0, false},
		{"batch", "application/json", "", `[{"jsonrpc":"2.0","id":8,"result":{}},` + msg + `]`, 0, false},
		{"gzip json", "application/json", "gzip", gz(msg), 0, false},
		{"GZIP json", "application/json", "GZIP", gz(msg), 0, false},
		{"gzip sse", "text/event-stream", "gzip", gz("data: " + msg + "\n\n"), 0, false},
		{"sse", "text/event-stream", "", "event: message\ndata: " + msg + "\n\n", 0, false},
		{"sse CR only", "text/event-stream", "", "event: message\rdata: " + msg + "\r\r", 0, false},
		{"sse CRLF", "text/event-stream", "", "event: message\r\ndata: " + msg + "\r\n\r\n", 0, false},
		{"sse CR then LF across chunks", "text/event-stream", "", "data: " + msg + "\r\n\r\n", len("data: " + msg + "\r"), false},
		{"sse no blank line before EOF", "text/event-stream", "", "data: " + msg + "\n", 0, false},
		{"sse no line end before EOF", "text/event-stream", "", "data: " + msg, 0, false},
		{"sse data without space", "text/event-stream", "", "data:" + msg + "\n\n", 0, false},
		{"sse multi-line data", "text/event-stream", "", "data: {\"jsonrpc\":\"2.0\",\"id\":9,\ndata: \"result\":{\"tools\":[{\"name\":\"echo\"},\ndata: {\"name\":\"secret_tool\"},{\"name\":\"delete_file\"}]}}\n\n", 0, false},
		{"sse BOM", "text/event-stream", "", "\ufeffdata: " + msg + "\n\n", 0, false},
		{"sse chunked mid-line", "text/event-stream", "", "data: " + msg + "\n\n", 30, false},
		{"sse escaped key", "text/event-stream", "", `data: {"jsonrpc":"2.0","id":9,"result":{"\u0074ools":` + tools + "}}\n\n", 0, false},
		{"invalid JSON", "application/json", "", msg[:len(msg)-1], 0, true},
		{"trailing data", "application/json", "", msg + ` {"x":1}`, 0, true},
		{"duplicate tools", "application/json", "", `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"echo"}],"tools":` + tools + `}}`, 0, true},
		{"duplicate escaped tools", "application/json", "", `{"jsonrpc":"2.0","id":9,"result":{"tools":[{"name":"echo"}],"\u0074ools":` + tools + `}}`, 0, true},
		{"invalid JSON as text/plain", "text/plain", "", msg[:len(msg)-1], 0, true},
		{"ndjson", "application/x-ndjson", "", msg + "\n" + msg + "\n", 0, true},
		{"UTF-16", "application/json; charset=utf-16", "", "{\x00\"\x00", 0, true},
		{"br", "application/json", "br", msg, 0, true},
		{"deflate", "application/json", "deflate", msg, 0, true},
		{"zstd sse", "text/event-stream", "zstd", "data: " + msg + "\n\n", 0, true},
		{"gzip twice", "application/json", "gzip, gzip", gz(gz(msg)), 0, true},
		{"gzip invalid", "application/json", "gzip", "not gzip " + msg, 0, true},
		{"sse invalid JSON", "text/event-stream", "", "data: " + msg[:len(msg)-1] + "\n\n", 0, true},
		{"sse duplicate tools", "text/event-stream", "", `data: {"jsonrpc":"2.0","id":9,"result":{"tools":[],"tools":` + tools + "}}\n\n", 0, true},
	}
	byName := map[string]shape{}
	for _, s := range shapes {
		byName[s.name] = s
	}
	p, err := policy.Parse([]byte(mcpPolicy), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		s := byName[r.URL.Query().Get("shape")]
		if s.ctype == "" {
			w.Header()["Content-Type"] = nil // no sniffing
		} else {
			w.Header().Set("Content-Type", s.ctype)
		}
		if s.coding != "" {
			w.Header().Set("Content-Encoding", s.coding)
		}
		if s.flushAt > 0 {
			io.WriteString(w, s.body[:s.flushAt])
			w.(http.Flusher).Flush()
			io.WriteString(w, s.body[s.flushAt:])
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(s.body)))
		io.WriteString(w, s.body)
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	for _, s := range shapes {
		t.Run(s.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", "http://api.example.com/mcp?shape="+url.QueryEscape(s.name), strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept-Encoding", "identity") // see the bytes as sent
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			ae := e.audit.next(t)
			got := string(b)
			if ce := resp.Header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("Content-Encoding %q reached the agent: %q", ce, got)
			}
			for _, hidden := range []string{"ecret", "elete", `\u`} {
				if strings.Contains(got, hidden) {
					t.Fatalf("the agent saw %q: %q", hidden, got)
				}
			}
			if s.refused {
				if !strings.Contains(got, `"id":9`) || !strings.Contains(got, `"error":"mcp_response_refused"`) || !strings.Contains(got, `"next_steps":"`) {
					t.Fatalf("not refused with a JSON-RPC error for the call: %d %q", resp.StatusCode, got)
				}
				if !strings.Contains(ae.Reason, "mcp answer refused") && !strings.Contains(ae.Reason, "mcp event refused") {
					t.Errorf("audit reason %q", ae.Reason)
				}
				return
			}
			if !strings.Contains(got, `{"name":"echo"}`) {
				t.Fatalf("filtered list lost the visible tool: %q", got)
			}
		})
	}
}
