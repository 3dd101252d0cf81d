package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

func TestStatusCapsUnionsEverySet(t *testing.T) {
	st := "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000002000\nCapAmb:\t0000000000000000\n"
	c, err := statusCaps([]byte(st))
	if err != nil || c&(1<<capNetRaw) == 0 {
		t.Fatalf("CAP_NET_RAW in the bounding set alone: %x, %v", c, err)
	}
	// Dropped from the bounding set but still inheritable: file
	// capabilities could make it permitted again.
	st = strings.Replace(st, "CapBnd:\t0000000000002000", "CapBnd:\t0000000000000000", 1)
	st = strings.Replace(st, "CapInh:\t0000000000000000", "CapInh:\t0000000000002000", 1)
	if c, _ := statusCaps([]byte(st)); c&(1<<capNetRaw) == 0 {
		t.Fatalf("inheritable CAP_NET_RAW missed: %x", c)
	}
	if _, err := statusCaps([]byte("Name:\tx\n")); err == nil {
		t.Fatal("a status without capability lines must be an error, not 'no capabilities'")
	}
}

// testCgroup creates a cgroup with one sleeping process (root, full
// capabilities) in a child cgroup of it, and removes both at cleanup.
func testCgroup(t *testing.T) (string, int) {
	t.Helper()
	dir := testCgroupPath(t)
	child := filepath.Join(dir, "init.scope")
	if err := os.MkdirAll(child, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(child, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(child)
		os.Remove(dir)
	})
	return dir, cmd.Process.Pid
}

// The container's process sits in a child cgroup (systemd's init.scope):
// it is found, its capabilities read, its netns reached.
func TestProcessesOfChildCgroupsCount(t *testing.T) {
	dir, pid := testCgroup(t)
	pids, err := enforce.CgroupProcs(dir)
	if err != nil || len(pids) != 1 || pids[0] != pid {
		t.Fatalf("procs of %s = %v, %v; want [%d] from its child cgroup", dir, pids, err, pid)
	}
	h, err := netRawHolders(dir)
	if err != nil || len(h) != 1 || h[0] != pid {
		t.Fatalf("CAP_NET_RAW holders = %v, %v; want the root process %d", h, err, pid)
	}
	f, ino, err := netnsOfCgroup(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, _, err := netnsOfCgroup(dir, ino+1); err == nil {
		t.Fatal("a netns other than the recorded one was accepted")
	}
	if _, err := netnsOfPID(pid, dir+"/elsewhere"); err == nil {
		t.Fatal("a process outside the cgroup was accepted")
	}
}

// testCgroupPath is a cgroup path of the test's own (not created yet).
func testCgroupPath(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "clawd-live-test-"+strings.ReplaceAll(t.Name(), "/", "_"))
}

func TestCgroupGoneOnlyWhenRemovedOrReplaced(t *testing.T) {
	dir := testCgroupPath(t)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	id, err := enforce.CgroupID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if gone, err := cgroupGone(dir, id); gone || err != nil {
		t.Fatalf("live cgroup: gone=%v err=%v", gone, err)
	}
	// Empty is not gone.
	if pids, err := enforce.CgroupProcs(dir); err != nil || len(pids) != 0 {
		t.Fatalf("procs of a new cgroup = %v, %v", pids, err)
	}
	if _, _, err := netnsOfCgroup(dir, 0); err != errNoProcess {
		t.Fatalf("netns of an empty cgroup: %v, want errNoProcess", err)
	}
	os.Remove(dir)
	if gone, err := cgroupGone(dir, id); !gone || err != nil {
		t.Fatalf("removed cgroup: gone=%v err=%v", gone, err)
	}
	// Another cgroup at the same path is another container.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if gone, err := cgroupGone(dir, id); !gone || err != nil {
		t.Fatalf("replaced cgroup: gone=%v err=%v", gone, err)
	}
}
