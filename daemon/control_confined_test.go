package daemon

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// TestConfinedDialHelper is not a test: run as a child process (in a chosen
// cgroup) it dials the control socket named by CLAWD_TEST_DIAL and prints
// the status line of the answer.
func TestConfinedDialHelper(t *testing.T) {
	if p := os.Getenv("CLAWD_TEST_DIAL_AND_EXIT"); p != "" {
		c, err := net.Dial("unix", p)
		if err != nil {
			os.Exit(1)
		}
		c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: clawd\r\n\r\n"))
		os.Exit(0) // before the server accepts
	}
	path := os.Getenv("CLAWD_TEST_DIAL")
	if path == "" {
		return
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		fmt.Println("STATUS dial error:", err)
		os.Exit(0)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: clawd\r\nConnection: close\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Println("STATUS", strings.TrimSpace(line), err)
	os.Exit(0)
}

// dialFromCgroup runs the helper as root inside cgroup dir cg ("" = the
// test's own cgroup) and returns its status line.
func dialFromCgroup(t *testing.T, sock, cg string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestConfinedDialHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CLAWD_TEST_DIAL="+sock)
	if cg != "" {
		f, err := os.Open(cg)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(l, "STATUS "); ok {
			return s
		}
	}
	t.Fatalf("helper printed no status: %s", out)
	return ""
}

// A root process inside an attached container's cgroup (or a cgroup below
// it) that reaches the control socket, e.g. because it was bind-mounted into
// the container, is refused; root outside is served.
func TestControlSocketRefusesAttachedCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create cgroups")
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(root, "clawd-ctl-test-")
	if err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(cg, "inner")
	if err := os.Mkdir(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The helpers have exited; the kernel may take a moment to empty the cgroups.
		for i := 0; i < 100; i++ {
			os.Remove(nested)
			if os.Remove(cg) == nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("could not remove test cgroup %s", cg)
	})
	sibling := cg + "-sibling" // shares the prefix but is not below cg
	if err := os.Mkdir(sibling, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100 && os.Remove(sibling) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})

	d := &Daemon{atts: map[string]*attachment{"a1": {Record: Record{ID: "a1", Cgroup: cg}}}}
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	called := make(chan struct{}, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called <- struct{}{}
		w.Write([]byte("{}"))
	})}
	go srv.Serve(&rootOnly{Listener: ln, confined: d.confinedPID})
	defer srv.Close()

	// Control: root outside any attached cgroup is served.
	if got := dialFromCgroup(t, sock, ""); !strings.Contains(got, "200") {
		t.Fatalf("root outside attached cgroups got %q, want 200", got)
	}
	if got := dialFromCgroup(t, sock, sibling); !strings.Contains(got, "200") {
		t.Fatalf("root in a sibling cgroup with the same name prefix got %q, want 200", got)
	}
	<-called
	<-called
	for _, c := range []string{cg, nested} {
		if got := dialFromCgroup(t, sock, c); !strings.Contains(got, "403") {
			t.Errorf("root in attached cgroup %s got %q, want 403", c, got)
		}
	}
	select {
	case <-called:
		t.Error("the handler served a process in an attached cgroup")
	default:
	}

	// After detach the same cgroup is an ordinary one again.
	d.mu.Lock()
	delete(d.atts, "a1")
	d.mu.Unlock()
	if got := dialFromCgroup(t, sock, cg); !strings.Contains(got, "200") {
		t.Errorf("after detach got %q, want 200", got)
	}
}

func TestUnderCgroup(t *testing.T) {
	for _, tc := range []struct {
		cg, base string
		want     bool
	}{
		{"/sys/fs/cgroup/a", "/sys/fs/cgroup/a", true},
		{"/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a", true},
		{"/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a/", true},
		{"/sys/fs/cgroup/ab", "/sys/fs/cgroup/a", false},
		{"/sys/fs/cgroup", "/sys/fs/cgroup/a", false},
	} {
		if got := underCgroup(tc.cg, tc.base); got != tc.want {
			t.Errorf("underCgroup(%q, %q) = %v", tc.cg, tc.base, got)
		}
	}
}

// A peer that is gone by the time the daemon accepts (its pid may already
// belong to another process) is refused; a live one is accepted.
func TestControlSocketRefusesExitedPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root")
	}
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &Daemon{atts: map[string]*attachment{}}
	l := &rootOnly{Listener: ln, confined: d.confinedPID}

	cmd := exec.Command(os.Args[0], "-test.run=^TestConfinedDialHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CLAWD_TEST_DIAL_AND_EXIT="+sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v %s", err, out)
	}
	// The helper has exited and been reaped; its connection waits in the backlog.
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(time.Second))
	if c, err := l.Accept(); err == nil {
		c.Close()
		t.Fatal("accepted a connection whose peer process had exited")
	}

	// Control: a live root peer (this process) is accepted.
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(5 * time.Second))
	go func() {
		if c, err := net.Dial("unix", sock); err == nil {
			time.Sleep(2 * time.Second)
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("live root peer refused: %v", err)
	}
	c.Close()
}
