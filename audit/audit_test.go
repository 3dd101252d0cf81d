package audit

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
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
