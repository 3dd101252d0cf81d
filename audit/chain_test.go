package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func verifyFile(t *testing.T, path string, pub ed25519.PublicKey) Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Verify(f, pub)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func verifyBytes(t *testing.T, b []byte, pub ed25519.PublicKey) Report {
	t.Helper()
	rep, err := Verify(bytes.NewReader(b), pub)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func testKey(t *testing.T) (ed25519.PrivateKey, ed25519.PublicKey) {
	t.Helper()
	key, _, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "audit-key"))
	if err != nil {
		t.Fatal(err)
	}
	return key, key.Public().(ed25519.PublicKey)
}

// The chain's fields must stay Entry's last: the Logger appends them.
func TestChainFieldsAreLast(t *testing.T) {
	ty := reflect.TypeFor[Entry]()
	n := ty.NumField()
	var got []string
	for i := n - 3; i < n; i++ {
		got = append(got, ty.Field(i).Name)
	}
	if strings.Join(got, ",") != "Seq,Prev,Sig" {
		t.Fatalf("Entry's last fields are %v: new fields go before Seq (the chain appends seq, prev, sig to the encoded line)", got)
	}
}

// A line as the Logger writes it decodes to the entry logged, with the
// chain's fields, and is what json.Marshal writes for that entry.
func TestChainLineIsMarshalOfItsEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, _ := testKey(t)
	l, err := OpenWith(path, Options{Key: key, CheckpointEvery: 2})
	if err != nil {
		t.Fatal(err)
	}
	in := benchEntry()
	in.Seq, in.Prev, in.Sig = 99, "forged", "forged" // the caller's are dropped
	l.Log(in)
	l.Log(in)
	l.Close()
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 2 lines and a checkpoint, got %q", lines)
	}
	got := readLines(t, path)
	for i, e := range got {
		want, _ := marshalEntry(nil, e)
		if string(want) != lines[i] {
			t.Errorf("line %d is not json.Marshal of its entry:\n got %s\nwant %s", i+1, lines[i], want)
		}
	}
	if got[0].Seq != 1 || got[0].Prev != "" || got[0].Sig != "" || got[1].Seq != 2 || got[2].Event != EventCheckpoint || got[2].Count != 2 {
		t.Fatalf("chain fields: %+v", got)
	}
	sum := sha256.Sum256([]byte(lines[0]))
	if got[1].Prev != hex.EncodeToString(sum[:]) {
		t.Fatalf("prev of line 2 = %s, want the SHA-256 of line 1", got[1].Prev)
	}
}

