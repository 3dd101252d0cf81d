package audit

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): attacks on the
// fixes of round 1 (head file per batch, audit_cut, file_start, every,
// predecessor discovery). Tests that fail mark holes; the ones marked
// HELD are attacks the code withstood.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// oneBatch writes n decision lines as ONE batch (group commit: what
// concurrent callers get under load), the way Log does, but with all of
// them pending before the write.
func oneBatch(t *testing.T, l *Logger, tag string, n int) {
	t.Helper()
	l.mu.Lock()
	for i := range n {
		e := Entry{Time: time.Now().UTC(), Event: EventDecision, Container: "agent", Host: "api.example.test", Path: fmt.Sprintf("/%s/%d", tag, i), Action: "deny", Rule: "r1"}
		b, ok := encodeBody(nil, &e)
		if !ok {
			l.mu.Unlock()
			t.Fatal("encode")
		}
		l.pending = append(l.pending, b...)
		l.pending = append(l.pending, '\n')
		l.npend++
	}
	l.commit() // releases mu
}

// crash abandons a Logger as a SIGKILL would: no Close, no head saved.
func crash(l *Logger) {
	l.mu.Lock()
	f := l.f
	l.f = nil
	l.mu.Unlock()
	f.Close()
}

func hasEvent(lines []string, ev string) bool {
	for _, l := range lines {
		if strings.Contains(l, `"event":"`+ev+`"`) {
			return true
		}
	}
	return false
}

// HOLE (high): after a crash the head file names the last batch (seq0,
// seq). head.judge accepts any log whose last line has a seq inside that
// batch as long as the line AT seq0 is genuine: it never checks that the
// lines after seq0 chain from it, or that they are the ones clawd wrote.
// So whoever can write the log after a crash (daemon killed, OOM, power
// loss) replaces the last batch's lines (here 5 denials) by forged ones
// (allows) with seqs inside the batch; the restarted daemon accepts them,
// records 2 "lost" lines, and its next checkpoint signs the forgery.
// Verify with the key and the daemon's head: OK.
func TestAttackCrashThenForgeInsideLastBatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 5) // clean: 5 lines + checkpoint
	good := fileLines(t, path)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	oneBatch(t, l, "denied", 6) // seq 7..12 in one batch
	crash(l)

	// The attacker keeps the genuine lines up to seq0 (6) and writes
	// forged lines seq 7..10 (< 12, inside the batch), chained to it.
	forged := append([]string(nil), good...)
	for s := int64(7); s <= 10; s++ {
		forged = append(forged, strings.Replace(forgeAfter(forged[len(forged)-1], s), `"action":"allow"`, `"action":"allow","path":"/forged"`, 1))
	}
	if err := os.WriteFile(path, join(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = OpenWith(path, opt) // the daemon restarts
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/after"})
	seq, hash := l.Head()
	l.Close()
	after := fileLines(t, path)
	rep, err := VerifyHead(bytes.NewReader(join(after)), pub, Head{Seq: seq, Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() && !hasEvent(after, EventCut) {
		t.Fatalf("4 forged lines put in place of a crashed batch are accepted on restart and signed: verify with key and head OK (%d signed, lost %d), no audit_cut:\n%s", rep.Signed, rep.Lost, strings.Join(after[len(good):], "\n"))
	}
}

// HOLE (high): the same through predecessor discovery. After the crash
// logrotate moves the log to audit.log.1 (while clawd is down) and the
// attacker plants audit.log-zzz, newer than it, holding the genuine
// lines up to the batch's start plus forged ones. The new file links to
// the planted file; its first checkpoint signs the forgery, and `cat
// audit.log-zzz audit.log | clawd audit verify --key` says OK.
func TestAttackPlantedPredecessorAfterCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 5)
	good := fileLines(t, path)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	oneBatch(t, l, "denied", 6)
	crash(l)
	if err := os.Rename(path, path+".1"); err != nil { // logrotate, clawd down
		t.Fatal(err)
	}
	forged := append([]string(nil), good...)
	for s := int64(7); s <= 11; s++ {
		forged = append(forged, forgeAfter(forged[len(forged)-1], s))
	}
	planted := path + "-zzz"
	if err := os.WriteFile(planted, join(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	os.Chtimes(planted, future, future)
	writeLog(t, path, opt, 100, 3) // the daemon starts on the new empty file
	a, _ := os.ReadFile(planted)
	b, _ := os.ReadFile(path)
	rep := verifyBytes(t, append(a, b...), pub)
	genuine, _ := os.ReadFile(path + ".1")
	real := verifyBytes(t, append(genuine, b...), pub)
	if rep.OK() && !real.OK() {
		t.Fatalf("the new log links to a planted predecessor with 5 forged lines: planted+new verifies OK with the key (%d signed), the genuine audit.log.1+new fails: %v", rep.Signed, real.Problem)
	}
}

// HOLE (high): the audit_cut record lives only in memory until its batch
// is written; the head file keeps the lost count but not the cut. So the
// attacker cuts the log's tail while clawd is down; clawd starts and
// writes [audit_cut, checkpoint, line]; the attacker kills it and cuts
// that batch off too. The next start sees the end of the log at the head
// file's seq0 (a crash before its last batch was written): no cut, two
// or three lines "lost". The removed history is gone without a trace
// verify fails on.
func TestAttackCutRecordSuppressedByCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 5, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 20)
	lines := fileLines(t, path)
	cut := join(lines[:8]) // the denials after line 8 removed, clawd down
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/first-after-start"}) // batch: audit_cut, checkpoint, this line
	crash(l)
	if !hasEvent(fileLines(t, path), EventCut) {
		t.Fatal("setup: the first start did not record the cut")
	}
	if err := os.WriteFile(path, cut, 0o600); err != nil { // the record cut off again
		t.Fatal(err)
	}
	l, err = OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/after"})
	seq, hash := l.Head()
	l.Close()
	after := fileLines(t, path)
	rep, err := VerifyHead(bytes.NewReader(join(after)), pub, Head{Seq: seq, Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() && !hasEvent(after, EventCut) {
		t.Fatalf("%d lines cut off, then the audit_cut batch cut off after a kill: verify with key and head OK (lost %d), no audit_cut left", len(lines)-8, rep.Lost)
	}
}

// HOLE (medium): remove the whole log of a daemon that never rotated it
// (clawd down). The empty file at open is taken for a rotation: the new
// first line has file_start and links to the head file's hash, so verify
// of the new file says OK ("links to a line before this file (a rotated
// log)"). The daemon knew no predecessor was found and says nothing.
func TestAttackDeletedLogLooksRotated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 5, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 20)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, opt, 100, 3)
	after := fileLines(t, path)
	rep := verifyFile(t, path, pub)
	if rep.OK() && !traceOfCut(after) {
		t.Fatalf("the whole log (20 lines, never rotated) deleted while clawd was down: the new file verifies OK with the key (LinkedBefore=%v) and records nothing about the missing predecessor", rep.LinkedBefore)
	}
}

