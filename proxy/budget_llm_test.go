package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawd-dev/clawd/policy"
)

// LLM budgets (issue 16): what the agent gets, what the upstream saw, what
// the audit says, with the real policy engine.

const budgetPolicy = `
default:
  rules:
    - name: llm
      hosts: api.example.com
      intercept: true
      action: allow
      budget: {tokens: 100, per: 1h, unmetered: 1000}
`

func anthropicJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":40,"cache_read_input_tokens":5,"output_tokens":15}}`)
}

func TestBudgetJSONExhaustsAnd429(t *testing.T) {
	p, err := policy.Parse([]byte(budgetPolicy), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, anthropicJSON)
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	for i := 0; i < 2; i++ {
		// Each asks for at most 20 tokens: an estimate of 28 (8 for its
		// body, 20 of output), admitted while it fits.
		req, _ := http.NewRequest("POST", "http://api.example.com/v1/messages", strings.NewReader(`{"model":"m","max_tokens":20}`))
		req.Header.Set("Accept-Encoding", "gzip, br")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"output_tokens":15`) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		if got := e.audit.next(t); got.Tokens != 60 || got.Rule != "llm" {
			t.Fatalf("audit %d: %+v, want tokens 60", i, got)
		}
		// The upstream was asked for an answer clawd can read.
		if r, _ := up.last(); r.Header.Get("Accept-Encoding") != "identity" {
			t.Fatalf("upstream saw Accept-Encoding %q, want identity", r.Header.Get("Accept-Encoding"))
		}
	}
	// 120 of 100 spent (the second request overshot: it was admitted with
	// 40 left for an estimate of 28, and cost 60). The third is refused before the upstream sees it.
	resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("x-should-retry") != "false" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	m := jsonBody(t, resp)
	if m["error"] != "budget_exhausted" || m["rule"] != "llm" || m["retry_after"] == nil || !strings.Contains(m["reason"].(string), "120 of 100 tokens") {
		t.Fatalf("body %v", m)
	}
	if up.hits.Load() != 2 {
		t.Fatalf("upstream saw %d requests, want 2", up.hits.Load())
	}
	if got := e.audit.next(t); got.Action != "deny" || got.Status != 429 || !strings.Contains(got.Reason, "token budget") {
		t.Fatalf("denial audit %+v", got)
	}
	if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != 120 || u[0].Requests != 2 || !u[0].Spent {
		t.Fatalf("ledger %+v", u)
	}
}

// The agent aborts a stream after message_start to dodge the final usage:
// it is charged at least the rule's unmetered cost (1000; more than the
// input it saw plus its output estimate, 30 + 50).
func TestBudgetAbortedStreamIsCharged(t *testing.T) {
	p, err := policy.Parse([]byte(budgetPolicy), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	// The upstream never ends the answer: the drain's bound is hit (at
	// once here), and the request costs its estimate.
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.BudgetDrain = time.Nanosecond })
	cl := e.client(up.addr(), nil, false)
	resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{"stream":true,"max_tokens":50}`))
	if err != nil {
		t.Fatal(err)
	}
	// The event reaches the agent while the stream is open: the tap holds
	// no bytes back.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: message_start\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	resp.Body.Close()
	cl.CloseIdleConnections()
	if got := e.audit.next(t); got.Tokens != 1000 || got.Usage != "unmetered" || got.UsageReason != "answer cut off before its usage" {
		t.Fatalf("audit %+v, want tokens 1000 (the unmetered charge), usage unmetered", got)
	}
}

