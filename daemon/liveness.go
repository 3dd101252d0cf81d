package daemon

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// An attachment lives as long as its cgroup: not as long as the process
// that was named at attach, which may be a launcher that exits, or a
// container init that moves itself into a child cgroup (systemd's
// init.scope). Only a cgroup that is gone ends it; anything clawd cannot
// tell for sure (a /proc read failing with EMFILE, no process to reach the
// network namespace through) keeps the pins, so the container stays cut off.

// errNoProcess: the cgroup exists but holds no process through which its
// network namespace could be reached.
var errNoProcess = errors.New("no live process in the cgroup or below it")

// cgroupGone reports whether the cgroup recorded as path with ID id is
// gone: removed, or replaced by another cgroup at the same path. err is set
// when that cannot be told (the caller keeps the attachment).
func cgroupGone(path string, id uint64) (bool, error) {
	cid, err := enforce.CgroupID(path)
	switch {
	case err == nil:
		return cid != id, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ENOTDIR):
		return true, nil
	}
	return false, err
}

// netnsOfPID opens pid's network namespace and checks, through the same
// /proc/PID directory (so a reused pid cannot slip in), that the process is
// in cgroup cg or below it.
func netnsOfPID(pid int, cg string) (*os.File, error) {
	dir, err := os.Open(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	fd, err := unix.Openat(int(dir.Fd()), "ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	ns := os.NewFile(uintptr(fd), fmt.Sprintf("netns of pid %d", pid))
	cfd, err := unix.Openat(int(dir.Fd()), "cgroup", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	cf := os.NewFile(uintptr(cfd), "cgroup")
	b := make([]byte, 4096)
	n, err := cf.Read(b)
	cf.Close()
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	rel, err := enforce.ParseCgroup(b[:n])
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		ns.Close()
		return nil, err
	}
	if !enforce.Under(root+rel, cg) {
		ns.Close()
		return nil, fmt.Errorf("pid %d is not in cgroup %s", pid, cg)
	}
	return ns, nil
}

// netnsOfCgroup opens the network namespace of a live process in cgroup cg
// or below, the one with inode want when want is not 0.
func netnsOfCgroup(cg string, want uint64) (*os.File, uint64, error) {
	pids, err := enforce.CgroupProcs(cg)
	if err != nil {
		return nil, 0, err
	}
	if len(pids) == 0 {
		return nil, 0, errNoProcess
	}
	var lastErr error
	for _, pid := range pids {
		f, err := netnsOfPID(pid, cg)
		if err != nil {
			lastErr = err
			continue
		}
		ino, err := fdInode(f)
		if err != nil || (want != 0 && ino != want) {
			f.Close()
			lastErr = fmt.Errorf("pid %d is in another network namespace than the one recorded", pid)
			continue
		}
		return f, ino, nil
	}
	return nil, 0, fmt.Errorf("no process of cgroup %s leads to its network namespace: %w", cg, lastErr)
}

func fdInode(f *os.File) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// fdPath names an open namespace file for nsenter and netns lookups.
func fdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }
