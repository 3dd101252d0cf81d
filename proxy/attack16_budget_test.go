package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/usage"
)

// The red team's holes in LLM budgets (issue 16), each as the agent meets
// it. A request of the body below is estimated at 508 tokens: 8 for its
// 30 bytes, 500 for its max_tokens.

const attackBudgetBody = `{"model":"m","max_tokens":500}`

const attackBudgetEst = 508

func attackBudgetPolicy(t *testing.T, host, budget string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(fmt.Sprintf(`
default:
  rules:
    - name: llm
      hosts: %s
      intercept: true
      action: allow
      budget: %s
`, host, budget)), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	z := gzip.NewWriter(&b)
	io.WriteString(z, s)
	z.Close()
	return b.Bytes()
}

// unreadShapes answers, by path, every shape of answer clawd cannot read
// usage from. The usage is there, in a form clawd does not read, or not
// at all: the provider billed the generation either way.
func unreadShapes(w http.ResponseWriter, r *http.Request) {
	usageJSON := `{"type":"message","usage":{"input_tokens":3000,"output_tokens":3000}}`
	switch r.URL.Path {
	case "/gzip", "/br":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", strings.TrimPrefix(r.URL.Path, "/"))
		w.Write(gzipped(usageJSON))
	case "/audio":
		w.Header().Set("Content-Type", "audio/mpeg")
		io.WriteString(w, "ID3\x04 an answer read aloud")
	case "/none":
		w.Header()["Content-Type"] = nil
		io.WriteString(w, usageJSON)
	case "/undecodable":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage": {"input_tokens": 3000, "output_tokens": 3000}`+"\x00")
	case "/truncated":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "500")
		io.WriteString(w, `{"type":"message","content":[{"type":"text","text":"a long answer`)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream cuts it off
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n")
	case "/sse-cut":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case "/v1/audio/transcriptions":
		// Billed by duration: a usage object without a token count.
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"text":"hello","usage":{"type":"duration","seconds":600}}`)
	case "/v1/models", "/v1/batches":
		// Not a generation endpoint clawd knows: whole JSON, no usage.
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[{"id":"batch_1","status":"in_progress"}]}`)
	case "/ws":
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", 426)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello")
		brw.Flush()
		c.Close()
	default:
		http.NotFound(w, r)
	}
}

// Hole 1 (unread shapes cost nothing) and hole 2 (usageless flows): every
// answered request whose usage clawd cannot read costs its estimate, and
// its audit line says usage: unmetered and why; over plain HTTP/1.1 and
// intercepted HTTP/2. The upstream is asked for an identity-encoded answer
// (one it sent gzip anyway is charged).
func TestAttackBudgetUnreadShapesAreCharged(t *testing.T) {
	type shape struct {
		method, path string
		want         int64
		reason       string
	}
	shapes := []shape{
		{"POST", "/gzip", attackBudgetEst, usage.ReasonEncoded},
		{"POST", "/br", attackBudgetEst, usage.ReasonEncoded},
		{"POST", "/audio", attackBudgetEst, usage.ReasonType},
		{"POST", "/none", attackBudgetEst, usage.ReasonType},
		{"POST", "/undecodable", attackBudgetEst, usage.ReasonNoUsage},
		{"POST", "/truncated", attackBudgetEst, usage.ReasonCut},
		{"POST", "/sse", attackBudgetEst, usage.ReasonNoUsage},
		{"POST", "/sse-cut", attackBudgetEst, usage.ReasonCut},
		{"POST", "/v1/batches", attackBudgetEst, usage.ReasonNoUsage},
		{"POST", "/v1/audio/transcriptions", attackBudgetEst, usage.ReasonNoUsage},
		{"GET", "/v1/models", usage.DefaultOutput, usage.ReasonNoUsage}, // no body: 0 in, the default out
	}
	// Websockets and batches are refused under a budget that does not opt
	// in (TestBudgetUnmeterableRefused); opted in, they cost their estimate
	// (a websocket whose frames clawd cannot read: these are not frames).
	const optedIn = "{tokens: 1000000, per: 1h, websocket: true, batches: true}"
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "h2"}[h2], func(t *testing.T) {
			up := newUpstream(t, h2, h2, unreadShapes)
			host, scheme := "api.example.com", "http"
			var cl *http.Client
			var e *env
			if h2 {
				host, scheme = "example.com", "https"
				e = newEnv(t, nil, func(c *Config) {
					c.Decider = attackBudgetPolicy(t, host, optedIn)
					c.UpstreamRoots = upstreamPool(up)
				})
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(e.ca.CertPEM())
				cl = e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
			} else {
				e = newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, host, optedIn) })
				cl = e.client(up.addr(), nil, false)
			}
			all := shapes
			if !h2 {
				all = append(all, shape{"GET", "/ws", usage.DefaultOutput, usage.ReasonUpgrade})
			}
			var total int64
			for _, s := range all {
				var body io.Reader
				if s.method == "POST" {
					body = strings.NewReader(attackBudgetBody)
				}
				req, _ := http.NewRequest(s.method, scheme+"://"+host+s.path, body)
				req.Header.Set("Accept-Encoding", "gzip, br")
				if s.path == "/ws" {
					req.Header.Set("Connection", "Upgrade")
					req.Header.Set("Upgrade", "websocket")
				}
				resp, err := cl.Do(req)
				if err == nil {
					if h2 && resp.ProtoMajor != 2 {
						t.Fatalf("%s: agent spoke %s", s.path, resp.Proto)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				got := e.audit.next(t)
				if got.Tokens != s.want || got.Usage != "unmetered" || got.UsageReason != s.reason {
					t.Errorf("%s %s: audit tokens %d usage %q reason %q; want %d, unmetered, %q", s.method, s.path, got.Tokens, got.Usage, got.UsageReason, s.want, s.reason)
				}
				total += s.want
				if r, _ := up.last(); r.Header.Get("Accept-Encoding") != "identity" && s.path != "/ws" {
					t.Errorf("%s: upstream asked with Accept-Encoding %q, want identity", s.path, r.Header.Get("Accept-Encoding"))
				}
			}
			cl.CloseIdleConnections()
			if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != total || u[0].InFlight != 0 || u[0].Reserved != 0 {
				t.Fatalf("ledger %+v, want %d tokens, nothing in flight", u, total)
			}
		})
	}
}

