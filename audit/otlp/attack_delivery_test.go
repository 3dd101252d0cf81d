package otlp

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): attacks on the
// at-least-once delivery (cursor, retry, read-back). Tests that fail mark
// holes; HELD ones are attacks the code withstood.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/clawd-dev/clawd/audit"
)

// downable wraps the test collector with an outage switch.
func downable(c *collector) *atomic.Bool {
	var down atomic.Bool
	inner := c.srv.Config.Handler
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		inner.ServeHTTP(w, r)
	})
	return &down
}

// waitSeqs polls until the collector holds n distinct seqs or d passed.
func waitSeqs(e *Exporter, c *collector, n int, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if seqs, _ := seqsOf(c); len(seqs) >= n {
			return
		}
		e.kick()
		time.Sleep(50 * time.Millisecond)
	}
}

// HOLE (medium): lines dropped from export during an outage are read back
// only from the current log file (Resume's path). When logrotate moves
// the file (SIGHUP, Reopen) before the backfill, the gap is in
// audit.log.1, which is never read: the collector never gets those lines
// (not compressed, still on disk), and the delivery cursor stays stuck
// before them. At the next restart everything after the stuck cursor in
// the current file is read back and exported a second time: duplicates
// of lines that were delivered, far beyond "a line exported just before a
// crash".
func TestAttackGapInRotatedFileNeverFilled(t *testing.T) {
	c := newCollector(t)
	down := downable(c)
	down.Store(true)
	dir := t.TempDir()
	path, cursor := filepath.Join(dir, "audit.log"), filepath.Join(dir, "cursor")
	cfg := Config{Endpoint: c.srv.URL, QueueSize: 4, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond, CursorFile: cursor}
	e, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	if err != nil {
		t.Fatal(err)
	}
	e.Resume(path, 0)
	for i := range 50 { // during the outage: 4 queued, the rest dropped (the file has them)
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/outage/", i), Action: "deny"})
	}
	if err := os.Rename(path, path+".1"); err != nil { // logrotate, then SIGHUP
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	down.Store(false)
	for i := range 20 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/after/", i), Action: "allow"})
	}
	head, _ := l.Head()
	l.Close()
	waitSeqs(e, c, int(head), 30*time.Second) // returns once all arrived; long only on a loaded machine
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	e.Close(ctx)
	seqs, _ := seqsOf(c)
	missing := []int{}
	have := map[int]bool{}
	for _, s := range seqs {
		have[s] = true
	}
	for s := 1; s <= int(head); s++ {
		if !have[s] {
			missing = append(missing, s)
		}
	}
	cur, _ := os.ReadFile(cursor)
	if len(missing) > 0 {
		t.Errorf("the collector never got %d of %d lines (%v...), all in the rotated audit.log.1; cursor file %q",
			len(missing), head, missing[:min(len(missing), 8)], strings.TrimSpace(string(cur)))
	}
	// The next start: what the current file holds past the stuck cursor is
	// sent again although it was delivered.
	c.mu.Lock()
	c.records = nil
	c.mu.Unlock()
	e2, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := audit.OpenWith(path, audit.Options{Tee: e2.Tee})
	h2, _ := l2.Head()
	e2.Resume(path, h2)
	l2.Close()
	time.Sleep(1500 * time.Millisecond)
	e2.Close(ctx)
	if again, _ := seqsOf(c); len(again) > 0 {
		t.Errorf("after a clean restart %d lines already delivered were exported again (seq %d..%d): duplicates beyond the documented crash window", len(again), again[0], again[len(again)-1])
	}
}

// HOLE (low): Close(ctx) is bounded by ctx (the daemon gives it 5s), but
// it waits for the delivery loop, whose retry sends each refused part
// with the export timeout (default 10s) from context.Background(). With a
// collector that accepts and never answers, Close takes the export
// timeout, not ctx: shutdown hangs past its bound.
func TestAttackCloseWaitsForRetryPastItsDeadline(t *testing.T) {
	block := make(chan struct{})
	c := newCollector(t)
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(block) })
	e, err := New(Config{Endpoint: c.srv.URL, Timeout: 3 * time.Second, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	for i := range 5 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/", i)})
	}
	l.Close()
	deadline := time.Now().Add(6 * time.Second)
	for !e.dv.retrying() && time.Now().Before(deadline) { // the SDK's first export timed out
		time.Sleep(20 * time.Millisecond)
	}
	if !e.dv.retrying() {
		t.Fatal("setup: no part waits for a retry")
	}
	e.kick() // the delivery loop starts its retry now
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	e.Close(ctx)
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Fatalf("Close with a 300ms deadline took %v against a hanging collector (the retry's own export timeout)", took.Round(time.Millisecond))
	}
}

