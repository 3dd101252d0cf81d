package audit

// Red-team regression tests (docs/attacks/audit.md). Tests that fail mark
// holes; the ones marked HELD are attacks the code withstood.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLog writes n decision lines with the daemon's options (key, head
// file) to path and closes the Logger (a clean stop: the head is saved).
func writeLog(t *testing.T, path string, opt Options, from, n int) {
	t.Helper()
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		l.Log(Entry{Event: EventDecision, Container: "agent", Host: "api.example.test", Path: fmt.Sprintf("/item/%d", i), Action: "deny", Rule: "r1"})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func fileLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// traceOfCut reports whether the log holds a line that is neither a
// decision nor a checkpoint: the record a daemon should leave when it
// finds the file's end behind the head it saved.
func traceOfCut(lines []string) bool {
	for _, l := range lines {
		if !strings.Contains(l, `"event":"decision"`) && !strings.Contains(l, `"event":"checkpoint"`) {
			return true
		}
	}
	return false
}

// HOLE (high): the tail of the log is deleted while the daemon is stopped
// (or after it crashed). On restart, resume continues the chain from the
// file's new last line, ignoring the head file that says the chain went
// further: the deleted seqs are written again, the next signed checkpoint
// vouches for the truncated history, and verify (with the key, and with
// the restarted daemon's head) reports OK. The cut leaves no trace.
func TestAttackRestartPapersOverDeletedTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 5, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 20)
	lines := fileLines(t, path)
	// The attacker removes every line after the 8th (among them the
	// denials the agent wants gone), daemon stopped.
	if err := os.WriteFile(path, join(lines[:8]), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := OpenWith(path, opt) // the daemon starts again
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		l.Log(Entry{Event: EventDecision, Container: "agent", Path: fmt.Sprintf("/after/%d", i), Action: "allow"})
	}
	seq, hash := l.Head()
	l.Close()
	after := fileLines(t, path)
	rep, err := VerifyHead(bytes.NewReader(join(after)), pub, Head{Seq: seq, Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() && !traceOfCut(after) {
		t.Fatalf("%d lines cut off the end while the daemon was stopped: after the restart the file verifies OK with the key and the daemon's head (%+v) and holds no record of the cut", len(lines)-8, rep)
	}
}

// HOLE (high): same as above, but the whole log is rewritten (a chain
// without checkpoints, as anyone who can write the file can compute)
// while the daemon is stopped: the daemon continues it and signs it.
func TestAttackRestartSignsRewrittenLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 5, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	writeLog(t, path, opt, 0, 12)
	// A forged history: seq 1 without prev, then lines chained to it,
	// no checkpoints, nothing denied.
	forged := []string{`{"time":"2026-01-01T00:00:00Z","event":"decision","action":"allow","bytes_in":0,"bytes_out":0,"duration_ms":0,"seq":1}`}
	for i := 1; i < 4; i++ {
		forged = append(forged, forgeAfter(forged[i-1], int64(i+1)))
	}
	if err := os.WriteFile(path, join(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, opt, 100, 6) // the daemon runs again
	after := fileLines(t, path)
	rep := verifyBytes(t, join(after), pub)
	if rep.OK() && !traceOfCut(after) {
		t.Fatalf("a log rewritten while the daemon was stopped verifies OK with the key after the restart: the daemon's checkpoints now vouch for the forgery (%+v)", rep)
	}
}

// HOLE (medium): with --key, only the checkpoints present are checked.
// Whoever can write the file alters a line after the first signed
// checkpoint, drops every later checkpoint and recomputes the chain: verify
// says OK (a warning about an "unsigned tail" of thousands of lines), exit
// status 0, although the daemon never leaves more than checkpoint-every
// lines unsigned (it signs every 1000 lines by default).
func TestAttackStripCheckpointsThenRewrite(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 3500, 0) // default: a checkpoint every 1000 lines
	if !strings.Contains(lines[1000], `"event":"checkpoint"`) {
		t.Fatalf("layout changed: line 1001 is %s", lines[1000])
	}
	out := append([]string(nil), lines[:1001]...)
	for _, l := range lines[1001:] {
		if strings.Contains(l, `"event":"checkpoint"`) {
			continue // cannot be re-signed: dropped
		}
		out = append(out, l)
	}
	// Renumber and rechain, and alter line 1500's action.
	for i := 1001; i < len(out); i++ {
		s := out[i]
		s = s[:strings.Index(s, `,"seq":`)]
		if i == 1500 {
			s = strings.Replace(s, `"action":"allow"`, `"action":"deny"`, 1)
		}
		sum := sha256.Sum256([]byte(out[i-1]))
		out[i] = fmt.Sprintf(`%s,"seq":%d,"prev":"%x"}`, s, i+1, sum)
	}
	rep := verifyBytes(t, join(out), pub)
	if rep.OK() {
		t.Fatalf("checkpoints stripped and %d lines after the first one rewritten: verify --key OK (unsigned tail %d, checkpoints every %d lines)", len(out)-1001, rep.UnsignedTail, DefaultCheckpointEvery)
	}
}