// chainedLog writes n decision lines with a checkpoint every `every` and
// returns the file's lines.
func chainedLog(t *testing.T, key ed25519.PrivateKey, n, every int) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := OpenWith(path, Options{Key: key, CheckpointEvery: every, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Log(Entry{Event: EventDecision, Container: "agent", Method: "GET", Host: "api.example.test", Path: fmt.Sprintf("/item/%d", i), Action: "allow", Status: 200})
	}
	l.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func join(lines []string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

var prevRE = regexp.MustCompile(`"prev":"[0-9a-f]{64}"`)

// rechain recomputes every prev from line i on, as an attacker without the
// key can.
func rechain(lines []string, i int) []string {
	out := append([]string(nil), lines...)
	for ; i < len(out); i++ {
		sum := sha256.Sum256([]byte(out[i-1]))
		out[i] = prevRE.ReplaceAllString(out[i], `"prev":"`+hex.EncodeToString(sum[:])+`"`)
	}
	return out
}

func TestVerifyAcceptsWhatTheLoggerWrote(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 23, 5)
	rep := verifyBytes(t, join(lines), pub)
	if rep.Problem != nil {
		t.Fatalf("verify: %v", rep.Problem)
	}
	// 23 lines, checkpoints after 5, 10, 15, 20 and at Close.
	if rep.Lines != 28 || rep.Checkpoints != 5 || rep.Signed != 5 || rep.UnsignedTail != 0 || rep.FirstSeq != 1 || rep.LastSeq != 28 || rep.LinkedBefore {
		t.Fatalf("report %+v", rep)
	}
	// Without the key the chain is still checked, the signatures are not.
	rep = verifyBytes(t, join(lines), nil)
	if rep.Problem != nil || rep.Signed != 0 || rep.Checkpoints != 5 || rep.UnsignedTail != 28 {
		t.Fatalf("report without key %+v", rep)
	}
}

// Every kind of tampering points at the line it altered.
func TestVerifyFindsTampering(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5) // lines 6 and 12 are checkpoints, 15 the last (Close)
	if !strings.Contains(lines[5], `"event":"checkpoint"`) || !strings.Contains(lines[11], `"event":"checkpoint"`) || len(lines) != 15 {
		t.Fatalf("layout changed: %q", lines)
	}
	_, otherPub := testKey(t)
	otherKey, _ := testKey(t)
	forged := func(at int) []string {
		// A checkpoint signed with another key, chained correctly.
		l := append([]string(nil), lines...)
		unsigned, _, ok := splitSig([]byte(l[at]))
		if !ok {
			t.Fatalf("line %d is no checkpoint", at+1)
		}
		sig := ed25519.Sign(otherKey, CheckpointMessage(unsigned))
		l[at] = regexp.MustCompile(`"sig":"[^"]*"`).ReplaceAllString(l[at], `"sig":"`+b64(sig)+`"`)
		return rechain(l, at+1)
	}
	for _, tc := range []struct {
		name string
		log  []string
		pub  ed25519.PublicKey
		line int
		why  string
	}{
		{"edit a field", edit(lines, 2, `"method":"GET"`, `"method":"PUT"`), pub, 3, "altered"},
		{"edit the action", edit(lines, 6, `"action":"allow"`, `"action":"deny"`), pub, 7, "altered"},
		{"edit the last line", edit(lines, 14, `"count":2`, `"count":3`), pub, 15, "signature"},
		{"edit and rechain", rechain(edit(lines, 2, `"status":200`, `"status":403`), 3), pub, 6, "signature"},
		{"delete a line", del(lines, 3), pub, 4, "1 line(s) missing"},
		{"delete the first line", del(lines, 0), pub, 1, "removed"},
		{"delete the first line and its prev", edit(del(lines, 0), 0, prevRE.FindString(lines[1]), `"x":1`), pub, 1, "seq 2 without prev"},
		{"delete a checkpoint", del(lines, 5), pub, 6, "missing"},
		{"delete and rechain", rechain(del(lines, 3), 3), pub, 4, "missing"},
		{"insert a copy", ins(lines, 4, lines[3]), pub, 4, "inserted"},
		{"insert a forged line", ins(lines, 4, forgeAfter(lines[3], 5)), pub, 5, "inserted"},
		{"insert a line with a later seq", ins(lines, 4, forgeAfter(lines[3], 6)), pub, 5, "1 line(s) missing"},
		{"swap two lines", swap(lines, 2, 3), pub, 3, "seq 4 after 2"},
		{"alter a seq", edit(lines, 2, `"seq":3`, `"seq":30`), pub, 3, "seq 30 after 2"},
		{"remove the chain fields", edit(lines, 2, lines[2][strings.Index(lines[2], `,"seq"`):], "}"), pub, 3, "no seq"},
		{"remove prev", edit(lines, 2, prevRE.FindString(lines[2])+"", `"x":1`), pub, 3, "no prev"},
		{"forged checkpoint", forged(11), pub, 12, "signature does not verify"},
		{"garbage line", ins(lines, 4, "not json"), pub, 5, "not a JSON line"},
		{"fake torn record", ins(lines, 4, "{garbage"), pub, 5, "not a JSON line"},
		{"cut inside the last line", nil, pub, 15, "ends inside this line"},
		{"another key", lines, otherPub, 6, "signature does not verify"},
		{"replay a signature", rechain(edit(lines, 11, regexp.MustCompile(`"sig":"[^"]*"`).FindString(lines[11]), regexp.MustCompile(`"sig":"[^"]*"`).FindString(lines[5])), 12), pub, 12, "signature does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := join(tc.log)
			if tc.log == nil {
				b = join(lines)
				b = b[:len(b)-10]
			}
			rep := verifyBytes(t, b, tc.pub)
			if rep.Problem == nil {
				t.Fatalf("tampering not found: %+v", rep)
			}
			if rep.Problem.Line != tc.line || !strings.Contains(rep.Problem.Why, tc.why) {
				t.Fatalf("problem %q, want line %d and %q", rep.Problem, tc.line, tc.why)
			}
		})
	}
}

