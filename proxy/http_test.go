package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
)

func TestHTTPDecisions(t *testing.T) {
	tests := []struct {
		name       string
		rules      []rule
		def        policy.Action
		url        string
		forbidden  bool
		wantStatus int
		wantError  string // JSON "error"; "" = upstream answered
		wantRule   string
		wantHits   int64
	}{
		{name: "default allow", def: policy.Allow, url: "http://api.example.com/v1/x", wantStatus: 200, wantHits: 1},
		{name: "default deny", def: policy.Deny, url: "http://api.example.com/v1/x", wantStatus: 403, wantError: "blocked_by_policy", wantRule: "default"},
		{name: "policy blocks by path", def: policy.Allow, rules: []rule{{name: "no-admin", pathPrefix: "/admin", action: policy.Deny}},
			url: "http://api.example.com/admin/users?x=1", wantStatus: 403, wantError: "blocked_by_policy", wantRule: "no-admin"},
		{name: "other path allowed", def: policy.Allow, rules: []rule{{name: "no-admin", pathPrefix: "/admin", action: policy.Deny}},
			url: "http://api.example.com/public", wantStatus: 200, wantHits: 1},
		{name: "enabled rule applies", def: policy.Deny, rules: []rule{{name: "allow-get", method: "GET", action: policy.Allow}},
			url: "http://api.example.com/", wantStatus: 200, wantHits: 1},
		{name: "disabled rule ignored", def: policy.Deny, rules: []rule{{name: "allow-get", method: "GET", action: policy.Allow, disabled: true}},
			url: "http://api.example.com/", wantStatus: 403, wantError: "blocked_by_policy", wantRule: "default"},
		{name: "IP literal host needs no DNS", def: policy.Allow, url: "http://127.0.0.1/", wantStatus: 200, wantHits: 1},
		{name: "host not resolved to destination", def: policy.Allow, url: "http://evil.example.net/", wantStatus: 403, wantError: "host_mismatch", wantRule: ""},
		// 127.1 is hostname.Invalid, not an absent Host: it must not fall
		// back to the destination address, which would make it consistent.
		{name: "odd IPv4 form is no literal", def: policy.Allow, url: "http://127.1/", wantStatus: 403, wantError: "host_mismatch", wantRule: ""},
		{name: "v4-mapped literal host", def: policy.Allow, url: "http://[::ffff:127.0.0.1]/", wantStatus: 200, wantHits: 1},
		{name: "forbidden destination", def: policy.Allow, forbidden: true, url: "http://api.example.com/", wantStatus: 403, wantError: "blocked_by_policy", wantRule: "clawd-internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			e := newEnv(t, newDecider(tt.def, tt.rules...), func(c *Config) {
				if tt.forbidden {
					c.Forbidden = []netip.AddrPort{up.addr()}
				}
			})
			resp := mustGet(t, e.client(up.addr(), nil, false), tt.url)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantError != "" {
				m := jsonBody(t, resp)
				if m["error"] != tt.wantError {
					t.Errorf("error = %v, want %s", m["error"], tt.wantError)
				}
				if tt.wantRule != "" && m["rule"] != tt.wantRule {
					t.Errorf("rule = %v, want %s", m["rule"], tt.wantRule)
				}
				if resp.Header.Get("x-should-retry") != "false" {
					t.Errorf("x-should-retry = %q", resp.Header.Get("x-should-retry"))
				}
				if m["method"] != "GET" || m["host"] == nil || m["path"] == nil {
					t.Errorf("JSON lacks method/host/path: %v", m)
				}
				if p, _ := m["path"].(string); strings.Contains(p, "?") {
					t.Errorf("path %q holds the query", p)
				}
			} else {
				resp.Body.Close()
			}
			if got := up.hits.Load(); got != tt.wantHits {
				t.Errorf("upstream saw %d requests, want %d", got, tt.wantHits)
			}
			ent := e.audit.next(t)
			if ent.Event != "decision" || ent.Status != tt.wantStatus || ent.Proto != "http" || ent.Method != "GET" || ent.Container != "agent-1" || ent.ContainerID != "c0ffee" {
				t.Errorf("audit entry = %+v", ent)
			}
			if strings.Contains(ent.Path, "?") {
				t.Errorf("audit path %q holds the query", ent.Path)
			}
		})
	}
}