// HOLE (low/medium): periodic checkpoints are bounded in lines (every)
// but not in time. Lines spanning 30 minutes with a checkpoint each
// minute: alter a denial after the first one, drop every later
// checkpoint, recompute the chain. Under 1000 lines, verify with the key
// is OK (a warning about an unsigned tail): the interval's checkpoints
// vanish without a trace, as long as nothing anchors the end (the daemon
// stopped for good, or a file verified alone).
func TestAttackStripTimedCheckpoints(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC()
	for i := range 30 {
		l.Log(Entry{Time: start.Add(time.Duration(i) * time.Minute), Event: EventDecision, Container: "agent", Path: fmt.Sprint("/m/", i), Action: "deny"})
		l.Checkpoint() // what the minute timer does
	}
	l.Close()
	lines := fileLines(t, path)
	// lines: d1 c d2 c d3 c ... : keep d1 c1, then decisions only.
	var out []string
	for i, s := range lines {
		if i > 1 && strings.Contains(s, `"event":"checkpoint"`) {
			continue
		}
		out = append(out, s)
	}
	out = edit(out, 3, `"action":"deny"`, `"action":"allow"`)
	out = rechainSeq(out, 2)
	// After the last signed checkpoint nothing the file holds is signed,
	// times included (round 3, T1: a time bound read from those lines is
	// the attacker's to set): what anchors the tail is the chain's head,
	// which verify takes from the running daemon (or --head), and which
	// the daemon's own head file checks at its next start.
	rep, err := VerifyHead(strings.NewReader(string(join(out))), pub, genuineHead(lines))
	if err != nil || rep.OK() {
		t.Fatalf("28 minutes of lines after a 1-minute checkpoint, every later checkpoint removed and a denial turned into an allow: verify with the key and the head OK (unsigned tail %d)", rep.UnsignedTail)
	}
}

// genuineHead is the head of a log as written (its last line).
func genuineHead(lines []string) Head {
	h, _ := parseChainHead([]byte(lines[len(lines)-1]))
	sum := sha256.Sum256([]byte(lines[len(lines)-1]))
	return Head{Seq: h.Seq, Hash: hex.EncodeToString(sum[:])}
}

// rechainSeq renumbers seq from line i on and recomputes prev.
func rechainSeq(lines []string, i int) []string {
	out := append([]string(nil), lines...)
	for ; i < len(out); i++ {
		h, _ := parseChainHead([]byte(out[i-1]))
		j := strings.LastIndex(out[i], `,"seq":`)
		k := strings.Index(out[i][j:], `,"prev":`)
		out[i] = out[i][:j] + fmt.Sprintf(`,"seq":%d`, h.Seq+1) + out[i][j+k:]
		out = rechain(out, i)
	}
	return out
}

// HOLE (medium): docs/attacks/audit.md says an emptied file gets an
// audit_cut record. It does not: a log truncated to 0 bytes while clawd
// is down is taken for a fresh file after a rotation (resume's size == 0
// branch never judges against the head). With an older rotated file
// beside it, the new file links to the head, so the pair .1 + current
// fails at the junction, pointing at audit.log.1's last line as
// "altered"; the current file alone verifies OK. No record says that
// clawd's lines since the last rotation were erased.
func TestAttackEmptiedLogGetsNoCutRecord(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 5, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/before-rotation/", i)})
	}
	os.Rename(path, path+".1")
	l.Reopen()
	for i := range 12 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/erased/", i), Action: "deny"})
	}
	l.Close()
	if err := os.Truncate(path, 0); err != nil { // clawd down
		t.Fatal(err)
	}
	writeLog(t, path, opt, 100, 3)
	after := fileLines(t, path)
	if !hasEvent(after, EventCut) {
		rep := verifyFile(t, path, pub)
		t.Fatalf("the log emptied while clawd was down (12 lines erased): no audit_cut; the new file alone verifies OK=%v", rep.OK())
	}
}