// Lines cut off the end leave a valid chain: the report says how much is
// not vouched for by a signature, and that the chain ends signed or not.
func TestVerifyReportsUnsignedTail(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5)
	rep := verifyBytes(t, join(lines[:9]), pub) // cut after 3 lines past the checkpoint on line 6
	if rep.Problem != nil || rep.UnsignedTail != 3 || rep.SignedSeq != 6 || rep.LastSeq != 9 {
		t.Fatalf("report %+v", rep)
	}
	rep = verifyBytes(t, join(lines[:6]), pub) // cut right after a checkpoint: undetectable from the file alone
	if rep.Problem != nil || rep.UnsignedTail != 0 || rep.SignedSeq != 6 {
		t.Fatalf("report %+v", rep)
	}
}

func edit(lines []string, i int, old, new string) []string {
	out := append([]string(nil), lines...)
	if !strings.Contains(out[i], old) {
		panic(fmt.Sprintf("line %d has no %q", i+1, old))
	}
	out[i] = strings.Replace(out[i], old, new, 1)
	return out
}

func del(lines []string, i int) []string {
	return append(append([]string(nil), lines[:i]...), lines[i+1:]...)
}

func ins(lines []string, i int, s string) []string {
	out := append([]string(nil), lines[:i]...)
	return append(append(out, s), lines[i:]...)
}

func swap(lines []string, i, j int) []string {
	out := append([]string(nil), lines...)
	out[i], out[j] = out[j], out[i]
	return out
}

// forgeAfter makes a line that follows prev with the given seq, as an
// attacker who read the file can.
func forgeAfter(prev string, seq int64) string {
	sum := sha256.Sum256([]byte(prev))
	return fmt.Sprintf(`{"time":"2026-01-01T00:00:00Z","event":"decision","action":"allow","bytes_in":0,"bytes_out":0,"duration_ms":0,"seq":%d,"prev":"%x"}`, seq, sum)
}

func TestChainContinuesAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	for round := range 3 {
		l, err := OpenWith(path, Options{Key: key, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			l.Log(Entry{Event: EventDecision, Path: fmt.Sprintf("/r%d/%d", round, i)})
		}
		l.Close()
	}
	rep := verifyFile(t, path, pub)
	if rep.Problem != nil || rep.LastSeq != 15 || rep.Signed != 3 || rep.UnsignedTail != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A crash during a write leaves a torn last line: the restarted Logger
// ends it, records it, and the chain goes around it; verify says so.
func TestChainRecordsTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, _ := OpenWith(path, Options{Key: key, CheckpointInterval: -1})
	l.Log(Entry{Event: EventDecision, Path: "/before"})
	l.Close()
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	frag := `{"time":"2026-01-01T00:00:00Z","event":"decision","pa`
	f.WriteString(frag)
	f.Close()
	if rep := verifyFile(t, path, pub); rep.Problem == nil || rep.Problem.Line != 3 || !strings.Contains(rep.Problem.Why, "ends inside") {
		t.Fatalf("torn file before restart: %+v", rep.Problem)
	}
	l, err := OpenWith(path, Options{Key: key, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/after"})
	l.Close()
	rep := verifyFile(t, path, pub)
	if rep.Problem != nil || len(rep.Torn) != 1 || rep.Torn[0] != 3 {
		t.Fatalf("report %+v (%v)", rep, rep.Problem)
	}
	b, _ := os.ReadFile(path)
	lines := strings.Split(string(b), "\n")
	if lines[2] != frag || !strings.Contains(lines[3], `"event":"audit_torn"`) || !strings.Contains(lines[3], fmt.Sprintf("%d bytes", len(frag))) {
		t.Fatalf("log %q", lines)
	}
	// The fragment is bound by the record: altering it is found.
	tampered := bytes.Replace(b, []byte(`"pa`+"\n"), []byte(`"pb`+"\n"), 1)
	if rep := verifyBytes(t, tampered, pub); rep.Problem == nil || rep.Problem.Line != 3 {
		t.Fatalf("altered torn line: %+v", rep.Problem)
	}
}

// Rotation: the old file ends with a checkpoint, the new one links to it;
// each verifies alone (the new one's first link unchecked) and together.
func TestChainAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	key, pub := testKey(t)
	l, _ := OpenWith(path, Options{Key: key, CheckpointInterval: -1})
	l.Log(Entry{Event: EventDecision, Path: "/old"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/old-too"}) // before SIGHUP: still the old file
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/new"})
	l.Close()
	old := verifyFile(t, path+".1", pub)
	if old.Problem != nil || old.UnsignedTail != 0 || old.LastSeq != 3 || old.LinkedBefore {
		t.Fatalf("old file %+v", old)
	}
	cur := verifyFile(t, path, pub)
	if cur.Problem != nil || !cur.LinkedBefore || cur.FirstSeq != 4 || cur.UnsignedTail != 0 {
		t.Fatalf("new file %+v", cur)
	}
	a, _ := os.ReadFile(path + ".1")
	b, _ := os.ReadFile(path)
	if both := verifyBytes(t, append(a, b...), pub); both.Problem != nil || both.LinkedBefore || both.LastSeq != 5 {
		t.Fatalf("both %+v", both)
	}
	// The new file's first link is checked once the old file is there:
	// a line deleted at the end of the old file is found.
	a = bytes.Join(bytes.SplitAfter(a, []byte("\n"))[:2], nil)
	if both := verifyBytes(t, append(a, b...), pub); both.Problem == nil || both.Problem.Line != 3 {
		t.Fatalf("cut old file: %+v", both.Problem)
	}
}

// An older clawd's lines (no chain) before the chain are counted as such,
// and the chain's first line links to the last of them.
func TestChainAfterLegacyLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	legacy := `{"time":"2026-01-01T00:00:00Z","event":"decision","bytes_in":0,"bytes_out":0,"duration_ms":0}` + "\n"
	os.WriteFile(path, []byte(legacy+legacy), 0o600)
	l, _ := Open(path)
	l.Log(Entry{Event: EventDecision})
	l.Close()
	rep := verifyFile(t, path, nil)
	if rep.Problem != nil || rep.Legacy != 2 || rep.FirstSeq != 1 || rep.LinkedBefore {
		t.Fatalf("report %+v", rep)
	}
	b, _ := os.ReadFile(path)
	b = bytes.Replace(b, []byte(`"decision"`), []byte(`"decisioN"`), 2)
	if rep := verifyBytes(t, b, nil); rep.Problem == nil || rep.Problem.Line != 2 {
		t.Fatalf("altered legacy line before the chain: %+v", rep.Problem)
	}
}

func TestConcurrentWritersKeepOneChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, pub := testKey(t)
	l, _ := OpenWith(path, Options{Key: key, CheckpointEvery: 7, CheckpointInterval: -1})
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				l.Log(Entry{Event: EventDecision, Path: fmt.Sprintf("/g%d/%d", g, i)})
				if i%10 == 0 {
					l.Checkpoint()
				}
			}
		}()
	}
	wg.Wait()
	l.Close()
	rep := verifyFile(t, path, pub)
	if rep.Problem != nil || rep.UnsignedTail != 0 || rep.LastSeq != int64(rep.Lines) || rep.Lines-rep.Checkpoints != 400 {
		t.Fatalf("report %+v", rep)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit-key")
	k1, _, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	k2, _, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("key not kept: %v", err)
	}
	pub, err := LoadPublicKey(path + ".pub")
	if err != nil || !pub.Equal(k1.Public()) {
		t.Fatalf("public key: %v", err)
	}
	os.Chmod(path, 0o640)
	if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable key accepted: %v", err)
	}
	if _, err := LoadPublicKey(path); err == nil {
		t.Fatal("a private key read as a public key")
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// What `clawd audit verify` prints: OK with counts and the honest caveats,
// or the first altered line.
func TestReportWrite(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5)
	var out strings.Builder
	verifyBytes(t, join(lines[:9]), pub).Write(&out, "audit.log", true)
	for _, want := range []string{"audit.log: OK: 9 line(s), seq 1..9, 1 checkpoint(s), 1 signature(s) verified", "unsigned tail of 3 line(s) after the last signed checkpoint (seq 6)", "lines cut off the end leave no trace"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	verifyBytes(t, join(edit(lines, 2, `"method":"GET"`, `"method":"PUT"`)), pub).Write(&out, "audit.log", true)
	if !strings.HasPrefix(out.String(), "audit.log: FAILED at line 3: altered") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	verifyBytes(t, join(lines), nil).Write(&out, "audit.log", false)
	if !strings.Contains(out.String(), "signatures NOT checked (no --key)") {
		t.Errorf("output:\n%s", out.String())
	}
}

// Rotated while the daemon was stopped: the new, empty file still links to
// the old one's end through the head file.
func TestChainHeadFileAcrossOfflineRotation(t *testing.T) {
	dir := t.TempDir()
	path, head := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointInterval: -1, HeadFile: head}
	l, _ := OpenWith(path, opt)
	l.Log(Entry{Event: EventDecision, Path: "/old"})
	l.Close()
	if fi, err := os.Stat(head); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("head file: %v", err)
	}
	os.Rename(path, path+".1")
	l, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: EventDecision, Path: "/new"})
	l.Close()
	a, _ := os.ReadFile(path + ".1")
	b, _ := os.ReadFile(path)
	if rep := verifyBytes(t, append(a, b...), pub); rep.Problem != nil || rep.LastSeq != 4 || rep.UnsignedTail != 0 {
		t.Fatalf("both files: %+v %v", rep, rep.Problem)
	}
	os.WriteFile(head, []byte("garbage"), 0o600)
	os.Remove(path)
	if _, err := OpenWith(path, opt); err == nil || !strings.Contains(err.Error(), "chain head") {
		t.Fatalf("a broken head file accepted: %v", err)
	}
}

