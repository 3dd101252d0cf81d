package otlp

// Red-team round 3 (docs/attacks/audit.md, "Round 3"): read-back from
// rotated predecessors. A failing test marks a hole.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
	waitSeqs(e, c, int(head), 8*time.Second)
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
