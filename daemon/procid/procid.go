// Package procid tells which program a host process runs, for policy
// `binaries:` (issue 16): the executable's path as its container sees it,
// the SHA-256 of its content (hashed through /proc/PID/exe, cached by file
// identity) and its command line (redacted and escaped by internal/progtext),
// after checking that the PID still names the process that connected.
//
// What identity means, exactly (docs/threat-model.md): the kernel's connect
// hook records the TGID of the task that called connect() and the device
// and inode of the executable it runs; this package resolves that TGID when
// the daemon accepts the connection, right after the connect, and requires
// the same executable. So the program is the one the task ran at connect():
// a process that exec'd another program since is unknown (its PID and start
// time do not change across exec; only the recorded file tells), and so is
// one that execs while it is resolved (/proc/PID/exe no longer names the
// hashed file). Where the kernel does not let the hook read the executable
// (no record: exe is nil) a process that execs between its connect and the
// resolution is resolved as the new program. Once resolved the program is
// fixed for the connection: a socket handed to another process (SCM_RIGHTS,
// fork, exec after the resolution) stays attributed to the one that
// connected. All threads of a process are one program. TestResolveExec
// holds the exec cases.
package procid

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/internal/progtext"
	"github.com/clawd-dev/clawd/policy"
)

// Limits. A larger executable is not hashed and the program is unknown (a
// deny rule with binaries takes it, no allow rule does); a longer command
// line is cut (progtext.MaxCmdline).
const (
	DefaultMaxHashSize = 512 << 20
	maxCmdlineRead     = 8 << 10
	cacheEntries       = 4096
	recent             = 2 * time.Second
	clockTicks         = 100 // USER_HZ: the unit of /proc/PID/stat's starttime on Linux
)

// Resolver resolves TGIDs. The zero value is not usable; use New.
type Resolver struct {
	// MaxHashSize is the largest executable clawd hashes (bytes); a larger
	// one makes the program unknown. Set it before the first Resolve.
	MaxHashSize int64

	proc     string
	cgroupOf func(pid int) (uint64, error)
	recent   time.Duration    // files changed this recently are not cached
	now      func() time.Time // the clock ctime is compared with
	maxCache int
	// step, when set (tests), runs between the resolution's steps: the
	// moments an attacker would race.
	step func(name string)

	mu    sync.Mutex
	cache map[fileKey]*hashEntry
}

// New returns a Resolver reading procRoot ("/proc") whose cgroupOf gives a
// process's cgroup v2 ID (enforce.CgroupIDOfPID).
func New(procRoot string, cgroupOf func(pid int) (uint64, error)) *Resolver {
	return &Resolver{
		MaxHashSize: DefaultMaxHashSize,
		proc:        procRoot, cgroupOf: cgroupOf,
		recent: recent, now: time.Now, maxCache: cacheEntries,
		cache: map[fileKey]*hashEntry{},
	}
}

// fileKey identifies a file's content as far as the kernel lets one tell
// without reading it: a file rewritten in place changes ctime (which user
// space cannot set: touch -d and utimensat set mtime and atime, and bump
// ctime), and usually mtime and size too.
type fileKey struct {
	dev, ino     uint64
	mtime, ctime unix.Timespec
	size         int64
}

func keyOf(st *unix.Stat_t) fileKey {
	return fileKey{dev: st.Dev, ino: st.Ino, mtime: st.Mtim, ctime: st.Ctim, size: st.Size}
}

type hashEntry struct {
	once sync.Once
	sum  string
	err  error
}

// BootNow is the current CLOCK_BOOTTIME in nanoseconds, the clock of
// /proc/PID/stat's starttime. Take it when the connection is accepted.
func BootNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return ts.Nano()
}

func (r *Resolver) at(name string) {
	if r.step != nil {
		r.step(name)
	}
}

// FileID is a file's device and inode as stat reports them.
type FileID struct{ Dev, Ino uint64 }

