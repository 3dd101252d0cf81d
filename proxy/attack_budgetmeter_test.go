package proxy

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// Red team, round 2, LLM budgets (issue 16): ways an agent gets far more
// generation than its budget is charged, with an honest upstream that
// bills what it generated. See docs/attacks/16-budget-r2.md.

// wsFrame is a server-to-client (unmasked) websocket text frame.
func wsFrame(payload string) []byte {
	b := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, 0, 0)
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	return append(b, payload...)
}

// HOLE: an OpenAI Realtime session (wss://api.openai.com/v1/realtime) is
// one upgraded request: clawd charges it its estimate (no body: 4096
// tokens) however long it lasts. The provider reports each response's
// usage in a `response.done` event on the socket; here ten responses of
// 20000 tokens each (200000 tokens) go through a 50000-token budget, which
// is never spent. A session can be kept open for as long as the provider
// allows (an hour), and reopened.
func TestAttackBudgetRealtimeWebsocketIsMetered(t *testing.T) {
	const responses, each = 10, 20000
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", 426)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		for i := 0; i < responses; i++ {
			brw.Write(wsFrame(`{"type":"response.output_text.delta","delta":"` + strings.Repeat("word ", 50) + `"}`))
			brw.Write(wsFrame(fmt.Sprintf(`{"type":"response.done","response":{"id":"resp_%d","status":"completed","usage":{"total_tokens":%d,"input_tokens":%d,"output_tokens":%d}}}`, i, each, each/2, each/2)))
		}
		brw.Flush()
	})
	// Fix (docs/attacks/16-budget-r2.md): an upgrade under a budget is
	// refused unless the budget opts in (TestBudgetUnmeterableRefused);
	// opted in, the session costs what its response.done events report.
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 50000, per: 1h, websocket: true}")
	})
	cl := e.client(up.addr(), nil, false)
	req, _ := http.NewRequest("GET", "http://api.example.com/v1/realtime?model=gpt-realtime", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(b), "response.done"); n != responses {
		t.Fatalf("the agent got %d responses, want %d", n, responses)
	}
	got := e.audit.next(t)
	if got.Tokens < responses*each {
		t.Errorf("a realtime session that reported %d tokens of usage was charged %d (%s, %s)", responses*each, got.Tokens, got.Usage, got.UsageReason)
	}
	// The budget (50000) should now be spent.
	req2, _ := http.NewRequest("GET", "http://api.example.com/v1/realtime?model=gpt-realtime", nil)
	req2.Header.Set("Connection", "Upgrade")
	req2.Header.Set("Upgrade", "websocket")
	resp2, err := cl.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != 429 {
		t.Errorf("after %d tokens against a 50000-token budget a new realtime session got %d, want 429", responses*each, resp2.StatusCode)
	}
}

// fakeOpenAIChat streams like OpenAI's Chat Completions: n choices, each
// generating `gen` tokens (the whole max_tokens when set, else what the
// model wanted: a reasoning model thinks long); usage is sent only when the
// request asked for it (stream_options.include_usage), as OpenAI does. The
// provider bills every choice's tokens either way.
func fakeOpenAIChat(gen int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req struct {
			N         int  `json:"n"`
			MaxTokens *int `json:"max_tokens"`
			MaxCT     *int `json:"max_completion_tokens"`
			Stream    bool `json:"stream"`
			Opts      *struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		n := max(req.N, 1)
		out := gen
		if req.MaxTokens != nil {
			out = min(out, *req.MaxTokens)
		}
		if req.MaxCT != nil {
			out = min(out, *req.MaxCT)
		}
		prompt := (len(body) + 3) / 4
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":%d,\"delta\":{\"content\":\"%s\"}}]}\n\n", i, strings.Repeat("x", 40))
		}
		if req.Opts != nil && req.Opts.IncludeUsage {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,\"completion_tokens_details\":{\"reasoning_tokens\":%d}}}\n\n", prompt, n*out, prompt+n*out, n*out/2)
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
}

// bodyUpstream is an upstream whose handler gets the request body.
func bodyUpstream(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.hits.Add(1)
		h(w, r, b)
	}))
	t.Cleanup(u.Close)
	return u
}

