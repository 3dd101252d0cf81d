package enforce

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountinfo returns the lines of /proc/self/mountinfo split into fields:
// mount point (field 5) and, after the " - " separator, fstype, source and
// super options.
type mount struct {
	Point   string
	FSType  string
	Options string // super block options, e.g. "rw,net_cls,net_prio"
}

func mounts() ([]mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return parseMountinfo(b), nil
}

func parseMountinfo(b []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		out = append(out, mount{Point: unescapeMount(f[4]), FSType: g[0], Options: g[2]})
	}
	return out
}

// unescapeMount undoes the octal escapes mountinfo uses for spaces and such.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Cgroup2Mount finds where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup
// on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
func Cgroup2Mount() (string, error) {
	ms, err := mounts()
	if err != nil {
		return "", err
	}
	for _, m := range ms {
		if m.FSType == "cgroup2" {
			return m.Point, nil
		}
	}
	return "", errors.New("no cgroup2 filesystem is mounted: clawd needs cgroup v2 (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with systemd.unified_cgroup_hierarchy=1)")
}

// NetClsActive reports a mounted cgroup v1 net_cls or net_prio hierarchy.
// Once either is in use the kernel silently stops matching sockets to cgroup
// v2 ("disabling cgroup2 socket matching"), and every clawd program would be
// bypassed: fail open. clawd refuses to attach on such hosts.
func NetClsActive() (string, bool) {
	ms, err := mounts()
	if err != nil {
		return "", false
	}
	for _, m := range ms {
		if m.FSType != "cgroup" {
			continue
		}
		for _, o := range strings.Split(m.Options, ",") {
			if o == "net_cls" || o == "net_prio" {
				return m.Point, true
			}
		}
	}
	return "", false
}

// CgroupOfPID returns the cgroup v2 directory of a process (the "0::" line of
// /proc/PID/cgroup joined to the cgroup2 mount).
func CgroupOfPID(pid int) (string, error) {
	cg, err := cgroupPath(pid)
	if err != nil {
		return "", err
	}
	if root, _ := Cgroup2Mount(); cg == root {
		// Attaching to the root cgroup would redirect the whole host.
		return "", fmt.Errorf("pid %d is in the root cgroup v2; clawd attaches only to a container's own cgroup", pid)
	}
	return cg, nil
}

func cgroupPath(pid int) (string, error) {
	root, err := Cgroup2Mount()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	rel, err := parseCgroup2Line(b)
	if err != nil {
		return "", fmt.Errorf("pid %d: %w", pid, err)
	}
	return filepath.Join(root, rel), nil
}

// PIDInCgroup reports whether pid is in cgroup dir or below it.
func PIDInCgroup(pid int, dir string) (bool, error) {
	cg, err := cgroupPath(pid)
	if err != nil {
		return false, err
	}
	return Under(cg, dir), nil
}

// Under reports whether cgroup directory cg is base or a descendant of it.
func Under(cg, base string) bool {
	cg, base = filepath.Clean(cg), filepath.Clean(base)
	return cg == base || strings.HasPrefix(cg, base+"/")
}

// CgroupProcs lists the processes of cgroup dir and of every cgroup below
// it. A child cgroup removed meanwhile is skipped; any other error is
// returned (never read as "no processes").
func CgroupProcs(dir string) ([]int, error) {
	var pids []int
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, os.ErrNotExist) {
				return filepath.SkipDir
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if path != dir && errors.Is(err, os.ErrNotExist) {
				return filepath.SkipDir
			}
			return fmt.Errorf("read %s: %w", filepath.Join(path, "cgroup.procs"), err)
		}
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids, err
}

// CgroupPathByID finds the cgroup v2 directory whose ID (inode) is id:
// open_by_handle_at with the kernfs handle (the ID itself), else a walk of
// the hierarchy. os.ErrNotExist when no such cgroup exists.
func CgroupPathByID(id uint64) (string, error) {
	root, err := Cgroup2Mount()
	if err != nil {
		return "", err
	}
	if p, err := cgroupByHandle(root, id); err == nil {
		return p, nil
	}
	found := ""
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || found != "" {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		if cid, err := CgroupID(path); err == nil && cid == id {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("cgroup id %d: %w", id, os.ErrNotExist)
	}
	return found, nil
}

func cgroupByHandle(root string, id uint64) (string, error) {
	mfd, err := unix.Open(root, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(mfd)
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], id)
	const fileidKernfs = 0xfe
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(fileidKernfs, b[:]), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if cid, err := CgroupID(p); err != nil || cid != id {
		return "", fmt.Errorf("cgroup id %d resolved to %s, which is another cgroup", id, p)
	}
	return p, nil
}

// ParseCgroup returns the cgroup v2 path, relative to the hierarchy's root,
// that the contents of a /proc/PID/cgroup file name.
func ParseCgroup(b []byte) (string, error) { return parseCgroup2Line(b) }

func parseCgroup2Line(b []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rel, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			if rel == "" || !strings.HasPrefix(rel, "/") || strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") {
				return "", fmt.Errorf("bad cgroup v2 path %q", rel)
			}
			return rel, nil
		}
	}
	return "", errors.New("no cgroup v2 membership (no 0:: line in /proc/PID/cgroup)")
}

// CgroupID is the kernel's ID of a cgroup v2 directory: its inode number, the
// same value bpf_get_current_cgroup_id returns.
func CgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", path, err)
	}
	return st.Ino, nil
}

const bpffsMagic = 0xcafe4a11

// EnsureBPFFS makes sure dir is on a bpf filesystem, mounting one at
// /sys/fs/bpf when none is there.
func EnsureBPFFS(dir string) error {
	if isBPFFS(dir) {
		return nil
	}
	const std = "/sys/fs/bpf"
	if !isBPFFS(std) {
		if err := os.MkdirAll(std, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", std, err)
		}
		if err := unix.Mount("bpffs", std, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", std, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	if !isBPFFS(dir) {
		return fmt.Errorf("pin dir %s is not on a bpf filesystem", dir)
	}
	return nil
}

func isBPFFS(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return false
	}
	return uint32(st.Type) == bpffsMagic
}

// CgroupIDOfPID is the cgroup ID (the cgroup directory's inode, as
// bpf_get_current_cgroup_id reports it) of pid's cgroup v2, below the
// cgroup2 mount root (Cgroup2Mount, found once by the caller: this runs
// for every connection).
func CgroupIDOfPID(root string, pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	rel, err := parseCgroup2Line(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return CgroupID(filepath.Join(root, rel))
}