func TestHTTPRateLimit(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Deny, rule{name: "two-per-window", action: policy.Allow, limit: 2}), nil)
	c := e.client(up.addr(), nil, false)
	for i := 0; i < 2; i++ {
		resp := mustGet(t, c, "http://api.example.com/")
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	resp := mustGet(t, c, "http://api.example.com/")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status = %d, want 429", resp.StatusCode)
	}
	if got := resp.Header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want 3 (2.5s rounded up)", got)
	}
	if m := jsonBody(t, resp); m["error"] != "rate_limited" || m["rule"] != "two-per-window" {
		t.Errorf("body = %v", m)
	}
	if up.hits.Load() != 2 {
		t.Errorf("upstream saw %d, want 2", up.hits.Load())
	}
}

func TestHTTPBodyCondition(t *testing.T) {
	tests := []struct {
		body       string
		wantStatus int
		wantHits   int64
	}{
		{`{"model":"cheap"}`, 200, 1},
		{`{"model":"expensive"}`, 403, 0},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			e := newEnv(t, newDecider(policy.Allow, rule{name: "no-expensive", bodyContains: "expensive", action: policy.Deny}), nil)
			resp, err := e.client(up.addr(), nil, false).Post("http://api.example.com/v1/chat", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || up.hits.Load() != tt.wantHits {
				t.Fatalf("status %d hits %d, want %d %d", resp.StatusCode, up.hits.Load(), tt.wantStatus, tt.wantHits)
			}
			if tt.wantHits == 1 {
				if _, b := up.last(); string(b) != tt.body {
					t.Errorf("upstream body = %q, want %q", b, tt.body)
				}
			}
		})
	}
}

func TestRedirectReturnedNotFollowed(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.example/next", http.StatusFound)
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/start")
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://elsewhere.example/next" {
		t.Errorf("got %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if up.hits.Load() != 1 {
		t.Errorf("upstream saw %d requests, want 1", up.hits.Load())
	}
}

func TestUpstreamErrorStatusPassesThrough(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || string(b) != "short and stout" {
		t.Errorf("got %d %q", resp.StatusCode, b)
	}
}

func TestHopByHopStripped(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Kept", "yes")
		io.WriteString(w, "ok")
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	io.WriteString(c, "GET /h HTTP/1.1\r\nHost: api.example.com\r\n"+
		"Connection: keep-alive, X-Custom-Hop\r\nX-Custom-Hop: 1\r\nKeep-Alive: timeout=5\r\n"+
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: foo/1\r\n"+
		"X-End-To-End: stays\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Kept") != "yes" || resp.Header.Get("Keep-Alive") != "" {
		t.Errorf("response %d headers %v", resp.StatusCode, resp.Header)
	}
	r, _ := up.last()
	if r == nil {
		t.Fatal("upstream saw nothing")
	}
	for _, h := range []string{"X-Custom-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade", "X-Forwarded-For"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("upstream received hop-by-hop %s: %q", h, v)
		}
	}
	if r.Header.Get("X-End-To-End") != "stays" {
		t.Error("end-to-end header was dropped")
	}
}

func TestSSEUnbuffered(t *testing.T) {
	second := make(chan struct{})
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		<-second // only after the agent has read the first event
		io.WriteString(w, "data: two\n\n")
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/events")
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event = %q, %v", line, err)
	}
	close(second)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Errorf("rest = %q", rest)
	}
}

func TestWebSocketUpgrade(t *testing.T) {
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprint("allowed=", allowed), func(t *testing.T) {
			up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Upgrade") != "websocket" {
					http.Error(w, "want upgrade", 400)
					return
				}
				conn, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer conn.Close()
				io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				line, _ := brw.ReadString('\n')
				io.WriteString(conn, "echo: "+line)
			})
			act := policy.Deny
			if allowed {
				act = policy.Allow
			}
			e := newEnv(t, newDecider(policy.Allow, rule{name: "ws", pathPrefix: "/ws", action: act}), nil)
			c := e.dial(up.addr())
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !allowed {
				if resp.StatusCode != 403 || jsonBody(t, resp)["error"] != "blocked_by_policy" || up.hits.Load() != 0 {
					t.Fatalf("blocked upgrade: status %d hits %d", resp.StatusCode, up.hits.Load())
				}
				return
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status = %d", resp.StatusCode)
			}
			io.WriteString(c, "ping\n")
			line, err := br.ReadString('\n')
			if err != nil || line != "echo: ping\n" {
				t.Fatalf("echo = %q, %v", line, err)
			}
		})
	}
}