// HOLE (medium): the first lines of a log that was never rotated are
// deleted, up to and including a checkpoint: the file then looks like a
// rotated log's successor and verifies OK with the key (a note about
// "line 1 links to a line before this file"). Nothing in the file says
// where its chain was meant to start.
func TestAttackDeleteHeadOfUnrotatedLog(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5) // checkpoints on lines 6, 12 and 15
	cut := lines[6:]                   // lines 1..6 (5 decisions and their checkpoint) gone
	rep := verifyBytes(t, join(cut), pub)
	if rep.OK() {
		t.Fatalf("the first 6 lines of an unrotated log deleted: verify --key OK (%+v)", rep)
	}
}

// HELD: a checkpoint is a signature over its own line, which holds the
// hash of the line before: reusing one at another place, or splicing two
// files, is found.
func TestAttackSpliceAndReplayHeld(t *testing.T) {
	key, pub := testKey(t)
	a := chainedLog(t, key, 12, 5)
	b := chainedLog(t, key, 12, 5)
	// b's chain after a's first checkpoint: same key, same seqs.
	spliced := append(append([]string(nil), a[:6]...), b[6:]...)
	if rep := verifyBytes(t, join(spliced), pub); rep.OK() {
		t.Fatalf("two logs of the same key spliced verify: %+v", rep)
	}
	// Two complete files of the same key, one after the other.
	if rep := verifyBytes(t, join(append(append([]string(nil), a...), b...)), pub); rep.OK() {
		t.Fatalf("two files concatenated verify: %+v", rep)
	}
	// Reordered blocks between checkpoints.
	re := append(append(append([]string(nil), a[:6]...), a[12:]...), a[6:12]...)
	if rep := verifyBytes(t, join(re), pub); rep.OK() {
		t.Fatalf("reordered verify: %+v", rep)
	}
}

// HELD: JSON tricks in a line whose bytes are covered by a later signed
// checkpoint cannot be used: any change of the bytes breaks the chain; and
// lines whose keys Go and jq would read differently (a second "seq", a
// case-folded "SEQ", an escaped "\u0073eq") forged into the chain fail.
func TestAttackJSONTricksHeld(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5)
	for name, f := range map[string]func(string) string{
		"duplicate seq": func(s string) string { return strings.Replace(s, `{"time"`, `{"seq":999,"time"`, 1) },
		"case-folded":   func(s string) string { return strings.Replace(s, `"method":"GET"`, `"method":"GET","SEQ":3`, 1) },
		"escaped key": func(s string) string {
			return strings.Replace(s, `"method":"GET"`, `"\u006dethod":"PUT","method":"GET"`, 1)
		},
		"whitespace":     func(s string) string { return strings.Replace(s, `,"method"`, ` , "method"`, 1) },
		"trailing space": func(s string) string { return s + " " },
	} {
		t.Run(name, func(t *testing.T) {
			l := append([]string(nil), lines...)
			l[2] = f(l[2])
			if rep := verifyBytes(t, join(l), pub); rep.OK() {
				t.Fatalf("line 3 altered (%s) verifies", l[2])
			}
			// Rechained after it: the checkpoint on line 6 no longer verifies.
			if rep := verifyBytes(t, join(rechain(l, 3)), pub); rep.OK() || rep.Problem == nil || rep.Problem.Line > 6 {
				t.Fatalf("line 3 altered and rechained: %+v", rep.Problem)
			}
		})
	}
}

// HELD: agent-controlled text with newlines, U+2028, invalid UTF-8, quotes
// and a fake chain suffix stays inside its field: one line per entry, the
// file verifies, and decoding gives back the fields (invalid UTF-8 as
// U+FFFD).
func TestAttackAgentTextHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	evil := "/x\n{\"event\":\"checkpoint\",\"seq\":2}\r\u2028\u2029\xff\xfe\"},\"seq\":7,\"prev\":\"" + strings.Repeat("0", 64) + "\"}\x00"
	l.Log(Entry{Event: EventDecision, Path: evil, Host: evil, Cmdline: evil, Program: evil, Labels: map[string]string{evil: evil, "seq": "5"}, Reason: evil})
	l.Log(Entry{Event: EventDecision, Path: strings.Repeat("é", 100000)})
	l.Close()
	lines := fileLines(t, path)
	if len(lines) != 3 {
		t.Fatalf("want 2 lines and a checkpoint, got %d", len(lines))
	}
	if rep := verifyBytes(t, join(lines), pub); !rep.OK() || rep.LastSeq != 3 {
		t.Fatalf("%+v %v", rep, rep.Problem)
	}
	for _, c := range "\u2028\u2029\r\x00" {
		if strings.ContainsRune(lines[0], c) {
			t.Fatalf("raw %U in the line", c)
		}
	}
}

