package procid

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/policy"
)

// TestMain doubles as the helper program the tests run: with
// PROCID_HELPER set it says "ready" on stdout, then obeys stdin: "exec
// PATH" makes it exec PATH (which, being a copy of this binary, says
// "ready" again); end of input ends it. Every wait on it is causal (a line
// read), never a sleep.
func TestMain(m *testing.M) {
	if os.Getenv("PROCID_HELPER") == "1" {
		helper()
		return
	}
	os.Exit(m.Run())
}

func helper() {
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if p, ok := strings.CutPrefix(in.Text(), "exec "); ok {
			err := syscall.Exec(p, []string{p, "exec'd"}, os.Environ())
			fmt.Println("exec:", err)
		}
	}
	os.Exit(0)
}

type proc struct {
	*exec.Cmd
	pid uint32
	in  io.WriteCloser
	out *bufio.Reader
}

// ready waits for the helper's next "ready": it runs its (new) program.
func (p *proc) ready(t *testing.T) {
	t.Helper()
	l, err := p.out.ReadString('\n')
	if err != nil || l != "ready\n" {
		t.Fatalf("helper: %q %v", l, err)
	}
}

// execs makes the helper exec prog and waits until prog runs.
func (p *proc) execs(t *testing.T, prog string) {
	t.Helper()
	if _, err := fmt.Fprintf(p.in, "exec %s\n", prog); err != nil {
		t.Fatal(err)
	}
	p.ready(t)
}

// start runs prog (a helper copy) with args; it runs until the test ends.
func start(t *testing.T, prog string, args ...string) *proc {
	t.Helper()
	c := exec.Command(prog, args...)
	c.Env = append(os.Environ(), "PROCID_HELPER=1")
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); c.Process.Kill(); c.Wait() })
	p := &proc{Cmd: c, pid: uint32(c.Process.Pid), in: in, out: bufio.NewReader(out)}
	p.ready(t)
	return p
}

