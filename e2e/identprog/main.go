// Command identprog is the e2e program-identity test's client (issue 16):
// raw HTTP/1.1 over TCP with the handovers clawd's attribution must get
// right. Every request prints one line "status=N" (or "error=...").
//
//	identprog get ADDR PATH                  connect from a non-main thread, GET PATH
//	identprog exec-after ADDR P1 P2 EXE      GET P1, then exec EXE send-fd 100 P2 on the same connection
//	identprog send-fd FD PATH                GET PATH on inherited fd FD
//	identprog scm ADDR PATH EXE              connect, hand the socket to EXE recv-fd PATH over SCM_RIGHTS
//	identprog recv-fd PATH                   receive a socket on fd 3, GET PATH on it
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"syscall"
)

func main() {
	if len(os.Args) < 3 {
		die("usage: identprog MODE ARGS")
	}
	a := os.Args[2:]
	switch os.Args[1] {
	case "get":
		done := make(chan struct{})
		go func() {
			// The main goroutine holds the main thread (init below):
			// this connect comes from another thread of the process.
			runtime.LockOSThread()
			fmt.Printf("thread=%v\n", syscall.Gettid() != syscall.Getpid())
			c := dial(a[0])
			host = a[0]
			request(c, a[1], true)
			close(done)
		}()
		<-done
	case "exec-after":
		c := dial(a[0]).(*net.TCPConn)
		host = a[0]
		request(c, a[1], false)
		f, err := c.File() // a dup, blocking, without close-on-exec... set below
		if err != nil {
			die(err.Error())
		}
		if err := syscall.Dup2(int(f.Fd()), 100); err != nil {
			die(err.Error())
		}
		syscall.Syscall(syscall.SYS_FCNTL, 100, syscall.F_SETFD, 0)
		os.Stdout.Sync()
		die(syscall.Exec(a[3], []string{a[3], "send-fd", "100", a[2]}, os.Environ()).Error())
	case "send-fd":
		var fd int
		fmt.Sscan(a[0], &fd)
		c, err := net.FileConn(os.NewFile(uintptr(fd), "conn"))
		if err != nil {
			die(err.Error())
		}
		request(c, a[1], true)
	case "scm":
		pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			die(err.Error())
		}
		cmd := exec.Command(a[2], "recv-fd", a[1])
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.ExtraFiles = []*os.File{os.NewFile(uintptr(pair[1]), "pair")}
		if err := cmd.Start(); err != nil {
			die(err.Error())
		}
		c := dial(a[0]).(*net.TCPConn)
		f, _ := c.File()
		if err := syscall.Sendmsg(pair[0], []byte{1}, syscall.UnixRights(int(f.Fd())), nil, 0); err != nil {
			die(err.Error())
		}
		f.Close()
		c.Close()
		// Stay alive (the connector) until the receiver is done.
		cmd.Wait()
	case "recv-fd":
		buf, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4))
		_, oobn, _, _, err := syscall.Recvmsg(3, buf, oob, 0)
		if err != nil {
			die(err.Error())
		}
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		if len(msgs) != 1 {
			die("no fd received")
		}
		fds, err := syscall.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			die("no fd received")
		}
		c, err := net.FileConn(os.NewFile(uintptr(fds[0]), "conn"))
		if err != nil {
			die(err.Error())
		}
		request(c, a[0], true)
	default:
		die("unknown mode " + os.Args[1])
	}
}

func init() { runtime.LockOSThread() }

// host is the Host header: the address dialled (the upstream's v4 one when
// the mode got no address).
var host = "198.51.100.10:8080"

func dial(addr string) net.Conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Printf("error=%v\n", err)
		os.Exit(0)
	}
	return c
}

func request(c net.Conn, path string, close bool) {
	conn := "keep-alive"
	if close {
		conn = "close"
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", path, host, conn)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		fmt.Printf("error=%v\n", err)
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Printf("status=%d\n", resp.StatusCode)
}

func die(msg string) {
	fmt.Printf("error=%s\n", msg)
	os.Exit(1)
}