// An agent controls paths, hosts and reasons: whatever they hold, a line
// keeps the chain fields the Logger gave it.
func TestAgentTextCannotForgeChainFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := Open(path)
	evil := `/x"},"seq":999,"prev":"` + strings.Repeat("0", 64) + `","sig":"AAAA"}` + "\n" + `{"seq":1000`
	l.Log(Entry{Event: EventDecision, Path: evil, Host: evil, Reason: evil})
	l.Log(Entry{Event: EventDecision, Path: evil})
	l.Close()
	got := readLines(t, path)
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 2 || got[0].Path != evil || got[0].Sig != "" {
		t.Fatalf("lines %+v", got)
	}
	if rep := verifyFile(t, path, nil); rep.Problem != nil || rep.Lines != 2 {
		t.Fatalf("verify %+v", rep)
	}
}

// A file without chain lines proves nothing: not OK.
func TestVerifyEmptyIsNotOK(t *testing.T) {
	legacy := `{"time":"2026-01-01T00:00:00Z","event":"decision","bytes_in":0,"bytes_out":0,"duration_ms":0}` + "\n"
	for _, in := range []string{"", legacy} {
		rep := verifyBytes(t, []byte(in), nil)
		var out strings.Builder
		rep.Write(&out, "f", false)
		if rep.OK() || !strings.Contains(out.String(), "NOTHING VERIFIED") {
			t.Errorf("%q: OK=%v %s", in, rep.OK(), out.String())
		}
	}
	key, pub := testKey(t)
	if rep := verifyBytes(t, join(chainedLog(t, key, 2, 5)), pub); !rep.OK() {
		t.Errorf("a good log is not OK: %+v", rep)
	}
}

func TestHeadIsTheLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := Open(path)
	if seq, h := l.Head(); seq != 0 || h != "" {
		t.Fatalf("head of an empty log: %d %q", seq, h)
	}
	l.Log(Entry{Event: EventDecision})
	l.Log(Entry{Event: EventDecision})
	seq, h := l.Head()
	l.Close()
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	sum := sha256.Sum256([]byte(lines[len(lines)-1]))
	if seq != 2 || h != hex.EncodeToString(sum[:]) {
		t.Fatalf("head %d %s", seq, h)
	}
}

// The .pub beside the key is what operators copy off the host: a planted
// or stale one is rewritten from the private key, and key files that are
// links, foreign-owned or writable by others are refused.
func TestKeyFileAttacks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit-key")
	key, _, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	// A planted .pub (another key's).
	other := filepath.Join(t.TempDir(), "other")
	if _, _, err := LoadOrCreateKey(other); err != nil {
		t.Fatal(err)
	}
	planted, _ := os.ReadFile(other + ".pub")
	os.WriteFile(path+".pub", planted, 0o644)
	_, fixed, err := LoadOrCreateKey(path)
	if err != nil || !strings.Contains(fixed, "rewritten") {
		t.Fatalf("planted .pub: fixed %q, err %v", fixed, err)
	}
	if pub, err := LoadPublicKey(path + ".pub"); err != nil || !pub.Equal(key.Public()) {
		t.Fatalf("the .pub still holds another key: %v", err)
	}
	// Garbage .pub: rewritten too.
	os.WriteFile(path+".pub", []byte("junk"), 0o644)
	if _, fixed, err := LoadOrCreateKey(path); err != nil || fixed == "" {
		t.Fatalf("junk .pub: fixed %q, err %v", fixed, err)
	}
	// A world-writable .pub: refused.
	os.Chmod(path+".pub", 0o666)
	if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "write") {
		t.Fatalf("world-writable .pub accepted: %v", err)
	}
	os.Chmod(path+".pub", 0o644)

	// The key a symbolic link (to a key file the attacker controls).
	link := filepath.Join(dir, "link-key")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked key accepted: %v", err)
	}
	// A .pub that is a symbolic link.
	os.Remove(path + ".pub")
	os.Symlink(other+".pub", path+".pub")
	if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked .pub accepted: %v", err)
	}
	os.Remove(path + ".pub")
	// A key owned by another user.
	if os.Geteuid() == 0 {
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateKey(path); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("foreign-owned key accepted: %v", err)
		}
		os.Chown(path, 0, 0)
	}
	// A directory or a FIFO where the key should be.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(fifo); err == nil || !strings.Contains(err.Error(), "regular file") {
		t.Fatalf("fifo key: %v", err)
	}
}