// HOLE (low/medium): the cursor gives up a gap once more than maxDone
// (131072) later lines were exported, whether or not the log still holds
// it: past that, gaps() no longer returns it and it is never read back.
// Read-back goes at most maxGapLines (4096) per delivery round (about a
// second), so after a long outage (here 300000 lines dropped) a busy
// daemon (over ~500 lines/s) exports 131072 live lines before the
// backfill is done and the rest of the outage's lines never reach the
// collector although the JSONL file has them.
func TestAttackLongOutageGapGivenUp(t *testing.T) {
	d := newDelivery("")
	d.logPath = "/var/log/clawd/audit.log" // the log is there: gaps can be read back
	for s := int64(1); s <= 300000; s++ {
		d.dropped(s) // the outage: no room
	}
	for s := int64(300001); s <= 300000+maxDone+1; s++ {
		d.queued(s)
		d.exported(s) // live lines after the collector came back
	}
	if g := d.gaps(1); len(g) == 0 || g[0] != 1 {
		t.Fatalf("after %d live lines were exported the outage's gap (seq 1..300000, still in the file) is given up: cursor %d, next gap %v", maxDone+1, d.cursorNow(), g)
	}
}

// HOLE (low): newDelivery trusts the cursor file's number. A cursor from
// an earlier chain (the log moved away and the head file removed, as the
// head file's error message suggests, so seq starts at 1 again) or a
// tampered one (a large number) sits past every seq of the log: gaps()
// starts after it, so no dropped line is ever read back, silently.
func TestAttackStaleCursorSkipsReadBack(t *testing.T) {
	cursor := filepath.Join(t.TempDir(), "cursor")
	os.WriteFile(cursor, []byte("999999\n"), 0o600)
	d := newDelivery(cursor)
	d.logPath = "/var/log/clawd/audit.log"
	d.seen = max(d.seen, 10) // Resume(path, 10): the new chain's head
	for s := int64(11); s <= 20; s++ {
		d.dropped(s)
	}
	if g := d.gaps(100); len(g) == 0 {
		t.Fatalf("a cursor (999999) past the log's head (20) hides every gap: lines 11..20 dropped from export are never read back")
	}
}

// HOLE (medium): tooLarge decides "refused for its size: give the record
// up" by looking for "413" anywhere in the error text, which holds the
// endpoint URL and the collector's (or a proxy's) response body. A
// collector (or the proxy before it) that fails with a 500 whose body
// holds a request id containing 413, or any failing collector listening
// on a port such as 4413 or 54130 (the URL is in the error), has every part
// of the outage split in halves and then given up as "too large": counted
// as exported, the cursor moves over them, never sent again, never read
// back. The outage's lines are lost to the collector for good.
func TestAttack413InErrorTextGivesLinesUp(t *testing.T) {
	c := newCollector(t)
	var down atomic.Bool
	down.Store(true)
	inner := c.srv.Config.Handler
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "internal error (request id 5c413e9a)", http.StatusInternalServerError)
			return
		}
		inner.ServeHTTP(w, r)
	})
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	e, err := New(Config{Endpoint: c.srv.URL, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond, CursorFile: filepath.Join(dir, "cursor")}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	e.Resume(path, 0)
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/outage/", i), Action: "deny"})
	}
	time.Sleep(700 * time.Millisecond)
	down.Store(false)
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/after/", i), Action: "allow"})
	}
	l.Close()
	waitSeqs(e, c, 20, 6*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e.Close(ctx)
	if seqs, _ := seqsOf(c); len(seqs) != 20 {
		t.Fatalf("a 500 whose body holds \"413\": the collector got %d of 20 lines (%v): the outage's lines were given up as too large", len(seqs), seqs)
	}
}

// HELD: a long outage does not grow memory: refused parts keep their room,
// so the retry list, the pending map and the queues together hold at most
// QueueSize lines, whatever the number of lines logged meanwhile (the
// rest is dropped, counted, and left to the read-back).
func TestAttackLongOutageMemoryBoundedHeld(t *testing.T) {
	c := newCollector(t)
	down := downable(c)
	down.Store(true)
	e, err := New(Config{Endpoint: c.srv.URL, QueueSize: 64, Timeout: 200 * time.Millisecond, BatchInterval: 5 * time.Millisecond}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	e.Resume(path, 0)
	for i := range 20000 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/outage/", i), Action: "deny"})
		if i%5000 == 0 {
			time.Sleep(300 * time.Millisecond) // let parts fail and queue for retry
		}
	}
	l.Close()
	time.Sleep(time.Second)
	e.dv.mu.Lock()
	retried := 0
	for _, p := range e.dv.retry {
		retried += len(p)
	}
	pending, done := len(e.dv.pending), len(e.dv.done)
	e.dv.mu.Unlock()
	e.qmu.Lock()
	qlines := e.qlines
	e.qmu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	e.Close(ctx)
	if retried > 64 || pending > 64 || done > 64 || qlines > 64 {
		t.Fatalf("after 20000 lines in an outage with QueueSize 64: retry %d records, pending %d, done %d, queued %d", retried, pending, done, qlines)
	}
}

