// Command bypass runs inside an attached container and tries every way out
// it knows. For each vector it prints one JSON line:
//
//	{"vector":"udp-sendto","result":"blocked|sent|connected","detail":"..."}
//
// "blocked" means the kernel refused; "sent" means bytes left the process
// (the test then checks that nothing reached the upstream except through
// clawd); "connected" means a TCP connection answered (HTTP status in
// detail): the test checks the upstream saw it from clawd, not the container.
// Every payload carries the marker "bypass-<vector>" so the upstream's logs
// say which vector got through.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	v4      = flag.String("v4", "198.51.100.10", "upstream IPv4")
	v6      = flag.String("v6", "2001:db8::10", "upstream IPv6")
	httpP   = flag.Int("http", 8080, "upstream HTTP port")
	udpP    = flag.Int("udp", 9001, "upstream UDP echo port")
	gwMAC   = flag.String("gw-mac", "", "MAC of the host side of eth0, for packet-socket frames")
	iface   = flag.String("iface", "eth0", "interface for packet sockets")
	only    = flag.String("only", "", "comma-separated vectors to run (default all)")
	hostAdr = flag.String("host-addrs", "", "comma-separated host addresses to try (host-ADDR:PORT vectors)")
	ports   = flag.String("ports", "", "comma-separated ports for the host-* vectors (clawd's API and metrics)")
	ctl     = flag.String("ctl", "", "path of a mounted clawd control socket (ctl-socket vector)")
	dnsAt   = flag.String("dns-other", "198.51.100.10", "a resolver address other than the configured one")
	lport   = flag.Int("listen", 0, "listen-tcp vector: port to listen on")
	lfor    = flag.Duration("listen-for", 5*time.Second, "listen-tcp vector: how long to accept")
	prefix  = flag.String("prefix", "", "prefix for every vector name (child processes)")
	waitF   = flag.String("pre-attach", "", "pre-attach mode: prepare, wait for this file to appear, then use what was prepared")
	sendTo  = flag.String("send", "", "send mode: connect to this address, write the -data parts, print the answer")
	sendTLS = flag.String("send-tls", "", "send mode: speak TLS (http/1.1, unverified) with this server name")
	data    dataList
	timeout = 3 * time.Second
)