// helperCopy copies the test binary to dir/name with extra bytes appended
// (an ELF file runs with trailing data), so that copies differ in digest.
func helperCopy(t *testing.T, dir, name, extra string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, append(b, extra...), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func sum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func resolver() *Resolver {
	return New("/proc", func(int) (uint64, error) { return 7, nil })
}

// TestResolve: a running program's path, digest and (redacted) command
// line. The helper blocks until the test ends, so the PID names it
// throughout (this test once ran sleep with an argument sleep refuses: it
// exited at once, and the resolution raced its exit).
func TestResolve(t *testing.T) {
	prog := helperCopy(t, t.TempDir(), "tool", "")
	c := start(t, prog, "30", "--token=abc")
	p, err := resolver().Resolve(c.pid, 7, BootNow(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Known || p.Path != prog || p.SHA256 != sum(t, prog) || p.PID != c.pid {
		t.Fatalf("got %+v, want %s with its digest", p, prog)
	}
	if p.Cmdline != prog+" 30 --token=[redacted]" {
		t.Fatalf("cmdline %q", p.Cmdline)
	}
}

func TestResolveFailsClosed(t *testing.T) {
	c := start(t, helperCopy(t, t.TempDir(), "tool", ""))
	pid := c.pid
	r := resolver()
	if _, err := r.Resolve(pid, 8, BootNow(), nil); err == nil || !strings.Contains(err.Error(), "cgroup") {
		t.Errorf("another cgroup: %v", err)
	}
	// A connection accepted before this process started was made by an
	// earlier holder of the PID.
	if _, err := r.Resolve(pid, 7, 1, nil); err == nil || !strings.Contains(err.Error(), "reused") {
		t.Errorf("reused PID: %v", err)
	}
	if p, err := r.Resolve(0, 7, BootNow(), nil); err == nil || p.Known {
		t.Errorf("no TGID: %+v %v", p, err)
	}
	c.in.Close()
	c.Wait()
	if p, err := r.Resolve(pid, 7, BootNow(), nil); err == nil || p.Known {
		t.Errorf("exited: %+v %v", p, err)
	}
}

// TestResolveReplaced: the file at the running program's path is replaced
// (renamed over) by other content. The digest is the running program's,
// and the path, which now names another file, is dropped.
func TestResolveReplaced(t *testing.T) {
	dir := t.TempDir()
	prog := helperCopy(t, dir, "git", "")
	want := sum(t, prog)
	c := start(t, prog)
	other := helperCopy(t, dir, "other", "other")
	if err := os.Rename(other, prog); err != nil {
		t.Fatal(err)
	}
	p, err := resolver().Resolve(c.pid, 7, BootNow(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Path != "" || p.SHA256 != want {
		t.Fatalf("got path %q digest %s, want no path and the running program's digest %s", p.Path, p.SHA256, want)
	}
}

// TestResolveExec is what the package doc promises about exec (issue 16,
// ForkExecRace). With the kernel's record of the executable at connect(),
// a process that exec'd another program since is unknown; without it, it
// is resolved as the program it runs at resolution. One that execs while
// clawd resolves it is unknown either way, never a mix of the two (the
// first program's path with the second's digest, or the reverse).
func TestResolveExec(t *testing.T) {
	dir := t.TempDir()
	a, b := helperCopy(t, dir, "a", "a"), helperCopy(t, dir, "b", "b")

	// atConnect is what the connect hook records: the executable the
	// process runs at connect(), as stat(/proc/PID/exe) shows it.
	atConnect := func(t *testing.T, pid uint32) *FileID {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/exe", pid), &st); err != nil {
			t.Fatal(err)
		}
		return &FileID{Dev: st.Dev, Ino: st.Ino}
	}
	t.Run("recorded/no exec", func(t *testing.T) {
		c := start(t, a)
		p, err := resolver().Resolve(c.pid, 7, BootNow(), atConnect(t, c.pid))
		if err != nil || !p.Known || p.Path != a || p.SHA256 != sum(t, a) {
			t.Fatalf("got %+v %v, want a", p, err)
		}
	})
	t.Run("recorded/before", func(t *testing.T) {
		c := start(t, a) // connects as a (the hook records a)...
		x := atConnect(t, c.pid)
		accepted := BootNow()
		c.execs(t, b) // ...and execs b before clawd resolves it
		p, err := resolver().Resolve(c.pid, 7, accepted, x)
		if err == nil || p.Known || p.Path != "" || p.SHA256 != "" || !strings.Contains(err.Error(), "exec'd since") {
			t.Fatalf("got %+v %v, want unknown: it exec'd since it connected", p, err)
		}
	})
	// Without the kernel's record (a kernel that refuses to tell, see
	// enforce.ExeRecorded) the exec before the resolution is not seen: the
	// process is what it runs now.
	t.Run("unrecorded/before", func(t *testing.T) {
		c := start(t, a)
		accepted := BootNow()
		c.execs(t, b)
		p, err := resolver().Resolve(c.pid, 7, accepted, nil)
		if err != nil || !p.Known || p.Path != b || p.SHA256 != sum(t, b) {
			t.Fatalf("got %+v %v, want b (%s)", p, err, sum(t, b))
		}
	})
	for _, step := range []string{"opened", "hashed"} {
		t.Run("during/"+step, func(t *testing.T) {
			c := start(t, a)
			r := resolver()
			r.step = func(s string) {
				if s == step {
					c.execs(t, b)
				}
			}
			p, err := r.Resolve(c.pid, 7, BootNow(), nil)
			if err == nil || p.Known || p.Path != "" || p.SHA256 != "" {
				t.Fatalf("exec while resolving: got %+v %v, want unknown", p, err)
			}
			if !strings.Contains(err.Error(), "another executable") {
				t.Fatalf("error %q does not say the executable changed", err)
			}
		})
	}
}

// fakeProc is a /proc with one process, pid, whose exe is a symlink to a
// file the test may rewrite (a running executable cannot be written on a
// local file system, ETXTBSY, but one on FUSE or NFS can be, by its
// server: the checks must not rely on ETXTBSY).
type fakeProc struct {
	root, file string
	pid        int
	cgroup     uint64
}

func newFakeProc(t *testing.T, content string) *fakeProc {
	t.Helper()
	dir := t.TempDir()
	f := &fakeProc{root: filepath.Join(dir, "proc"), file: filepath.Join(dir, "bin", "tool"), pid: 4242, cgroup: 7}
	os.MkdirAll(filepath.Join(f.root, "4242"), 0o755)
	os.MkdirAll(filepath.Dir(f.file), 0o755)
	if err := os.WriteFile(f.file, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	f.setStart(t, 1)
	f.setExe(t, f.file)
	os.WriteFile(filepath.Join(f.root, "4242", "cmdline"), []byte("tool\x00--go\x00"), 0o644)
	return f
}

func (f *fakeProc) setStart(t *testing.T, ticks int) {
	t.Helper()
	stat := fmt.Sprintf("4242 (to ol) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", ticks)
	if err := os.WriteFile(filepath.Join(f.root, "4242", "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeProc) setExe(t *testing.T, target string) {
	t.Helper()
	link := filepath.Join(f.root, "4242", "exe")
	os.Remove(link)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// A process maps its executable (the kernel's /proc/PID/maps format).
	maps := "55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:01 1234                       " + target + "\n"
	if err := os.WriteFile(filepath.Join(f.root, "4242", "maps"), []byte(maps), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeProc) resolver() *Resolver {
	return New(f.root, func(int) (uint64, error) { return f.cgroup, nil })
}

// rewrite writes content over the file in place (same inode) and sets its
// mtime back to what it was, as `touch -d` or utimensat can.
func rewrite(t *testing.T, path, content string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	fd, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.WriteAt([]byte(content), 0); err != nil {
		t.Fatal(err)
	}
	fd.Close()
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{st.Atim, st.Mtim}, 0); err != nil {
		t.Fatal(err)
	}
	var now unix.Stat_t
	unix.Stat(path, &now)
	if now.Ino != st.Ino || now.Size != st.Size || now.Mtim != st.Mtim {
		t.Fatalf("rewrite changed inode, size or mtime: the attack needs them kept")
	}
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestResolveHashRace (issue 16, HashRace): whatever changes between the
// moment clawd opens the executable and the moment it has its digest (the
// content, rewritten in place with mtime set back; the file at the path;
// what /proc/PID/exe names; the process behind the PID; its cgroup) makes
// the program unknown, with and without the digest cache, and a rule with
// binaries then matches it for no allow.
func TestResolveHashRace(t *testing.T) {
	const orig, evil = "#!original program\n", "#!attacker program\n" // same size
	pol, err := policy.Parse([]byte(`
default:
  rules:
    - name: pinned
      cidrs: [198.51.100.1/32]
      binaries: ["sha256:`+digest(orig)+`", "sha256:`+digest(evil)+`"]
      action: allow
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, step string
		do         func(t *testing.T, f *fakeProc)
		want       string // in the error; "" the race is lost and the program is known
	}{
		{"nothing changes", "opened", func(*testing.T, *fakeProc) {}, ""},
		{"rewritten in place, mtime set back", "opened", func(t *testing.T, f *fakeProc) { rewrite(t, f.file, evil) }, "changed while clawd hashed it"},
		{"rewritten after the hash, mtime set back", "hashed", func(t *testing.T, f *fakeProc) { rewrite(t, f.file, evil) }, "changed while clawd hashed it"},
		{"appended to", "opened", func(t *testing.T, f *fakeProc) {
			fd, _ := os.OpenFile(f.file, os.O_WRONLY|os.O_APPEND, 0)
			fd.WriteString("more")
			fd.Close()
		}, "changed"},
		{"chmod (metadata only)", "hashed", func(t *testing.T, f *fakeProc) { os.Chmod(f.file, 0o700) }, "changed while clawd hashed it"},
		{"another file renamed onto the path", "hashed", func(t *testing.T, f *fakeProc) {
			os.WriteFile(f.file+".new", []byte(evil), 0o755)
			os.Rename(f.file+".new", f.file) // unlinks the old file: its ctime moves
		}, "changed while clawd hashed it"},
		{"exe names another file (exec)", "hashed", func(t *testing.T, f *fakeProc) {
			os.WriteFile(f.file+"2", []byte(evil), 0o755)
			f.setExe(t, f.file+"2")
		}, "another executable"},
		{"renamed (same file, other path)", "hashed", func(t *testing.T, f *fakeProc) {
			os.Rename(f.file, f.file+"-renamed")
			f.setExe(t, f.file+"-renamed")
		}, "changed while clawd hashed it"}, // a rename moves ctime
		{"PID reused (other start time)", "hashed", func(t *testing.T, f *fakeProc) { f.setStart(t, 2) }, "exited"},
		{"left the cgroup", "hashed", func(t *testing.T, f *fakeProc) { f.cgroup = 8 }, "cgroup"},
	}
	for _, cached := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/cached=%v", tc.name, cached), func(t *testing.T) {
				f := newFakeProc(t, orig)
				r := f.resolver()
				if cached {
					r.recent = 0 // a just-written file is otherwise never cached
					if p, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil); err != nil || p.SHA256 != digest(orig) {
						t.Fatalf("first resolution: %+v %v", p, err)
					}
				}
				r.step = func(s string) {
					if s == tc.step {
						tc.do(t, f)
					}
				}
				p, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil)
				d := pol.Decide(policy.Input{DstIP: netip.MustParseAddr("198.51.100.1"), DstPort: 443, Program: p})
				if tc.want == "" {
					if err != nil || !p.Known || p.SHA256 != digest(orig) || d.Action != policy.Allow {
						t.Fatalf("undisturbed: %+v %v, %s", p, err, policy.FormatDecision(d))
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one saying %q", err, tc.want)
				}
				if p.Known || p.SHA256 != "" || p.Path != "" {
					t.Fatalf("got %+v, want an unknown program", p)
				}
				if d.Action == policy.Allow {
					t.Fatalf("the binaries rule allowed an unknown program: %s", policy.FormatDecision(d))
				}
				// Nothing the race saw stays in the cache: the next
				// resolution hashes what the file holds now.
				r.step = nil
				if p, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil); err == nil && p.SHA256 != sum(t, filepath.Join(f.root, "4242", "exe")) {
					t.Fatalf("after the race: digest %s of content the file no longer has", p.SHA256)
				}
			})
		}
	}
}

// TestResolveCacheKey: the digest cache cannot be fooled by a rewrite in
// place (same inode, same size) whose mtime was set back (touch -d): ctime,
// which user space cannot set, is part of the key.
func TestResolveCacheKey(t *testing.T) {
	const orig, evil = "#!original program\n", "#!attacker program\n"
	f := newFakeProc(t, orig)
	r := f.resolver()
	r.recent = 0 // exercise the cache, which a just-written file skips
	p1, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil)
	if err != nil || p1.SHA256 != digest(orig) {
		t.Fatalf("%+v %v", p1, err)
	}
	rewrite(t, f.file, evil)
	p2, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil)
	if err != nil || p2.SHA256 != digest(evil) {
		t.Fatalf("after a rewrite with mtime set back: digest %s, want the new content's %s (%v)", p2.SHA256, digest(evil), err)
	}
}

// TestResolveRecentNotCached: a file changed within the last 2 s (by the
// resolver's clock: no wall-clock wait) is hashed on every resolution, so
// that timestamps too coarse to show a rewrite cannot hide one.
func TestResolveRecentNotCached(t *testing.T) {
	f := newFakeProc(t, "#!one\n")
	r := f.resolver()
	var st unix.Stat_t
	unix.Stat(f.file, &st)
	ctime := time.Unix(st.Ctim.Unix())
	r.now = func() time.Time { return ctime.Add(time.Second) }
	if _, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 0 {
		t.Fatalf("a file changed 1 s ago was cached")
	}
	r.now = func() time.Time { return ctime.Add(time.Minute) }
	if _, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 1 {
		t.Fatalf("a file changed a minute ago was not cached: %d entries", len(r.cache))
	}
}

// TestResolveBounds: an executable above MaxHashSize is not hashed and the
// program is unknown (a deny rule with a digest cannot be dodged by padding
// the file); the cache holds at most its cap of entries, however many
// files an agent makes clawd hash.
func TestResolveBounds(t *testing.T) {
	if DefaultMaxHashSize != 512<<20 {
		t.Fatalf("default hash cap %d", DefaultMaxHashSize)
	}
	f := newFakeProc(t, "#!a program of 32 bytes........\n")
	r := f.resolver()
	r.MaxHashSize = 16
	p, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil)
	if err == nil || p.Known || !strings.Contains(err.Error(), "larger than 16 bytes") {
		t.Fatalf("oversized: %+v %v", p, err)
	}

	r = f.resolver()
	r.recent, r.maxCache = 0, 3
	for i := range 10 {
		os.WriteFile(f.file, []byte(fmt.Sprintf("#!program %d\n", i)), 0o755)
		p, err := r.Resolve(uint32(f.pid), 7, BootNow(), nil)
		if err != nil || p.SHA256 != sum(t, f.file) {
			t.Fatalf("file %d: %+v %v", i, p, err)
		}
		if len(r.cache) > 3 {
			t.Fatalf("cache has %d entries, cap 3", len(r.cache))
		}
	}
}
