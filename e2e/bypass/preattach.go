package main

import (
	"net"
	"net/netip"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// preAttach prepares before clawd attaches: an OS thread, an unconnected TCP
// socket and an established connection to the upstream. When waitFile
// appears (the test attached), it connects from the old thread, connects the
// old socket and reuses the old connection, reporting each.
func preAttach(up netip.Addr, waitFile string) {
	dst := netip.AddrPortFrom(up, uint16(*httpP))
	type job struct {
		name string
		fn   func(string)
	}
	jobs := make(chan job)
	done := make(chan struct{})
	go func() { // a thread created before attach
		runtime.LockOSThread()
		for j := range jobs {
			j.fn(j.name)
			done <- struct{}{}
		}
	}()
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report("pre-socket", "blocked", err.Error())
	}
	old, oldErr := net.DialTimeout("tcp4", dst.String(), timeout)
	os.Stderr.WriteString("ready\n")

	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(waitFile); err == nil {
			break
		}
	}
	jobs <- job{"pre-thread", func(n string) { httpVia(n, "tcp4", dst, nil) }}
	<-done
	close(jobs)
	if sock >= 0 {
		f := os.NewFile(uintptr(sock), "pre")
		if err := unix.Connect(sock, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: up.As4()}); err != nil {
			report("pre-socket", "blocked", err.Error())
		} else if c, err := net.FileConn(f); err != nil {
			report("pre-socket", "blocked", err.Error())
		} else {
			httpOver("pre-socket", c, dst)
			c.Close()
		}
		f.Close()
	}
	if oldErr != nil {
		report("pre-connection", "blocked", "dial before attach: "+oldErr.Error())
		return
	}
	httpOver("pre-connection", old, dst)
}