type result struct {
	Vector string `json:"vector"`
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

func report(v, r, d string) {
	b, _ := json.Marshal(result{v, r, d})
	fmt.Println(string(b))
}

type dataList []string

func (d *dataList) String() string     { return strings.Join(*d, ",") }
func (d *dataList) Set(v string) error { *d = append(*d, v); return nil }

func main() {
	flag.Var(&data, "data", "send mode: base64 bytes to write (repeat for parts written after each answer)")
	flag.Parse()
	if *waitF != "" {
		preAttach(netip.MustParseAddr(*v4), *waitF)
		return
	}
	if *sendTo != "" {
		sendRaw(*sendTo, data)
		return
	}
	up4 := netip.MustParseAddr(*v4)
	up6 := netip.MustParseAddr(*v6)
	if *loopStop != "" {
		packetLoop(up4, *loopStop)
		return
	}
	if *waitRun != "" {
		fmt.Fprintln(os.Stderr, "waiting")
		waitFor(*waitRun)
	}
	vectors := []vector{
		{"tcp4", func(n string) { httpVia(n, "tcp4", netip.AddrPortFrom(up4, uint16(*httpP)), nil) }},
		{"tcp6", func(n string) { httpVia(n, "tcp6", netip.AddrPortFrom(up6, uint16(*httpP)), nil) }},
		{"tcp-v4mapped", func(n string) { v4mapped(n, up4) }},
		{"tcp-bind-port", func(n string) {
			httpVia(n, "tcp4", netip.AddrPortFrom(up4, uint16(*httpP)), func(fd int) error {
				return unix.Bind(fd, &unix.SockaddrInet4{Port: 40404})
			})
		}},
		{"tcp-fastopen", func(n string) { fastOpen(n, up4) }},
		{"tcp-nonblocking", func(n string) { nonblocking(n, up4) }},
		{"so-mark", func(n string) { sockopt(n, unix.SOL_SOCKET, unix.SO_MARK, 1) }},
		{"so-bindtodevice", func(n string) { bindToDevice(n) }},
		{"ip-transparent", func(n string) { sockopt(n, unix.SOL_IP, unix.IP_TRANSPARENT, 1) }},
		{"udp-sendto", func(n string) { udpSend(n, up4, "sendto") }},
		{"udp-sendmsg", func(n string) { udpSend(n, up4, "sendmsg") }},
		{"udp-sendmmsg", func(n string) { udpSend(n, up4, "sendmmsg") }},
		{"udp-connected", func(n string) { udpSend(n, up4, "connect") }},
		{"udp6-sendto", func(n string) { udpSend(n, up6, "sendto") }},
		{"quic-443", func(n string) { udpTo(n, netip.AddrPortFrom(up4, 443)) }},
		{"raw-udp", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP) }},
		{"raw-icmp", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP) }},
		{"ping-socket", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP) }},
		{"ping6-socket", func(n string) { socketOnly(n, unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6) }},
		{"sctp", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP) }},
		{"mptcp", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_STREAM, 262) }},
		{"udplite", func(n string) { socketOnly(n, unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE) }},
		{"packet-raw", func(n string) { packet(n, up4, false) }},
		{"packet-qdisc-bypass", func(n string) { packet(n, up4, true) }},
		{"tcp-io-uring", func(n string) { ioUringConnect(n, up4) }},
		{"macvlan-packet", func(n string) { newLinkPacket(n, "macvlan", up4) }},
		{"vlan-packet", func(n string) { newLinkPacket(n, "vlan", up4) }},
		{"dns-other-udp", func(n string) { dnsQuery(n, "udp", netip.AddrPortFrom(netip.MustParseAddr(*dnsAt), 53)) }},
		{"dns-other-tcp", func(n string) { dnsQuery(n, "tcp", netip.AddrPortFrom(netip.MustParseAddr(*dnsAt), 53)) }},
		{"dns-other-udp6", func(n string) { dnsQuery(n, "udp", netip.AddrPortFrom(up6, 53)) }},
		{"udp53-not-dns", func(n string) { udpTo(n, netip.AddrPortFrom(netip.MustParseAddr(*dnsAt), 53)) }},
		{"af-vsock", vsock},
		{"af-xdp", xdp},
		{"dev-net-tun", tun},
		{"af-scan", afScan},
		{"cgroup-move", cgroupMove},
		{"child-exec", func(n string) { child(n, false) }},
		{"child-shell", func(n string) { child(n, true) }},
		{"bpf-attach", bpfAttach},
		{"macvlan-host", func(n string) { macvlanHost(n, up4) }},
		{"veth-pair-packet", func(n string) { vethPair(n, up4) }},
		{"tun-packet", func(n string) { tunPacket(n, up4) }},
	}
	if *ctl != "" {
		vectors = append(vectors, vector{"ctl-socket", func(n string) { ctlSocket(n, *ctl) }})
	}
	if *lport != 0 {
		// Only on request: it blocks for -listen-for.
		vectors = append(vectors, vector{"listen-tcp", func(n string) { listenFor(n, *lport, *lfor) }})
	}
	vectors = append(vectors, hostVectors(*hostAdr, *ports)...)
	want := map[string]bool{}
	for _, v := range strings.Split(*only, ",") {
		if v != "" {
			want[v] = true
		}
	}
	for _, v := range vectors {
		if len(want) > 0 && !want[v.name] {
			continue
		}
		v.fn(*prefix + v.name)
	}
}

// httpVia connects (with an optional pre-connect hook on the socket) and
// sends a GET for /bypass-<vector>.
func httpVia(name, network string, dst netip.AddrPort, pre func(fd int) error) {
	d := net.Dialer{Timeout: timeout}
	if pre != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var perr error
			if err := rc.Control(func(fd uintptr) { perr = pre(int(fd)) }); err != nil {
				return err
			}
			return perr
		}
	}
	c, err := d.Dial(network, dst.String())
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	httpOver(name, c, dst)
}

func httpOver(name string, c net.Conn, dst netip.AddrPort) {
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET /bypass-%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name, dst)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		report(name, "connected", "no answer: "+err.Error())
		return
	}
	report(name, "connected", strings.TrimSpace(line))
}

func fastOpen(name string, up netip.Addr) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	req := fmt.Sprintf("GET /bypass-%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name, up)
	sa := &unix.SockaddrInet4{Port: *httpP, Addr: up.As4()}
	if err := unix.Sendto(fd, []byte(req), unix.MSG_FASTOPEN, sa); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 128)
	n, err := unix.Read(fd, buf)
	if err != nil || n <= 0 {
		report(name, "connected", fmt.Sprintf("no answer: %v", err))
		return
	}
	report(name, "connected", strings.SplitN(string(buf[:n]), "\r\n", 2)[0])
}

// v4mapped connects an AF_INET6 socket to ::ffff:a.b.c.d (Go's dialer
// refuses such addresses, so it is done by hand).
func v4mapped(name string, up netip.Addr) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	f := os.NewFile(uintptr(fd), "mapped")
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrInet6{Port: *httpP, Addr: netip.AddrFrom16(up.As16()).As16()}); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	c, err := net.FileConn(f)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	httpOver(name, c, netip.AddrPortFrom(up, uint16(*httpP)))
}

func nonblocking(name string, up netip.Addr) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	f := os.NewFile(uintptr(fd), "nb")
	defer f.Close()
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: *httpP, Addr: up.As4()})
	if err != nil && err != unix.EINPROGRESS {
		report(name, "blocked", err.Error())
		return
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	unix.Poll(pfd, int(timeout.Milliseconds()))
	if soerr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); soerr != 0 {
		report(name, "blocked", unix.Errno(soerr).Error())
		return
	}
	unix.SetNonblock(fd, false)
	c, err := net.FileConn(f)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	httpOver(name, c, netip.AddrPortFrom(up, uint16(*httpP)))
}

