package procid

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAttackResolveExeFileReplaced (red team, issue 16 round 2): a process
// can make the kernel report another executable as its own.
// prctl(PR_SET_MM, PR_SET_MM_MAP) with exe_fd replaces mm->exe_file once
// the old file is no longer mapped; it needs CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN only in the caller's *own* user namespace, which
// unshare(CLONE_NEWUSER) gives any process (the harness's containers do
// not forbid it). testdata/exeforge.c copies its image to anonymous
// memory, unmaps its file, points exe_file at TARGET and keeps running
// its own code. /proc/PID/exe, its digest and the connect hook's record
// (mm->exe_file's device and inode, the very field replaced) then all say
// TARGET: a "binaries: [/usr/bin/git@sha256:…]" rule is satisfied by
// arbitrary code. The resolution must not report the target as the
// program (e.g. require that the executable is still mapped by the
// process, /proc/PID/map_files, or that the task's user namespace is the
// container's, or refuse processes that changed exe_file).
func TestAttackResolveExeFileReplaced(t *testing.T) {
	dir := t.TempDir()
	forge := filepath.Join(dir, "exeforge")
	if out, err := exec.Command("cc", "-O1", "-static", "-nostdlib", "-fno-stack-protector", "-fPIC", "-o", forge, "testdata/exeforge.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	// The pinned program: a copy of the helper, with its own digest.
	target := helperCopy(t, dir, "git", "pinned")
	c := exec.Command(forge, target, "-")
	in, _ := c.StdinPipe()
	stdout, _ := c.StdoutPipe()
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); c.Process.Kill(); c.Wait() })
	rd := bufio.NewReader(stdout)
	var lines []string
	for {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("exeforge: %q %v", lines, err)
		}
		lines = append(lines, strings.TrimSpace(l))
		if l == "ready\n" {
			break
		}
	}
	if !strings.Contains(strings.Join(lines, " "), "prctl=0") {
		t.Fatalf("exeforge could not replace its exe_file here: %q", lines)
	}
	// What the connect hook records: mm->exe_file, now the target.
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	p, err := resolver().Resolve(uint32(c.Process.Pid), 7, BootNow(), &FileID{Dev: st.Dev, Ino: st.Ino})
	if err == nil && p.Known && (p.Path == target || p.SHA256 == sum(t, target)) {
		self, _ := os.Readlink("/proc/" + itoa(c.Process.Pid) + "/exe")
		t.Fatalf("exeforge (its own code running) resolved as the pinned program: path %q sha256 %s (/proc/PID/exe -> %s)", p.Path, p.SHA256, self)
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return string(b[n:])
}
