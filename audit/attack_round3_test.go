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
	first := timeRE.FindString(out[2])
	for i := 2; i < len(out); i++ {
		out[i] = timeRE.ReplaceAllString(out[i], first)
	}
	out = edit(out, 3, `"action":"deny"`, `"action":"allow"`)
	out = rechainSeq(out, 2)
	// The unsigned tail's times are the attacker's: no rule read from them
	// can hold (verify keeps none). The head anchors the tail.
	rep, err := VerifyHead(strings.NewReader(string(join(out))), pub, genuineHead(lines))
	if err != nil || rep.OK() {
		t.Fatalf("28 minutes of lines after a 1-minute checkpoint, later checkpoints removed, tail times set to %s and a denial made an allow: verify with the key and the head OK (tail %d)", first, rep.UnsignedTail)
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

// HOLE (medium, false alarm): a full disk that lasts longer than twice
// the checkpoint interval. The last line written before it is unsigned;
// every timer checkpoint meanwhile fails to write; the first one after
// the disk has room signs that line, written 10 minutes earlier, and
// verify with the key fails the genuine log for good ("checkpoints
// between them were removed"). The audit_lost record right before says
// why, but verify does not look. (The 10 minutes are simulated by the
// line's time.)
func TestAttackDiskFullOutlastingIntervalFailsGenuineLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var errs int
	l.OnError = func(error) { errs++ }
	t0 := time.Now().UTC().Add(-10 * time.Minute)
	l.Log(Entry{Time: t0.Add(-time.Second), Event: EventDecision, Container: "agent", Path: "/start", Action: "deny"})
	l.Checkpoint() // signed: interval_ms known from here on
	l.Log(Entry{Time: t0, Event: EventDecision, Container: "agent", Path: "/before", Action: "deny"})
	// The disk is full: every write fails (a read-only fd stands for it).
	l.mu.Lock()
	good := l.f
	ro, err := os.Open(path)
	if err != nil {
		l.mu.Unlock()
		t.Fatal(err)
	}
	l.f = ro
	l.mu.Unlock()
	for i := range 3 {
		l.Log(Entry{Time: t0.Add(time.Duration(i+1) * 2 * time.Minute), Event: EventDecision, Container: "agent", Path: "/lost", Action: "deny"})
		l.Checkpoint() // the timer: fails too
	}
	l.mu.Lock()
	l.f = good
	l.mu.Unlock()
	ro.Close()
	l.Log(Entry{Event: EventDecision, Container: "agent", Path: "/after", Action: "deny"})
	l.Checkpoint()
	l.Close()
	if errs == 0 {
		t.Fatal("setup: no write failed")
	}
	rep := verifyFile(t, path, pub)
	if !rep.OK() {
		t.Fatalf("a genuine log fails verify with the key after a 10-minute full disk (lost %d): %v", rep.Lost, rep.Problem)
	}
}

// HOLE (medium): an agent that can fill the disk makes a head write fail;
// writeHead then empties (or removes) the head file and runs without one
// until restart. After a crash, whoever can write the log rewrites its
// unsigned tail (a denial made an allow, chain recomputed). The restart
// finds no head, writes audit_unchecked and signs the forgery at once
// (opening checkpoint); verify with the key: OK, with a note.
func TestAttackHeadDroppedThenTailRewrittenSigned(t *testing.T) {
	dir := t.TempDir()
	path, headPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: headPath}
	writeLog(t, path, opt, 0, 3)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l.OnError = func(error) {}
	ro, err := os.Open(headPath) // the state dir's disk is full: head writes fail
	if err != nil {
		t.Fatal(err)
	}
	l.hf.f.Close()
	l.hf.f = ro
	for i := range 4 {
		l.Log(Entry{Event: EventDecision, Container: "agent", Path: fmt.Sprint("/x/", i), Action: "deny"})
	}
	crash(l)
	lines := fileLines(t, path)
	last := len(lines) - 2
	if !strings.Contains(lines[last], `"action":"deny"`) {
		t.Fatalf("setup: %s", lines[last])
	}
	lines = edit(lines, last, `"action":"deny"`, `"action":"allow"`)
	lines = rechain(lines, last+1)
	os.WriteFile(path, join(lines), 0o600)
	writeLog(t, path, opt, 100, 1)
	after := fileLines(t, path)
	if rep := verifyFile(t, path, pub); rep.OK() && !hasEvent(after, EventCut) {
		t.Fatalf("a rewritten unsigned tail after a dropped head file: verify with the key OK (unchecked at lines %v)", rep.Unchecked)
	}
}

