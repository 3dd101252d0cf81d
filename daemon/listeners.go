package daemon

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/daemon/nsenter"
)

// listeners are one container's TCP and DNS sockets, opened inside its
// network namespace on loopback. The kernel redirects the container's
// connects to them; they are served from the host netns by clawd.
type listeners struct {
	tcp4, tcp6 net.Listener
	udp4, udp6 net.PacketConn
	netns      uint64    // netns cookie, the key half of the original destination map
	diag       *sockDiag // in the same netns: who sent a datagram
}

func (l *listeners) tcpPort() uint16 { return uint16(l.tcp4.Addr().(*net.TCPAddr).Port) }
func (l *listeners) udpPort() uint16 { return uint16(l.udp4.LocalAddr().(*net.UDPAddr).Port) }
func (l *listeners) hasV6() bool     { return l.tcp6 != nil && l.udp6 != nil }

// kernel names the listeners for the kernel's other-container check
// (v4 and v6 share each port).
func (l *listeners) kernel() []enforce.Listener {
	return []enforce.Listener{
		{Netns: l.netns, Port: l.tcpPort(), Stream: true},
		{Netns: l.netns, Port: l.udpPort()},
	}
}

func (l *listeners) Close() error {
	var errs []error
	if l.tcp4 != nil {
		errs = append(errs, l.tcp4.Close())
	}
	if l.tcp6 != nil {
		errs = append(errs, l.tcp6.Close())
	}
	if l.udp4 != nil {
		errs = append(errs, l.udp4.Close())
	}
	if l.udp6 != nil {
		errs = append(errs, l.udp6.Close())
	}
	if l.diag != nil {
		errs = append(errs, l.diag.Close())
	}
	return errors.Join(errs...)
}

// openListeners opens the four sockets in the netns at path. IPv4 is
// required; IPv6 is used when the namespace has ::1 (the BPF programs send
// v6 connects to the v4-mapped loopback otherwise). The same port number is
// used for both families so either answers a redirect.
func openListeners(path string) (*listeners, error) {
	var l *listeners
	err := nsenter.Do(path, func() error {
		var lastErr error
		for attempt := 0; attempt < 20; attempt++ {
			var err error
			l, err = tryListeners()
			if err == nil {
				return nil
			}
			lastErr = err
		}
		return lastErr
	})
	if err != nil {
		return nil, fmt.Errorf("open listeners in %s: %w", path, err)
	}
	return l, nil
}

func tryListeners() (*listeners, error) {
	l := &listeners{}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	var err error
	if l.tcp4, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("listen tcp4 (is lo up in the container?): %w", err)
	}
	port := strconv.Itoa(int(l.tcpPort()))
	if l.udp4, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("listen udp4: %w", err)
	}
	uport := strconv.Itoa(int(l.udpPort()))
	if l.tcp6, err = net.Listen("tcp6", "[::1]:"+port); err != nil {
		if !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, fmt.Errorf("listen tcp6: %w", err) // port clash: retry
		}
		l.tcp6 = nil
	}
	if l.tcp6 != nil {
		if l.udp6, err = net.ListenPacket("udp6", "[::1]:"+uport); err != nil {
			return nil, fmt.Errorf("listen udp6: %w", err)
		}
	}
	if l.netns, err = netnsCookie(l.tcp4); err != nil {
		return nil, err
	}
	if l.diag, err = openSockDiag(); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

func netnsCookie(ln net.Listener) (uint64, error) {
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, fmt.Errorf("SO_NETNS_COOKIE (kernel >= 5.14 needed): %w", serr)
	}
	return cookie, nil
}