// Hole 2 and hole 5: the agent aborts a stream the upstream never sent
// usage in, or (Anthropic) one after message_start reported the input and
// a first output count of 1: it is charged the input read (or estimated)
// plus its whole output estimate, never the smaller partial count.
func TestAttackBudgetAbortedStreamsKeepTheReservation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		first string
		want  int64
	}{
		{"no usage yet", "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"a\"}}\n\n", attackBudgetEst},
		{"after message_start", "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":30,\"output_tokens\":1}}}\n\n", 30 + 500},
		{"after a big message_start", "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":90000,\"cache_read_input_tokens\":5000,\"output_tokens\":1}}}\n\n", 95000 + 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, tc.first)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			})
			// An upstream that never ends the answer: the drain's bound
			// is hit (at once here), and the request costs its estimate.
			e := newEnv(t, nil, func(c *Config) {
				c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}")
				c.BudgetDrain = time.Nanosecond
			})
			cl := e.client(up.addr(), nil, false)
			resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			cl.CloseIdleConnections()
			if got := e.audit.next(t); got.Tokens != tc.want || got.Usage != "unmetered" || got.UsageReason != usage.ReasonCut {
				t.Fatalf("audit tokens %d usage %q %q, want %d unmetered (cut off)", got.Tokens, got.Usage, got.UsageReason, tc.want)
			}
		})
	}
}

