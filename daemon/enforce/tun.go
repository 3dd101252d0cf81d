package enforce

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// tunCoverage covers a tun/tap interface by who holds it. Its driver hands
// every frame to the processes holding the device's queues: processes of
// the container keep the frames in the container, a process outside it
// (slirp4netns, pasta, a VPN client) puts them on its own network.
func tunCoverage(i Iface, p Params) (Iface, error) {
	nsIno, err := NetnsInode(p.Netns)
	if err != nil {
		return i, err
	}
	holders, err := tunHolders(i.Name, nsIno)
	if err != nil {
		i.Why = "a tun/tap device, and clawd cannot tell which processes hold it: " + err.Error()
		return i, nil
	}
	var outside []string
	for _, pid := range holders {
		in, err := PIDInCgroup(pid, p.Cgroup)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue // exited
		}
		if err != nil || !in {
			outside = append(outside, strconv.Itoa(pid))
		}
	}
	if len(outside) > 0 {
		i.Why = fmt.Sprintf("a tun/tap device held by processes outside the container (pid %s): every frame it transmits goes to them, as with slirp4netns or pasta", strings.Join(outside, ", "))
		return i, nil
	}
	i.Covered, i.Via = true, ViaTun
	if len(holders) == 0 {
		i.How = dropsAll + "; no process holds the tun/tap device, so what it transmits is dropped (checked again at every sweep)"
	} else {
		i.How = dropsAll + "; what it transmits goes only to processes of the container itself (checked again at every sweep)"
	}
	return i, nil
}

// tunHolders returns the processes holding a queue of the tun/tap device
// name in the netns with inode nsIno. A tun file descriptor names its device
// only to ioctls on it, so each /dev/net/tun descriptor on the host is
// borrowed with pidfd_getfd and asked (TUNGETIFF, TUNGETDEVNETNS).
func tunHolders(name string, nsIno uint64) ([]int, error) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var out []int
	for _, pe := range procs {
		pid, err := strconv.Atoi(pe.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, err := os.ReadDir("/proc/" + pe.Name() + "/fd")
		if err != nil {
			continue // exited, or a kernel thread
		}
		for _, fe := range fds {
			if t, err := os.Readlink("/proc/" + pe.Name() + "/fd/" + fe.Name()); err != nil || t != "/dev/net/tun" {
				continue
			}
			fd, _ := strconv.Atoi(fe.Name())
			held, err := holdsTun(pid, fd, name, nsIno)
			if errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EBADF) {
				continue // exited or closed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("inspect /dev/net/tun of pid %d: %w", pid, err)
			}
			if held {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

func holdsTun(pid, fd int, name string, nsIno uint64) (bool, error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(pfd)
	tfd, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(tfd)
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false, err
	}
	if err := unix.IoctlIfreq(tfd, unix.TUNGETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBADFD) {
			return false, nil // not attached to a device
		}
		return false, err
	}
	if ifr.Name() != name {
		return false, nil
	}
	nsfd, err := unix.IoctlRetInt(tfd, unix.TUNGETDEVNETNS)
	if err != nil {
		return false, err
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		return false, err
	}
	return st.Ino == nsIno, nil
}
