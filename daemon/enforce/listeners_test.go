package enforce

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/nsenter"
)

// helper runs this test binary as TestHelperProcess in the testbed's netns
// and cgroup dir: it sends one datagram (or opens one TCP connection) with
// raw syscalls, the way args say, and prints "ok" or the error.
func (tb *testbed) helper(t *testing.T, cgroup string, args ...string) (string, error) {
	t.Helper()
	fd, err := unix.Open(cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	cmd := exec.Command("ip", append([]string{"netns", "exec", tb.ns, os.Args[0], "-test.run=^TestHelperProcess$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "CLAWD_ENFORCE_HELPER=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(string(out)), "PASS")), err
}

// TestHelperProcess is not a test: see testbed.helper. Args: HOW HOST PORT
// MSG, HOW one of udp-connect, udp-sendto (socket of HOST's family),
// udp6-connect, udp6-sendto (an AF_INET6 socket), tcp.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("CLAWD_ENFORCE_HELPER") != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	err := helperSend(args[0], args[1], args[2], args[3])
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
	os.Exit(0)
}

func helperSend(how, host, port, msg string) error {
	ip := netip.MustParseAddr(host)
	p, _ := strconv.Atoi(port)
	fam := unix.AF_INET
	if ip.Is6() || strings.HasPrefix(how, "udp6") {
		fam = unix.AF_INET6
	}
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: p, Addr: ip.As16()}
	if fam == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: p, Addr: ip.As4()}
	}
	typ := unix.SOCK_DGRAM
	if how == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(fam, typ, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	switch how {
	case "udp-connect", "udp6-connect", "tcp":
		if err := unix.Connect(fd, sa); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		if how == "tcp" {
			return nil
		}
		_, err = unix.Write(fd, []byte(msg))
	default:
		err = unix.Sendto(fd, []byte(msg), 0, sa)
	}
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}

func packetListenIn(t *testing.T, nsPath, network, addr string) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := nsenter.Do(nsPath, func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// Two attached containers share one network namespace (a pod): each may
// reach its own listeners on loopback, neither the other's, over UDP
// (v4 and v6) or TCP; once a listener is unregistered it is ordinary
// loopback again.
func TestOtherContainersListenersRefused(t *testing.T) {
	tb := newTestbed(t)
	e, err := New(filepath.Join("/sys/fs/bpf", "clawd-test-"+filepath.Base(tb.cgroup)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); os.RemoveAll(e.Root()) })
	cgB := tb.cgroup + "-b"
	if err := os.Mkdir(cgB, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(t, cgB) })

	type ctr struct {
		cg       string
		tcp      net.Listener
		udp, up6 net.PacketConn
		ls       []Listener
	}
	mk := func(id, cg string) *ctr {
		c := &ctr{cg: cg, tcp: listenIn(t, tb.nsPath, "tcp4", "127.0.0.1:0")}
		c.udp = packetListenIn(t, tb.nsPath, "udp4", "127.0.0.1:0")
		uport := c.udp.LocalAddr().(*net.UDPAddr).Port
		c.up6 = packetListenIn(t, tb.nsPath, "udp6", fmt.Sprintf("[::1]:%d", uport))
		tport := uint16(c.tcp.Addr().(*net.TCPAddr).Port)
		cookie := netnsCookie(t, c.tcp)
		c.ls = []Listener{{Netns: cookie, Port: tport, Stream: true}, {Netns: cookie, Port: uint16(uport)}}
		if err := e.RegisterListeners(mustCgroupID(t, cg), c.ls); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Attach(Params{ID: id, Cgroup: cg, ProxyPort: tport, DNSPort: uint16(uport), HasV6: true}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Detach(id, mustCgroupID(t, cg)) })
		go func() {
			for {
				conn, err := c.tcp.Accept()
				if err != nil {
					return
				}
				conn.Close()
			}
		}()
		return c
	}
	a, b := mk("ta", tb.cgroup), mk("tb", cgB)

	// got reports whether pc received a datagram containing marker.
	got := func(pc net.PacketConn, marker string) bool {
		buf := make([]byte, 512)
		for {
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return false
			}
			if strings.Contains(string(buf[:n]), marker) {
				return true
			}
		}
	}
	// send sends marker from a process in from's cgroup, the given way.
	send := func(from *ctr, how, host string, to net.PacketConn, marker string) (bool, string) {
		port := to.LocalAddr().(*net.UDPAddr).Port
		out, _ := tb.helper(t, from.cg, how, host, strconv.Itoa(port), marker)
		return got(to, marker), out
	}
	for _, tc := range []struct{ how, host string }{
		{"udp-connect", "127.0.0.1"},
		{"udp-sendto", "127.0.0.1"},
		{"udp-connect", "127.0.0.2"}, // all of 127/8 is loopback
		{"udp-connect", "::1"},
		{"udp-sendto", "::1"},
		{"udp6-connect", "::ffff:127.0.0.1"}, // v4-mapped from a v6 socket
		{"udp6-sendto", "::ffff:127.0.0.1"},
	} {
		to := func(c *ctr) net.PacketConn {
			if tc.host == "::1" {
				return c.up6
			}
			return c.udp
		}
		name := tc.how + " " + tc.host
		if tc.host != "127.0.0.2" {
			if ok, out := send(a, tc.how, tc.host, to(a), "own-a"); !ok {
				t.Errorf("%s: A's datagram to its own listener lost: %s", name, out)
			}
			if ok, out := send(b, tc.how, tc.host, to(b), "own-b"); !ok {
				t.Errorf("%s: B's datagram to its own listener lost: %s", name, out)
			}
		}
		if ok, out := send(a, tc.how, tc.host, to(b), "a-to-b"); ok {
			t.Errorf("%s: A's datagram reached B's DNS listener", name)
		} else if !strings.Contains(out, "not permitted") {
			t.Errorf("%s: want EPERM, helper says %q", name, out)
		}
	}
	tcpPort := strconv.Itoa(b.tcp.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"127.0.0.1", "::ffff:127.0.0.1"} {
		if out, _ := tb.helper(t, a.cg, "tcp", host, tcpPort, ""); !strings.Contains(out, "not permitted") {
			t.Errorf("A's TCP connect to %s:%s (B's proxy listener): %s", host, tcpPort, out)
		}
		if out, _ := tb.helper(t, b.cg, "tcp", host, tcpPort, ""); out != "ok" {
			t.Errorf("B's TCP connect to its own proxy listener at %s: %s", host, out)
		}
	}
	c, _ := e.Counters(mustCgroupID(t, a.cg))
	if c.UDPRefused < 7 {
		t.Errorf("A's counters %+v: refused datagrams not counted", c)
	}

	// Unregistered (the listener closed): the port is plain loopback.
	e.UnregisterListeners(b.ls)
	if ok, out := send(a, "udp-sendto", "127.0.0.1", b.udp, "after"); !ok {
		t.Errorf("after unregister: datagram lost: %s", out)
	}
	// A new Enforcer (a restarted daemon) starts from no listeners.
	if err := e.RegisterListeners(mustCgroupID(t, b.cg), b.ls); err != nil {
		t.Fatal(err)
	}
	e2, err := New(e.Root())
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if ok, out := send(a, "udp-connect", "127.0.0.1", b.udp, "restarted"); !ok {
		t.Errorf("stale listener entry survived a restart: %s", out)
	}
}