// Crashes leave a file's end in every state a write can be cut in; each
// must reopen to a log that verifies, with every torn piece recorded and
// every whole line kept.
func TestChainSurvivesEveryCrashShape(t *testing.T) {
	key, pub := testKey(t)
	opts := Options{Key: key, CheckpointInterval: -1}
	// base writes a clean log of two lines plus its closing checkpoint and
	// returns its path and bytes.
	base := func(t *testing.T) (string, []byte) {
		path := filepath.Join(t.TempDir(), "audit.log")
		l, err := OpenWith(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/one"})
		l.Log(Entry{Event: EventDecision, Path: "/two"})
		l.Close()
		b, _ := os.ReadFile(path)
		return path, b
	}
	// next is the line the Logger would have written after b.
	next := func(t *testing.T, b []byte) []byte {
		path := filepath.Join(t.TempDir(), "audit.log")
		os.WriteFile(path, b, 0o600)
		l, err := OpenWith(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/lost-in-the-crash"})
		l.Close()
		all, _ := os.ReadFile(path)
		return bytes.TrimSuffix(all[len(b):], []byte("\n"))
	}
	reopen := func(t *testing.T, path string) Report {
		t.Helper()
		l, err := OpenWith(path, opts)
		if err != nil {
			t.Fatal(err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/after"})
		l.Close()
		rep := verifyFile(t, path, pub)
		if rep.Problem != nil {
			b, _ := os.ReadFile(path)
			t.Fatalf("after reopen: %v\n%s", rep.Problem, b)
		}
		return rep
	}
	t.Run("cut just before the newline", func(t *testing.T) {
		path, b := base(t)
		whole := next(t, b)
		os.WriteFile(path, append(b, whole...), 0o600)
		rep := reopen(t, path)
		if len(rep.Torn) != 0 {
			t.Fatalf("a whole line recorded as torn: %+v", rep)
		}
		got, _ := os.ReadFile(path)
		if !bytes.Contains(got, append(whole, '\n')) {
			t.Fatal("the whole line was not kept")
		}
	})
	t.Run("cut at every byte", func(t *testing.T) {
		_, b := base(t)
		whole := next(t, b)
		for cut := 1; cut < len(whole); cut++ {
			path := filepath.Join(t.TempDir(), "audit.log")
			os.WriteFile(path, append(bytes.Clone(b), whole[:cut]...), 0o600)
			if rep := reopen(t, path); len(rep.Torn) != 1 {
				t.Fatalf("cut at %d: torn %v", cut, rep.Torn)
			}
		}
	})
	t.Run("crash again before the torn record", func(t *testing.T) {
		path, b := base(t)
		// The first reopen ended the fragment with a newline, then the
		// daemon died before writing anything.
		os.WriteFile(path, append(b, `{"time":"2026-`+"\n"...), 0o600)
		if rep := reopen(t, path); len(rep.Torn) != 1 {
			t.Fatalf("torn %v", rep.Torn)
		}
	})
	t.Run("crash while writing the torn record", func(t *testing.T) {
		path, b := base(t)
		frag := []byte(`{"time":"2026-` + "\n")
		// The torn record the second open would have written, cut short.
		rec := next(t, append(bytes.Clone(b), frag...))
		os.WriteFile(path, append(append(b, frag...), rec[:len(rec)/2]...), 0o600)
		rep := reopen(t, path)
		if len(rep.Torn) != 2 {
			t.Fatalf("torn %v", rep.Torn)
		}
		// Both pieces are bound by their records.
		got, _ := os.ReadFile(path)
		if r := verifyBytes(t, bytes.Replace(got, []byte(`{"time":"2026-`+"\n"), []byte(`{"time":"2027-`+"\n"), 1), pub); r.Problem == nil {
			t.Fatal("an altered torn piece verified")
		}
	})
	t.Run("only torn lines", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		os.WriteFile(path, []byte("garbage\n{\"ti"), 0o600)
		if rep := reopen(t, path); len(rep.Torn) != 2 || rep.FirstSeq != 1 {
			t.Fatalf("%+v", rep)
		}
	})
	t.Run("not an audit log", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "audit.log")
		os.WriteFile(path, bytes.Repeat([]byte("text\n"), maxTorn+1), 0o600)
		if _, err := OpenWith(path, opts); err == nil || !strings.Contains(err.Error(), "not an audit log") {
			t.Fatalf("open of a text file: %v", err)
		}
	})
	t.Run("rotated onto a torn file", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "audit.log")
		l, _ := OpenWith(path, opts)
		l.Log(Entry{Event: EventDecision, Path: "/old"})
		os.Rename(path, path+".1")
		os.WriteFile(path, []byte("someone's torn line"), 0o600)
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
		l.Log(Entry{Event: EventDecision, Path: "/new"})
		l.Close()
		cur := verifyFile(t, path, pub)
		if cur.Problem != nil || len(cur.Torn) != 1 {
			t.Fatalf("new file: %+v %v", cur, cur.Problem)
		}
		a, _ := os.ReadFile(path + ".1")
		b, _ := os.ReadFile(path)
		if both := verifyBytes(t, append(a, b...), pub); both.Problem != nil {
			t.Fatalf("both: %v", both.Problem)
		}
	})
}