// HOLE: an OpenAI chat stream that does not ask for usage
// (stream_options.include_usage, off by default) is unmetered and costs
// its estimate: the body's bytes / 4 plus max_tokens (else 4096). The
// estimate counts one choice with the default cap; the provider bills
//   - n choices (n: 8 → 8 × max_tokens),
//   - a reasoning model's whole output when no cap is sent (OpenAI's
//     default is the model's maximum, 100k for o-series), not 4096.
//
// Each such request, one after the other (no concurrency needed), is
// charged a fraction of its cost: a 100000-token budget lets ~800000
// tokens through. A fix that makes clawd add include_usage to the stream
// (the fake upstream then reports the true total) passes this test.
func TestAttackBudgetUsagelessStreamIsUndercharged(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		bill int // what the provider bills for the generation
	}{
		{"n=8", `{"model":"gpt-4o","stream":true,"n":8,"max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, 8 * 1000},
		{"no cap on a reasoning model", `{"model":"o3","stream":true,"messages":[{"role":"user","content":"prove it"}]}`, 60000},
		{"n=8 and max_completion_tokens", `{"model":"gpt-4o","stream":true,"n":8,"max_completion_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, 8 * 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := bodyUpstream(t, fakeOpenAIChat(60000))
			e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
			cl := e.client(up.addr(), nil, false)
			resp, err := cl.Post("http://api.example.com/v1/chat/completions", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := e.audit.next(t)
			if got.Tokens < int64(tc.bill) {
				t.Errorf("a chat stream the provider bills %d output tokens for was charged %d (%s: %s)", tc.bill, got.Tokens, got.Usage, got.UsageReason)
			}
		})
	}
}

// HOLE: stateful requests carry their input by reference. An OpenAI
// Responses request with previous_response_id (also `conversation`, a
// stored `prompt`, a file_id) is billed the whole earlier context as input,
// but its body is a few bytes. Its stream reports usage only in
// response.completed; an agent that reads the answer and hangs up before
// that event is charged the body / 4 + max_output_tokens. Here the context
// was built once (metered: 100000 input tokens); each follow-up costs the
// provider 100000+ tokens and is charged ~40.
func TestAttackBudgetAbortedStatefulStreamIsUndercharged(t *testing.T) {
	const context = 100000
	up := bodyUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !strings.Contains(string(body), "previous_response_id") {
			// The context is built once, metered: 100000 input tokens.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":%d,"output_tokens":10,"total_tokens":%d}}`, context, context+10)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_2\",\"status\":\"in_progress\",\"usage\":null}}\n\n")
		io.WriteString(w, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"The answer is 42.\"}\n\n")
		io.WriteString(w, "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"text\":\"The answer is 42.\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		fmt.Fprintf(w, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_2\",\"status\":\"completed\",\"usage\":{\"input_tokens\":%d,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":8,\"total_tokens\":%d}}}\n\n", context+4, context+12)
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	first, err := cl.Post("http://api.example.com/v1/responses", "application/json", strings.NewReader(`{"model":"gpt-4.1","input":"`+strings.Repeat("context ", context/2)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, first.Body)
	first.Body.Close()
	if got := e.audit.next(t); got.Tokens != context+10 {
		t.Fatalf("building the context: charged %d, want %d", got.Tokens, context+10)
	}
	body := `{"model":"gpt-4.1","previous_response_id":"resp_1","input":"and so?","max_output_tokens":16,"stream":true}`
	resp, err := cl.Post("http://api.example.com/v1/responses", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l, "response.output_text.done") && strings.HasPrefix(l, "data:") {
			break // the agent has its answer
		}
	}
	resp.Body.Close()
	cl.CloseIdleConnections()
	got := e.audit.next(t)
	if got.Tokens < context {
		t.Errorf("a follow-up on a %d-token context, aborted before response.completed, was charged %d (%s: %s)", context, got.Tokens, got.Usage, got.UsageReason)
	}
}

// HELD: cross-container isolation. Container A spends its budget and
// holds its remaining room with slow requests that never finish (and a
// slowloris body that never arrives); container B, same rule, same
// upstream, is admitted with its whole budget, and its 429s come only
// from its own window.
func TestAttackBudgetCrossContainerIsolation(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		anthropicJSON(w, r) // 60 tokens
	})
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 2000, requests: 5, per: 1h}")
	})
	a := testContainer
	b := policy.Container{ID: "beef", Name: "agent-2", Runtime: "docker", Namespace: "moby"}
	ca, cb := clientAs(t, e.srv, a, up.addr()), clientAs(t, e.srv, b, up.addr())
	// A: three slow requests each reserving 508 (1524 of 2000 reserved).
	for i := 0; i < 3; i++ {
		go func() {
			resp, err := ca.Post("http://api.example.com/slow", "application/json", strings.NewReader(attackBudgetBody))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	// A: a slowloris body, its head sent, its body never.
	sl := serveAs(t, e.srv, a, up.addr())
	fmt.Fprintf(sl, "POST /v1/messages HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 100000\r\n\r\n{\"max_tokens\":")
	deadline := time.Now().Add(5 * time.Second)
	for {
		u := e.srv.usage.Usage(a.Key(), e.srv.cfg.Now())
		if len(u) == 1 && u[0].InFlight == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's slow requests never got in flight: %+v", u)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A is busy now.
	resp, err := ca.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Fatalf("A with 1524 of 2000 reserved: %d, want 429", resp.StatusCode)
	}
	// B gets its whole budget: three requests of 508 fit in 2000 at once,
	// and its five requests.
	for i := 0; i < 5; i++ {
		resp, err := cb.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("B request %d while A holds its own budget: %d %s", i, resp.StatusCode, b)
		}
	}
	resp, err = cb.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
	if err != nil {
		t.Fatal(err)
	}
	m := jsonBody(t, resp)
	if resp.StatusCode != 429 || m["error"] != "budget_exhausted" || !strings.Contains(fmt.Sprint(m["reason"]), "5 of 5 requests") {
		t.Fatalf("B's sixth request: %d %v, want its own request budget spent", resp.StatusCode, m)
	}
	if u := e.srv.usage.Usage(b.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != 300 || u[0].Requests != 5 {
		t.Fatalf("B's ledger %+v, want 300 tokens and 5 requests", u)
	}
}

// HELD: the 429 of a spent budget is one the SDKs stop on: Retry-After is
// the whole seconds until the window ends (never 0, never past it, even
// for a 31-day window), x-should-retry is false, and the JSON names the
// error; a budget_busy answer asks for a short retry.
func TestAttackBudget429Shape(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON)
	now := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 60, per: 31d}")
		c.Now = clock
	})
	cl := e.client(up.addr(), nil, false)
	post := func() *http.Response {
		resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{"max_tokens":1}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for _, adv := range []time.Duration{0, 31*24*time.Hour - 1500*time.Millisecond, time.Second - time.Nanosecond} {
		mu.Lock()
		now = now.Add(adv)
		left := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC).Add(31 * 24 * time.Hour).Sub(now)
		mu.Unlock()
		resp = post()
		m := jsonBody(t, resp)
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		want := int((left + time.Second - 1) / time.Second)
		if resp.StatusCode != 429 || err != nil || ra != want || ra < 1 || resp.Header.Get("x-should-retry") != "false" || m["error"] != "budget_exhausted" {
			t.Fatalf("%s before the window ends: %d Retry-After %q x-should-retry %q %v; want 429, Retry-After %d", left, resp.StatusCode, resp.Header.Get("Retry-After"), resp.Header.Get("x-should-retry"), m, want)
		}
	}
	// The window ends: a fresh one admits.
	mu.Lock()
	now = time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC).Add(31 * 24 * time.Hour)
	mu.Unlock()
	resp = post()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("in the next window: %d", resp.StatusCode)
	}
}

