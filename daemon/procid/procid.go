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

	// hashWait bounds how long a resolution waits for its turn to hash
	// (its container's earlier hashes, then the host-wide budget): past
	// it the program is unknown. hashHold bounds how long one hash holds
	// a host-wide slot (a stalled read, FUSE): past it the slot goes to
	// the next container while the hash goes on in its own container's.
	hashWait, hashHold time.Duration

	mu    sync.Mutex
	cache map[fileKey]*hashEntry
	// byFile: the one cached key of each file (device, inode): a newer
	// state of the file (chmod, rewrite) replaces the older, which can
	// never match again (ctime only moves forward).
	byFile map[[2]uint64]fileKey
	// perCgroup counts cached entries by the container that made them;
	// a full cache evicts the least recently used entry of the container
	// holding the most, so one agent cannot flush the others' digests.
	perCgroup map[uint64]int
	use       uint64 // LRU clock
	// turns: each container's hashing turn (one hash at a time).
	turns map[uint64]*turn

	// Per-connection costs remembered (each bounded, then forgotten
	// whole): texts, the redacted line of each raw command line;
	// mapsOK, the processes (PID, start time, executable, path) whose maps
	// named their executable, a check that is defence in depth only (the
	// executable guard is the rule, checked before every Resolve).
	textMu sync.Mutex
	texts  map[string]string
	mapsOK map[mapsKey]bool
}

type mapsKey struct {
	pid      int
	start    int64
	dev, ino uint64
	path     string
}

// memoEntries bounds the Resolver's mapsOK; memoLines and memoLine its
// texts (how many, and the longest raw line remembered: 2 MiB at most).
const (
	memoEntries = 4096
	memoLines   = 1024
	memoLine    = 2 << 10
)

type turn struct {
	ch    chan struct{}
	users int
}

