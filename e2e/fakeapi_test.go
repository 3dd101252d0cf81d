package e2e

// A fake of the Anthropic Messages API and the OpenAI Chat Completions API
// for the real-client suite (realclients_test.go): HTTPS on 443 in the
// upstream netns with a certificate for api.anthropic.com and
// api.openai.com from a test CA, answering in the shapes the SDKs and
// Claude Code parse (JSON and server-sent events), and recording what it
// received.

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const (
	fakeAnthropicHost = "api.anthropic.com"
	fakeOpenAIHost    = "api.openai.com"
	// maxFakeBody bounds a request body (the multi-megabyte prompt is 3 MiB).
	maxFakeBody = 32 << 20
	// gateWait bounds how long the fake waits for the client to show it
	// received one event before it sends the next. It is a safety net
	// against hangs: a stream that flows passes each gate at once.
	gateWait = 30 * time.Second
)

// apiSeen is one request the fake API received.
type apiSeen struct {
	Host      string
	Method    string
	Path      string
	Headers   http.Header
	Gzip      bool   // the body came gzip-encoded (Claude Code does that)
	BodyLen   int    // decoded
	BodySHA   string // of the decoded body
	Model     string
	Stream    bool
	Prompt    string // the last user message's text, cut to 300 bytes
	PromptLen int
	Status    int
}

type fakeAPI struct {
	CAFile string

	realAnthropic, realOpenAI string

	mu     sync.Mutex
	seen   []apiSeen
	gates  map[string]func(k int) bool // stream id -> has the client shown event k?
	misses []string                    // gates that timed out: "id: event k"
	sent   map[string][]time.Time      // stream id -> when each event was sent
}

var causalRE = regexp.MustCompile(`CAUSAL:([a-z0-9-]+)`)

// startFakeAPI serves the fake on [upstream]:443, v4 and v6. Requests must
// carry the real keys (what clawd injects), or they get the providers'
// 401 answers.
func startFakeAPI(t testing.TB, up *harness.Upstream, realAnthropic, realOpenAI string) *fakeAPI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clawd e2e fake API CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: fakeAnthropicHost},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames:    []string{fakeAnthropicHost, fakeOpenAIHost},
		IPAddresses: []net.IP{harness.UpstreamIPv4.AsSlice(), harness.UpstreamIPv6.AsSlice()},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fakeAPI{CAFile: filepath.Join(dir, "fake-api-ca.pem"), realAnthropic: realAnthropic, realOpenAI: realOpenAI,
		gates: map[string]func(int) bool{}, sent: map[string][]time.Time{}}
	if err := os.WriteFile(f.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	for _, ip := range []string{harness.UpstreamIPv4.String(), harness.UpstreamIPv6.String()} {
		l, err := up.Listen("tcp", net.JoinHostPort(ip, "443"))
		if err != nil {
			t.Fatalf("fake API listener: %v", err)
		}
		srv := &http.Server{
			Handler:           http.HandlerFunc(f.serve),
			TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
			ReadHeaderTimeout: 30 * time.Second,
		}
		go srv.ServeTLS(l, "", "")
		t.Cleanup(func() { srv.Close() })
	}
	return f
}

// Gate makes streams whose prompt holds CAUSAL:id send event k+1 only once
// got(k) is true (the client has shown it received event k).
func (f *fakeAPI) Gate(id string, got func(k int) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gates[id] = got
}

// Misses are the gates that timed out.
func (f *fakeAPI) Misses() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.misses...)
}

// Reset forgets what the fake received.
func (f *fakeAPI) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen, f.misses = nil, nil
}

func (f *fakeAPI) Requests() []apiSeen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]apiSeen(nil), f.seen...)
}

// Matching returns the requests whose prompt contains s.
func (f *fakeAPI) Matching(s string) []apiSeen {
	var out []apiSeen
	for _, r := range f.Requests() {
		if strings.Contains(r.Prompt, s) {
			out = append(out, r)
		}
	}
	return out
}

func (f *fakeAPI) record(s apiSeen) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, s)
}