// HOLE (Anthropic, same class): a message_start reports the input known
// when generation starts; server tools (web_search, web_fetch, code
// execution) add their results to the input as the turn goes on, and only
// the closing message_delta reports the whole. An agent that hangs up
// once the tool results and the answer it wanted arrived is charged the
// first input and its max_tokens; the provider bills the searches' input.
func TestAttackBudgetAbortedServerToolStreamIsUndercharged(t *testing.T) {
	const fetched = 60000
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":50,\"output_tokens\":1}}}\n\n")
		io.WriteString(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srvtoolu_1\",\"name\":\"web_fetch\",\"input\":{}}}\n\n")
		io.WriteString(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"web_fetch_tool_result\",\"tool_use_id\":\"srvtoolu_1\",\"content\":{\"type\":\"web_fetch_result\",\"url\":\"https://example.com/big.pdf\"}}}\n\n")
		io.WriteString(w, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"Summary: ...\"}}\n\n")
		io.WriteString(w, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		fmt.Fprintf(w, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":%d,\"output_tokens\":200,\"server_tool_use\":{\"web_fetch_requests\":1}}}\n\n", 50+fetched)
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	body := `{"model":"claude","max_tokens":1000,"stream":true,"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}],"messages":[{"role":"user","content":"summarize https://example.com/big.pdf"}]}`
	resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(l, "data:") && strings.Contains(l, "content_block_stop") {
			break
		}
	}
	resp.Body.Close()
	cl.CloseIdleConnections()
	if got := e.audit.next(t); got.Tokens < fetched {
		t.Errorf("a turn whose server tool fetched %d tokens of input, aborted before message_delta, was charged %d (%s: %s)", fetched, got.Tokens, got.Usage, got.UsageReason)
	}
}