// An OpenAI chat stream without include_usage reports nothing: the request
// costs its estimate (4097: 1 for its body, 4096 for an output it names no
// cap for; more than the rule's unmetered 1000), as does an answer encoded
// against clawd's ask and a whole JSON answer without usage (a token
// count: clawd cannot tell it from a generation whose usage it cannot
// read); an error answer costs nothing.
func TestBudgetUnmeteredAndErrors(t *testing.T) {
	p, err := policy.Parse([]byte(strings.Replace(budgetPolicy, "tokens: 100,", "tokens: 100000,", 1)), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/chat/completions":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n")
		case "/v1/messages/count_tokens":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"input_tokens":5000}`)
		case "/gzip":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			io.WriteString(w, "\x1f\x8b not really")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(529)
			io.WriteString(w, `{"type":"error","error":{"type":"overloaded_error"}}`)
		}
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	for _, tc := range []struct {
		path   string
		status int
		tokens int64
	}{{"/v1/messages", 529, 0}, {"/v1/messages/count_tokens", 200, 4097}, {"/gzip", 200, 4097}, {"/v1/chat/completions", 200, 4097}} {
		resp, err := cl.Post("http://api.example.com"+tc.path, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s: status %d", tc.path, resp.StatusCode)
		}
		if got := e.audit.next(t); got.Tokens != tc.tokens {
			t.Fatalf("%s: audit tokens %d, want %d", tc.path, got.Tokens, tc.tokens)
		}
	}
}

// A policy reload re-decides an open stream (Recheck) without admitting it
// again: the request is settled once, nothing stays in flight, and the
// metrics show the container's usage.
func TestBudgetRecheckSettlesOnceAndMetrics(t *testing.T) {
	p, err := policy.Parse([]byte(strings.Replace(budgetPolicy, "tokens: 100,", "tokens: 100, requests: 5,", 1)), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n")
	})
	reg := prometheus.NewRegistry()
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.Registerer = reg })
	cl := e.client(up.addr(), nil, false)
	resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{"stream":true,"max_tokens":20}`))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		e.srv.Recheck("policy reloaded")
	}
	if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].InFlight != 1 || u[0].Reserved != 28 {
		t.Fatalf("while streaming: %+v, want one request in flight, 28 tokens reserved", u)
	}
	close(release)
	io.Copy(io.Discard, br)
	resp.Body.Close()
	if got := e.audit.next(t); got.Tokens != 11 {
		t.Fatalf("audit %+v, want tokens 11", got)
	}
	u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now())
	if len(u) != 1 || u[0].InFlight != 0 || u[0].Reserved != 0 || u[0].Requests != 1 || u[0].Tokens != 11 {
		t.Fatalf("after the stream: %+v, want 1 request, 11 tokens, none in flight", u)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "clawd_budget_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	for k, v := range map[string]string{
		"clawd_budget_tokens_used{budget=default/llm,container=agent-1}":     "11",
		"clawd_budget_tokens_limit{budget=default/llm,container=agent-1}":    "100",
		"clawd_budget_requests_used{budget=default/llm,container=agent-1}":   "1",
		"clawd_budget_tokens_reserved{budget=default/llm,container=agent-1}": "0",
		"clawd_budget_tokens_total{budget=default/llm}":                      "11",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %s (all: %v)", k, got[k], v, got)
		}
	}
}

// The same over intercepted HTTPS and HTTP/2: the agent resets its stream
// after message_start (RST_STREAM, the connection stays) and is charged;
// the next request gets the 429 with its headers.
func TestBudgetH2AbortedStreamAnd429(t *testing.T) {
	p, err := policy.Parse([]byte(strings.Replace(budgetPolicy, "hosts: api.example.com", "hosts: example.com", 1)), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, true, true, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	e := newEnv(t, nil, func(c *Config) {
		c.Decider, c.UpstreamRoots = p, upstreamPool(up)
		c.BudgetDrain = time.Nanosecond // the upstream never ends the answer
	})
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
	resp, err := cl.Post("https://example.com/v1/messages", "application/json", strings.NewReader(`{"stream":true,"max_tokens":50}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Fatalf("agent spoke %s, want HTTP/2", resp.Proto)
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // RST_STREAM
	if got := e.audit.next(t); got.Tokens != 1000 || got.Usage != "unmetered" {
		t.Fatalf("audit %+v, want tokens 1000, unmetered", got)
	}
	resp, err = cl.Post("https://example.com/v1/messages", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || resp.Header.Get("x-should-retry") != "false" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
	}
	if m := jsonBody(t, resp); m["error"] != "budget_exhausted" {
		t.Fatalf("body %v", m)
	}
	if up.hits.Load() != 1 {
		t.Fatalf("upstream saw %d, want 1", up.hits.Load())
	}
}

// A rule set in mode audit refuses nothing (issue 16): a spent budget lets
// the request through, the audit line says would deny, and its usage still
// counts in the ledger so the operator can size the budget.
func TestBudgetAuditModeRefusesNothing(t *testing.T) {
	p, err := policy.Parse([]byte(strings.Replace(budgetPolicy, "default:\n", "default:\n  mode: audit\n", 1)), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, anthropicJSON)
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	for i := 0; i < 3; i++ {
		resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(`{"model":"m","max_tokens":20}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		got := e.audit.next(t)
		want := "allow"
		if i == 2 {
			want = "deny" // 120 of 100 spent after two
		}
		if got.Tokens != 60 || got.Mode != "audit" || got.Would != want {
			t.Fatalf("audit %d: %+v, want tokens 60, mode audit, would %s", i, got, want)
		}
	}
	if up.hits.Load() != 3 {
		t.Fatalf("upstream saw %d requests, want 3", up.hits.Load())
	}
	if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != 180 || u[0].Requests != 3 {
		t.Fatalf("ledger %+v", u)
	}
}