// HOLE (medium, R8 worse): with a collector that is simply down
// (connection refused), the SDK's error is `Post "http://HOST:PORT/v1/logs":
// dial tcp …: connection refused`: the URL is in it. A collector on a
// port holding "413" (4413, 14130, 41300-41399, ...) or a host name such
// as otel-413.example makes tooLarge true for every outage: all of its
// lines are given up as too large and never reach the collector.
func TestAttackDownCollectorOnPort413GivesLinesUp(t *testing.T) {
	var ln net.Listener
	var err error
	for p := 41300; p < 41400; p++ {
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			break
		}
	}
	if ln == nil {
		t.Fatalf("no free port 41300-41399: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close() // the collector is down
	c := newCollector(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	e, err := New(Config{Endpoint: "http://" + addr, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond, CursorFile: filepath.Join(dir, "cursor")}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	e.Resume(path, 0)
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/outage/", i), Action: "deny"})
	}
	time.Sleep(700 * time.Millisecond)
	// The collector comes back on its port.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: c.srv.Config.Handler}
	go srv.Serve(ln2)
	t.Cleanup(func() { srv.Close() })
	for i := range 10 {
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/after/", i), Action: "allow"})
	}
	l.Close()
	waitSeqs(e, c, 20, 6*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e.Close(ctx)
	if seqs, _ := seqsOf(c); len(seqs) != 20 {
		t.Fatalf("collector at %s down for 0.7s: it got %d of 20 lines (%v): the outage's lines were given up as \"too large\"", addr, len(seqs), seqs)
	}
}

// HOLE (medium): a 200 with an OTLP partial success (rejected_log_records
// > 0: a backend refusing some records, e.g. too old after an outage) is
// an error from the SDK, and counting.export keeps the WHOLE part for
// retry: the records the collector accepted are sent again, and again
// with every retry (up to every 30s, forever, since the refusal is
// permanent), each time stored anew. Duplicates without bound, beyond
// "a line exported just before a crash", and the part's room is held
// for good.
func TestAttackPartialSuccessResendsAcceptedRecords(t *testing.T) {
	c := newCollector(t)
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collogs.ExportLogsServiceRequest
		if proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad", 400)
			return
		}
		rejected := int64(0)
		c.mu.Lock()
		for _, rl := range req.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, rec := range sl.LogRecords {
					if strings.Contains(rec.Body.GetStringValue(), "/too-old") {
						rejected++
						continue
					}
					c.records = append(c.records, rec)
				}
			}
		}
		c.mu.Unlock()
		resp := &collogs.ExportLogsServiceResponse{}
		if rejected > 0 {
			resp.PartialSuccess = &collogs.ExportLogsPartialSuccess{RejectedLogRecords: rejected, ErrorMessage: "log record too old"}
		}
		b, _ := proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	})
	e, err := New(Config{Endpoint: c.srv.URL, Timeout: time.Second, BatchInterval: 50 * time.Millisecond}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	for i := range 5 {
		p := fmt.Sprint("/ok/", i)
		if i == 2 {
			p = "/too-old"
		}
		l.Log(audit.Entry{Event: audit.EventDecision, Path: p})
	}
	l.Close()
	time.Sleep(4 * time.Second) // a few retries (1s, 2s backoff)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	e.Close(ctx)
	_, times := seqsOf(c)
	for seq, n := range times {
		if n > 1 {
			t.Fatalf("records the collector accepted were sent again after a partial success: seq %d stored %d times (%v)", seq, n, times)
		}
	}
}

// HOLE (medium): one record stuck in the retry list (a permanent
// refusal, e.g. the partial success of R14, or a 400 for one part) holds
// the cursor back. Past maxDone the cursor is moved to just below the
// lowest pending seq, which is the stuck one, so nothing is freed: the
// done map grows without bound, and every exported() from then on walks
// the whole map under d.mu, the lock Tee takes on the audit writer's
// path for every line. Memory and CPU grow with every line exported,
// and decisions wait on it.
func TestAttackStuckRecordGrowsDoneMap(t *testing.T) {
	d := newDelivery("")
	d.queued(1) // in the retry list, never delivered
	for s := int64(2); s <= maxDone+2; s++ {
		d.queued(s)
		d.exported(s)
	}
	start := time.Now()
	const more = 3000
	for s := int64(maxDone + 3); s < maxDone+3+more; s++ {
		d.queued(s)
		d.exported(s)
	}
	took := time.Since(start)
	d.mu.Lock()
	n := len(d.done)
	d.mu.Unlock()
	if n > maxDone+1 || took > 300*time.Millisecond {
		t.Fatalf("one stuck record: the done map holds %d seqs (bound %d) and the last %d exports took %v under the lock Tee needs (%v each)", n, maxDone, more, took.Round(time.Millisecond), (took / more).Round(time.Microsecond))
	}
}
