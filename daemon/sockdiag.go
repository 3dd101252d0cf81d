package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// sockDiag asks the kernel (NETLINK_SOCK_DIAG, in the network namespace the
// socket was opened in) which socket sent a UDP datagram, and which cgroup
// that socket belongs to. A DNS listener shared by a network namespace
// cannot otherwise tell its senders apart: the datagram carries only an
// address and a port, and in a pod every container's loopback is the same.
type sockDiag struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

// Netlink and inet_diag constants not in x/sys/unix.
const (
	inetDiagCgroupID  = 21 // INET_DIAG_CGROUP_ID (u64), Linux >= 5.7
	inetDiagReqV2Len  = 56 // struct inet_diag_req_v2
	inetDiagMsgLen    = 72 // struct inet_diag_msg
	inetDiagNoCookie  = ^uint32(0)
	sockDiagTimeout   = time.Second
	sockDiagRecvBytes = 8192
)

// openSockDiag opens the netlink socket; call it inside the network
// namespace whose sockets it is to look up.
func openSockDiag() (*sockDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(sockDiagTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind sock_diag socket: %w", err)
	}
	return &sockDiag{fd: fd, buf: make([]byte, sockDiagRecvBytes)}, nil
}

func (s *sockDiag) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// errNoSocket: no socket in the namespace matches the datagram's source
// (it was closed since, or the source was not a local socket at all).
var errNoSocket = errors.New("no socket has that address")

// udpSenderCgroup returns the cgroup ID of the UDP socket that sent a
// datagram from remote to the listener at local. Both must be of one
// family (a v4-mapped pair counts as IPv4).
func (s *sockDiag) udpSenderCgroup(local, remote netip.AddrPort) (uint64, error) {
	la, ra := local.Addr().WithZone(""), remote.Addr().WithZone("")
	if la.Is4In6() && ra.Is4In6() || la.Is4() || ra.Is4() {
		la, ra = la.Unmap(), ra.Unmap()
	}
	if !la.IsValid() || !ra.IsValid() || la.Is4() != ra.Is4() || remote.Port() == 0 {
		return 0, fmt.Errorf("cannot look up a sender %v for listener %v", remote, local)
	}
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqV2Len)
	ne := binary.NativeEndian
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return 0, errors.New("sock_diag socket closed")
	}
	s.seq++
	seq := s.seq
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_INET6
	if la.Is4() {
		r[0] = unix.AF_INET
	}
	r[1] = unix.IPPROTO_UDP
	ne.PutUint32(r[4:], ^uint32(0)) // every state
	// The kernel looks the socket up as the receiver of a datagram from
	// idiag_src:sport to idiag_dst:dport (udp_dump_one: "src and dst are
	// swapped for historical reasons"): the sender is the destination.
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], local.Port())
	binary.BigEndian.PutUint16(id[2:], remote.Port())
	putAddr(id[4:20], la)
	putAddr(id[20:36], ra)
	ne.PutUint32(id[40:], inetDiagNoCookie)
	ne.PutUint32(id[44:], inetDiagNoCookie)
	if err := unix.Sendto(s.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(s.fd, s.buf, 0)
		if err != nil {
			return 0, fmt.Errorf("sock_diag answer: %w", err)
		}
		cg, done, err := parseDiagAnswer(s.buf[:n], seq, remote.Port())
		if done {
			return cg, err
		}
		// An answer to an earlier request that timed out: skip it.
	}
}

// putAddr writes a in the kernel's __be32[4] address layout (IPv4 in the
// first word).
func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

// parseDiagAnswer reads the netlink messages in b. done is false when none
// answers request seq. The socket found must have local port port: the
// sender's, not the listener's.
func parseDiagAnswer(b []byte, seq uint32, port uint16) (cgroup uint64, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(ne.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return 0, true, errors.New("sock_diag: malformed answer")
		}
		typ, mseq := ne.Uint16(b[4:]), ne.Uint32(b[8:])
		msg := b[unix.NLMSG_HDRLEN:l]
		b = b[min(len(b), nlmAlign(l)):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR:
			if len(msg) < 4 {
				return 0, true, errors.New("sock_diag: short error")
			}
			errno := -int32(ne.Uint32(msg))
			if errno == 0 {
				continue // an ack
			}
			if unix.Errno(errno) == unix.ENOENT {
				return 0, true, errNoSocket
			}
			return 0, true, fmt.Errorf("sock_diag: %w", unix.Errno(errno))
		case unix.NLMSG_DONE:
			return 0, true, errNoSocket
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(msg) < inetDiagMsgLen {
				return 0, true, errors.New("sock_diag: short inet_diag_msg")
			}
			if got := binary.BigEndian.Uint16(msg[4:]); got != port {
				return 0, true, fmt.Errorf("sock_diag: found a socket on port %d, not the sender's %d", got, port)
			}
			attrs := msg[inetDiagMsgLen:]
			for len(attrs) >= 4 {
				al, at := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
				if al < 4 || al > len(attrs) {
					break
				}
				if at&0x3fff == inetDiagCgroupID && al >= 12 {
					return ne.Uint64(attrs[4:12]), true, nil
				}
				attrs = attrs[min(len(attrs), nlmAlign(al)):]
			}
			return 0, true, errors.New("sock_diag: the kernel reports no cgroup for sockets (INET_DIAG_CGROUP_ID needs Linux >= 5.7)")
		}
	}
	return 0, false, nil
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
