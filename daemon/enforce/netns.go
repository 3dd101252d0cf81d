package enforce

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netnsByID opens the network namespace that the netns of h knows as nsid
// (the IFLA_LINK_NETNSID of a veth whose peer, or a macvlan whose lower
// device, lives elsewhere). The kernel has no "open by nsid": every
// namespace something keeps alive is tried (clawd's own, named ones, those
// of every process and thread, bind mounts, open descriptors) and asked for
// its ID in h's netns.
func netnsByID(h *netlink.Handle, nsid int) (*os.File, error) {
	if nsid < 0 {
		return nil, fmt.Errorf("bad netns id %d", nsid)
	}
	seen := map[uint64]bool{}
	try := func(path string) *os.File {
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Fstat(int(f.Fd()), &st) != nil || seen[st.Ino] {
			f.Close()
			return nil
		}
		seen[st.Ino] = true
		if id, err := h.GetNetNsIdByFd(int(f.Fd())); err == nil && id == nsid {
			return f
		}
		f.Close()
		return nil
	}
	for _, p := range []string{"/proc/self/ns/net", "/proc/1/ns/net"} {
		if f := try(p); f != nil {
			return f, nil
		}
	}
	for _, dir := range []string{"/run/netns", "/var/run/netns", "/run/docker/netns", "/var/run/docker/netns"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if f := try(filepath.Join(dir, e.Name())); f != nil {
				return f, nil
			}
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []string
	for _, p := range procs {
		if p.Name()[0] >= '0' && p.Name()[0] <= '9' {
			pids = append(pids, p.Name())
		}
	}
	for _, pid := range pids {
		if f := try("/proc/" + pid + "/ns/net"); f != nil {
			return f, nil
		}
		tasks, _ := os.ReadDir("/proc/" + pid + "/task")
		for _, t := range tasks {
			if t.Name() != pid {
				if f := try("/proc/" + pid + "/task/" + t.Name() + "/ns/net"); f != nil {
					return f, nil
				}
			}
		}
	}
	if ms, err := nsfsMounts(); err == nil {
		for _, m := range ms {
			if f := try(m); f != nil {
				return f, nil
			}
		}
	}
	for _, pid := range pids {
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		for _, fd := range fds {
			p := "/proc/" + pid + "/fd/" + fd.Name()
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, "net:[") {
				if f := try(p); f != nil {
					return f, nil
				}
			}
		}
	}
	return nil, errors.New("no process, bind mount or open descriptor of it is visible to clawd")
}

// nsfsMounts lists the mount points of namespace files (bind mounts such as
// `ip netns add` makes).
func nsfsMounts() ([]string, error) {
	ms, err := mounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.FSType == "nsfs" {
			out = append(out, m.Point)
		}
	}
	return out, nil
}

// NetnsInode is the inode of a network namespace file: its identity.
func NetnsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat netns %s: %w", path, err)
	}
	return st.Ino, nil
}