// Hole 3: concurrent requests were all admitted while the budget had 1
// token left (a 40x overshoot). Each now reserves its estimate at
// admission: under 1100 tokens, of 40 concurrent requests estimated at 508
// two go through and 38 get 429 budget_busy (Retry-After, may retry); once
// spent to 1 token, all 40 get budget_exhausted; a request count is exact.
func TestAttackBudgetConcurrentOvershoot(t *testing.T) {
	const n = 40
	var release chan struct{}
	var arrived chan struct{}
	report := atomic.Int64{}
	report.Store(100)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"type":"message","usage":{"input_tokens":%d,"output_tokens":0}}`, report.Load())
	})
	run := func(t *testing.T, e *env, wantThrough int, wantCode string) {
		t.Helper()
		release, arrived = make(chan struct{}), make(chan struct{}, n)
		cl := e.client(up.addr(), nil, false)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[string]int{}
		refused := make(chan struct{}, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := cl.Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
				if err != nil {
					t.Error(err)
					refused <- struct{}{}
					return
				}
				code := fmt.Sprint(resp.StatusCode)
				if resp.StatusCode == 429 {
					m := jsonBody(t, resp)
					code = m["error"].(string)
					if retry := resp.Header.Get("x-should-retry"); (code == "budget_busy") != (retry == "") || resp.Header.Get("Retry-After") == "" {
						t.Errorf("%s: x-should-retry %q Retry-After %q", code, retry, resp.Header.Get("Retry-After"))
					}
					refused <- struct{}{}
				} else {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		// Every request is either at the upstream (held) or refused.
		for i := 0; i < n; i++ {
			select {
			case <-arrived:
			case <-refused:
			}
		}
		close(release)
		wg.Wait()
		if codes["200"] != wantThrough || codes[wantCode] != n-wantThrough {
			t.Fatalf("answers %v, want %d × 200 and %d × %s", codes, wantThrough, n-wantThrough, wantCode)
		}
	}
	t.Run("tokens", func(t *testing.T) {
		e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1100, per: 1h}") })
		run(t, e, 2, "budget_busy")
		// 2 × 100 spent; now spend down to 1 token left.
		report.Store(899)
		release, arrived = make(chan struct{}), make(chan struct{}, 1)
		close(release)
		resp, err := e.client(up.addr(), nil, false).Post("http://api.example.com/v1/messages", "application/json", strings.NewReader(attackBudgetBody))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("spending: %v %v", resp, err)
		}
		resp.Body.Close()
		if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); u[0].Tokens != 1099 {
			t.Fatalf("ledger %+v, want 1099 of 1100", u)
		}
		hits := up.hits.Load()
		run(t, e, 0, "budget_exhausted")
		if up.hits.Load() != hits {
			t.Fatalf("the upstream saw %d requests with 1 token left", up.hits.Load()-hits)
		}
	})
	t.Run("requests", func(t *testing.T) {
		report.Store(1)
		e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{requests: 3, per: 1h}") })
		run(t, e, 3, "budget_busy")
		run(t, e, 0, "budget_exhausted")
		if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); u[0].Requests != 3 {
			t.Fatalf("ledger %+v, want exactly 3 requests", u)
		}
	})
}

// Hole 4: the Host header set to the address (another rule allows it by
// cidrs) bypassed the spent budget of the name living there. The budget
// applies by the destination's names, in the gate.
func TestAttackBudgetHostAddressBypass(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON) // 60 tokens a call
	p, err := policy.Parse([]byte(`
default:
  rules:
    - name: llm
      hosts: api.example.com
      intercept: true
      action: allow
      budget: {tokens: 100, per: 1h}
    - name: lab
      cidrs: 127.0.0.0/8
      action: allow
`), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = fakeNames{"api.example.com": up.addr().Addr()}
	})
	cl := e.client(up.addr(), nil, false)
	post := func(host string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+host+"/v1/messages", strings.NewReader(`{"max_tokens":10}`))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := 0; i < 2; i++ {
		resp := post("api.example.com")
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("spending %d: %d", i, resp.StatusCode)
		}
		e.audit.next(t)
	}
	hits := up.hits.Load()
	for _, host := range []string{up.addr().String(), up.addr().Addr().String(), "[::ffff:" + up.addr().Addr().String() + "]:" + fmt.Sprint(up.addr().Port())} {
		resp := post(host)
		if resp.StatusCode != 429 {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Errorf("Host %s: %d %s, want 429 budget_exhausted", host, resp.StatusCode, b)
			continue
		}
		if m := jsonBody(t, resp); m["error"] != "budget_exhausted" || m["rule"] != "llm" {
			t.Errorf("Host %s: %v", host, m)
		}
	}
	if up.hits.Load() != hits {
		t.Fatalf("the upstream saw %d requests after the budget was spent", up.hits.Load()-hits)
	}
}

// Hole 6: a policy reload keeps the ledger (usage is kept by rule name, so
// a reload with new numbers and other rules keeps what was spent), and a
// request that settles after the ledger was closed (a daemon shutting down
// or restarting while a stream is open) is not lost.
func TestAttackBudgetReloadAndCloseKeepUsage(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":300}}\n\n")
			return
		}
		anthropicJSON(w, r)
	})
	path := filepath.Join(t.TempDir(), "budgets.json")
	l, err := usage.Open(path, func(err error) { t.Error(err) })
	if err != nil {
		t.Fatal(err)
	}
	dec := &swapDecider{}
	dec.p.Store(attackBudgetPolicy(t, "api.example.com", "{tokens: 1000, per: 1h}"))
	e := newEnv(t, nil, func(c *Config) { c.Decider = dec; c.Usage = l })
	cl := e.client(up.addr(), nil, false)
	post := func(path string) *http.Response {
		t.Helper()
		resp, err := cl.Post("http://api.example.com"+path, "application/json", strings.NewReader(`{"max_tokens":10}`))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post("/v1/messages")
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	slow := post("/slow")
	br := bufio.NewReader(slow.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	// A reload: new numbers, a rule added before it; same rule name.
	p2, err := policy.Parse([]byte(`
default:
  rules:
    - name: other
      hosts: other.example.com
      action: allow
    - name: llm
      hosts: api.example.com
      intercept: true
      action: allow
      budget: {tokens: 200, per: 1h}
