package otlp

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawd-dev/clawd/audit"
)

// seqsOf lists the clawd.seq of what the collector holds, sorted, and how
// many times each came.
func seqsOf(c *collector) (seqs []int, times map[int]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	times = map[int]int{}
	for _, r := range c.records {
		var n int
		fmt.Sscan(attr(r.Attributes, "clawd.seq"), &n)
		if times[n] == 0 {
			seqs = append(seqs, n)
		}
		times[n]++
	}
	sort.Ints(seqs)
	return seqs, times
}

// Lines dropped for room are read back from the log and delivered; the
// cursor survives a restart, so the next run sends what the last did not
// and not what it did.
func TestDeliveryFillsGapsFromTheFileAndResumes(t *testing.T) {
	c := newCollector(t)
	dir := t.TempDir()
	path, cursor := filepath.Join(dir, "audit.log"), filepath.Join(dir, "cursor")
	cfg := Config{Endpoint: c.srv.URL, QueueSize: 4, BatchInterval: 10 * time.Millisecond, CursorFile: cursor}
	e, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	if err != nil {
		t.Fatal(err)
	}
	e.Resume(path, 0)
	for i := range 200 { // far more than a queue of 4 takes at once
		l.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/", i)})
	}
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if seqs, _ := seqsOf(c); len(seqs) == 200 || ctx.Err() != nil {
			break
		}
		e.kick()
		time.Sleep(20 * time.Millisecond)
	}
	e.Close(ctx)
	seqs, _ := seqsOf(c)
	if len(seqs) != 200 || seqs[0] != 1 || seqs[199] != 200 {
		t.Fatalf("the collector holds %d distinct lines of 200 (%v...)", len(seqs), seqs[:min(len(seqs), 10)])
	}
	if b, _ := os.ReadFile(cursor); string(b) != "200\n" {
		t.Fatalf("cursor file %q, want 200", b)
	}
	// A restart with 5 more lines: only those are sent.
	c.mu.Lock()
	c.records = nil
	c.mu.Unlock()
	e2, err := New(cfg, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l2, _ := audit.OpenWith(path, audit.Options{Tee: e2.Tee})
	head, _ := l2.Head()
	e2.Resume(path, head)
	for i := range 5 {
		l2.Log(audit.Entry{Event: audit.EventDecision, Path: fmt.Sprint("/again/", i)})
	}
	l2.Close()
	e2.Close(ctx)
	if seqs, _ := seqsOf(c); len(seqs) != 5 || seqs[0] != 201 {
		t.Fatalf("after the restart the collector got %v, want 201..205", seqs)
	}
}