// HOLE (documented as a limit in docs/attacks/16-budget.md, re-tested for
// its size): the batch APIs. One uploaded input file (charged once, as
// unmetered bytes / 4) can be submitted as a batch again and again: each
// POST /v1/batches costs its ~4100-token estimate, and the results (a
// JSONL file whose every line reports its usage) are downloaded as an
// unmetered answer. Five batches of 100 requests of 16000 tokens (8M
// tokens billed) are charged ~50000 against a 1M budget.
func TestAttackBudgetBatchReuseIsUndercharged(t *testing.T) {
	const lines, perLine, batches = 100, 16000, 5
	up := bodyUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/files":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"file-in","object":"file","purpose":"batch","bytes":`+strconv.Itoa(len(body))+`}`)
		case r.Method == "POST" && r.URL.Path == "/v1/batches":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"batch_1","object":"batch","status":"validating","input_file_id":"file-in"}`)
		case r.Method == "GET" && r.URL.Path == "/v1/files/file-out/content":
			w.Header().Set("Content-Type", "application/octet-stream")
			for i := 0; i < lines; i++ {
				fmt.Fprintf(w, `{"id":"r%d","custom_id":"%d","response":{"status_code":200,"body":{"object":"chat.completion","choices":[{"message":{"content":"..."}}],"usage":{"prompt_tokens":16,"completion_tokens":%d,"total_tokens":%d}}}}`+"\n", i, i, perLine-16, perLine)
			}
		default:
			http.NotFound(w, r)
		}
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 24h}") })
	cl := e.client(up.addr(), nil, false)
	do := func(method, path, ct, body string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://api.example.com"+path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s %s: %d", method, path, resp.StatusCode)
		}
	}
	var file strings.Builder
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&file, `{"custom_id":"%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","max_tokens":%d,"messages":[{"role":"user","content":"write"}]}}`+"\n", i, perLine-16)
	}
	do("POST", "/v1/files", "application/jsonl", file.String())
	// Fix (docs/attacks/16-budget-r2.md): batch creation under a budget
	// that does not opt in (batches: true) is refused, before the upstream
	// sees it: the batch's requests cannot be metered. (The test as the
	// red team wrote it expected the batches to go through and be charged
	// what they cost; clawd does not meter result files, so it refuses.)
	for _, path := range []string{"/v1/batches", "/v1/batches/", "/v1/messages/batches", "/V1/BATCHES?x=1"} {
		req, _ := http.NewRequest("POST", "http://api.example.com"+path, strings.NewReader(`{"input_file_id":"file-in","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		m := jsonBody(t, resp)
		if resp.StatusCode != 403 || m["error"] != "budget_unmeterable" || !strings.Contains(fmt.Sprint(m["reason"]), "batches: true") || m["next_steps"] == "" {
			t.Errorf("POST %s under a budget: %d %v, want 403 budget_unmeterable", path, resp.StatusCode, m)
		}
	}
	before := up.hits.Load()
	do("GET", "/v1/files/file-out/content", "", "") // reading results is not creation
	if up.hits.Load() != before+1 {
		t.Errorf("the upstream saw no result download")
	}
	if n := up.hits.Load(); n != 2 {
		t.Errorf("the upstream saw %d requests, want 2 (the upload and one download; no batch)", n)
	}
}

// HOLE: the budget is kept per container ID (policy.Container.Key). On
// Kubernetes (containerd, CRI) the kubelet restarts a pod's app container
// that exits as a NEW container: new ID, same pod UID and container name
// (io.kubernetes.* labels); a labelled pod auto-attaches it. An agent that
// spent its budget exits (kill 1) and comes back with a fresh one, every
// CrashLoopBackOff period (at most 5 minutes): ~288 budgets a day.
func TestAttackBudgetPodRestartResetsBudget(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON) // 60 tokens a call
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 100, per: 24h}") })
	pod := func(id string) policy.Container {
		return policy.Container{ID: id, Name: "agent", Runtime: "containerd", Namespace: "k8s.io", Labels: map[string]string{
			"io.cri-containerd.kind":       "container",
			"io.kubernetes.pod.uid":        "6f1c9d3e-0000-4000-8000-000000000001",
			"io.kubernetes.pod.name":       "agent-7d9f8",
			"io.kubernetes.pod.namespace":  "agents",
			"io.kubernetes.container.name": "agent",
		}}
	}
	post := func(cl *http.Client) int {
		t.Helper()
		resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{"max_tokens":10}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	first := clientAs(t, e.srv, pod("3b1f0c0ffee0000000000000000000000000000000000000000000000000001"), up.addr())
	for i := 0; i < 2; i++ {
		if code := post(first); code != 200 {
			t.Fatalf("spending %d: %d", i, code)
		}
	}
	if code := post(first); code != 429 {
		t.Fatalf("spent: %d, want 429", code)
	}
	// The agent exits; the kubelet starts the pod's container again.
	again := clientAs(t, e.srv, pod("9a7e0c0ffee0000000000000000000000000000000000000000000000000002"), up.addr())
	if code := post(again); code != 429 {
		t.Errorf("the same pod's container, restarted by the kubelet after spending its 24h budget: %d, want 429", code)
	}
}

