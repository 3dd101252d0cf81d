// fpaudit attacks the fast path's per-connection audit (issue 18).
//
// fpaudit burst IP PORT N TFO DATA: N non-blocking connects to IP:PORT, then
// TFO sockets that send DATA-i in their SYN (MSG_FASTOPEN with
// TCP_FASTOPEN_NO_COOKIE), printing "tfo I sport=P rc=R" for each; prints
// "issued" and keeps every socket open until /tmp/done exists.
//
// fpaudit hold IP PORT N: N whole fast connections (connect, "hello\n", read
// the answer), printing "held N" once all are answered; when /tmp/close
// exists, closes them all with a reset (SO_LINGER 0), prints "closed" and
// waits for /tmp/done.
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const tcpFastopenNoCookie = 34

func sa(ip net.IP, port int) *unix.SockaddrInet4 {
	s := &unix.SockaddrInet4{Port: port}
	copy(s.Addr[:], ip.To4())
	return s
}

func waitFile(p string) {
	for {
		if _, err := os.Stat(p); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func raiseNofile() {
	var r unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &r)
	r.Cur = r.Max
	unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	fmt.Println("nofile", r.Cur)
}

func main() {
	ip := net.ParseIP(os.Args[2])
	port, _ := strconv.Atoi(os.Args[3])
	n, _ := strconv.Atoi(os.Args[4])
	raiseNofile()
	switch os.Args[1] {
	case "burst":
		tfo, _ := strconv.Atoi(os.Args[5])
		data := os.Args[6]
		var fds []int
		for i := 0; i < n; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				fmt.Println("socket", i, err)
				break
			}
			if err := unix.Connect(fd, sa(ip, port)); err != nil && err != unix.EINPROGRESS {
				fmt.Println("connect", i, err)
			}
			fds = append(fds, fd)
		}
		fmt.Println("plain", len(fds))
		for i := 0; i < tfo; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				fmt.Println("socket tfo", i, err)
				break
			}
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, tcpFastopenNoCookie, 1)
			if base := os.Getenv("TFO_SPORT"); base != "" {
				b, _ := strconv.Atoi(base)
				unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
				if err := unix.Bind(fd, &unix.SockaddrInet4{Port: b + i}); err != nil {
					fmt.Println("bind", err)
				}
			}
			err = unix.Sendto(fd, []byte(fmt.Sprintf("%s-%d\n", data, i)), unix.MSG_FASTOPEN, sa(ip, port))
			sport := 0
			if s, e := unix.Getsockname(fd); e == nil {
				sport = s.(*unix.SockaddrInet4).Port
			}
			fmt.Printf("tfo %d sport=%d rc=%v\n", i, sport, err)
			fds = append(fds, fd)
		}
		fmt.Println("issued")
		waitFile("/tmp/done")
	case "dial6":
		// fpaudit dial6 ADDR PORT 0: an AF_INET6 socket to ADDR (IPv6 or
		// v4-mapped), "hello\n", the answer, close.
		a := net.ParseIP(os.Args[2]).To16()
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
		if err != nil {
			fmt.Println("socket", err)
			return
		}
		s6 := &unix.SockaddrInet6{Port: port}
		copy(s6.Addr[:], a)
		if err := unix.Connect(fd, s6); err != nil {
			fmt.Println("connect", err)
			return
		}
		if l, err := unix.Getsockname(fd); err == nil {
			l6 := l.(*unix.SockaddrInet6)
			fmt.Printf("local [%s]:%d\n", net.IP(l6.Addr[:]), l6.Port)
		}
		unix.Write(fd, []byte("hello\n"))
		buf := make([]byte, 5)
		k, _ := unix.Read(fd, buf)
		fmt.Printf("read=%q\n", buf[:k])
		unix.Close(fd)
	case "hold6":
		// fpaudit hold6 ADDR PORT 0: dial6, then once /tmp/go exists
		// write again and report whether the connection still works.
		a := net.ParseIP(os.Args[2]).To16()
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
		if err != nil {
			fmt.Println("socket", err)
			return
		}
		s6 := &unix.SockaddrInet6{Port: port}
		copy(s6.Addr[:], a)
		if err := unix.Connect(fd, s6); err != nil {
			fmt.Println("connect", err)
			return
		}
		unix.Write(fd, []byte("hello\n"))
		buf := make([]byte, 5)
		k, _ := unix.Read(fd, buf)
		fmt.Printf("read=%q\n", buf[:k])
		waitFile("/tmp/go")
		tv := unix.Timeval{Sec: 3}
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		_, werr := unix.Write(fd, []byte("more data after the reload\n"))
		k, rerr := unix.Read(fd, buf)
		fmt.Printf("after: write=%v read=%d %v\n", werr, k, rerr)
		unix.Close(fd)
		fmt.Println("done")
	case "simopen":
		// fpaudit simopen IP PORT SPORT: from SPORT, a non-blocking
		// connect to IP:PORT; once connected (by whatever handshake),
		// "hello\n", the answer, then wait for /tmp/go and close.
		fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: n}); err != nil {
			fmt.Println("bind", err)
			return
		}
		err := unix.Connect(fd, sa(ip, port))
		fmt.Println("connect", err)
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		unix.Poll(pfd, 60000)
		soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		fmt.Println("connected soerr", soerr)
		unix.SetNonblock(fd, false)
		unix.Write(fd, []byte("hello\n"))
		buf := make([]byte, 5)
		k, _ := unix.Read(fd, buf)
		fmt.Printf("read=%q\n", buf[:k])
		waitFile("/tmp/go")
		unix.Close(fd)
		fmt.Println("done")
	case "simremote":
		// fpaudit simremote IP PORT LPORT LIP: the remote of simopen:
		// from LIP:LPORT, connect to IP:PORT (retrying), read a line,
		// answer "world", read until the end.
		lip := net.ParseIP(os.Args[5])
		for {
			fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if err := unix.Bind(fd, sa(lip, n)); err != nil {
				fmt.Println("bind", err)
				return
			}
			if err := unix.Connect(fd, sa(ip, port)); err != nil {
				fmt.Println("connect", err)
				unix.Close(fd)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			buf := make([]byte, 64)
			k, _ := unix.Read(fd, buf)
			fmt.Printf("remote read=%q\n", buf[:k])
			unix.Write(fd, []byte("world"))
			for {
				if k, err := unix.Read(fd, buf); k <= 0 || err != nil {
					break
				}
			}
			fmt.Println("remote end")
			return
		}
	case "hold":
		var fds []int
		for i := 0; i < n; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			if err != nil {
				fmt.Println("socket", i, err)
				break
			}
			if err := unix.Connect(fd, sa(ip, port)); err != nil {
				fmt.Println("connect", i, err)
				unix.Close(fd)
				continue
			}
			unix.Write(fd, []byte("hello\n"))
			buf := make([]byte, 5)
			unix.Read(fd, buf)
			unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			fds = append(fds, fd)
		}
		fmt.Println("held", len(fds))
		waitFile("/tmp/close")
		gap, _ := strconv.Atoi(os.Getenv("CLOSE_GAP_US"))
		for _, fd := range fds {
			unix.Close(fd)
			if gap > 0 {
				time.Sleep(time.Duration(gap) * time.Microsecond)
			}
		}
		fmt.Println("closed")
		waitFile("/tmp/done")
	}
}