// HELD: a cut at every byte of a log, then two restarts (each crashing
// before a line of its own got out), then a clean run: the file verifies
// with the key and every torn fragment is recorded.
func TestAttackCrashTwiceAtEveryByte(t *testing.T) {
	key, pub := testKey(t)
	base := chainedLog(t, key, 4, 2)
	full := join(base)
	for cut := 1; cut < len(full); cut++ {
		path := filepath.Join(t.TempDir(), "audit.log")
		os.WriteFile(path, full[:cut], 0o600)
		// First restart: crashes in its first write, half a line out.
		l, err := OpenWith(path, Options{})
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/first-restart"})
		l.f.Close() // crash: no Close
		b, _ := os.ReadFile(path)
		os.WriteFile(path, b[:len(b)-7], 0o600)
		// Second restart, clean.
		writeLog(t, path, Options{Key: key, CheckpointInterval: -1}, 0, 1)
		rep := verifyFile(t, path, pub)
		if !rep.OK() {
			t.Fatalf("cut %d: %+v %v\n%s", cut, rep, rep.Problem, readAll(t, path))
		}
	}
}

func readAll(t *testing.T, path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

var _ = hex.EncodeToString
var _ ed25519.PublicKey

// HOLE (medium): the daemon crashes in the middle of a write (the file
// ends torn) after its last checkpoint, and logrotate moves the file while
// it is down. The restarted daemon refuses the torn predecessor
// (continueFrom) and continues from the stale head file: the new file's
// chain forks off the old file's middle, the old file's torn end is never
// ended or recorded. The two files, genuine, never verify again, and the
// lines after the head in the old file are in no chain.
func TestAttackCrashTornThenOfflineRotation(t *testing.T) {
	dir := t.TempDir()
	path, head := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointEvery: 3, CheckpointInterval: -1, HeadFile: head}
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // a checkpoint (and the head saved) after 3
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/", i)})
	}
	l.f.Close() // crash, with half a line out
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-01-01T00:00:00Z","event":"decis`)
	f.Close()
	if err := os.Rename(path, path+".1"); err != nil { // logrotate, daemon down
		t.Fatal(err)
	}
	writeLog(t, path, opt, 100, 2)
	a, _ := os.ReadFile(path + ".1")
	b, _ := os.ReadFile(path)
	if len(a) > 0 && a[len(a)-1] != '\n' {
		a = append(a, '\n') // be kind: end the torn line for verify
	}
	rep := verifyBytes(t, append(a, b...), pub)
	if !rep.OK() {
		t.Fatalf("a crash mid-write then an offline rotation: the genuine files do not verify together: %v\n%s%s", rep.Problem, a, b)
	}
}

// HOLE (medium): lines lost to write errors (disk full: an agent that can
// fill the log's file system) are counted in memory only, to be recorded
// by an audit_lost line once a write succeeds. A crash or a restart before
// that (the disk still full at Close) forgets them: the restarted daemon's
// chain has no gap (the lost lines never got a seq) and no audit_lost
// line; verify reports OK with nothing lost.
func TestAttackLostLinesForgottenAcrossCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointInterval: -1, HeadFile: filepath.Join(dir, "audit.head")}
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	var errs int
	l.OnError = func(error) { errs++ }
	l.Log(Entry{Event: EventDecision, Path: "/before"})
	full, err := os.OpenFile("/dev/full", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	real := l.f
	l.f = full // the file system is full from here on
	l.mu.Unlock()
	for i := range 3 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/exfil/", i), Action: "deny"})
	}
	if errs != 3 {
		t.Fatalf("%d write errors, want 3", errs)
	}
	l.Close() // the closing checkpoint and audit_lost record fail too
	real.Close()
	writeLog(t, path, opt, 0, 2) // restarted, the disk has room again
	rep := verifyFile(t, path, pub)
	if rep.OK() && rep.Lost == 0 {
		t.Fatalf("3 lines lost to a full disk, then a restart: the log verifies OK with no audit_lost record (%+v)\n%s", rep, readAll(t, path))
	}
}

// HOLE (medium): as TestStaleHeadFileAfterCrashAndRotation, but logrotate
// names the rotated file as with dateext (RHEL's default: audit.log-YYYYMMDD)
// or compresses it at once (compress without delaycompress): continueFrom
// only looks at path+".1", so the restarted daemon continues from the stale
// head file (the last checkpoint) and forks the chain off the old file's
// middle; the genuine files never verify together again.
func TestAttackCrashThenDateextRotation(t *testing.T) {
	dir := t.TempDir()
	path, head := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointInterval: -1, HeadFile: head}
	writeLog(t, path, opt, 0, 1) // head saved at Close
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/crashed-", i)})
	}
	l.f.Close() // the daemon dies: no Close
	rotated := path + "-20261203"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	writeLog(t, path, opt, 100, 1)
	a, _ := os.ReadFile(rotated)
	b, _ := os.ReadFile(path)
	if rep := verifyBytes(t, append(a, b...), pub); !rep.OK() {
		t.Fatalf("crash, then logrotate with dateext: the genuine files do not verify together: %v\n%s%s", rep.Problem, a, b)
	}
}