func TestKeepAliveEachRequestDecided(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	dec := newDecider(policy.Allow)
	e := newEnv(t, dec, nil)
	c := e.dial(up.addr())
	br := bufio.NewReader(c)
	get := func() int {
		io.WriteString(c, "GET /x HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(); s != 200 {
		t.Fatalf("first = %d", s)
	}
	dec.set(policy.Deny) // a policy reload between two requests on one connection
	if s := get(); s != 403 {
		t.Fatalf("second = %d, want 403", s)
	}
	if up.hits.Load() != 1 {
		t.Errorf("upstream saw %d", up.hits.Load())
	}
}

func TestDeadUpstream(t *testing.T) {
	dst := freeAddr(t)
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.Names = fakeNames{"api.example.com": dst.Addr()}
	})
	resp := mustGet(t, e.client(dst, nil, false), "http://api.example.com/")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status = %d", resp.StatusCode)
	}
	if m := jsonBody(t, resp); m["error"] != "upstream_unreachable" || m["reason"] == "" {
		t.Errorf("body = %v", m)
	}
}

// fakeApprover answers holds with a fixed outcome, or blocks until the
// request context ends when block is set.
type fakeApprover struct {
	out       approval.Outcome
	block     bool
	holds     chan approval.Hold
	cancelled chan struct{}
}

func (a *fakeApprover) Request(ctx context.Context, h approval.Hold) approval.Outcome {
	a.holds <- h
	if a.block {
		<-ctx.Done()
		close(a.cancelled)
		return approval.Outcome{Status: approval.StatusCancelled}
	}
	return a.out
}

func TestApprove(t *testing.T) {
	body := make([]byte, 20<<10) // > 16 KiB
	rand.Read(body)
	sum := sha256.Sum256(body)
	tests := []struct {
		name       string
		out        approval.Outcome
		wantStatus int
		wantError  string
		wantHits   int64
		wantRetry  string
	}{
		{"approved", approval.Outcome{Approved: true, Status: approval.StatusApproved, ID: "a1", By: "cli"}, 200, "", 1, ""},
		{"denied", approval.Outcome{Status: approval.StatusDenied, ID: "a1", By: "slack:U1", Reason: "nope"}, 403, "denied_by_approver", 0, ""},
		{"timeout", approval.Outcome{Status: approval.StatusTimeout, ID: "a1"}, 403, "approval_timeout", 0, ""},
		{"restarting", approval.Outcome{Status: approval.StatusRestarting}, 503, "clawd_restarting", 0, "5"},
		{"limit", approval.Outcome{Status: approval.StatusLimit}, 429, "approval_limit", 0, "30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			ap := &fakeApprover{out: tt.out, holds: make(chan approval.Hold, 1)}
			e := newEnv(t, newDecider(policy.Allow, rule{name: "pay", pathPrefix: "/pay", action: policy.Approve}), func(c *Config) { c.Approver = ap })
			resp, err := e.client(up.addr(), nil, false).Post("http://api.example.com/pay?amount=5", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			h := <-ap.holds
			if h.URL != "http://api.example.com/pay?amount=5" || h.Method != "POST" || h.BodySize != int64(len(body)) ||
				h.BodySHA256 != hex.EncodeToString(sum[:]) || len(h.Body) != defaultPreviewLimit || h.Rule != "pay" || h.Dst != up.addr().String() {
				t.Errorf("hold = %+v (body %d bytes)", h, len(h.Body))
			}
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantError != "" {
				if m := jsonBody(t, resp); m["error"] != tt.wantError {
					t.Errorf("body = %v", m)
				} else if tt.name == "denied" && (m["by"] != "slack:U1" || m["reason"] != "nope") {
					t.Errorf("denied body lacks by/reason: %v", m)
				}
			} else {
				resp.Body.Close()
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After = %q, want %q", got, tt.wantRetry)
			}
			if up.hits.Load() != tt.wantHits {
				t.Fatalf("upstream saw %d requests, want %d", up.hits.Load(), tt.wantHits)
			}
			if tt.wantHits == 1 {
				if _, got := up.last(); !bytes.Equal(got, body) {
					t.Error("upstream body differs from the approved body")
				}
			}
		})
	}
}

func TestApproveCancelledWhenAgentLeaves(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	ap := &fakeApprover{block: true, holds: make(chan approval.Hold, 1), cancelled: make(chan struct{})}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap })
	c := e.dial(up.addr())
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 3\r\n\r\nabc")
	<-ap.holds
	c.Close()
	<-ap.cancelled // the hold's context ended because the agent left
	if up.hits.Load() != 0 {
		t.Errorf("upstream saw %d", up.hits.Load())
	}
}