// The layout round 1 recommends for free endpoints: a rule of their own
// without a budget, before the budgeted one.
const attackFreeEndpointsPolicy = `
default:
  rules:
    - name: free
      hosts: api.example.com
      intercept: true
      paths: [/v1/models, /v1/models/**]
      action: allow
    - name: llm
      hosts: api.example.com
      intercept: true
      action: allow
      budget: {tokens: 1000000, per: 1h}
`

// HOLE (low: only upstreams that route on the raw path): clawd decides on
// the path with dot segments resolved, and forwards the raw target. A
// request for /v1/messages/../models is the free rule's (/v1/models) to
// clawd, and a generation to an upstream or gateway that routes by prefix
// on the raw path without resolving dot segments (AWS ALB path patterns,
// hand-written gateways, an LLM proxy in front of the API): uncharged.
// Paths that resolve the other way (free-looking to the upstream,
// budgeted to clawd) cost a request that generates nothing.
func TestAttackBudgetDotSegmentsReachTheAPIUnbudgeted(t *testing.T) {
	var mu sync.Mutex
	var lastURI string
	up := bodyUpstream(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		lastURI = r.RequestURI
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if strings.HasPrefix(r.RequestURI, "/v1/messages") {
			io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"a long essay"}],"usage":{"input_tokens":3000,"output_tokens":30000}}`)
			return
		}
		io.WriteString(w, `{"data":[{"id":"claude"}]}`)
	})
	p, err := policy.Parse([]byte(attackFreeEndpointsPolicy), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	for _, path := range []string{"/v1/messages/../models", "/v1/messages/./../models", "/v1/messages/x/../../models", "/v1/messages/%2e%2e/models"} {
		c := e.dial(up.addr())
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: api.example.com\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, len(attackBudgetBody), attackBudgetBody)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		got := e.audit.next(t)
		if resp.StatusCode == 200 && strings.Contains(string(b), `"usage"`) && got.Tokens < 33000 {
			t.Errorf("%s: the upstream generated (33000 tokens) under rule %q, charged %d", path, got.Rule, got.Tokens)
		}
		// Fix: the path clawd decided on is the one forwarded.
		mu.Lock()
		uri := lastURI
		mu.Unlock()
		if uri != "/v1/models" {
			t.Errorf("%s: the upstream got %q, want the path clawd decided on, /v1/models", path, uri)
		}
	}
}

// HELD: window edges. A stream admitted just before its window ends and
// settled after it is charged to the window it ends in (not lost with the
// old one): right after, that window refuses once it is spent.
func TestAttackBudgetStreamAcrossWindowEdgeIsCharged(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		arrived <- struct{}{}
		<-release
		io.WriteString(w, "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":990}}\n\n")
	})
	start := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := start
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000, per: 1h}")
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	cl := e.client(up.addr(), nil, false)
	post := func(maxTokens int) *http.Response {
		resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(fmt.Sprintf(`{"max_tokens":%d}`, maxTokens)))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// Window 1 starts; the stream is admitted a second before it ends.
	mu.Lock()
	now = start.Add(time.Hour - time.Second)
	mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp := post(990)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	<-arrived
	mu.Lock()
	now = start.Add(2 * time.Hour)
	mu.Unlock()
	close(release)
	<-done
	e.audit.next(t)
	u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now())
	if len(u) != 1 || u[0].Tokens != 1000 || !u[0].Spent {
		t.Fatalf("after a stream that ended in the next window: %+v, want 1000 tokens spent there", u)
	}
	resp := post(1)
	resp.Body.Close()
	if resp.StatusCode != 429 {
		t.Fatalf("in the window the stream spent: %d, want 429", resp.StatusCode)
	}
}
