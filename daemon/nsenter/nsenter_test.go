package nsenter

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestDoRunsInsideAndComesBack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create a network namespace")
	}
	b := make([]byte, 4)
	rand.Read(b)
	name := "clawd-ns-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	path := "/var/run/netns/" + name

	host := inode(t, "/proc/self/ns/net")
	var inside uint64
	if err := Do(path, func() error {
		inside = inode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != inode(t, path) || inside == host {
		t.Fatalf("fn ran in netns %d, want %d (host %d)", inside, inode(t, path), host)
	}
	if got := inode(t, "/proc/thread-self/ns/net"); got != host {
		t.Fatalf("thread left in netns %d", got)
	}
	err := Do("/nonexistent/ns", func() error { return nil })
	if err == nil || !strings.Contains(err.Error(), "open netns") {
		t.Fatalf("bad path: %v", err)
	}
}
