package enforce

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGuardMarksForgedExecutable (issue 16 round 2, hole 1): a process in
// an attached cgroup replaces its exe_file with another file (prctl
// PR_SET_MM_MAP exe_fd after unshare(CLONE_NEWUSER),
// daemon/procid/testdata/exeforge.c) and connects: the connect hook
// records it as forged, not as the file it now names. A plain program's
// connection next to it is recorded as its real executable.
func TestGuardMarksForgedExecutable(t *testing.T) {
	tb := newTestbed(t)
	e := newEnforcer(t, tb)
	if why := e.ExeGuarded(); why != nil {
		t.Fatalf("the executable guard did not load: %v", why)
	}
	if why := e.ExeRecorded(); why != nil {
		t.Skipf("this kernel does not let the connect hook read the executable: %v", why)
	}
	forge := filepath.Join(t.TempDir(), "exeforge")
	if out, err := exec.Command("cc", "-O1", "-static", "-nostdlib", "-fno-stack-protector", "-fPIC", "-o", forge, "../procid/testdata/exeforge.c").CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	ln4 := listenIn(t, tb.nsPath, "tcp4", "127.0.0.1:0")
	port := uint16(ln4.Addr().(*net.TCPAddr).Port)
	cookie := netnsCookie(t, ln4)
	if _, err := e.Attach(Params{ID: "g1", Cgroup: tb.cgroup, Netns: tb.nsPath, ProxyPort: port, DNSPort: port + 1}); err != nil {
		t.Fatal(err)
	}
	type rec struct {
		forged bool
		exe    *FileID
	}
	got := make(chan rec, 4)
	go func() {
		for {
			c, err := ln4.Accept()
			if err != nil {
				return
			}
			ra := c.RemoteAddr().(*net.TCPAddr)
			o, ok := e.OrigDst(cookie, uint16(ra.Port), 4)
			if !ok {
				got <- rec{}
			} else {
				got <- rec{o.Forged, o.Exe}
			}
			bufio.NewReader(c).ReadString('\n')
			fmt.Fprint(c, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
			c.Close()
		}
	}()
	fd, err := unix.Open(tb.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	target := busybox(t)
	cmd := exec.Command("ip", "netns", "exec", tb.ns, forge, target, "198.51.100.99", "81", "/forged")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.CombinedOutput()
	select {
	case r := <-got:
		if !r.forged || r.exe != nil {
			t.Errorf("forger recorded as forged=%v exe=%+v, want forged (forger said %q, %v)", r.forged, r.exe, out, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no connection from the forger: %q %v", out, err)
	}
	// busybox itself, unforged, is recorded as busybox.
	if out, err := tb.run(t, "timeout", "5", "wget", "-q", "-O-", "http://198.51.100.99:81/"); err != nil {
		t.Fatalf("wget: %v %s", err, out)
	}
	r := <-got
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if r.forged || r.exe == nil || r.exe.Dev != st.Dev || r.exe.Ino != st.Ino {
		t.Errorf("busybox recorded as forged=%v exe=%+v", r.forged, r.exe)
	}
}
