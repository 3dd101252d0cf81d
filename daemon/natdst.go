package daemon

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// natOriginalDst asks conntrack (SO_ORIGINAL_DST) where a connection that
// reached a listener through an iptables REDIRECT/DNAT was going. A
// destination on loopback, or the listener itself, is refused: dialled from
// the host it would reach the host's own services.
func natOriginalDst(c net.Conn) (netip.AddrPort, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, false
	}
	local, _ := netip.ParseAddrPort(tc.LocalAddr().String())
	var dst netip.AddrPort
	rc.Control(func(fd uintptr) {
		// sockaddr_in / sockaddr_in6 as returned by the kernel.
		if local.Addr().Unmap().Is4() {
			mr, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
			if err == nil {
				b := mr.Multiaddr
				dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4]))
			}
			return
		}
		mr, err := unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, unix.SO_ORIGINAL_DST)
		if err == nil {
			dst = netip.AddrPortFrom(netip.AddrFrom16(mr.Addr.Addr), binary.BigEndian.Uint16((*[2]byte)(unsafePort(&mr.Addr.Port))[:]))
		}
	})
	if !dst.IsValid() || dst.Addr().Unmap().IsLoopback() || dst.Addr().IsUnspecified() || dst == local {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), true
}
