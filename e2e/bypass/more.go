package main

// More vectors: clawd's own listeners on the host, link-local and metadata
// addresses, io_uring, DNS to other resolvers, every address family,
// listening sockets, /dev/net/tun, a mounted control socket, child
// processes and cgroup moves.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hostVectors are TCP connects to addresses that mean "the host" or "the
// cloud" from inside a container, on clawd's API/metrics ports and port 80.
func hostVectors(hostAddrs, ports string) []vector {
	var out []vector
	for _, a := range splitList(hostAddrs) {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			continue
		}
		for _, p := range splitList(ports) {
			ps, path, _ := strings.Cut(p, "/")
			port, err := strconv.Atoi(ps)
			if err != nil {
				continue
			}
			path = "/" + path
			zone := addr.Zone()
			dst := netip.AddrPortFrom(addr.WithZone(""), uint16(port))
			name := "host-" + netip.AddrPortFrom(addr, uint16(port)).String()
			out = append(out, vector{name, func(n string) { rawConnectHTTP(n, dst, zone, path) }})
		}
	}
	return out
}

type vector struct {
	name string
	fn   func(name string)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// rawConnectHTTP connects with raw syscalls (Go's dialer refuses some of
// these addresses, e.g. v4-mapped or zoned ones) and GETs path. zone names
// the interface for a link-local IPv6 destination.
func rawConnectHTTP(name string, dst netip.AddrPort, zone, path string) {
	var fd int
	var err error
	var sa unix.Sockaddr
	if dst.Addr().Is4() {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
	} else {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
		s6 := &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}
		if zone != "" {
			if ifc, e := net.InterfaceByName(zone); e == nil {
				s6.ZoneId = uint32(ifc.Index)
			}
		}
		sa = s6
	}
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := unix.Connect(fd, sa); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	fullHTTP(name, f, dst.String(), path)
}

// fullHTTP sends a GET for path carrying the vector's marker and reads
// the whole answer: the detail is the status line, plus "CLAWD-METRICS" if
// the body was Prometheus text (clawd's own metrics listener answered) and
// "CLAWD-API" if it looks like clawd's API.
func fullHTTP(name string, rw io.ReadWriter, host, path string) {
	fmt.Fprintf(rw, "GET %s?m=bypass-%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, name, host)
	b, err := io.ReadAll(io.LimitReader(rw, 1<<20))
	if len(b) == 0 {
		report(name, "connected", fmt.Sprintf("no answer: %v", err))
		return
	}
	s := string(b)
	d := strings.SplitN(s, "\r\n", 2)[0]
	if strings.Contains(s, "# HELP") || strings.Contains(s, "go_goroutines") {
		d += " CLAWD-METRICS"
	}
	if strings.Contains(s, "clawd_") || strings.Contains(strings.ToLower(s), "unauthorized") {
		d += " CLAWD-API"
	}
	report(name, "connected", d)
}

// ioUringConnect connects a TCP socket with IORING_OP_CONNECT, set up with
// raw syscalls, then speaks HTTP over it.
func ioUringConnect(name string, up netip.Addr) {
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil && strings.TrimSpace(string(b)) == "2" {
		report(name, "blocked", "unavailable: kernel.io_uring_disabled=2")
		return
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	f := os.NewFile(uintptr(fd), "uring")
	defer f.Close()
	var rsa unix.RawSockaddrInet4
	rsa.Family = unix.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&rsa.Port))[:], uint16(*httpP))
	rsa.Addr = up.As4()
	res, err := uringOne(16 /* IORING_OP_CONNECT */, fd, uintptr(unsafe.Pointer(&rsa)), unix.SizeofSockaddrInet4)
	runtime.KeepAlive(&rsa)
	if err != nil {
		if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) && !errors.Is(err, errCQE) {
			report(name, "blocked", "unavailable: "+err.Error())
			return
		}
		report(name, "blocked", err.Error())
		return
	}
	if res < 0 {
		report(name, "blocked", "connect: "+unix.Errno(-res).Error())
		return
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	fmt.Fprintf(f, "GET /bypass-%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name, up)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		report(name, "connected", "no answer: "+err.Error())
		return
	}
	report(name, "connected", strings.TrimSpace(line))
}

var errCQE = errors.New("cqe")