// A crash leaves the head file behind the log; a rotation while the daemon
// is down then must not link the new file to that stale head.
func TestStaleHeadFileAfterCrashAndRotation(t *testing.T) {
	dir := t.TempDir()
	path, head := filepath.Join(dir, "audit.log"), filepath.Join(dir, "audit.head")
	key, pub := testKey(t)
	opt := Options{Key: key, CheckpointInterval: -1, HeadFile: head}
	l, _ := OpenWith(path, opt)
	l.Log(Entry{Event: EventDecision, Path: "/closed"})
	l.Close() // head saved here
	l, _ = OpenWith(path, opt)
	for i := range 3 {
		l.Log(Entry{Event: EventDecision, Path: fmt.Sprint("/crashed-", i)})
	}
	// The daemon dies: no Close. logrotate moves the file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenWith(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	l2.Log(Entry{Event: EventDecision, Path: "/new"})
	l2.Close()
	a, _ := os.ReadFile(path + ".1")
	b, _ := os.ReadFile(path)
	if rep := verifyBytes(t, append(a, b...), pub); rep.Problem != nil {
		t.Fatalf("old and new: %v\n%s%s", rep.Problem, a, b)
	}
	_ = l
}

// Whoever can write the file can recompute a whole chain: with a key, a
// file no checkpoint of that key vouches for fails, however well it
// chains; and against a known head, lines cut off the end are found even
// right after a checkpoint.
func TestVerifyWithKeyAndHead(t *testing.T) {
	key, pub := testKey(t)
	lines := chainedLog(t, key, 12, 5)
	// Rewritten without checkpoints: every line forged after the first.
	forged := []string{lines[0]}
	for i := 1; i < 9; i++ {
		forged = append(forged, forgeAfter(forged[i-1], int64(i+1)))
	}
	rep := verifyBytes(t, join(forged), pub)
	var out bytes.Buffer
	rep.Write(&out, "f", true)
	if rep.OK() || !strings.Contains(out.String(), "FAILED: no checkpoint signed by this key") {
		t.Fatalf("a chain without signed checkpoints verified with a key: %s", out.String())
	}
	// Without a key it chains (and says signatures were not checked).
	if rep := verifyBytes(t, join(forged), nil); !rep.OK() {
		t.Fatalf("chain only: %+v", rep)
	}
	// Another key's checkpoints: forged.
	_, otherPub := testKey(t)
	if rep := verifyBytes(t, join(lines), otherPub); rep.OK() {
		t.Fatal("another key's checkpoints verified")
	}

	full := join(lines)
	headOf := func(i int) Head {
		sum := sha256.Sum256([]byte(lines[i]))
		return Head{Seq: int64(i + 1), Hash: hex.EncodeToString(sum[:])}
	}
	head := headOf(len(lines) - 1)
	check := func(name string, b []byte, h Head, wantOK bool, why string) {
		t.Helper()
		rep, err := VerifyHead(bytes.NewReader(b), pub, h)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() != wantOK || (why != "" && (rep.Problem == nil || !strings.Contains(rep.Problem.Why, why))) {
			t.Fatalf("%s: OK=%v problem %v", name, rep.OK(), rep.Problem)
		}
	}
	check("whole file", full, head, true, "")
	check("head mid-file", full, headOf(6), true, "")
	for _, cut := range []int{10, 9, 6, 5, 1} { // 10 = right after the checkpoint on line 10
		check(fmt.Sprint("cut to ", cut, " lines"), join(lines[:cut]), head, false, "cut off its end")
	}
	// The head line itself replaced (chain recomputed after it).
	n := len(lines)
	tail := append([]string(nil), lines[:n-1]...)
	tail = append(tail, forgeAfter(tail[n-2], int64(n)))
	check("head line replaced", join(tail), head, false, "not the line the head names")
	// A later rotated file that starts after the head.
	check("file after the head", join(lines[6:]), headOf(2), false, "does not begin where clawd began it")
	// Malformed heads are refused.
	for _, s := range []string{"", "12", "x:" + head.Hash, "0:" + head.Hash, "-1:" + head.Hash, "12:abc", "12:" + head.Hash + "00"} {
		if _, err := ParseHead(s); err == nil {
			t.Errorf("head %q accepted", s)
		}
	}
	if h, err := ParseHead(fmt.Sprintf("%d:%s", head.Seq, strings.ToUpper(head.Hash))); err != nil || h != head {
		t.Errorf("upper-case head: %v %v", h, err)
	}
}
