// Package nsenter runs a function inside another network namespace.
//
// Sockets keep the namespace they were created in, so the daemon can open a
// listener inside a container's netns and serve it from any goroutine after
// Do returns.
package nsenter

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a locked OS thread that has joined the network namespace at
// path (for example /proc/PID/ns/net). If the thread cannot be moved back to
// its original namespace it is left locked, so the Go runtime discards it
// rather than reuse a thread in the wrong namespace.
func Do(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// Deliberately stay locked: this thread must die with the goroutine.
		return fmt.Errorf("return from netns %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}