// New returns a Resolver reading procRoot ("/proc") whose cgroupOf gives a
// process's cgroup v2 ID (enforce.CgroupIDOfPID).
func New(procRoot string, cgroupOf func(pid int) (uint64, error)) *Resolver {
	return &Resolver{
		MaxHashSize: DefaultMaxHashSize,
		proc:        procRoot, cgroupOf: cgroupOf,
		recent: recent, now: time.Now, maxCache: cacheEntries,
		texts: map[string]string{}, mapsOK: map[mapsKey]bool{},
		hashWait: defaultHashWait, hashHold: defaultHashHold,
		cache: map[fileKey]*hashEntry{}, byFile: map[[2]uint64]fileKey{},
		perCgroup: map[uint64]int{}, turns: map[uint64]*turn{},
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
	once   sync.Once
	sum    string
	err    error
	cgroup uint64
	used   uint64
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
	mk := mapsKey{pid, start, st.Dev, st.Ino, path}
	r.textMu.Lock()
	known := r.mapsOK[mk]
	r.textMu.Unlock()
	if !known && !r.mapped(pid, path) {
		return unknown, fmt.Errorf("process %d does not map its executable %s: it replaced it (prctl PR_SET_MM)", pid, progtext.Escape(path))
	}
	if !known {
		r.textMu.Lock()
		if len(r.mapsOK) >= memoEntries {
			clear(r.mapsOK)
		}
		r.mapsOK[mk] = true
		r.textMu.Unlock()
	}
	cmd := r.cmdline(pid)
	r.at("opened")
	sum, err := r.hash(f, &st, cgroup)
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

func (r *Resolver) hash(f *os.File, st *unix.Stat_t, cgroup uint64) (string, error) {
	if st.Size > r.MaxHashSize {
		return "", fmt.Errorf("executable larger than %d bytes: not hashed", r.MaxHashSize)
	}
	k := keyOf(st)
	if r.now().Sub(time.Unix(st.Ctim.Unix())) < r.recent {
		// Timestamps are coarse: a rewrite within the same tick could
		// keep the key. A file changed this recently is hashed every time.
		return r.hashFile(f, st.Size, cgroup)
	}
	r.mu.Lock()
	e, ok := r.cache[k]
	if !ok {
		id := [2]uint64{k.dev, k.ino}
		if old, ok := r.byFile[id]; ok {
			r.dropLocked(old)
		}
		for len(r.cache) >= r.maxCache && r.evictLocked() {
		}
		e = &hashEntry{cgroup: cgroup}
		r.cache[k] = e
		r.byFile[id] = k
		r.perCgroup[cgroup]++
	}
	r.use++
	e.used = r.use
	r.mu.Unlock()
	e.once.Do(func() {
		e.sum, e.err = r.hashFile(f, st.Size, cgroup)
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
			r.dropLocked(k)
		}
		r.mu.Unlock()
	}
	return e.sum, e.err
}

// dropLocked removes key k from the cache. r.mu is held.
func (r *Resolver) dropLocked(k fileKey) {
	e, ok := r.cache[k]
	if !ok {
		return
	}
	delete(r.cache, k)
	if id := [2]uint64{k.dev, k.ino}; r.byFile[id] == k {
		delete(r.byFile, id)
	}
	if r.perCgroup[e.cgroup]--; r.perCgroup[e.cgroup] <= 0 {
		delete(r.perCgroup, e.cgroup)
	}
}

// evictLocked removes the least recently used entry of the container that
// holds the most entries. r.mu is held.
func (r *Resolver) evictLocked() bool {
	var hog uint64
	most := 0
	for cg, n := range r.perCgroup {
		if n > most {
			hog, most = cg, n
		}
	}
	var victim fileKey
	found := false
	var oldest uint64
	for k, e := range r.cache {
		if e.cgroup == hog && (!found || e.used < oldest) {
			victim, oldest, found = k, e.used, true
		}
	}
	if !found {
		return false
	}
	r.dropLocked(victim)
	return true
}

// hashing bounds the CPU new executables cost host-wide: no more than
// this many hashes at once (at least two). Each container also hashes one
// file at a time (Resolver.turns), so one agent that makes clawd hash
// large files holds at most one of these slots and never delays another
// container; several hostile containers together delay another's
// resolution at most hashWait (then its program is unknown).
var hashing = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

const (
	defaultHashWait = 2 * time.Second
	defaultHashHold = 5 * time.Second
)

// errHashWait: the resolution did not get its turn to hash in time.
var errHashWait = errors.New("waited too long for its turn to hash the executable (other executables are being hashed): not hashed")

func (r *Resolver) hashFile(f *os.File, size int64, cgroup uint64) (string, error) {
	release, err := r.hashTurn(cgroup)
	if err != nil {
		return "", err
	}
	defer release()
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

// hashTurn waits, at most hashWait in all, for cgroup's turn and then a
// host-wide slot. The slot is given back at release or after hashHold,
// whichever comes first; the container's turn only at release.
func (r *Resolver) hashTurn(cgroup uint64) (func(), error) {
	r.mu.Lock()
	tu := r.turns[cgroup]
	if tu == nil {
		tu = &turn{ch: make(chan struct{}, 1)}
		r.turns[cgroup] = tu
	}
	tu.users++
	r.mu.Unlock()
	done := func() {
		r.mu.Lock()
		if tu.users--; tu.users == 0 {
			delete(r.turns, cgroup)
		}
		r.mu.Unlock()
	}
	timer := time.NewTimer(r.hashWait)
	defer timer.Stop()
	select {
	case tu.ch <- struct{}{}:
	case <-timer.C:
		done()
		return nil, errHashWait
	}
	select {
	case hashing <- struct{}{}:
	case <-timer.C:
		<-tu.ch
		done()
		return nil, errHashWait
	}
	var once sync.Once
	give := func() { once.Do(func() { <-hashing }) }
	hold := time.AfterFunc(r.hashHold, give)
	return func() {
		hold.Stop()
		give()
		<-tu.ch
		done()
	}, nil
}

func (r *Resolver) cmdline(pid int) string {
	f, err := os.Open(fmt.Sprintf("%s/%d/cmdline", r.proc, pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, maxCmdlineRead))
	// Redacting is the costly part (its patterns), and a process that
	// connects again has the same command line: the result of the same
	// bytes is remembered (progtext.Cmdline is a pure function of them).
	r.textMu.Lock()
	line, ok := r.texts[string(b)]
	r.textMu.Unlock()
	if ok {
		return line
	}
	line = progtext.Cmdline(b)
	if len(b) <= memoLine {
		r.textMu.Lock()
		if len(r.texts) >= memoLines {
			clear(r.texts)
		}
		r.texts[string(b)] = line
		r.textMu.Unlock()
	}
	return line
}
