package daemon

import (
	"bytes"
	"os"
	"path/filepath"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// freezeCgroupOf freezes the cgroup (v2) of pid, unless it is frozen
// already, and returns the function that thaws it again.
//
// Auto-attach runs on the runtime's task-create event, which races the
// client's start request: containerd publishes the event and answers the
// create, and the client calls start at once. Frozen, the container's init
// cannot leave runc's exec fifo wait (runc start blocks on it) until the
// attachment is in place, so its first process never runs unattached when
// the event arrives before the start — which it does unless the event
// stream lags. Freezing a running cgroup for the attach is harmless.
func freezeCgroupOf(pid int) (thaw func()) {
	noop := func() {}
	cg, err := enforce.CgroupOfPID(pid)
	if err != nil {
		return noop
	}
	f := filepath.Join(cg, "cgroup.freeze")
	if b, err := os.ReadFile(f); err != nil || bytes.HasPrefix(b, []byte("1")) {
		return noop // no freezer, or paused by its owner: leave it alone
	}
	if err := os.WriteFile(f, []byte("1"), 0); err != nil {
		return noop
	}
	return func() { os.WriteFile(f, []byte("0"), 0) }
}