func TestApproveNotConfigured(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Approve), nil)
	resp := mustGet(t, e.client(up.addr(), nil, false), "http://api.example.com/")
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["reason"] != "approval not configured" {
		t.Errorf("got %d %v", resp.StatusCode, m)
	}
}

func TestHoldBodyTooLarge(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	ap := &fakeApprover{out: approval.Outcome{Approved: true, Status: "approved"}, holds: make(chan approval.Hold, 1)}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap; c.MaxHoldBody = 10 })
	resp, err := e.client(up.addr(), nil, false).Post("http://api.example.com/", "text/plain", strings.NewReader(strings.Repeat("x", 11)))
	if err != nil {
		t.Fatal(err)
	}
	if m := jsonBody(t, resp); resp.StatusCode != 413 || m["error"] != "body_too_large" {
		t.Errorf("got %d %v", resp.StatusCode, m)
	}
	if len(ap.holds) != 0 || up.hits.Load() != 0 {
		t.Error("oversized body was held or forwarded")
	}
}

// fakeInjector swaps the placeholder for the real key on the bound host.
type fakeInjector struct{ bound string }

type fakeInjection struct{}

func (fakeInjection) ScrubResponse(r *http.Response) {
	if r.Header.Get("X-Echo") == "real-secret" {
		r.Header.Set("X-Echo", "[redacted]")
	}
}
func (fakeInjection) Names() []string { return []string{"api-key"} }

func (f fakeInjector) Inject(r *http.Request, host string) (Injection, error) {
	if r.Header.Get("Authorization") != "Bearer PLACEHOLDER" {
		return fakeInjection{}, nil
	}
	if host != f.bound {
		return nil, fmt.Errorf("inject: %w", ErrPlaceholderMisuse)
	}
	r.Header.Set("Authorization", "Bearer real-secret")
	return fakeInjection{}, nil
}
func (f fakeInjector) BoundTo(host string) bool { return host == f.bound }
func (f fakeInjector) Hint(host string) string  { return "run `clawd secrets add` for " + host }

func TestInjection(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer real-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Echo", "real-secret")
	})
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.Injector = fakeInjector{bound: "api.example.com"}
		c.Names = fakeNames{"api.example.com": up.addr().Addr(), "other.example.com": up.addr().Addr()}
	})
	cl := e.client(up.addr(), nil, false)
	do := func(host, auth string) *http.Response {
		req, _ := http.NewRequest("GET", "http://"+host+"/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := do("api.example.com", "Bearer PLACEHOLDER")
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "[redacted]" {
		t.Errorf("bound host: %d X-Echo %q", resp.StatusCode, resp.Header.Get("X-Echo"))
	}
	e.audit.next(t)

	resp = do("other.example.com", "Bearer PLACEHOLDER")
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["error"] != "placeholder_misuse" {
		t.Errorf("misuse: %d %v", resp.StatusCode, m)
	}
	if up.hits.Load() != 1 {
		t.Errorf("upstream saw %d requests, want 1 (misuse must not be forwarded)", up.hits.Load())
	}
	if ent := e.audit.next(t); ent.Event != "exfiltration" || ent.Status != 403 {
		t.Errorf("audit = %+v", ent)
	}

	resp = do("other.example.com", "")
	resp.Body.Close()
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("x-clawd-hint"), "clawd secrets add") {
		t.Errorf("unbound 401: %d hint %q", resp.StatusCode, resp.Header.Get("x-clawd-hint"))
	}
}

func TestIsPlaceholderMisuse(t *testing.T) {
	if !IsPlaceholderMisuse(fmt.Errorf("x: %w", ErrPlaceholderMisuse)) || !IsPlaceholderMisuse(misuseErr{}) || IsPlaceholderMisuse(errors.New("other")) {
		t.Error("IsPlaceholderMisuse misclassifies")
	}
}

type misuseErr struct{}

func (misuseErr) Error() string           { return "misuse" }
func (misuseErr) PlaceholderMisuse() bool { return true }

func TestMetrics(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	reg := prometheus.NewRegistry()
	e := newEnv(t, newDecider(policy.Allow, rule{name: "no-admin", pathPrefix: "/admin", action: policy.Deny}), func(c *Config) { c.Registerer = reg })
	cl := e.client(up.addr(), nil, false)
	for _, p := range []string{"/a", "/admin", "/b"} {
		resp := mustGet(t, cl, "http://api.example.com"+p)
		resp.Body.Close()
		e.audit.next(t)
	}
	if got := counterValue(e.srv.m.decisions.WithLabelValues("allow", "default")); got != 2 {
		t.Errorf("allow/default = %v", got)
	}
	if got := counterValue(e.srv.m.decisions.WithLabelValues("deny", "no-admin")); got != 1 {
		t.Errorf("deny/no-admin = %v", got)
	}
	// A second server on the same registry shares the collectors.
	if _, err := New(Config{Decider: newDecider(policy.Allow), Registerer: reg}); err != nil {
		t.Errorf("second New on the same registry: %v", err)
	}
}

