package procid

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func sum(t *testing.T, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// run starts prog (sleeping) and returns its PID; it is killed at cleanup.
func run(t *testing.T, prog string, args ...string) *exec.Cmd {
	c := exec.Command(prog, args...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

func resolver() *Resolver {
	return New("/proc", func(int) (uint64, error) { return 7, nil })
}

func TestResolve(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	sleep, _ = filepath.EvalSymlinks(sleep)
	c := run(t, sleep, "30", "--token=abc")
	p, err := resolver().Resolve(uint32(c.Process.Pid), 7, BootNow())
	if err != nil {
		t.Fatal(err)
	}
	if !p.Known || p.Path != sleep || p.SHA256 != sum(t, sleep) {
		t.Fatalf("got %+v, want %s with its digest", p, sleep)
	}
	if p.Cmdline != sleep+" 30 --token=[redacted]" {
		t.Fatalf("cmdline %q", p.Cmdline)
	}
}

func TestResolveFailsClosed(t *testing.T) {
	c := run(t, "sleep", "30")
	pid := uint32(c.Process.Pid)
	r := resolver()
	if _, err := r.Resolve(pid, 8, BootNow()); err == nil || !strings.Contains(err.Error(), "cgroup") {
		t.Errorf("another cgroup: %v", err)
	}
	// A connection accepted before this process started was made by an
	// earlier holder of the PID.
	if _, err := r.Resolve(pid, 7, 1); err == nil || !strings.Contains(err.Error(), "reused") {
		t.Errorf("reused PID: %v", err)
	}
	if p, err := r.Resolve(0, 7, BootNow()); err == nil || p.Known {
		t.Errorf("no TGID: %+v %v", p, err)
	}
	c.Process.Kill()
	c.Wait()
	if p, err := r.Resolve(pid, 7, BootNow()); err == nil || p.Known {
		t.Errorf("exited: %+v %v", p, err)
	}
}

// TestResolveReplaced: the file at the running program's path is replaced
// (renamed over) by other content. The digest is the running program's,
// and the path, which now names another file, is dropped.
func TestResolveReplaced(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "git")
	sleep, _ := exec.LookPath("sleep")
	copyFile(t, sleep, prog)
	want := sum(t, prog)
	c := run(t, prog, "30")
	tr, _ := exec.LookPath("true")
	copyFile(t, tr, filepath.Join(dir, "other"))
	if err := os.Rename(filepath.Join(dir, "other"), prog); err != nil {
		t.Fatal(err)
	}
	p, err := resolver().Resolve(uint32(c.Process.Pid), 7, BootNow())
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != "" || p.SHA256 != want {
		t.Fatalf("got path %q digest %s, want no path and the running program's digest %s", p.Path, p.SHA256, want)
	}
}

// TestResolveRehashes: a file rewritten with other content between two runs
// is hashed again (the cache key includes mtime, ctime and size).
func TestResolveRehashes(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "tool")
	sleep, _ := exec.LookPath("sleep")
	copyFile(t, sleep, prog)
	r := resolver()
	r.recent = 0 // exercise the cache, which a just-written file skips
	c := run(t, prog, "30")
	p1, err := r.Resolve(uint32(c.Process.Pid), 7, BootNow())
	if err != nil {
		t.Fatal(err)
	}
	c.Process.Kill()
	c.Wait()
	// Same size, other content, same inode.
	b, _ := os.ReadFile(prog)
	b[len(b)-1] ^= 0xff
	if err := os.WriteFile(prog, b, 0o755); err != nil {
		t.Fatal(err)
	}
	c = run(t, prog, "30")
	p2, err := r.Resolve(uint32(c.Process.Pid), 7, BootNow())
	if err != nil {
		t.Fatal(err)
	}
	if p1.SHA256 == p2.SHA256 || p2.SHA256 != sum(t, prog) {
		t.Fatalf("digest not recomputed: %s then %s (file %s)", p1.SHA256, p2.SHA256, sum(t, prog))
	}
}

func TestSanitizeCmdline(t *testing.T) {
	tests := []struct{ in, want string }{
		{"curl\x00-H\x00Authorization: Bearer sk-123\x00https://a.test/\x00", "curl -H [redacted] https://a.test/"},
		{"curl\x00-u\x00me:pw\x00https://me:pw@a.test/x@y\x00", "curl -u [redacted] https://[redacted]@a.test/x@y"},
		{"sh\x00-c\x00echo \x1b[31mred\nx\x00", "sh -c echo ?[31mred?x"},
		{"x\x00\xff\xfe", "x ??"},
		{"python3\x00-c\x00API_KEY=1 run\x00", "python3 -c [redacted]"},
	}
	for _, tc := range tests {
		if got := SanitizeCmdline([]byte(tc.in)); got != tc.want {
			t.Errorf("SanitizeCmdline(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	long := SanitizeCmdline([]byte(strings.Repeat("é", 2000)))
	if len(long) > MaxCmdline+len("…") || !strings.HasSuffix(long, "…") {
		t.Errorf("long cmdline: %d bytes", len(long))
	}
}

func FuzzSanitizeCmdline(f *testing.F) {
	f.Add([]byte("curl\x00-H\x00Authorization: Bearer x\x00"))
	f.Add([]byte("a\x00\x00\xff\x1b"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := SanitizeCmdline(b)
		if len(s) > MaxCmdline+len("…") {
			t.Fatalf("%d bytes", len(s))
		}
		for _, c := range s {
			if c < 0x20 || c == 0x7f {
				t.Fatalf("control character in %q", s)
			}
		}
	})
}
