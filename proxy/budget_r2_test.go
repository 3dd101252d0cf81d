package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// LLM budgets, round 2 (docs/attacks/16-budget-r2.md, holes 1 and 6):
// what a budget cannot meter is refused in the gate, before the upstream
// sees it, unless the rule's budget opts in: an upgraded connection
// (websocket: true; other upgrades and CONNECT always) and batch creation
// (batches: true). The refusal is a 403 that says why and what to do.
func TestBudgetUnmeterableRefused(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage":{"input_tokens":1,"output_tokens":1}}`)
	})
	for _, tc := range []struct {
		budget, method, path, upgrade string
		refused                       bool
	}{
		{"{tokens: 100000, per: 1h}", "GET", "/v1/realtime?model=m", "websocket", true},
		{"{tokens: 100000, per: 1h}", "GET", "/v1/realtime", "WebSocket", true},
		{"{tokens: 100000, per: 1h}", "GET", "/x", "foo/1", true},
		{"{tokens: 100000, per: 1h, websocket: true}", "GET", "/x", "foo/1", true},
		{"{tokens: 100000, per: 1h}", "POST", "/v1/batches", "", true},
		{"{tokens: 100000, per: 1h}", "POST", "/v1/messages/batches", "", true},
		{"{tokens: 100000, per: 1h}", "POST", "/v1beta/models/gemini:batchGenerateContent", "", true},
		{"{requests: 10, per: 1h}", "POST", "/openai/batches?api-version=1", "", true},
		{"{tokens: 100000, per: 1h, batches: true}", "POST", "/v1/batches", "", false},
		{"{tokens: 100000, per: 1h}", "GET", "/v1/batches", "", false},                 // listing
		{"{tokens: 100000, per: 1h}", "POST", "/v1/batches/batch_1/cancel", "", false}, // cancelling
		{"{tokens: 100000, per: 1h}", "POST", "/v1/messages", "h2c", false},            // h2c is never forwarded
	} {
		name := fmt.Sprintf("%s %s %s %s", tc.budget, tc.method, tc.path, tc.upgrade)
		e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", tc.budget) })
		cl := e.client(up.addr(), nil, false)
		var body io.Reader
		if tc.method == "POST" {
			body = strings.NewReader(`{"max_tokens":10}`)
		}
		req, _ := http.NewRequest(tc.method, "http://api.example.com"+tc.path, body)
		if tc.upgrade != "" {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", tc.upgrade)
		}
		before := up.hits.Load()
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !tc.refused {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 403 {
				t.Errorf("%s: refused", name)
			}
			continue
		}
		m := jsonBody(t, resp)
		if resp.StatusCode != 403 || m["error"] != "budget_unmeterable" || m["next_steps"] == "" || m["reason"] == "" {
			t.Errorf("%s: %d %v, want 403 budget_unmeterable with a reason and next_steps", name, resp.StatusCode, m)
		}
		if up.hits.Load() != before {
			t.Errorf("%s: the upstream saw the refused request", name)
		}
		if got := e.audit.next(t); got.Action != "deny" || !strings.Contains(got.Reason, "not metered") {
			t.Errorf("%s: audit %+v", name, got)
		}
	}
}

// Hole 5: a body the upstream reads differently from clawd's estimate is
// refused with 400 budget_unreadable_body, never guessed at; a JSON Lines
// upload (a batch input file) is not such a body.
func TestBudgetUnreadableBodyRefused(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON)
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
	}{
		{"BOM", []byte("\xef\xbb\xbf{\"max_tokens\":64000}"), 400},
		{"UTF-16LE", []byte("{\x00\"\x00m\x00\"\x00:\x001\x00}\x00"), 400},
		{"NaN", []byte(`{"temperature":NaN,"max_tokens":64000}`), 400},
		{"trailing bytes", []byte(`{"max_tokens":1} x`), 400},
		{"JSON Lines", []byte("{\"a\":1}\n{\"b\":2}\n"), 200},
		{"plain", []byte(`{"max_tokens":1}`), 200},
		{"big NaN (buffered first)", append(append([]byte(`{"messages":"`), bytes.Repeat([]byte("a"), 100<<10)...), []byte(`","x":NaN,"max_tokens":64000}`)...), 400},
	} {
		resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", bytes.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		m := jsonBody(t, resp)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %v, want %d", tc.name, resp.StatusCode, m, tc.status)
			continue
		}
		if tc.status == 400 && (m["error"] != "budget_unreadable_body" || m["next_steps"] == "") {
			t.Errorf("%s: %v, want budget_unreadable_body with next_steps", tc.name, m)
		}
		e.audit.next(t)
	}
}

// Hole 2: an OpenAI chat stream under a budget is forwarded asking for
// its usage (stream_options.include_usage, other stream_options kept, an
// exact Content-Length); the usage chunk reaches only an agent that asked
// for it, and the stream is metered either way.
func TestBudgetChatStreamAsksForUsage(t *testing.T) {
	var seen []string
	up := bodyUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		seen = append(seen, fmt.Sprintf("%d %s", r.ContentLength, body))
		fakeOpenAIChat(50)(w, r, body)
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	for _, tc := range []struct {
		body, forwarded string
		agentSeesUsage  bool
	}{
		{`{"model":"m","stream":true,"max_tokens":50,"n":2}`, `{"max_tokens":50,"model":"m","n":2,"stream":true,"stream_options":{"include_usage":true}}`, false},
		{`{"model":"m","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":false},"max_tokens":50,"x":"<&>"}`, `{"max_tokens":50,"model":"m","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true},"x":"<&>"}`, false},
		{`{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":50}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":50}`, true},
	} {
		seen = nil
		resp, err := cl.Post("http://api.example.com/v1/chat/completions", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %s", len(tc.forwarded), tc.forwarded); len(seen) != 1 || seen[0] != want {
			t.Errorf("%s: the upstream got %q, want %q", tc.body, seen, want)
		}
		if got := strings.Contains(string(b), `"usage"`); got != tc.agentSeesUsage || !strings.Contains(string(b), "[DONE]") {
			t.Errorf("%s: the agent got %s (usage shown: %v, want %v)", tc.body, b, got, tc.agentSeesUsage)
		}
		if got := e.audit.next(t); got.Usage != "" || got.Tokens < 50 {
			t.Errorf("%s: audit %d tokens %q, want metered", tc.body, got.Tokens, got.Usage)
		}
	}
}

// Mode audit (gate invariant 5): a budget's refusals are policy verdicts.
// An unmeterable request and an unreadable body go through, audited as
// would deny with the reason, and cost their estimate.
func TestBudgetAuditModeLetsUnmeterableThrough(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON)
	p, err := policy.Parse([]byte(`
sets:
  - name: learning
    match: {name: agent-1}
    mode: audit
    rules:
      - name: llm
        hosts: api.example.com
        intercept: true
        action: allow
        budget: {tokens: 1000000, per: 1h}
`), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	for _, tc := range []struct{ path, body, why string }{
		{"/v1/batches", `{"input_file_id":"f"}`, "batches: true"},
		{"/v1/messages", `{"max_tokens":1,"x":NaN}`, "not valid JSON"},
	} {
		resp, err := cl.Post("http://api.example.com"+tc.path, "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got := e.audit.next(t)
		if resp.StatusCode != 200 || got.Would != "deny" || !strings.Contains(got.Reason, tc.why) {
			t.Errorf("%s in mode audit: %d, audit would %q reason %q; want 200, would deny (%s)", tc.path, resp.StatusCode, got.Would, got.Reason, tc.why)
		}
	}
}