// Resolve tells which program process tgid runs. cgroup is the cgroup ID
// the kernel recorded for the connecting socket, acceptedAt the BootNow of
// the accept, exe the executable the kernel recorded the process running at
// connect() (nil: not recorded). The error says why the program is unknown;
// the Program is then the zero value (Known false) with at most PID set.
//
// Every fact comes from one open file descriptor of /proc/PID/exe and is
// checked again at the end: the file did not change while it was hashed
// (device, inode, size, mtime, ctime), /proc/PID/exe still names that file
// under the same path, and the PID still names the same process (start
// time) in the same cgroup. Any difference makes the program unknown.
func (r *Resolver) Resolve(tgid uint32, cgroup uint64, acceptedAt int64, exe *FileID) (policy.Program, error) {
	unknown := policy.Program{PID: tgid}
	if tgid == 0 {
		return unknown, errors.New("no process recorded for the connection")
	}
	pid := int(tgid)
	start, err := r.startTime(pid)
	if err != nil {
		return unknown, fmt.Errorf("process %d: %w", pid, err)
	}
	// starttime is rounded down to a tick: a process that started after
	// the accept is another process with a reused PID.
	if acceptedAt > 0 && start*(1e9/clockTicks) > acceptedAt {
		return unknown, fmt.Errorf("process %d started after the connection: its PID was reused", pid)
	}
	if err := r.sameCgroup(pid, cgroup); err != nil {
		return unknown, err
	}
	exePath := fmt.Sprintf("%s/%d/exe", r.proc, pid)
	// Opening the link opens the file the process runs, whatever its name
	// now says: a renamed or replaced file cannot stand in for it.
	f, err := os.Open(exePath)
	if err != nil {
		return unknown, fmt.Errorf("process %d: open executable: %w", pid, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return unknown, fmt.Errorf("process %d: stat executable: %w", pid, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return unknown, fmt.Errorf("process %d: executable is not a regular file", pid)
	}
	// Exec keeps the PID and its start time: only the kernel's record of
	// the executable at connect() tells that the process exec'd since.
	if exe != nil && (exe.Dev != st.Dev || exe.Ino != st.Ino) {
		return unknown, fmt.Errorf("process %d runs another executable than when it connected: it exec'd since", pid)
	}
	path, err := os.Readlink(exePath)
	if err != nil {
		return unknown, fmt.Errorf("process %d: read executable path: %w", pid, err)
	}
	// A process's executable is mapped in its memory. One that replaced
	// its exe_file (prctl PR_SET_MM, which requires the old file to be
	// unmapped) usually maps no file of that name. Defence in depth only:
	// the forger can map the target too; the kernel's executable guard
	// (bpf/guard.c, checked by the daemon before Resolve) is the rule.
	if !r.mapped(pid, path) {
		return unknown, fmt.Errorf("process %d does not map its executable %s: it replaced it (prctl PR_SET_MM)", pid, progtext.Escape(path))
	}
	cmd := r.cmdline(pid)
	r.at("opened")
	sum, err := r.hash(f, &st)
	if err != nil {
		return unknown, fmt.Errorf("process %d: %w", pid, err)
	}
	r.at("hashed")
	// The file is unchanged since it was opened, the process still runs
	// it (it did not exec another program meanwhile) under the same name,
	// and the PID named the same process all along.
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil || keyOf(&after) != keyOf(&st) {
		return unknown, fmt.Errorf("process %d: executable changed while clawd hashed it", pid)
	}
	var named unix.Stat_t
	if err := unix.Stat(exePath, &named); err != nil || named.Dev != st.Dev || named.Ino != st.Ino {
		return unknown, fmt.Errorf("process %d runs another executable than the one clawd hashed (exec or exit meanwhile)", pid)
	}
	if again, err := os.Readlink(exePath); err != nil || again != path {
		return unknown, fmt.Errorf("process %d: executable renamed while clawd identified it", pid)
	}
	if again, err := r.startTime(pid); err != nil || again != start {
		return unknown, fmt.Errorf("process %d exited while clawd identified it", pid)
	}
	if err := r.sameCgroup(pid, cgroup); err != nil {
		return unknown, err
	}
	return policy.Program{Known: true, PID: tgid, Cmdline: cmd, Path: cleanPath(path, after.Nlink), SHA256: sum}, nil
}

// mapped reports whether process pid maps a file under path (its
// /proc/PID/maps names it).
func (r *Resolver) mapped(pid int, path string) bool {
	f, err := os.Open(fmt.Sprintf("%s/%d/maps", r.proc, pid))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		// address perms offset dev inode path (the path after spaces)
		l := sc.Text()
		for i := 0; i < 5; i++ {
			l = strings.TrimLeft(l, " ")
			j := strings.IndexByte(l, ' ')
			if j < 0 {
				l = ""
				break
			}
			l = l[j:]
		}
		if strings.TrimLeft(l, " ") == path {
			return true
		}
	}
	return false
}

func (r *Resolver) sameCgroup(pid int, cgroup uint64) error {
	if cg, err := r.cgroupOf(pid); err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	} else if cg != cgroup {
		return fmt.Errorf("process %d is no longer in the cgroup it connected from", pid)
	}
	return nil
}

