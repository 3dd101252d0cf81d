package procid

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkResolve is the per-connection cost of identifying a program
// (the test process itself, its executable hashed once and cached).
//
//	go test -run '^$' -bench Resolve ./daemon/procid/
func BenchmarkResolve(b *testing.B) {
	r := New("/proc", func(int) (uint64, error) { return 1, nil })
	r.recent = 0 // the test binary was just built
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		b.Fatal(err)
	}
	exe := &FileID{Dev: st.Dev, Ino: st.Ino}
	pid := uint32(os.Getpid())
	if _, err := r.Resolve(pid, 1, 0, exe); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := r.Resolve(pid, 1, 0, exe); err != nil {
			b.Fatal(err)
		}
	}
}

// The command-line memo never hands out another line's result: a process
// that rewrote its arguments gets its new line, secrets redacted both times.
func TestCmdlineMemoFollowsTheBytes(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/7", 0o700); err != nil {
		t.Fatal(err)
	}
	r := New(dir, nil)
	for _, c := range []struct{ raw, want string }{
		{"agent\x00--token\x00sk-live-aaaaaaaaaaaaaaaaaaaa\x00", "agent --token [redacted]"},
		{"agent\x00run\x00", "agent run"},
		{"agent\x00--token\x00sk-live-aaaaaaaaaaaaaaaaaaaa\x00", "agent --token [redacted]"},
	} {
		if err := os.WriteFile(dir+"/7/cmdline", []byte(c.raw), 0o600); err != nil {
			t.Fatal(err)
		}
		for range 2 { // computed, then remembered
			if got := r.cmdline(7); got != c.want {
				t.Fatalf("cmdline(%q) = %q, want %q", c.raw, got, c.want)
			}
		}
	}
}
