package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Host-wide locks are flock(2)s on files in /run/clawd-e2e: the kernel drops
// them when the holding process dies, so a crashed run never leaks a slot.

// tryLock takes an exclusive lock on name without blocking.
func tryLock(name string) (*os.File, bool, error) {
	if err := os.MkdirAll(filepath.Join(stateDir, "locks"), 0o700); err != nil {
		return nil, false, err
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "locks", name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// lockWait takes an exclusive lock on name, waiting up to timeout. logf is
// told once when it has to wait.
func lockWait(name string, timeout time.Duration, logf func(string, ...any)) (*os.File, error) {
	deadline := time.Now().Add(timeout)
	told := false
	for {
		f, ok, err := tryLock(name)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if ok {
			return f, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lock %s: still held by another test process after %v", name, timeout)
		}
		if !told && logf != nil {
			logf("waiting for host-wide lock %s (another test package holds it)", name)
			told = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

const numSlots = 64 // /30 subnets in 203.0.113.0/24

// allocSlot reserves a container subnet index host-wide.
func allocSlot() (int, *os.File, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		for i := 0; i < numSlots; i++ {
			f, ok, err := tryLock(fmt.Sprintf("slot-%d", i))
			if err != nil {
				return 0, nil, fmt.Errorf("allocate container subnet: %w", err)
			}
			if ok {
				return i, f, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, nil, fmt.Errorf("allocate container subnet: all %d slots in use", numSlots)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
