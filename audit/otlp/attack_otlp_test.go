package otlp

// Red-team regression tests (docs/attacks/audit.md). Tests that fail mark
// holes; the ones marked HELD are attacks the code withstood.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/audit"
)

// HOLE (medium): a line longer than MaxRecordBytes is exported cut at
// byte 65536, which can fall inside a UTF-8 character (an agent's request
// path of "é"s, say). The body is then invalid UTF-8, which protobuf
// refuses to marshal as a string: the whole export request fails, and
// with it every short line batched with the long one.
func TestAttackLongLineCutInsideUTF8LosesItsBatch(t *testing.T) {
	c := newCollector(t)
	reg := prometheus.NewRegistry()
	e, err := newStopped(Config{Endpoint: c.srv.URL, BatchInterval: time.Hour}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	prefix := `{"time":"2026-01-01T00:00:00Z","event":"decision","path":"/`
	// Make byte MaxRecordBytes-1 the first byte of a two-byte "é".
	pad := strings.Repeat("a", (MaxRecordBytes-1-len(prefix))%2)
	long := []byte(prefix + pad + strings.Repeat("é", MaxRecordBytes/2+1<<10) + `","seq":2}`)
	if utf8.Valid(long[:MaxRecordBytes]) {
		t.Fatal("the cut does not split a character: the test does not test")
	}
	e.Tee([]byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","path":"/a","seq":1}`))
	e.Tee(long)
	e.Tee([]byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","path":"/b","seq":3}`))
	go e.run()
	e.Close(context.Background())
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.records) != 3 {
		t.Fatalf("collector got %d of 3 records (exported %v, failed %v): a long line cut inside a UTF-8 character took its batch down",
			len(c.records), exportCount(t, reg, "exported"), exportCount(t, reg, "failed"))
	}
}

// HOLE (medium): the queue is bounded in bytes by what a line will
// become (at most MaxRecordBytes), but Tee keeps a copy of the whole line
// until the run goroutine has parsed it. Lines of 1 MiB (an agent's
// request path can be that long) hold 16 times what QueueBytes allows.
func TestAttackQueueHoldsWholeLongLines(t *testing.T) {
	c := newCollector(t)
	const queueBytes = 1 << 20
	e, err := newStopped(Config{Endpoint: c.srv.URL, QueueSize: 4096, QueueBytes: queueBytes}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	long := []byte(`{"event":"decision","path":"/` + strings.Repeat("a", 4<<20) + `","seq":1}`)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 64 {
		e.Tee(long)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if held > 4*queueBytes {
		t.Fatalf("QueueBytes %d, but the export queue holds %d MiB of lines", queueBytes, held>>20)
	}
	runtime.KeepAlive(e)
}

// HOLE (medium): an endpoint URL with a query (a token, as some hosted
// collectors take it) is accepted; clawd's own log line redacts the query,
// but the SDK's export error quotes the URL, and that error is logged.
func TestAttackEndpointQuerySecretInExportErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	core, logs := observer.New(zap.DebugLevel)
	lg := zap.New(core)
	ep := "http://" + addr + "/v1/logs?api_key=s3cret-token"
	e, err := New(Config{Endpoint: ep, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), lg)
	if err != nil {
		// Refusing the query, as userinfo is, would hold too.
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("the refusal quotes the secret: %v", err)
		}
		return
	}
	e.Tee([]byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","seq":1}`))
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cerr := e.Close(ctx)
	if cerr != nil && strings.Contains(cerr.Error(), "s3cret") {
		t.Errorf("Close's error (logged by the daemon) holds the endpoint's secret: %v", cerr)
	}
	for _, en := range logs.All() {
		s := en.Message
		for k, v := range en.ContextMap() {
			s += fmt.Sprintf(" %s=%v", k, v)
		}
		if strings.Contains(s, "s3cret") {
			t.Fatalf("a log line holds the endpoint's secret: %s", s)
		}
	}
}

// HOLE (medium): a collector outage longer than the export timeout loses
// the lines of the outage from the collector for good: they were counted
// as failed and are never sent again, although the JSONL file has them
// (no cursor, no backfill). The collector's copy, meant to be the one
// that left the host, has a gap.
func TestAttackCollectorOutageLeavesPermanentGap(t *testing.T) {
	c := newCollector(t)
	var down atomic.Bool
	down.Store(true)
	inner := c.srv.Config.Handler
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	})
	reg := prometheus.NewRegistry()
	e, err := New(Config{Endpoint: c.srv.URL, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprintf("/during-outage/%d", i), Action: "deny"})
	}
	time.Sleep(1500 * time.Millisecond) // the outage outlasts the export timeout
	down.Store(false)
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprintf("/after/%d", i), Action: "allow"})
	}
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Close(ctx)
	// At least once: a batch whose answer came after the export timeout
	// (a loaded machine) is sent again, so a line may arrive twice; none
	// may be missing.
	_, times := seqsOf(c)
	if len(times) != 20 {
		t.Fatalf("after a collector outage of 1.5s the collector holds %d distinct of the 20 lines (failed %v): the lines of the outage are never sent again",
			len(times), exportCount(t, reg, "failed"))
	}
}