func TestShutdownClosesIdleConnections(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	br := bufio.NewReader(c)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("idle keep-alive connection still open after Shutdown")
	}
	// New connections are refused.
	c2 := e.dial(up.addr())
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(c2), nil); err == nil {
		t.Error("connection served after Shutdown")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without Decider succeeded")
	}
	if _, err := New(Config{Decider: newDecider(policy.Allow), MaxHoldBody: -1}); err == nil {
		t.Error("negative MaxHoldBody accepted")
	}
}

var _ net.Conn = (*bufConn)(nil)

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// A client that sends its whole body before reading gets clawd's own answer
// (403, 413) to a large body, not a reset that would discard it; a body
// within the drain bound even leaves the connection usable. A client that
// asked "Expect: 100-continue" is answered without being invited to send.
func TestLocalAnswerToLargeBody(t *testing.T) {
	const big = 8 << 20
	for _, tc := range []struct {
		name, method, path string
		header             string
		chunked, expect    bool
		want               int
		wantErr            string
	}{
		{name: "deny, Content-Length", path: "/deny/x", want: 403, wantErr: "blocked_by_policy"},
		{name: "deny, chunked", path: "/deny/x", chunked: true, want: 403, wantErr: "blocked_by_policy"},
		{name: "approve over the hold limit, Content-Length", path: "/approve/x", want: 413, wantErr: "body_too_large"},
		{name: "approve over the hold limit, chunked", path: "/approve/x", chunked: true, want: 413, wantErr: "body_too_large"},
		{name: "approve over the hold limit, Expect", path: "/approve/x", expect: true, want: 413, wantErr: "body_too_large"},
		{name: "deny, Expect", path: "/deny/x", expect: true, want: 403, wantErr: "blocked_by_policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			ap := &fakeApprover{out: approval.Outcome{Approved: true, Status: "approved"}, holds: make(chan approval.Hold, 1)}
			dec := newDecider(policy.Deny,
				rule{name: "ok", pathPrefix: "/ok", action: policy.Allow},
				rule{name: "hold", pathPrefix: "/approve", action: policy.Approve})
			e := newEnv(t, dec, func(c *Config) { c.Approver = ap; c.MaxHoldBody = 1 << 20 })
			c := e.dial(up.addr())
			head := "POST " + tc.path + " HTTP/1.1\r\nHost: api.example.com\r\n"
			if tc.chunked {
				head += "Transfer-Encoding: chunked\r\n"
			} else {
				head += "Content-Length: " + strconv.Itoa(big) + "\r\n"
			}
			if tc.expect {
				head += "Expect: 100-continue\r\n"
			}
			io.WriteString(c, head+"\r\n")
			sent := make(chan error, 1)
			if !tc.expect {
				// As a naive client: the whole body, then read.
				go func() {
					chunk := bytes.Repeat([]byte("x"), 64<<10)
					var err error
					for n := 0; n < big && err == nil; n += len(chunk) {
						if tc.chunked {
							_, err = fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk)
						} else {
							_, err = c.Write(chunk)
						}
					}
					if err == nil && tc.chunked {
						_, err = io.WriteString(c, "0\r\n\r\n")
					}
					sent <- err
				}()
			}
			c.SetReadDeadline(time.Now().Add(waitLimit))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			if m := jsonBody(t, resp); resp.StatusCode != tc.want || m["error"] != tc.wantErr {
				t.Fatalf("got %d %v, want %d %s", resp.StatusCode, m, tc.want, tc.wantErr)
			}
			if tc.expect {
				// Never invited: the connection closes, no body was read.
				if !resp.Close {
					t.Error("an uninvited body is pending, yet the connection stays open")
				}
				return
			}
			if err := <-sent; err != nil {
				t.Fatalf("sending the body: %v", err)
			}
			// The body was read to its end: the connection serves on.
			io.WriteString(c, "GET /ok/next HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
			if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("next request on the connection: %v %v", resp, err)
			}
			if len(ap.holds) != 0 || up.hits.Load() != 1 {
				t.Errorf("held %d, upstream saw %d requests; want 0 and 1 (the GET)", len(ap.holds), up.hits.Load())
			}
		})
	}
}
