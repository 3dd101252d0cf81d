package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func readLines(t *testing.T, path string) []Entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		out = append(out, e)
	}
	return out
}

func TestLogWritesOneJSONLinePerEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Log(Entry{Event: "decision", Container: "agent", Method: "GET", Path: "/x", Action: "allow", Status: 200})
		}()
	}
	wg.Wait()
	got := readLines(t, path)
	if len(got) != 50 {
		t.Fatalf("got %d lines, want 50", len(got))
	}
	if got[0].Time.IsZero() || got[0].Container != "agent" || got[0].Status != 200 {
		t.Errorf("entry = %+v", got[0])
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", st.Mode().Perm())
	}
}

func TestReopenFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Log(Entry{Event: "decision", Path: "/before"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: "decision", Path: "/still-old"}) // goes to the rotated file
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: "decision", Path: "/after"})
	old, cur := readLines(t, path+".1"), readLines(t, path)
	if len(old) != 2 || len(cur) != 1 || cur[0].Path != "/after" {
		t.Fatalf("rotated %+v, current %+v", old, cur)
	}
}

func TestWriteErrorsAreReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var got error
	l.OnError = func(err error) { got = err }
	l.f.Close() // simulate a dead file
	l.Log(Entry{Event: "decision"})
	if got == nil {
		t.Fatal("a failed write was not reported")
	}
}

// A write cut short (disk full, file size limit) must not leave half a line
// that the next entry gets glued to: the log stays one JSON object a line.
func TestShortWriteLeavesNoPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var errs []error
	l.OnError = func(err error) { errs = append(errs, err) }
	big := strings.Repeat("r", 1300)
	l.Log(Entry{Event: "decision", Path: "/one", Reason: big})
	l.Log(Entry{Event: "decision", Path: "/two", Reason: big})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// Only a few hundred more bytes fit: the next line is written in part.
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(fi.Size()) + 300, Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	l.Log(Entry{Event: "decision", Path: "/lost", Reason: big})
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if len(errs) != 1 {
		t.Fatalf("write errors reported: %v", errs)
	}
	l.Log(Entry{Event: "decision", Path: "/three"})
	got := readLines(t, path)
	// The lost line is recorded, chained to the last line written, so the
	// chain has no hole and the reader learns what is missing.
	if len(got) != 4 || got[0].Path != "/one" || got[1].Path != "/two" || got[3].Path != "/three" {
		t.Fatalf("log after a short write: %+v", got)
	}
	if lost := got[2]; lost.Event != EventLost || lost.Count != 1 || !strings.Contains(lost.Reason, "file too large") {
		t.Fatalf("lost line recorded as %+v", lost)
	}
	if rep := verifyFile(t, path, nil); rep.Problem != nil || rep.Lost != 1 {
		t.Fatalf("verify after a short write: %+v", rep)
	}
}

// Group commit: however many callers write at once, each Log returns only
// once its own line is in the file, and every line is whole.
func TestLogReturnsAfterItsLineIsWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				p := fmt.Sprintf("/g%d/i%d", g, i)
				l.Log(Entry{Event: "decision", Path: p})
				b, err := os.ReadFile(path)
				if err != nil || !strings.Contains(string(b), `"path":"`+p+`"`) {
					t.Errorf("Log(%s) returned before its line was written (%v)", p, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := readLines(t, path); len(got) != 16*20 {
		t.Fatalf("got %d lines, want %d", len(got), 16*20)
	}
}

// A batch cut short keeps its whole lines and counts the others as lost.
func TestShortBatchWriteKeepsWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := func(c byte) string { return `{"x":"` + strings.Repeat(string(c), 100) + `"}` + "\n" }
	batch := line('a') + line('b') + line('c')
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(line('a')) + 50), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	lost, werr := writeLines(f, []byte(batch), 3)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if werr == nil || lost != 2 {
		t.Fatalf("lost %d (err %v), want 2 and an error", lost, werr)
	}
	if b, _ := os.ReadFile(path); string(b) != line('a') {
		t.Fatalf("file holds %q, want only the first line", b)
	}
}

// Lines logged while the log is being closed are written or dropped
// quietly, never reported as write errors.
func TestCloseWhileLogging(t *testing.T) {
	l, err := Open(filepath.Join(t.TempDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	var mu sync.Mutex
	l.OnError = func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				l.Log(Entry{Event: "decision", Path: "/x"})
			}
		}()
	}
	l.Close()
	wg.Wait()
	if len(errs) != 0 {
		t.Errorf("write errors reported: %v", errs[0])
	}
}

// Writes failing again and again: one audit_lost record, once space is
// back, counts exactly the entries lost (not its own failed attempts).
func TestRepeatedWriteFailuresCountLinesLost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var errs int
	l.OnError = func(error) { errs++ }
	l.Log(Entry{Event: "decision", Path: "/one"})
	fi, _ := os.Stat(path)
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old)
	lim := syscall.Rlimit{Cur: uint64(fi.Size()), Max: old.Max}
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim)
	for range 5 {
		l.Log(Entry{Event: "decision", Path: "/lost"})
	}
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	l.Log(Entry{Event: "decision", Path: "/two"})
	got := readLines(t, path)
	if errs != 5 || len(got) != 3 || got[1].Event != EventLost || got[1].Count != 5 || got[2].Path != "/two" {
		t.Fatalf("errors %d, log %+v", errs, got)
	}
	if rep := verifyFile(t, path, nil); rep.Problem != nil || rep.Lost != 5 {
		t.Fatalf("verify %+v", rep)
	}
}

// TestLogBatchWritesEveryLineInOrderInOneChain: LogBatch's lines come out
// in the caller's order, among other callers' lines, each once, and the
// chain over them verifies.
func TestLogBatchWritesEveryLineInOrderInOneChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 40 {
			l.Log(Entry{Event: "decision", Path: fmt.Sprintf("/single/%d", i)})
		}
	}()
	go func() {
		defer wg.Done()
		for b := range 10 {
			var es []Entry
			for i := range 7 {
				es = append(es, Entry{Event: "decision", Path: fmt.Sprintf("/batch/%d", b*7+i)})
			}
			l.LogBatch(es)
			if !es[0].Time.IsZero() || es[0].Seq != 0 {
				t.Errorf("LogBatch changed the caller's entries: %+v", es[0])
			}
		}
	}()
	wg.Wait()
	l.LogBatch(nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := readLines(t, path)
	if len(got) != 40+70 {
		t.Fatalf("got %d lines, want %d", len(got), 40+70)
	}
	next := 0
	for _, e := range got {
		if e.Time.IsZero() {
			t.Fatalf("line without a time: %+v", e)
		}
		if p, ok := strings.CutPrefix(e.Path, "/batch/"); ok {
			if p != fmt.Sprint(next) {
				t.Fatalf("batch line %s where %d was next", p, next)
			}
			next++
		}
	}
	if next != 70 {
		t.Fatalf("%d batch lines, want 70", next)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := Verify(f, nil)
	if err != nil || !rep.OK() {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
