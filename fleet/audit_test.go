package fleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/pgtest"
)

// logLines appends n audit lines for container c to the log at path, as
// the daemon's logger writes them (chained, seq across reopenings).
func logLines(t *testing.T, path, c string, n int) {
	t.Helper()
	l, err := audit.OpenWith(path, audit.Options{HeadFile: path + ".head"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Log(audit.Entry{Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Event: audit.EventApproval, Action: "approved", Container: c, Path: fmt.Sprintf("/p%d", i)})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func auditCount(t *testing.T, s *pgtest.Server, db, where string) string {
	t.Helper()
	return s.SQL(t, db, "SELECT count(*) FROM clawd_audit WHERE "+where)
}

func testShipAudit(t *testing.T, s *pgtest.Server) {
	db := s.CreateDB(t)
	f := open(t, s, db, "a", 0)
	ctx := context.Background()
	if err := f.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	var cur auditCursor
	ship := func() error { _, err := f.shipOnce(ctx, path, &cur); return err }

	// No file yet: nothing to do.
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	logLines(t, path, "agent-1", 3)
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "host = 'a'"); got != "3" {
		t.Fatalf("shipped %s lines, want 3", got)
	}
	// One query across the fleet, on the fields of the line.
	if got := auditCount(t, s, db, "entry->>'container' = 'agent-1' AND entry->>'action' = 'approved'"); got != "3" {
		t.Fatalf("query by container = %s", got)
	}
	// The exact bytes are kept: the copy is the file.
	file, _ := os.ReadFile(path)
	if got := s.SQL(t, db, "SELECT string_agg(line, E'\\n' ORDER BY seq) FROM clawd_audit") + "\n"; got != string(file) {
		t.Fatalf("copy differs from the file:\n%s\n---\n%s", got, file)
	}
	// Again, and from scratch (a restart forgets the cursor): no doubles.
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	cur = auditCursor{}
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "true"); got != "3" {
		t.Fatalf("after shipping again: %s lines, want 3", got)
	}

	// A torn last line (a write in progress) waits for its end.
	fh, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	fh.WriteString(`{"time":"2026-01-01T00:01:00Z","event":"approval","seq":4,"prev":"x",`)
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "true"); got != "3" {
		t.Fatalf("a torn line was shipped: %s", got)
	}
	fh.WriteString(`"container":"agent-1"}` + "\n")
	fh.Close()
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "seq = 4"); got != "1" {
		t.Fatalf("completed line shipped %s times", got)
	}

	// Outage: lines written meanwhile wait in the file, then all arrive once.
	s.Stop()
	f.Beat(ctx)
	logLines(t, path, "agent-2", 2)
	if err := ship(); err == nil {
		t.Fatal("shipped with the database stopped")
	}
	s.Restart()
	if err := f.Beat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "entry->>'container' = 'agent-2'"); got != "2" {
		t.Fatalf("after the outage: %s lines of agent-2, want 2", got)
	}
	if got := s.SQL(t, db, "SELECT count(*) = count(DISTINCT seq) FROM clawd_audit"); got != "t" {
		t.Fatal("a seq was stored twice")
	}

	// Rotation: the old file moved away, a new one started; the new lines
	// are shipped, the old ones not again.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	logLines(t, path, "agent-3", 1)
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	// 3 + the hand-written seq 4 + agent-2's 2 + agent-3's 1, and the
	// audit_cut line the restart after seq 4 wrote: clawd had not written
	// that line (audit/head.go).
	if got := auditCount(t, s, db, "true"); got != "8" {
		t.Fatalf("after rotation: %s lines, want 8", got)
	}
	if got := auditCount(t, s, db, "entry->>'event' = 'audit_cut'"); got != "1" {
		t.Fatalf("audit_cut lines: %s, want 1", got)
	}

	// An agent's NUL in a path: jsonb refuses it, the line is kept anyway.
	logLines(t, path, "agent-\x00nul", 1)
	if err := ship(); err != nil {
		t.Fatalf("a line with a NUL stopped the trail: %v", err)
	}
	if got := auditCount(t, s, db, "entry IS NULL AND line LIKE '%agent-\\\\u0000nul%'"); got != "1" {
		t.Fatalf("the NUL line: %s", got)
	}
	// And the trail goes on after it.
	logLines(t, path, "agent-4", 1)
	if err := ship(); err != nil {
		t.Fatal(err)
	}
	if got := auditCount(t, s, db, "entry->>'container' = 'agent-4'"); got != "1" {
		t.Fatalf("after the NUL line: %s", got)
	}
}