func sockopt(name string, level, opt, val int) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, level, opt, val); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	report(name, "sent", "option accepted")
}

func bindToDevice(name string) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, *iface); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	report(name, "sent", "option accepted")
}

func udpSend(name string, up netip.Addr, how string) {
	dst := netip.AddrPortFrom(up, uint16(*udpP))
	fam := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(dst.Port()), Addr: up.As16()}
	if up.Is4() {
		fam = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(dst.Port()), Addr: up.As4()}
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer unix.Close(fd)
	msg := []byte("bypass-" + name)
	switch how {
	case "sendto":
		err = unix.Sendto(fd, msg, 0, sa)
	case "sendmsg":
		err = unix.Sendmsg(fd, msg, nil, sa, 0)
	case "sendmmsg":
		err = sendmmsg(fd, msg, up)
	case "connect":
		if err = unix.Connect(fd, sa); err == nil {
			_, err = unix.Write(fd, msg)
		}
	}
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	report(name, "sent", "datagram sent")
}

// sendmmsg sends one message with the raw syscall (x/sys has no wrapper).
func sendmmsg(fd int, msg []byte, up netip.Addr) error {
	var rsa unix.RawSockaddrInet4
	rsa.Family = unix.AF_INET
	binary.BigEndian.PutUint16((*[2]byte)(unsafePointer(&rsa.Port))[:], uint16(*udpP))
	rsa.Addr = up.As4()
	iov := unix.Iovec{Base: &msg[0]}
	iov.SetLen(len(msg))
	type mmsghdr struct {
		hdr unix.Msghdr
		len uint32
		_   [4]byte
	}
	var m mmsghdr
	m.hdr.Name = (*byte)(unsafePointer(&rsa))
	m.hdr.Namelen = unix.SizeofSockaddrInet4
	m.hdr.Iov = &iov
	m.hdr.SetIovlen(1)
	_, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafePointer(&m)), 1, 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func udpTo(name string, dst netip.AddrPort) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer c.Close()
	// A QUIC-looking long-header Initial packet.
	pkt := append([]byte{0xc3, 0, 0, 0, 1}, []byte("bypass-"+name)...)
	if _, err := c.Write(pkt); err != nil {
		report(name, "blocked", err.Error())
		return
	}
	report(name, "sent", "datagram sent")
}

func socketOnly(name string, fam, typ, proto int) {
	fd, err := unix.Socket(fam, typ, proto)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	unix.Close(fd)
	report(name, "sent", "socket created")
}

// packet sends an Ethernet frame holding an IPv4/UDP datagram for the
// upstream's UDP echo straight onto the interface.
func packet(name string, up netip.Addr, bypassQdisc bool) {
	send, closeFn, err := rawSender(*iface, *gwMAC, up, bypassQdisc)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer closeFn()
	for i := 0; i < 3; i++ {
		if err := send("bypass-" + name); err != nil {
			report(name, "blocked", err.Error())
			return
		}
	}
	report(name, "sent", "3 frames sent")
}

// rawSender opens a packet socket on ifname (with PACKET_QDISC_BYPASS if
// bypass: then tcx egress never sees its frames) and returns a function
// that sends a UDP frame with a payload to up's UDP echo, to dstMAC
// (broadcast when unparsable), from the interface's IPv4 address.
func rawSender(ifname, dstMAC string, up netip.Addr, bypass bool) (send func(payload string) error, closeFn func(), err error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, nil, err
	}
	if bypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			unix.Close(fd)
			return nil, nil, fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
	}
	dst, err := net.ParseMAC(dstMAC)
	if err != nil {
		dst = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	}
	src := netip.MustParseAddr("203.0.113.2")
	if addrs, err := ifc.Addrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				src = p.Addr()
			}
		}
	}
	sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(unix.ETH_P_IP), Halen: 6}
	copy(sa.Addr[:], dst)
	send = func(payload string) error {
		return unix.Sendto(fd, ethUDP(ifc.HardwareAddr, dst, src, up, 40000, uint16(*udpP), []byte(payload)), 0, sa)
	}
	return send, func() { unix.Close(fd) }, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func ethUDP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udpLen := 8 + len(payload)
	ipLen := 20 + udpLen
	b := make([]byte, 14+ipLen)
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_IP)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(ipLen))
	ip[8] = 64
	ip[9] = unix.IPPROTO_UDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip[:20]))
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:2], sport)
	binary.BigEndian.PutUint16(u[2:4], dport)
	binary.BigEndian.PutUint16(u[4:6], uint16(udpLen))
	copy(u[8:], payload) // UDP checksum 0: none, valid for IPv4
	return b
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}
