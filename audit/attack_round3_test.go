package audit

// Red-team round 3 (docs/attacks/audit.md, "Round 3"): attacks on the
// round-2 fixes (interval_ms bound, chunk heads with line hashes).
// Tests that fail mark holes; the ones marked HELD held.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var timeRE = regexp.MustCompile(`"time":"[^"]*"`)

// HOLE (medium): the interval bound (fix of round 2's R6) measures the
// unsigned tail with the tail lines' own "time" fields, which are as
// unsigned as the rest of the tail. R6's attack with one more step: set
// every tail line's time to the first one's. Verify with the key: OK,
// 28 minutes of lines after a 1-minute checkpoint, a denial turned into
// an allow.
func TestAttackTailTimesRewrittenEvadeInterval(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC()
	for i := range 30 {
		l.Log(Entry{Time: start.Add(time.Duration(i) * time.Minute), Event: EventDecision, Container: "agent", Path: fmt.Sprint("/m/", i), Action: "deny"})
		l.Checkpoint()
	}
	l.Close()
	lines := fileLines(t, path)
	var out []string
	for i, s := range lines {
		if i > 1 && strings.Contains(s, `"event":"checkpoint"`) {
			continue
		}
		out = append(out, s)
	}
	// Control: R6's attack as it was is now found.
	plain := rechainSeq(edit(out, 3, `"action":"deny"`, `"action":"allow"`), 2)
	if rep := verifyBytes(t, join(plain), pub); rep.OK() {
		t.Fatal("setup: R6's attack verified (the interval fix is gone)")
	}
	first := timeRE.FindString(out[2])
	for i := 2; i < len(out); i++ {
		out[i] = timeRE.ReplaceAllString(out[i], first)
	}
	out = edit(out, 3, `"action":"deny"`, `"action":"allow"`)
	out = rechainSeq(out, 2)
	if rep := verifyBytes(t, join(out), pub); rep.OK() {
		t.Fatalf("28 minutes of lines after a 1-minute checkpoint, later checkpoints removed, tail times set to %s and a denial made an allow: verify with the key OK (tail %d)", first, rep.UnsignedTail)
	}
}

// HOLE (medium, false alarm): the checkpoint timer is a monotonic
// ticker, line and checkpoint times are the wall clock. A wall clock
// stepped forward (NTP's first sync on a host without an RTC, a VM
// resumed, an admin's `date -s`) between a line and the next checkpoint
// makes the genuine log fail verify with the key, for good: "checkpoints
// between them were removed (or the clock jumped)". Here the step is 1 h,
// simulated by a line stamped before it.
func TestAttackClockStepFailsGenuineLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UTC().Add(-time.Hour) // the wall clock before the step
	l.Log(Entry{Time: before, Event: EventDecision, Container: "agent", Path: "/a", Action: "deny"})
	l.Checkpoint()
	l.Log(Entry{Time: before.Add(time.Second), Event: EventDecision, Container: "agent", Path: "/b", Action: "deny"})
	// clock steps forward by 1h here; the ticker fires 1 min later
	l.Checkpoint()
	l.Close()
	if rep := verifyFile(t, path, pub); !rep.OK() {
		t.Fatalf("a genuine log fails verify after a wall clock step: %v", rep.Problem)
	}
}

// HOLE (medium): the head record is written only BEFORE a chunk. After
// a crash (SIGKILL, OOM: the write had returned, so the lines are in the
// file), whoever can write the log cuts the last chunk (up to 64 lines:
// the agent's last requests) back to the chunk's seq0 or to any of its
// lines. The restart takes it for "a crash before the write": the lines
// become an audit_lost count, which verify --key --head accepts (a note
// "could not be written (disk full?)"). Only a power loss can lose
// written lines; a second pwrite of the head after the chunk (seq0 =
// seq) would tell them apart.
func TestAttackCutLastChunkAfterCrashBecomesLost(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 5) // 5 lines + checkpoint: seq 6
	good := fileLines(t, path)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	oneBatch(t, l, "evidence", 20) // seq 7..26, written whole
	crash(l)
	if n := len(fileLines(t, path)); n != len(good)+20 {
		t.Fatalf("setup: %d lines after the batch", n)
	}
	os.WriteFile(path, join(good), 0o600) // the 20 lines removed
	l, err = OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/after"})
	seq, hash := l.Head()
	l.Close()
	f, _ := os.Open(path)
	defer f.Close()
	rep, _ := VerifyHead(f, pub, Head{Seq: seq, Hash: hash})
	if rep.OK() && !hasEvent(fileLines(t, path), EventCut) {
		t.Fatalf("20 written lines cut off after a crash: verify --key --head OK, recorded as %d lost line(s)", rep.Lost)
	}
}