`), "budget.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec.p.Store(p2)
	e.srv.Recheck("policy reloaded")
	if u := e.srv.usage.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != 60 || u[0].InFlight != 1 {
		t.Fatalf("after the reload: %+v, want 60 tokens spent and the stream in flight", u)
	}
	// The daemon closes the ledger (shutdown) while the stream is open;
	// the stream then ends and settles.
	l.Close()
	free()
	io.Copy(io.Discard, br)
	slow.Body.Close()
	e.audit.next(t)
	if got := e.audit.next(t); got.Tokens != 307 {
		t.Fatalf("stream audit %+v, want 307 tokens", got)
	}
	l2, err := usage.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if u := l2.Usage(testContainer.Key(), e.srv.cfg.Now()); len(u) != 1 || u[0].Tokens != 367 || u[0].Requests != 2 {
		t.Fatalf("the ledger on disk after the close: %+v, want 367 tokens, 2 requests", u)
	}
	// The reloaded budget (200) is spent at 367.
	resp = post("/v1/messages")
	if resp.StatusCode != 429 {
		t.Fatalf("after the reload: %d, want 429", resp.StatusCode)
	}
	resp.Body.Close()
}

// Hole 2, another layout: the agent hangs up on a non-streamed request
// while the provider is still generating (before the answer's head). The
// provider bills the generation; clawd charges its estimate.
func TestAttackBudgetAbortBeforeAnswerIsCharged(t *testing.T) {
	arrived := make(chan struct{}, 1)
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 1000000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://api.example.com/v1/messages", strings.NewReader(attackBudgetBody))
		_, err := cl.Do(req)
		done <- err
	}()
	<-arrived
	cancel()
	if err := <-done; err == nil {
		t.Fatal("the request was answered")
	}
	if got := e.audit.next(t); got.Tokens != attackBudgetEst || got.Usage != "unmetered" || got.UsageReason != usage.ReasonAbandoned {
		t.Fatalf("audit tokens %d usage %q %q, want %d unmetered (%s)", got.Tokens, got.Usage, got.UsageReason, attackBudgetEst, usage.ReasonAbandoned)
	}
}

// Hole 3, another encoding: a compressed request body hid its max_tokens
// (and most of its size) from the estimate, so concurrent requests each
// reserved far less than they could cost. It is decoded for the estimate.
func TestAttackBudgetCompressedRequestIsEstimated(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON)
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 10000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	for _, tc := range []struct {
		body   string
		status int
	}{{`{"model":"m","max_tokens":60000}`, 429}, {`{"model":"m","max_tokens":100}`, 200}} {
		req, _ := http.NewRequest("POST", "http://api.example.com/v1/messages", bytes.NewReader(gzipped(tc.body)))
		req.Header.Set("Content-Encoding", "gzip")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s gzipped: %d %s, want %d", tc.body, resp.StatusCode, b, tc.status)
		}
		if tc.status == 429 && !strings.Contains(string(b), "may cost 60008 tokens") {
			t.Fatalf("refusal %s, want the decoded estimate (60008)", b)
		}
	}
	// The upstream got the compressed bytes unchanged.
	if r, body := up.last(); r.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(body, gzipped(`{"model":"m","max_tokens":100}`)) {
		t.Fatalf("upstream saw %q %q", r.Header.Get("Content-Encoding"), body)
	}
}

// The same for a body longer than the peek, of unknown length (chunked) or
// not, whose max_tokens comes after 64 KiB of padding (or comes again
// there: JSON parsers keep the last): it is read whole for the estimate,
// and forwarded unchanged.
func TestAttackBudgetChunkedRequestIsEstimated(t *testing.T) {
	up := newUpstream(t, false, false, anthropicJSON)
	e := newEnv(t, nil, func(c *Config) { c.Decider = attackBudgetPolicy(t, "api.example.com", "{tokens: 100000, per: 1h}") })
	cl := e.client(up.addr(), nil, false)
	pad := strings.Repeat(" ", 70<<10)
	for _, tc := range []struct {
		cap     int
		chunked bool
		status  int
	}{{200000, true, 429}, {200000, false, 429}, {100, true, 200}, {100, false, 200}} {
		body := fmt.Sprintf(`{"model":"m","max_tokens":10,%s"max_tokens":%d}`, pad, tc.cap)
		req, _ := http.NewRequest("POST", "http://api.example.com/v1/messages", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = int64(len(body))
		if tc.chunked {
			req.ContentLength = -1
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("max_tokens %d after the peek, chunked: %d %s, want %d", tc.cap, resp.StatusCode, b, tc.status)
		}
		if tc.status == 200 {
			if _, got := up.last(); string(got) != body {
				t.Fatalf("upstream got %d bytes, want the %d sent", len(got), len(body))
			}
		}
	}
}