// HELD: a collector that accepts connections and never answers does not
// slow Log: every call returns at file speed, the queue drops (and counts)
// what it has no room for.
func TestAttackHangingCollectorDoesNotSlowLog(t *testing.T) {
	block := make(chan struct{})
	c := newCollector(t)
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block })
	t.Cleanup(func() { close(block) })
	reg := prometheus.NewRegistry()
	e, err := New(Config{Endpoint: c.srv.URL, QueueSize: 64, BatchInterval: time.Millisecond}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	var worst time.Duration
	for i := range 5000 {
		start := time.Now()
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprintf("/%d", i), Action: "deny"})
		worst = max(worst, time.Since(start))
	}
	l.Close()
	if worst > time.Second {
		t.Fatalf("a Log took %v with a hanging collector", worst)
	}
	if got := exportCount(t, reg, "dropped"); got == 0 {
		t.Fatalf("nothing dropped with a hanging collector and a queue of 64")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	e.Close(ctx)
}

// HELD: every decision and approval record carries the attributes the
// issue names (container, rule, action, program, approver as clawd.by),
// also when the line is cut for being long.
func TestAttackRecordAttributesHeld(t *testing.T) {
	for _, pathLen := range []int{10, 200 << 10} {
		c := newCollector(t)
		e, err := New(Config{Endpoint: c.srv.URL, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "audit.log")
		l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
		l.Log(audit.Entry{Event: audit.EventApproval, Container: "agent", Rule: "pay", Action: "approved", Program: "/usr/bin/curl", By: "slack:U1", Path: "/" + strings.Repeat("p", pathLen)})
		l.Close()
		e.Close(context.Background())
		c.mu.Lock()
		if len(c.records) != 1 {
			t.Fatalf("path %d: %d records", pathLen, len(c.records))
		}
		r := c.records[0]
		for k, want := range map[string]string{"clawd.container": "agent", "clawd.rule": "pay", "clawd.action": "approved", "clawd.program": "/usr/bin/curl", "clawd.by": "slack:U1", "clawd.seq": "1"} {
			if got := attr(r.Attributes, k); got != want {
				t.Errorf("path %d: %s = %q, want %q", pathLen, k, got, want)
			}
		}
		c.mu.Unlock()
	}
}

// HOLE (low): an endpoint with a query (?api_key=..., as some hosted
// collectors take a token) is accepted, but the SDK drops the query: the
// collector never gets it, and nothing says so. (HELD: the secret does not
// leak into logs, see TestAttackEndpointQuerySecretInExportErrors.)
func TestAttackEndpointQueryIsSilentlyDropped(t *testing.T) {
	c := newCollector(t)
	var gotQuery atomic.Value
	gotQuery.Store("")
	inner := c.srv.Config.Handler
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery.Store(r.URL.RawQuery)
		inner.ServeHTTP(w, r)
	})
	e, err := New(Config{Endpoint: c.srv.URL + "/v1/logs?api_key=t0ken", BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), nil)
	if err != nil {
		return // refused: holds
	}
	e.Tee([]byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","seq":1}`))
	e.Close(context.Background())
	if q := gotQuery.Load().(string); q != "api_key=t0ken" {
		t.Fatalf("endpoint query accepted but the collector got query %q", q)
	}
}

// gRPC endpoints are host:port without a scheme: credentials in them
// (user:password@host:port) must be refused as they are in URLs, or at
// least never logged.
func TestAttackGRPCEndpointUserinfo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	core, logs := observer.New(zap.DebugLevel)
	ep := "user:s3cret@" + addr
	e, err := New(Config{Endpoint: ep, Protocol: ProtocolGRPC, Insecure: true, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("the refusal quotes the secret: %v", err)
		}
		return
	}
	if strings.Contains(Redact(ep), "s3cret") {
		t.Errorf("Redact(%s) = %s", ep, Redact(ep))
	}
	e.Tee([]byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","seq":1}`))
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cerr := e.Close(ctx); cerr != nil && strings.Contains(cerr.Error(), "s3cret") {
		t.Errorf("Close's error holds the secret: %v", cerr)
	}
	for _, en := range logs.All() {
		s := en.Message
		for k, v := range en.ContextMap() {
			s += fmt.Sprintf(" %s=%v", k, v)
		}
		if strings.Contains(s, "s3cret") {
			t.Fatalf("grpc endpoint %q accepted (CheckEndpoint looks for userinfo only after ://) and a log line holds its password: %s", ep, s)
		}
	}
}

// HOLE (low): an agent makes one line longer than MaxRecordBytes (a long
// request path) whenever it likes: the collector's copy of it is cut, so
// the copy rebuilt from the collector (which the package says `clawd audit
// verify` can check) fails at that line and nothing after it is checked.
// The agent can keep the remote copy unverifiable at the cost of one long
// request per batch.
func TestAttackLongLineBreaksTheCollectorsCopy(t *testing.T) {
	c := newCollector(t)
	e, err := New(Config{Endpoint: c.srv.URL, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	l.Log(audit.Entry{Event: audit.EventDecision, Path: "/a", Action: "allow"})
	l.Log(audit.Entry{Event: audit.EventDecision, Path: "/" + strings.Repeat("x", 70<<10), Action: "deny"})
	for i := range 5 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/later/", i), Action: "deny"})
	}
	l.Close()
	e.Close(context.Background())
	c.mu.Lock()
	defer c.mu.Unlock()
	var rebuilt strings.Builder
	for _, r := range c.records {
		rebuilt.WriteString(r.Body.GetStringValue() + "\n")
	}
	rep, err := audit.Verify(strings.NewReader(rebuilt.String()), nil)
	if err != nil || !rep.OK() || rep.LastSeq != 7 {
		t.Fatalf("the collector's copy (%d records) does not verify past the long line: %v %v", len(c.records), rep.Problem, err)
	}
}
