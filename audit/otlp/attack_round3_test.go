package otlp

// Red-team round 3 (docs/attacks/audit.md, "Round 3"): read-back from
// rotated predecessors. A failing test marks a hole.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/audit"
)

// HOLE (medium): fillGaps reads a gap's seqs from the two newest
// "predecessors" first and takes the first line with that seq. A sibling
// is matched by name and mtime only, never by chain (its line's hash
// against the current file's, or the head). So an older chain's rotated
// file beside the log (the chain started again at seq 1: a new state
// dir, the head file removed) has the same seqs, and its lines are
// exported in place of the dropped ones; the genuine lines are marked
// exported and never sent. The same with a file planted in the log
// directory by whoever can write it (audit.log-zzz, forged lines that
// need not chain at all): the collector's copy gets the forgery, while
// the file itself still verifies.
func TestAttackGapFilledFromAnotherChainsRotatedFile(t *testing.T) {
	c := newCollector(t)
	down := downable(c)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	// An older chain, rotated: seq 1..60.
	old, err := audit.OpenWith(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		old.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/OLD-CHAIN/", i), Action: "allow"})
	}
	old.Close()
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	os.Chtimes(path+".1", past, past)

	down.Store(true)
	cfg := Config{Endpoint: c.srv.URL, QueueSize: 4, Timeout: 300 * time.Millisecond, BatchInterval: 10 * time.Millisecond, CursorFile: filepath.Join(dir, "cursor")}
	e, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenWith(path, audit.Options{Tee: e.Tee}) // a new chain from seq 1
	if err != nil {
		t.Fatal(err)
	}
	e.Resume(path, 0)
	for i := range 40 { // outage: most dropped, the file has them
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/genuine/", i), Action: "deny"})
	}
	down.Store(false)
	head, _ := l.Head()
	waitSeqs(e, c, int(head), 30*time.Second) // returns once all arrived: long only on a loaded machine
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	e.Close(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	wrong := 0
	for _, r := range c.records {
		if strings.Contains(r.Body.GetStringValue(), "/OLD-CHAIN/") {
			wrong++
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d records exported for this chain's seqs are lines of the other chain's audit.log.1", wrong, len(c.records))
	}
}

// HOLE (medium): scrub cuts the header values out of logged export
// errors only byte for byte (the value, and its words split at space, ',',
// '=' and ':'). A collector or gateway that echoes the refused credential
// in another form — URL-encoded (a base64 token's '/' and '+'), JSON with
// escaped slashes (PHP, Jackson with ESCAPE_FORWARD_SLASHES), or the
// decoded user:password of Basic auth — puts it into clawd's log. Project
// rule: secrets never in logs.
func TestAttackEchoedCredentialInOtherEncodingLeaks(t *testing.T) {
	const token = "AbCd/EfGh+IjKl/MnOp+QrSt/UvWx"
	for _, tc := range []struct {
		name, header string
		echo         func(r *http.Request) string
		leak         string
	}{
		{"url-encoded", "Bearer " + token, func(r *http.Request) string {
			return "invalid token " + url.QueryEscape(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		}, url.QueryEscape(token)},
		{"json-escaped-slash", "Bearer " + token, func(r *http.Request) string {
			return `{"error":"invalid token ` + strings.ReplaceAll(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), "/", `\/`) + `"}`
		}, strings.ReplaceAll(token, "/", `\/`)},
		{"basic-decoded", "Basic " + base64.StdEncoding.EncodeToString([]byte("clawd:"+token)), func(r *http.Request) string {
			u, p, _ := r.BasicAuth()
			return "bad credentials for " + u + ":" + p
		}, token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCollector(t)
			c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, tc.echo(r), http.StatusUnauthorized)
			})
			core, logs := observer.New(zap.DebugLevel)
			e, err := New(Config{Endpoint: c.srv.URL, Headers: map[string]string{"Authorization": tc.header}, Timeout: time.Second, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), zap.New(core))
			if err != nil {
				t.Fatal(err)
			}
			l, _ := audit.OpenWith(filepath.Join(t.TempDir(), "audit.log"), audit.Options{Tee: e.Tee})
			l.Log(audit.Entry{Event: audit.EventDecision, Path: "/x"})
			l.Close()
			time.Sleep(500 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			e.Close(ctx)
			if logs.Len() == 0 {
				t.Fatal("setup: no export failure logged")
			}
			for _, en := range logs.All() {
				s := en.Message + fmt.Sprint(en.ContextMap())
				if strings.Contains(s, tc.leak) {
					t.Fatalf("the exporter's log holds the header secret (%s): %s", tc.name, s)
				}
			}
		})
	}
}

