// Package harness starts real containerd/dockerd daemons, busybox containers
// and an "upstream" network namespace for clawd's root integration tests.
//
// Everything it creates carries a random short suffix so that test packages
// running in parallel do not collide, and is removed by t.Cleanup even when a
// test fails. Resources left behind by a crashed run are removed by
// CleanupStale.
//
// Network layout (fixed, other tests rely on it):
//
//	upstream netns clawd-up-<r>:  198.51.100.10/24, 2001:db8::10/64, DNS 198.51.100.53
//	host side cup<r>:             198.51.100.1/24,  2001:db8::1/64
//	container i netns clawd-c-<r>: eth0 203.0.113.(4i+2)/30, 2001:db8:c:<i>::2/64
//	host side cc<r>:              203.0.113.(4i+1)/30, 2001:db8:c:<i>::1/64
//
// Only one upstream can exist on a host at a time (its addresses are fixed),
// so StartUpstream takes a host-wide lock: packages that use it run one after
// the other. Container subnets are allocated from 64 host-wide slots.
package harness

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
)

// RequireRoot fails the test when not running as root: these tests are real,
// they never skip.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (it starts containerd, creates network namespaces and veths)")
	}
}

// shortID returns n random hex characters, for unique resource names.
func shortID(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// Package-level shared instances, torn down by Main after all tests ran.
var (
	sharedMu       sync.Mutex
	sharedCleanups []func()
)

func addSharedCleanup(f func()) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	sharedCleanups = append(sharedCleanups, f)
}

func runSharedCleanups() {
	sharedMu.Lock()
	fs := sharedCleanups
	sharedCleanups = nil
	sharedMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// Main is a TestMain helper: it removes stale leftovers of crashed runs, runs
// the tests and then stops the shared instances (SharedContainerd,
// SharedUpstream, SharedDocker). Use it as
//
//	func TestMain(m *testing.M) { harness.Main(m) }
func Main(m *testing.M) {
	if os.Geteuid() == 0 {
		CleanupStale()
	}
	code := m.Run()
	runSharedCleanups()
	os.Exit(code)
}
