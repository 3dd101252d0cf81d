package audit

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): the 'every' bound,
// file_start and the head file's judgement.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// HOLE (medium): the 'every' bound (fix of round 1's #3) counts decision
// lines only: audit_lost and audit_torn records are not counted. So the
// round-1 attack works again: alter a denial just after the first signed
// checkpoint, drop every later checkpoint, and replace all but the last
// few lines after it by ONE audit_lost record ("disk full", count N).
// Verify with the key: OK, "N line(s) could not be written". 50 lines
// after the altered one vanished and the bound says nothing.
func TestAttackEveryBoundEvadedWithLostRecord(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 60, 5) // d d d d d c d d d d d c ...
	if !strings.Contains(lines[5], `"event":"checkpoint"`) {
		t.Fatalf("setup: line 6 is no checkpoint: %s", lines[5])
	}
	out := append([]string(nil), lines[:7]...) // up to the first checkpoint and the line after it
	out = edit(out, 6, `"action":"allow"`, `"action":"allow","reason":"altered"`)
	zero := strings.Repeat("0", 64)
	out = append(out, `{"time":"2026-12-03T00:00:00Z","event":"audit_lost","reason":"lines could not be written: write /var/log/clawd/audit.log: no space left on device","count":50,"bytes_in":0,"bytes_out":0,"duration_ms":0,"seq":1,"prev":"`+zero+`"}`)
	for _, s := range lines[len(lines)-4:] { // the last 3 decisions, to look alive
		if !strings.Contains(s, `"event":"checkpoint"`) {
			out = append(out, s)
		}
	}
	out = rechainSeq(out, 7)
	out = rechain(out, 6)
	rep := verifyBytes(t, join(out), pub)
	if rep.OK() {
		t.Fatalf("every=5, %d lines after the last signed checkpoint turned into one audit_lost record and a line altered: verify with the key OK (unsigned tail %d, lost %d)", len(lines)-7, rep.UnsignedTail, rep.Lost)
	}
}

// HELD: file_start forging. Cut the first lines of a log (up to just
// after a checkpoint), add "file_start":true to the new first line and
// recompute the chain: the next signed checkpoint's signature fails; with
// every later checkpoint dropped too, nothing is signed and verify with a
// key fails.
func TestAttackFileStartForgeryHeld(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 30, 5)
	cut := append([]string(nil), lines[6:]...)
	cut[0] = strings.Replace(cut[0], `,"seq":`, `,"file_start":true,"seq":`, 1)
	cut = rechain(append([]string{lines[5]}, cut...), 1)[1:]
	if rep := verifyBytes(t, join(cut), pub); rep.OK() {
		t.Fatal("a cut file with a forged file_start verified with the key")
	}
	var noCkpt []string
	for _, s := range cut {
		if !strings.Contains(s, `"event":"checkpoint"`) {
			noCkpt = append(noCkpt, s)
		}
	}
	noCkpt = rechainSeq(append([]string{lines[5]}, noCkpt...), 1)[1:]
	if rep := verifyBytes(t, join(noCkpt), pub); rep.OK() {
		t.Fatal("a cut file with a forged file_start and no checkpoints verified with the key")
	}
	// A checkpoint as the first line, given file_start: its signature covers it.
	ck := append([]string(nil), lines[5:]...)
	ck[0] = strings.Replace(ck[0], `,"seq":`, `,"file_start":true,"seq":`, 1)
	ck = rechain(append([]string{lines[4]}, ck...), 1)[1:]
	if rep := verifyBytes(t, join(ck), pub); rep.OK() {
		t.Fatal("file_start added to a signed checkpoint verified")
	}
}

// HELD: after a clean stop the head file names the end exactly (seq0 ==
// seq): cutting the last line (the closing checkpoint), or any line
// inside what was the last batch, is an audit_cut, not a crash.
func TestAttackTruncateAfterCleanStopHeld(t *testing.T) {
	for _, keep := range []int{1, 2, 3} {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.log")
		key, pub := testKey(t)
		opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
		writeLog(t, path, opt, 0, 5)
		l, _ := OpenWith(path, opt)
		oneBatch(t, l, "x", 3)
		l.Close() // the batch, then [checkpoint], head saved clean
		lines := fileLines(t, path)
		os.WriteFile(path, join(lines[:len(lines)-keep]), 0o600)
		writeLog(t, path, opt, 100, 1)
		after := fileLines(t, path)
		if rep := verifyFile(t, path, pub); rep.OK() || !hasEvent(after, EventCut) {
			t.Fatalf("%d line(s) cut after a clean stop: OK=%v, audit_cut %v", keep, rep.OK(), hasEvent(after, EventCut))
		}
	}
}

// HOLE (low, denial of verification): a head file write that fails (EIO,
// a read-only or full state dir on a copy-on-write filesystem) is only
// reported; the log goes on. At the next start the stale head file says
// clawd wrote less than the log holds: audit_cut "lines after it were not
// written by clawd", and `clawd audit verify` fails on a genuine log for
// good. The daemon knew its head was stale.
func TestAttackFailedHeadWriteMakesSpuriousCut(t *testing.T) {
	dir := t.TempDir()
	path, headPath := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 100, CheckpointInterval: -1, HeadFile: headPath}
	writeLog(t, path, opt, 0, 3)
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	l.OnError = func(err error) { errs = append(errs, err) }
	ro, err := os.Open(headPath) // from here on every head write fails
	if err != nil {
		t.Fatal(err)
	}
	l.hf.f.Close()
	l.hf.f = ro
	for i := range 4 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/genuine/", i)})
	}
	l.Close()
	if len(errs) == 0 {
		t.Fatal("setup: no head write failed")
	}
	writeLog(t, path, opt, 100, 1) // the next start, head file writable again
	if rep := verifyFile(t, path, pub); !rep.OK() {
		t.Fatalf("a genuine log fails verify for good after head file writes failed (%v): %v", errs[0], rep.Problem)
	}
}