// synthLog writes chain-looking lines with seqs from..to (what scanLog
// and Record read: JSON with seq last).
func synthLog(t *testing.T, path string, from, to int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	pad := strings.Repeat("x", 200)
	for s := from; s <= to; s++ {
		fmt.Fprintf(w, `{"time":"2026-12-03T00:00:00Z","event":"decision","container":"agent","path":"/%s","action":"allow","seq":%d,"prev":"%064d"}`+"\n", pad, s, 0)
	}
	w.Flush()
	f.Close()
}

// rchar is the bytes this process read (/proc/self/io).
func rchar(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			n, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return n
}

// HOLE (low/medium, unbounded work): every fillGaps (each second while
// lines are being dropped for room, i.e. under sustained load, exactly
// when the host is busiest) reads the two newest rotated files from
// offset 0 to their end, even when every wanted seq is past their last
// line (in the current file). Only the current file has an offset hint.
// With a daily rotation of a busy log that is gigabytes a second. Here:
// 2 predecessors of ~30 MB each, 3 rounds of 10 new gaps in the current
// file: ~180 MB read for 30 lines.
func TestAttackFillGapsRescansPredecessors(t *testing.T) {
	c := newCollector(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	synthLog(t, path+".2", 1, 100000)
	synthLog(t, path+".1", 100001, 200000)
	synthLog(t, path, 200001, 200100)
	past := time.Now().Add(-time.Hour)
	os.Chtimes(path+".2", past, past)
	os.WriteFile(filepath.Join(dir, "cursor"), []byte("200000\n"), 0o600)
	e, err := New(Config{Endpoint: c.srv.URL, BatchInterval: 10 * time.Millisecond, CursorFile: filepath.Join(dir, "cursor")}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		e.Close(ctx)
	}()
	e.Resume(path, 200040)
	e.fillGaps() // the first read-back (a hint for the current file from here on)
	before := rchar(t)
	for r := range 3 {
		for s := int64(200041 + 10*r); s < int64(200051+10*r); s++ {
			e.dv.dropped(s) // dropped for room: a gap in the current file
		}
		e.fillGaps()
	}
	read := rchar(t) - before
	fi1, _ := os.Stat(path + ".1")
	if read > 8<<20 {
		t.Fatalf("3 read-backs of 10 lines each, all in the current file, read %d MB (predecessors of %d MB each read whole every time)", read>>20, fi1.Size()>>20)
	}
}

// HOLE (medium): scanLog's offset hint is kept by inode only. logrotate's
// copytruncate keeps the inode: the file is copied to audit.log.1 and
// emptied in place, and clawd's next lines start again at offset 0. A
// read-back of lines dropped after that starts at the old offset, past
// them (the first line there is beyond the wanted seqs), finds them in no
// file and gives them up for good: the collector never gets them,
// although they are in the current file.
func TestAttackCopytruncateHintSkipsGapLines(t *testing.T) {
	c := newCollector(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	synthLog(t, path, 1, 1000)
	os.WriteFile(filepath.Join(dir, "cursor"), []byte("0\n"), 0o600)
	e, err := New(Config{Endpoint: c.srv.URL, BatchInterval: 10 * time.Millisecond, CursorFile: filepath.Join(dir, "cursor")}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		e.Close(ctx)
	}()
	e.Resume(path, 1000)
	waitSeqs(e, c, 1000, 5*time.Second)
	if s, _ := seqsOf(c); len(s) != 1000 {
		t.Fatalf("setup: %d of 1000 read back", len(s))
	}
	// logrotate copytruncate: copy, then empty in place (same inode).
	b, _ := os.ReadFile(path)
	os.WriteFile(path+".1", b, 0o600)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "new")
	synthLog(t, tmp, 1001, 2000)
	nb, _ := os.ReadFile(tmp)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(nb)
	f.Close()
	for s := int64(1001); s <= 2000; s++ {
		e.dv.dropped(s) // clawd's lines after the rotation, dropped for room
	}
	waitSeqs(e, c, 2000, 5*time.Second)
	seqs, _ := seqsOf(c)
	if len(seqs) < 2000 {
		t.Fatalf("after a copytruncate rotation %d of 1000 lines dropped for room were never exported (the cursor gave them up: %d)", 2000-len(seqs), e.dv.cursorNow())
	}
}