// uringOne submits one SQE and waits for its completion; it returns the
// CQE's result.
func uringOne(op uint8, fd int, addr uintptr, off uint64) (int32, error) {
	type sqOff struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	type cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
	type params struct {
		sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
		resv                                                                   [3]uint32
		sq                                                                     sqOff
		cq                                                                     cqOff
	}
	var p params
	rfd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return 0, fmt.Errorf("io_uring_setup: %w", e)
	}
	defer unix.Close(int(rfd))
	sqSize := int(p.sq.array + p.sqEntries*4)
	cqSize := int(p.cq.cqes + p.cqEntries*16)
	sq, err := unix.Mmap(int(rfd), 0, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap sq: %w", err)
	}
	defer unix.Munmap(sq)
	cq, err := unix.Mmap(int(rfd), 0x8000000, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap cq: %w", err)
	}
	defer unix.Munmap(cq)
	sqes, err := unix.Mmap(int(rfd), 0x10000000, int(p.sqEntries*64), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, fmt.Errorf("mmap sqes: %w", err)
	}
	defer unix.Munmap(sqes)

	u32 := func(b []byte, o uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[o])) }
	tail := *u32(sq, p.sq.tail)
	idx := tail & *u32(sq, p.sq.ringMask)
	sqe := sqes[idx*64 : idx*64+64]
	for i := range sqe {
		sqe[i] = 0
	}
	sqe[0] = op
	binary.LittleEndian.PutUint32(sqe[4:], uint32(fd))
	binary.LittleEndian.PutUint64(sqe[8:], off)
	binary.LittleEndian.PutUint64(sqe[16:], uint64(addr))
	binary.LittleEndian.PutUint64(sqe[32:], 0x42) // user_data
	*u32(sq, p.sq.array+idx*4) = idx
	*u32(sq, p.sq.tail) = tail + 1 // x86 is TSO; the syscall below is a barrier
	n, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, rfd, 1, 1, 1 /* GETEVENTS */, 0, 0)
	if e != 0 {
		return 0, fmt.Errorf("io_uring_enter: %w", e)
	}
	if n != 1 {
		return 0, fmt.Errorf("io_uring_enter submitted %d", n)
	}
	head := *u32(cq, p.cq.head)
	if head == *u32(cq, p.cq.tail) {
		return 0, fmt.Errorf("%w: no completion", errCQE)
	}
	ci := head & *u32(cq, p.cq.ringMask)
	cqe := cq[p.cq.cqes+ci*16 : p.cq.cqes+ci*16+16]
	res := int32(binary.LittleEndian.Uint32(cqe[8:]))
	*u32(cq, p.cq.head) = head + 1
	return res, nil
}

// dnsQuery asks resolver (ip:53) for upstream.test over UDP or TCP and
// reports the answer's first A record.
func dnsQuery(name, network string, resolver netip.AddrPort) {
	q := dnsQueryMsg("upstream.test")
	c, err := net.DialTimeout(network, resolver.String(), timeout)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if network == "tcp" {
		l := []byte{byte(len(q) >> 8), byte(len(q))}
		q = append(l, q...)
	}
	if _, err := c.Write(q); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	buf := make([]byte, 4096)
	n, err := io.ReadAtLeast(c, buf, 12)
	if err != nil {
		report(name, "sent", "no answer: "+err.Error())
		return
	}
	b := buf[:n]
	if network == "tcp" && len(b) > 2 {
		b = b[2:]
	}
	// The answer's A record is the last 4 bytes of a one-answer reply.
	if len(b) >= 16 && binary.BigEndian.Uint16(b[6:8]) > 0 {
		a := netip.AddrFrom4([4]byte(b[len(b)-4:]))
		report(name, "answered", a.String())
		return
	}
	report(name, "answered", fmt.Sprintf("rcode %d, no answer records", b[3]&0xf))
}

func dnsQueryMsg(qname string) []byte {
	m := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(qname, ".") {
		m = append(m, byte(len(l)))
		m = append(m, l...)
	}
	return append(m, 0, 0, 1, 0, 1) // root, type A, class IN
}

// afScan tries socket() for every address family and type and reports the
// ones the kernel let the program create.
func afScan(name string) {
	var made []string
	types := map[int]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_RAW: "raw", unix.SOCK_SEQPACKET: "seqpacket"}
	for fam := 0; fam <= 46; fam++ { // AF_MAX is 46 on Linux 6.x
		for typ, tn := range types {
			fd, err := unix.Socket(fam, typ|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				unix.Close(fd)
				made = append(made, fmt.Sprintf("%d/%s", fam, tn))
			}
		}
	}
	sort.Strings(made)
	report(name, "info", strings.Join(made, " "))
}

// vsock tries to reach the host (CID 2) over AF_VSOCK.
func vsock(name string) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: 8787}); err != nil {
		report(name, "blocked", "socket created; connect: "+err.Error())
		return
	}
	report(name, "connected", "vsock connected to the host")
}

// xdp creates an AF_XDP socket and tries to bind it to the interface
// without a UMEM (which must fail); frames an XDP socket could send would
// still cross the tcx drop.
func xdp(name string) {
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	ifc, err := net.InterfaceByName(*iface)
	if err != nil {
		report(name, "blocked", "socket created; "+err.Error())
		return
	}
	if err := unix.Bind(fd, &unix.SockaddrXDP{Ifindex: uint32(ifc.Index)}); err != nil {
		report(name, "blocked", "socket created; bind: "+err.Error())
		return
	}
	report(name, "sent", "AF_XDP socket bound")
}

func tun(name string) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	f.Close()
	report(name, "sent", "/dev/net/tun opened")
}

// listenFor listens on the container's interface on port and reports how
// many connections it accepted within d.
func listenFor(name string, port int, d time.Duration) {
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	fmt.Fprintln(os.Stderr, "listening")
	n := 0
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ln.(*net.TCPListener).SetDeadline(deadline)
		c, err := ln.Accept()
		if err != nil {
			break
		}
		n++
		c.Write([]byte("bypass-" + name + "\n"))
		c.Close()
	}
	ln.Close()
	if n > 0 {
		report(name, "connected", fmt.Sprintf("accepted %d", n))
		return
	}
	report(name, "blocked", "accepted 0")
}

// ctlSocket talks to a clawd control socket mounted into the container.
func ctlSocket(name, path string) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: clawd\r\nConnection: close\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		report(name, "blocked", "no answer: "+err.Error())
		return
	}
	if strings.Contains(line, " 200 ") {
		report(name, "connected", strings.TrimSpace(line))
		return
	}
	report(name, "blocked", strings.TrimSpace(line))
}

// cgroupMove tries to leave the container's cgroup: write its pid into the
// cgroup root it sees, create a sibling cgroup, mount a fresh cgroup2.
func cgroupMove(name string) {
	pid := []byte(strconv.Itoa(os.Getpid()))
	var errs []string
	try := func(what string, err error) bool {
		if err == nil {
			report(name, "escaped", what+" succeeded")
			return true
		}
		errs = append(errs, what+": "+err.Error())
		return false
	}
	if try("mkdir /sys/fs/cgroup/bypass", os.Mkdir("/sys/fs/cgroup/bypass", 0o755)) {
		os.Remove("/sys/fs/cgroup/bypass")
		return
	}
	os.MkdirAll("/tmp/cg", 0o755)
	if try("mount cgroup2", unix.Mount("none", "/tmp/cg", "cgroup2", 0, "")) {
		unix.Unmount("/tmp/cg", 0)
		return
	}
	if try("mount cgroup (v1 net_cls)", unix.Mount("none", "/tmp/cg", "cgroup", 0, "net_cls")) {
		unix.Unmount("/tmp/cg", 0)
		return
	}
	// Writing to the cgroup root the container sees (its own cgroup under
	// cgroupns) moves nothing out of it, but must not error oddly either.
	werr := os.WriteFile("/sys/fs/cgroup/cgroup.procs", pid, 0)
	cg, _ := os.ReadFile("/proc/self/cgroup")
	errs = append(errs, fmt.Sprintf("write cgroup.procs: %v (now %s)", werr, strings.TrimSpace(string(cg))))
	report(name, "blocked", strings.Join(errs, "; "))
}

// child runs this program again as a child process (fork+exec, and through
// the shell) with -only tcp4 and a prefix, and relays its results.
func child(name string, viaShell bool) {
	args := []string{"-only", "tcp4", "-prefix", name + "-", "-v4", *v4, "-http", strconv.Itoa(*httpP)}
	var cmd *exec.Cmd
	if viaShell {
		cmd = exec.Command("/bin/sh", "-c", "exec /proc/$PPID/exe "+strings.Join(args, " "))
	} else {
		cmd = exec.Command("/proc/self/exe", args...)
	}
	out, err := cmd.Output()
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	os.Stdout.Write(out)
}