// cleanPath is the executable's path, or "" when it names no file: the
// kernel appends " (deleted)" to the path of an unlinked executable (a file
// literally named so is treated the same: fail closed), and a path outside
// the reader's root is still absolute from the container's root.
func cleanPath(path string, nlink uint64) string {
	if nlink == 0 || strings.HasSuffix(path, " (deleted)") || !strings.HasPrefix(path, "/") {
		return ""
	}
	return path
}

func (r *Resolver) startTime(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/stat", r.proc, pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: fields follow the
	// last ')'; starttime is field 22.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unreadable stat")
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 20 {
		return 0, errors.New("unreadable stat")
	}
	return strconv.ParseInt(fs[19], 10, 64)
}

func (r *Resolver) hash(f *os.File, st *unix.Stat_t) (string, error) {
	if st.Size > r.MaxHashSize {
		return "", fmt.Errorf("executable larger than %d bytes: not hashed", r.MaxHashSize)
	}
	k := keyOf(st)
	if r.now().Sub(time.Unix(st.Ctim.Unix())) < r.recent {
		// Timestamps are coarse: a rewrite within the same tick could
		// keep the key. A file changed this recently is hashed every time.
		return r.hashFile(f, st.Size)
	}
	r.mu.Lock()
	e, ok := r.cache[k]
	if !ok {
		if len(r.cache) >= r.maxCache {
			clear(r.cache)
		}
		e = &hashEntry{}
		r.cache[k] = e
	}
	r.mu.Unlock()
	e.once.Do(func() {
		e.sum, e.err = r.hashFile(f, st.Size)
		if e.err == nil {
			// Cache only a digest of content that held still while it
			// was read.
			var after unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &after); err != nil || keyOf(&after) != k {
				e.sum, e.err = "", errors.New("executable changed while clawd hashed it")
			}
		}
	})
	if e.err != nil {
		r.mu.Lock()
		if r.cache[k] == e {
			delete(r.cache, k)
		}
		r.mu.Unlock()
	}
	return e.sum, e.err
}

// hashing bounds the CPU new executables cost: an agent that writes and
// runs a fresh large file per connection makes clawd hash each one, and
// no more than this many at once.
var hashing = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))

func (r *Resolver) hashFile(f *os.File, size int64) (string, error) {
	hashing <- struct{}{}
	defer func() { <-hashing }()
	h := sha256.New()
	n, err := io.Copy(h, io.NewSectionReader(f, 0, r.MaxHashSize+1))
	switch {
	case err != nil:
		return "", err
	case n != size:
		return "", errors.New("executable changed size while clawd hashed it")
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (r *Resolver) cmdline(pid int) string {
	f, err := os.Open(fmt.Sprintf("%s/%d/cmdline", r.proc, pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxCmdlineRead))
	return progtext.Cmdline(b)
}
