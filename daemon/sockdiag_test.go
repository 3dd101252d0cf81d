package daemon

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/enforce"
)

// The kernel names the cgroup of the socket a datagram came from, for
// every way of sending it: connected and unconnected, IPv4, IPv6, and a
// dual-stack socket sending to a v4-mapped address.
func TestSockDiagNamesSenderCgroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (sock_diag reports other users' sockets only to root)")
	}
	want := selfCgroupID(t)
	sd, err := openSockDiag()
	if err != nil {
		t.Fatal(err)
	}
	defer sd.Close()

	ln4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	recv := func(ln net.PacketConn) netip.AddrPort {
		t.Helper()
		buf := make([]byte, 64)
		_, from, err := ln.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return from.(*net.UDPAddr).AddrPort()
	}
	local := func(ln net.PacketConn) netip.AddrPort { return ln.LocalAddr().(*net.UDPAddr).AddrPort() }

	// Connected IPv4.
	c4, err := net.Dial("udp4", ln4.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c4.Write([]byte("x"))
	// Unconnected IPv6.
	u6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer u6.Close()
	u6.WriteTo([]byte("x"), ln6.LocalAddr())
	// A dual-stack socket to the v4-mapped loopback.
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	mapped := &unix.SockaddrInet6{Port: int(local(ln4).Port()), Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
	if err := unix.Sendto(fd, []byte("x"), 0, mapped); err != nil {
		t.Fatal(err)
	}

	for name, c := range map[string]struct{ ln, from netip.AddrPort }{
		"connected v4":   {local(ln4), recv(ln4)},
		"unconnected v6": {local(ln6), recv(ln6)},
		"v4-mapped":      {local(ln4), recv(ln4)},
	} {
		got, err := sd.udpSenderCgroup(c.ln, c.from)
		if err != nil || got != want {
			t.Errorf("%s (%v -> %v): cgroup %d, %v; want %d", name, c.from, c.ln, got, err, want)
		}
	}

	// A source no socket has any more.
	gone, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	addr := local(gone)
	gone.Close()
	if _, err := sd.udpSenderCgroup(local(ln4), addr); !errors.Is(err, errNoSocket) {
		t.Errorf("closed sender: %v, want errNoSocket", err)
	}
	if _, err := sd.udpSenderCgroup(local(ln4), netip.AddrPortFrom(netip.MustParseAddr("::1"), 5)); err == nil {
		t.Error("mixed families looked up")
	}
}

// selfCgroupID is the cgroup v2 ID of the test process (the root cgroup
// included, which CgroupOfPID refuses).
func selfCgroupID(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	root, err := enforce.Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			id, err := enforce.CgroupID(filepath.Join(root, p))
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
	}
	t.Fatal("no cgroup v2 line in /proc/self/cgroup")
	return 0
}