type fakeRequest struct {
	Model     string            `json:"model"`
	Stream    bool              `json:"stream"`
	MaxTokens int               `json:"max_tokens"`
	Messages  []json.RawMessage `json:"messages"`
	// OpenAI chat: the stream's last chunk reports the usage only when
	// asked for, as OpenAI's does.
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// lastUserText is the text of the last user message (content as a string
// or as an array of text parts).
func lastUserText(msgs []json.RawMessage) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		var m struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(msgs[i], &m) != nil || m.Role != "user" {
			continue
		}
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			return s
		}
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		json.Unmarshal(m.Content, &parts)
		var b strings.Builder
		for _, p := range parts {
			if p.Type == "text" {
				b.WriteString(p.Text)
			}
		}
		return b.String()
	}
	return ""
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var body []byte
	var rd io.Reader = io.LimitReader(r.Body, maxFakeBody)
	gz := strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip")
	if gz {
		zr, err := gzip.NewReader(rd)
		if err == nil {
			rd = io.LimitReader(zr, maxFakeBody)
		}
	}
	body, _ = io.ReadAll(rd)
	sum := sha256.Sum256(body)
	s := apiSeen{Host: host, Method: r.Method, Path: r.URL.Path, Headers: r.Header.Clone(), Gzip: gz, BodyLen: len(body), BodySHA: hex.EncodeToString(sum[:])}
	var req fakeRequest
	json.Unmarshal(body, &req)
	s.Model, s.Stream = req.Model, req.Stream
	prompt := lastUserText(req.Messages)
	s.PromptLen = len(prompt)
	s.Prompt = prompt
	if len(s.Prompt) > 300 {
		s.Prompt = s.Prompt[:300]
	}
	reply := fmt.Sprintf("pong %d", len(prompt))
	streamID := ""
	if m := causalRE.FindStringSubmatch(prompt); m != nil {
		streamID = m[1]
	}

	status := 200
	defer func() { s.Status = status; f.record(s) }()
	switch {
	case host == fakeAnthropicHost && r.Method == "POST" && r.URL.Path == "/v1/messages":
		if r.Header.Get("X-Api-Key") != f.realAnthropic {
			status = 401
			writeFakeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"type": "authentication_error", "message": "invalid x-api-key"}})
			return
		}
		if req.Stream {
			f.anthropicStream(w, req.Model, reply, streamID)
			return
		}
		writeFakeJSON(w, 200, map[string]any{
			"id": "msg_fake01", "type": "message", "role": "assistant", "model": req.Model,
			"content":     []any{map[string]any{"type": "text", "text": reply}},
			"stop_reason": "end_turn", "stop_sequence": nil,
			"usage": map[string]any{"input_tokens": 12, "output_tokens": 3},
		})
	case host == fakeOpenAIHost && r.Method == "POST" && r.URL.Path == "/v1/chat/completions":
		if r.Header.Get("Authorization") != "Bearer "+f.realOpenAI {
			status = 401
			writeFakeJSON(w, status, map[string]any{"error": map[string]any{"message": "Incorrect API key provided", "type": "invalid_request_error", "param": nil, "code": "invalid_api_key"}})
			return
		}
		if req.Stream {
			f.openAIStream(w, req.Model, reply, streamID, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
			return
		}
		writeFakeJSON(w, 200, map[string]any{
			"id": "chatcmpl-fake01", "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": reply, "refusal": nil}, "logprobs": nil, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
		})
	default:
		status = 404
		if host == fakeOpenAIHost {
			writeFakeJSON(w, status, map[string]any{"error": map[string]any{"message": "Unknown request URL: " + r.Method + " " + r.URL.Path, "type": "invalid_request_error", "param": nil, "code": "unknown_url"}})
			return
		}
		writeFakeJSON(w, status, map[string]any{"type": "error", "error": map[string]any{"type": "not_found_error", "message": "Not found: " + r.URL.Path}})
	}
}

func writeFakeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// deltas splits the reply into three text events.
func deltas(reply string) []string {
	a, b := len(reply)/3, 2*len(reply)/3
	return []string{reply[:a], reply[a:b], reply[b:]}
}

// event sends one SSE event (Anthropic style when name != "") and flushes.
func sseEvent(w http.ResponseWriter, name string, data any) {
	b, _ := json.Marshal(data)
	var buf bytes.Buffer
	if name != "" {
		fmt.Fprintf(&buf, "event: %s\n", name)
	}
	fmt.Fprintf(&buf, "data: %s\n\n", b)
	w.Write(buf.Bytes())
	w.(http.Flusher).Flush()
}

// gate waits, after text event k of stream id went out, until the client
// has shown it received it.
func (f *fakeAPI) gate(id string, k int) {
	f.mu.Lock()
	f.sent[id] = append(f.sent[id], time.Now())
	got := f.gates[id]
	f.mu.Unlock()
	if id == "" || got == nil {
		return
	}
	deadline := time.Now().Add(gateWait)
	for !got(k) {
		if time.Now().After(deadline) {
			f.mu.Lock()
			f.misses = append(f.misses, fmt.Sprintf("%s: the client had not received event %d %v after it was sent", id, k, gateWait))
			f.mu.Unlock()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fakeAPI) anthropicStream(w http.ResponseWriter, model, reply, id string) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Request-Id", "req_fake")
	w.WriteHeader(200)
	sseEvent(w, "message_start", map[string]any{"type": "message_start", "message": map[string]any{
		"id": "msg_fake02", "type": "message", "role": "assistant", "model": model, "content": []any{},
		"stop_reason": nil, "stop_sequence": nil, "usage": map[string]any{"input_tokens": 12, "output_tokens": 1}}})
	sseEvent(w, "content_block_start", map[string]any{"type": "content_block_start", "index": 0, "content_block": map[string]any{"type": "text", "text": ""}})
	sseEvent(w, "ping", map[string]any{"type": "ping"})
	ds := deltas(reply)
	for i, d := range ds {
		sseEvent(w, "content_block_delta", map[string]any{"type": "content_block_delta", "index": 0, "delta": map[string]any{"type": "text_delta", "text": d}})
		if i < len(ds)-1 {
			f.gate(id, i+1)
		}
	}
	sseEvent(w, "content_block_stop", map[string]any{"type": "content_block_stop", "index": 0})
	sseEvent(w, "message_delta", map[string]any{"type": "message_delta", "delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil}, "usage": map[string]any{"output_tokens": 3}})
	sseEvent(w, "message_stop", map[string]any{"type": "message_stop"})
}

func (f *fakeAPI) openAIStream(w http.ResponseWriter, model, reply, id string, usage bool) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	chunk := func(delta map[string]any, finish any) map[string]any {
		return map[string]any{"id": "chatcmpl-fake02", "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}}}
	}
	sseEvent(w, "", chunk(map[string]any{"role": "assistant", "content": ""}, nil))
	ds := deltas(reply)
	for i, d := range ds {
		sseEvent(w, "", chunk(map[string]any{"content": d}, nil))
		if i < len(ds)-1 {
			f.gate(id, i+1)
		}
	}
	sseEvent(w, "", chunk(map[string]any{}, "stop"))
	if usage {
		sseEvent(w, "", map[string]any{"id": "chatcmpl-fake02", "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": model,
			"choices": []any{}, "usage": map[string]any{"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
	}
	w.Write([]byte("data: [DONE]\n\n"))
	w.(http.Flusher).Flush()
}
