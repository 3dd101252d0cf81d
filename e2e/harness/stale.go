package harness

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Every resource the harness creates is named after a short random ID and
// recorded, before it is created, in an owner file /run/clawd-e2e/owners/<id>
// holding the creating process's PID and start time. CleanupStale removes
// only resources whose owner is dead (or, with no owner file, that are older
// than staleAge): another test process may be using the rest right now.
const (
	stateDir   = "/run/clawd-e2e"
	ownersDir  = stateDir + "/owners"
	netnsDir   = "/run/netns"
	tmpPrefix  = "ce2e-" // base dirs /tmp/ce2e-<id> for containerd/dockerd
	staleAge   = 10 * time.Minute
	ruleTagFmt = "clawd-e2e:%s"
)

var namePrefixes = []struct{ netns, link string }{
	{"clawd-c-", "cc"},
	{"clawd-up-", "cup"},
	{"clawd-k-", "cdm"}, // scratch netns (KernelHasLinkKind); Docker network parents (Network)
}

// markOwned records that this process owns resources named after id.
func markOwned(id string) error {
	if err := os.MkdirAll(ownersDir, 0o700); err != nil {
		return fmt.Errorf("create owners dir: %w", err)
	}
	st, err := procStart(os.Getpid())
	if err != nil {
		return err
	}
	data := fmt.Sprintf("%d %d\n", os.Getpid(), st)
	if err := os.WriteFile(filepath.Join(ownersDir, id), []byte(data), 0o600); err != nil {
		return fmt.Errorf("write owner file: %w", err)
	}
	return nil
}

func unmarkOwned(id string) { os.Remove(filepath.Join(ownersDir, id)) }

// procStart returns the start time (in clock ticks since boot) of pid, to
// tell a live owner from a recycled PID.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; fields after ")" are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22 overall
}

// ownerState: 1 = owner alive, 0 = owner dead, -1 = no owner file.
func ownerState(id string) int {
	b, err := os.ReadFile(filepath.Join(ownersDir, id))
	if err != nil {
		return -1
	}
	var pid int
	var st uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &st); err != nil {
		return 0
	}
	cur, err := procStart(pid)
	if err != nil || cur != st {
		return 0
	}
	return 1
}

// stale reports whether resources named after id may be removed; mtime is the
// age of the resource when known (zero otherwise).
func stale(id string, mtime time.Time) bool {
	switch ownerState(id) {
	case 1:
		return false
	case 0:
		return true
	}
	return !mtime.IsZero() && time.Since(mtime) > staleAge
}

// CleanupStale removes leftovers of crashed harness runs: network namespaces
// clawd-c-*/clawd-up-* (killing the processes still inside), their host veths
// cc*/cup*, tagged iptables FORWARD rules and /tmp/ce2e-* daemon dirs
// (killing containerd, shims and dockerd started there). Resources of live
// test processes are left alone. Errors are ignored: it is best effort.
func CleanupStale() {
	staleIDs := map[string]bool{}
	// Dead owners.
	if ents, err := os.ReadDir(ownersDir); err == nil {
		for _, e := range ents {
			if ownerState(e.Name()) == 0 {
				staleIDs[e.Name()] = true
			}
		}
	}
	// Network namespaces.
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			for _, p := range namePrefixes {
				id, ok := strings.CutPrefix(e.Name(), p.netns)
				if !ok || id == "" {
					continue
				}
				var mt time.Time
				if fi, err := e.Info(); err == nil {
					mt = fi.ModTime()
				}
				if stale(id, mt) {
					staleIDs[id] = true
				}
			}
		}
	}
	// Daemon dirs.
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tmpPrefix+"*"))
	for _, d := range dirs {
		id := strings.TrimPrefix(filepath.Base(d), tmpPrefix)
		var mt time.Time
		if fi, err := os.Stat(d); err == nil {
			mt = fi.ModTime()
		}
		if stale(id, mt) {
			staleIDs[id] = true
		}
	}
	for id := range staleIDs {
		removeID(id)
	}
}

// removeID removes every resource named after id.
func removeID(id string) {
	dir := filepath.Join(os.TempDir(), tmpPrefix+id)
	if _, err := os.Stat(dir); err == nil {
		killProcs(func(pid int) bool {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			return bytes.Contains(cmd, []byte(dir+"/")) || bytes.Contains(cmd, []byte(dir+"\x00"))
		})
	}
	for _, p := range namePrefixes {
		nsPath := filepath.Join(netnsDir, p.netns+id)
		if st, err := os.Stat(nsPath); err == nil {
			ino := st.Sys().(*syscall.Stat_t).Ino
			want := fmt.Sprintf("net:[%d]", ino)
			killProcs(func(pid int) bool {
				l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
				return l == want
			})
			unix.Unmount(nsPath, unix.MNT_DETACH)
			os.Remove(nsPath)
		}
		if l, err := netlink.LinkByName(p.link + id); err == nil {
			netlink.LinkDel(l)
		}
	}
	removeTaggedRules(id)
	if _, err := os.Stat(dir); err == nil {
		unmountUnder(dir)
		os.RemoveAll(dir)
	}
	unmarkOwned(id)
}

// killProcs SIGKILLs every process (other than ourselves) matching.
func killProcs(match func(pid int) bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || pid == 1 {
			continue
		}
		if match(pid) {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// unmountUnder lazily unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			mps = append(mps, fs[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		unix.Unmount(mps[i], unix.MNT_DETACH)
	}
}

// removeTaggedRules deletes FORWARD rules commented clawd-e2e:<id>.
func removeTaggedRules(id string) {
	tag := fmt.Sprintf(ruleTagFmt, id)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(ipt); err != nil {
			continue
		}
		out, err := exec.Command(ipt, "-w", "-S", "FORWARD").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "-A FORWARD ") || !strings.Contains(line, tag) {
				continue
			}
			args := strings.Fields(strings.TrimPrefix(line, "-A FORWARD "))
			for i := range args {
				args[i] = strings.Trim(args[i], `"`)
			}
			exec.Command(ipt, append([]string{"-w", "-D", "FORWARD"}, args...)...).Run()
		}
	}
}

func execOut(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// ownedDir creates /tmp/ce2e-<id> owned by this process, so that a crashed
// run's dir is removed by CleanupStale.
func ownedDir() (string, error) {
	id := shortID(8)
	if err := markOwned(id); err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), tmpPrefix+id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		unmarkOwned(id)
		return "", err
	}
	return dir, nil
}

func removeOwnedDir(dir string) {
	os.RemoveAll(dir)
	unmarkOwned(strings.TrimPrefix(filepath.Base(dir), tmpPrefix))
}
