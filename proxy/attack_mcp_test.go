package proxy

// Red team, round 2 (issue 16, MCP gate): request bodies clawd reads one
// way and an MCP server on the official TypeScript SDK reads another.

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

// utf7Encode writes s as one UTF-7 (RFC 2152) base64 run: +<base64 of
// UTF-16BE, no padding>-. Every byte of it is a base64 letter, '+' or '-':
// inside a JSON string clawd reads them literally.
func utf7Encode(s string) string {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.BigEndian.PutUint16(b[2*i:], c)
	}
	return "+" + strings.TrimRight(base64.StdEncoding.EncodeToString(b), "=") + "-"
}

// utf7Decode is what iconv-lite's "utf-7" decoder (raw-body, body-parser:
// what express.json() and the SDK's SSEServerTransport use) does to a
// body: a '+' run of base64 is UTF-16BE, "+-" is '+', the rest is itself.
func utf7Decode(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			out.WriteByte(s[i])
			continue
		}
		j := i + 1
		for j < len(s) && strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", s[j]) >= 0 {
			j++
		}
		run := s[i+1 : j]
		if run == "" && j < len(s) && s[j] == '-' {
			out.WriteByte('+')
			i = j
			continue
		}
		b, _ := base64.RawStdEncoding.DecodeString(run[:len(run)/4*4+map[int]int{0: 0, 1: 0, 2: 2, 3: 3}[len(run)%4]])
		var u []uint16
		for k := 0; k+1 < len(b); k += 2 {
			u = append(u, binary.BigEndian.Uint16(b[k:]))
		}
		out.WriteString(string(utf16.Decode(u)))
		if j < len(s) && s[j] == '-' {
			j++
		}
		i = j - 1
	}
	return out.String()
}

// utf7Smuggle is a tools/call of the allowed tool echo, to clawd (valid
// UTF-8 JSON, no duplicate key), whose text argument decodes in UTF-7 to a
// second "params" member calling delete_file: JSON.parse keeps the last.
func utf7Smuggle(id int) string {
	pre := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"`, id)
	smuggled := `"}},"params":{"name":"delete_file","arguments":{"path":"/work/a"},"_meta":{"q":"`
	return pre + utf7Encode(smuggled) + `"}}}`
}

// A body's charset is the server's business: express.json() (the SDK's
// createMcpExpressApp) accepts any "utf-*" charset and the SDK's legacy
// SSEServerTransport any charset iconv-lite knows, and decode the body with
// it before JSON.parse. clawd decides on the bytes read as UTF-8, so a
// Content-Type of application/json; charset=utf-7 makes the server run a
// tool clawd never saw. The upstream here decodes like those servers and
// records the tool it would run: delete_file must never run.
func TestAttackMCPCharsetSmuggle(t *testing.T) {
	p, err := policy.Parse([]byte(mcpPolicy), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	})
	ap := &fakeApprover{out: approval.Outcome{}, holds: make(chan approval.Hold, 10)}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.Approver = ap })
	cl := e.client(up.addr(), nil, false)

	for _, ct := range []string{
		"application/json; charset=utf-7",
		"application/json; charset=UTF-7",
		`application/json; charset="utf-7"`,
		"application/json;charset=unicode-1-1-utf-7",
		// Spellings body-parser (content-type) also reads as UTF-7; a
		// fix must not miss them, nor the ones Go's mime cannot parse
		// (a duplicate parameter: content-type keeps the first).
		"application/json; CHARSET=UTF-7",
		"application/json; charset= utf-7",
		"application/json; charset=utf-7;",
		"application/json; charset=utf-7; charset=utf-8",
		`application/json; foo="a;charset=utf-8"; charset=utf-7`,
	} {
		t.Run(ct, func(t *testing.T) {
			body := utf7Smuggle(7)
			// What clawd reads: echo. What the server reads: delete_file.
			var clawdView, serverView struct {
				Params struct{ Name string } `json:"params"`
			}
			if err := json.Unmarshal([]byte(body), &clawdView); err != nil || clawdView.Params.Name != "echo" {
				t.Fatalf("clawd's view: %v %+v", err, clawdView)
			}
			if err := json.Unmarshal([]byte(utf7Decode(body)), &serverView); err != nil || serverView.Params.Name != "delete_file" {
				// encoding/json keeps the last duplicate, like JSON.parse.
				t.Fatalf("server's view of %s: %v %+v", utf7Decode(body), err, serverView)
			}
			hits := up.hits.Load()
			req, _ := http.NewRequest("POST", "http://api.example.com/mcp", strings.NewReader(body))
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			en := e.audit.next(t)
			if up.hits.Load() != hits {
				r, got := up.last()
				_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
				var sv struct {
					Params struct{ Name string } `json:"params"`
				}
				json.Unmarshal([]byte(utf7Decode(string(got))), &sv)
				t.Errorf("clawd forwarded a body labelled charset %q (audit: tool %q, %s) that the server decodes to tools/call %q; agent got %d %s",
					params["charset"], en.Tool, en.Action, sv.Params.Name, resp.StatusCode, b)
			}
		})
	}
}

// Bodies labelled with UTF-8 (any spelling) or no charset are read the
// same by clawd and the servers: the fix must not refuse them. (Passes.)
func TestAttackMCPCharsetUTF8Passes(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8"} {
		hits := m.up.hits.Load()
		resp, b := m.post(t, "", ct, strings.NewReader(mcpCall(1, "echo", `{"text":"hi"}`)))
		m.audit.next(t)
		if resp.StatusCode != 200 || m.up.hits.Load() != hits+1 {
			t.Errorf("%s: status %d hits %d: %s", ct, resp.StatusCode, m.up.hits.Load()-hits, b)
		}
	}
}

// Pipelined requests on one connection, written in one go before any
// answer: an allowed call, a denied one (Expect: 100-continue, chunked),
// then an allowed one. Each is decided on its own body: the denied call
// never reaches the server, the others do, and the agent gets three
// answers in order. (Passes: a regression test.)
func TestAttackMCPPipelined(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	c := m.dial(m.up.addr())
	req := func(body string, extra string) string {
		return "POST /mcp HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n" +
			extra + fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body)
	}
	denied := mcpCall(2, "delete_file", `{"path":"/work/a"}`)
	chunked := "POST /mcp HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(denied), denied)
	all := req(mcpCall(1, "echo", `{"text":"a"}`), "") + chunked + req(mcpCall(3, "echo", `{"text":"c"}`), "")
	if _, err := io.WriteString(c, all); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var got []string
	for i := 0; i < 3; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v (got %q)", i+1, err, got)
		}
		if resp.StatusCode == 100 {
			i--
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, string(b))
	}
	for i := 0; i < 3; i++ {
		m.audit.next(t)
	}
	if m.up.hits.Load() != 2 {
		t.Errorf("upstream saw %d requests, want 2 (the two echo calls)", m.up.hits.Load())
	}
	for _, b := range m.up.body {
		if strings.Contains(string(b), "delete_file") {
			t.Errorf("the denied call reached the upstream: %s", b)
		}
	}
	if !strings.Contains(got[0], "ran echo") || !strings.Contains(got[1], `denied by rule`) || !strings.Contains(got[2], "ran echo") {
		t.Errorf("answers %q", got)
	}
}
