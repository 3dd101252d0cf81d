package daemon

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

func frozen(t *testing.T, cg string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), "frozen 1")
}

func waitFrozen(t *testing.T, cg string, want bool) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if frozen(t, cg) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("cgroup %s: frozen=%v never reached", cg, want)
}

// The auto-attach freeze holds a container's processes and lets them go,
// and never thaws a cgroup its owner paused.
func TestFreezeCgroupOf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (cgroup v2 freezer)")
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(root, "clawd-freeze-test-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(cg)
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}

	thaw := freezeCgroupOf(cmd.Process.Pid)
	waitFrozen(t, cg, true)
	thaw()
	waitFrozen(t, cg, false)

	// Paused by its owner: left alone.
	os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("1"), 0)
	waitFrozen(t, cg, true)
	freezeCgroupOf(cmd.Process.Pid)()
	time.Sleep(50 * time.Millisecond)
	if !frozen(t, cg) {
		t.Fatal("thawed a cgroup that was paused before")
	}
}