// HOLE (medium, false alarm): a daemon config change of the checkpoint
// interval. Verify holds the lines before a checkpoint to the interval of
// the signed checkpoint BEFORE them (unlike every, where it takes the
// larger of the two). Run 1 had 1 minute and stopped cleanly; run 2 has
// 1 hour (or none: audit-checkpoint-interval 0), so its first timed
// checkpoint signs lines up to an hour old: the genuine log fails verify
// with the key for good. (The 30 minutes are simulated by the line's
// time.)
func TestAttackIntervalRaisedBetweenRunsFailsGenuineLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	head := filepath.Join(dir, "audit.head")
	writeLog(t, path, Options{Key: key, CheckpointInterval: time.Minute, HeadFile: head}, 0, 3)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: time.Hour, HeadFile: head})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Time: time.Now().UTC().Add(-30 * time.Minute), Event: EventDecision, Container: "agent", Path: "/run2", Action: "deny"})
	l.Checkpoint() // the hourly timer
	l.Close()
	if rep := verifyFile(t, path, pub); !rep.OK() {
		t.Fatalf("a genuine log fails verify after the checkpoint interval was raised from 1m to 1h: %v", rep.Problem)
	}
}

// HELD: a crash inside the last chunk of a batch of several chunks (150
// lines: chunks of 64, 64, 22), the log cut at each line's
// end and inside each line of that chunk: the restart accepts it (a
// crash, its unwritten lines recorded lost, the torn line recorded) and
// the log verifies with the key and the new head. Also: interval_ms or
// every edited in a signed checkpoint breaks its signature.
func TestAttackCrashInsideLastChunkHeld(t *testing.T) {
	dir := t.TempDir()
	path, headPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 1000, CheckpointInterval: time.Minute, HeadFile: headPath}
	writeLog(t, path, opt, 0, 3)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	before := len(fileLines(t, path))
	// The head file as a crash during the last chunk's write leaves it
	// (after that chunk's head record, before its lines are all out); the
	// file as it is once the batch is out (round 3, T2: the head file is
	// written after each chunk too, and a log cut after that is a cut).
	var hb []byte
	duringChunkWrite = func() { hb, _ = os.ReadFile(headPath) }
	defer func() { duringChunkWrite = nil }()
	oneBatch(t, l, "big", 150)
	duringChunkWrite = nil
	crash(l)
	full, _ := os.ReadFile(path)
	lines := fileLines(t, path)
	// Byte offsets of line ends; the last chunk is the lines after before+128.
	var ends []int
	off := 0
	for _, s := range lines {
		off += len(s) + 1
		ends = append(ends, off)
	}
	start := ends[before+128-1]
	var cuts []int
	for i := before + 128; i < len(lines); i++ {
		e := ends[i]
		cuts = append(cuts, e-len(lines[i])-1+len(lines[i])/2, e-2, e-1, e)
	}
	cuts = append(cuts, start)
	for _, cut := range cuts {
		os.WriteFile(path, full[:cut], 0o600)
		os.WriteFile(headPath, hb, 0o600)
		l, err := OpenWith(path, opt)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/after"})
		seq, hash := l.Head()
		l.Close()
		f, _ := os.Open(path)
		rep, _ := VerifyHead(f, pub, Head{Seq: seq, Hash: hash})
		f.Close()
		if !rep.OK() || hasEvent(fileLines(t, path), EventCut) {
			t.Fatalf("a crash inside the last chunk (log cut at byte %d of %d): OK=%v %v", cut, len(full), rep.OK(), rep.Problem)
		}
	}
	// interval_ms and every are signed.
	for _, ed := range [][2]string{{`"interval_ms":60000`, `"interval_ms":3600000`}, {`"every":1000`, `"every":100000`}} {
		var out []string
		done := false
		for _, s := range lines {
			if !done && strings.Contains(s, ed[0]) {
				s, done = strings.Replace(s, ed[0], ed[1], 1), true
			}
			out = append(out, s)
		}
		if !done {
			t.Fatalf("setup: no %s", ed[0])
		}
		if rep := verifyBytes(t, join(rechainAll(out)), pub); rep.OK() {
			t.Fatalf("%s edited in a signed checkpoint verified", ed[0])
		}
	}
}

func rechainAll(lines []string) []string { return rechain(lines, 1) }
