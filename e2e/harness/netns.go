package harness

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNetns runs f on an OS thread switched into the network namespace at
// path. If switching back fails the thread stays locked, so the Go runtime
// throws it away instead of reusing a thread in the wrong namespace.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from netns %s: %w", path, err))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InNetns runs f on an OS thread inside the network namespace at path.
func InNetns(path string, f func() error) error { return inNetns(path, f) }

// ListenIn creates a stream listener inside the network namespace at
// netnsPath (e.g. "tcp", "198.51.100.10:8080"). The socket stays in that
// namespace; the caller serves it from any goroutine.
func ListenIn(netnsPath, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetns(netnsPath, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, netnsPath, err)
	}
	return l, nil
}

// PacketListenIn is ListenIn for datagram sockets ("udp", "udp4", "udp6").
func PacketListenIn(netnsPath, network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := inNetns(netnsPath, func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, netnsPath, err)
	}
	return pc, nil
}

// DialIn dials from inside the network namespace at netnsPath.
func DialIn(netnsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(netnsPath, func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

// newNamedNetns creates a network namespace bind-mounted at /run/netns/name
// with lo up, without moving the calling thread.
func newNamedNetns(name string) (string, error) {
	path := filepath.Join(netnsDir, name)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name) // switches this thread into ns
		if err != nil {
			if cur, e2 := netns.Get(); e2 == nil && cur.Equal(orig) {
				runtime.UnlockOSThread()
			}
			errc <- err
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	// No IPv6 duplicate address detection in the namespace: link-local
	// addresses would stay tentative for a second or two after the link
	// comes up, and neighbour discovery for forwarded traffic stalls.
	if err := inNetns(path, func() error { return disableDAD("default", "all") }); err != nil {
		deleteNetns(path)
		return "", fmt.Errorf("disable DAD in %s: %w", name, err)
	}
	if err := withHandle(path, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	}); err != nil {
		deleteNetns(path)
		return "", fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return path, nil
}

func deleteNetns(path string) {
	unix.Unmount(path, unix.MNT_DETACH)
	os.Remove(path)
}

// bindNetns bind-mounts an existing namespace file (/proc/PID/ns/net) at
// /run/netns/name so that it has a stable path.
func bindNetns(src, name string) (string, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("bind %s to %s: %w", src, path, err)
	}
	return path, nil
}

func withHandle(nsPath string, f func(*netlink.Handle) error) error {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	return f(h)
}

// vethSpec describes one veth pair between the host and a namespace.
type vethSpec struct {
	hostName         string
	nsPath, nsName   string // inner interface name
	hostV4, hostV6   netip.Prefix
	innerV4, innerV6 netip.Prefix
	extraInner       []netip.Prefix
}

func addrOf(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{
		IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Flags: unix.IFA_F_NODAD, // no duplicate address detection delay for IPv6
	}
}

// setupVeth creates the pair, addresses both sides, and routes the
// namespace's default traffic through the host side.
func setupVeth(v vethSpec) error {
	ns, err := netns.GetFromPath(v.nsPath)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer ns.Close()
	tmpPeer := "p" + v.hostName // unique in the host while the peer is created
	if len(tmpPeer) > 15 {
		tmpPeer = tmpPeer[:15]
	}
	la := netlink.NewLinkAttrs()
	la.Name = v.hostName
	veth := &netlink.Veth{LinkAttrs: la, PeerName: tmpPeer, PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", v.hostName, err)
	}
	host, err := netlink.LinkByName(v.hostName)
	if err != nil {
		return err
	}
	if err := disableDAD(v.hostName); err != nil {
		return err
	}
	for _, p := range []netip.Prefix{v.hostV4, v.hostV6} {
		if err := netlink.AddrAdd(host, addrOf(p)); err != nil {
			return fmt.Errorf("address %s on %s: %w", p, v.hostName, err)
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	return withHandle(v.nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName(tmpPeer)
		if err != nil {
			return err
		}
		if err := h.LinkSetName(l, v.nsName); err != nil {
			return fmt.Errorf("rename peer: %w", err)
		}
		for _, p := range append([]netip.Prefix{v.innerV4, v.innerV6}, v.extraInner...) {
			if err := h.AddrAdd(l, addrOf(p)); err != nil {
				return fmt.Errorf("address %s on %s: %w", p, v.nsName, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return err
		}
		for _, gw := range []netip.Addr{v.hostV4.Addr(), v.hostV6.Addr()} {
			r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}
			if err := h.RouteAdd(r); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
		}
		return nil
	})
}

func deleteLink(name string) {
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
}

// disableDAD turns off IPv6 duplicate address detection on the named
// interfaces ("all", "default" or a link) of the calling thread's netns.
func disableDAD(ifaces ...string) error {
	for _, i := range ifaces {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+i+"/accept_dad", []byte("0\n"), 0o644); err != nil {
			return fmt.Errorf("disable DAD on %s: %w", i, err)
		}
	}
	return nil
}

// enableForwarding turns on IPv4/IPv6 forwarding on the host; containers
// reach the upstream through it.
func enableForwarding() error {
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		if err := os.WriteFile(f, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

// allowForward inserts FORWARD ACCEPT rules (tagged with id) for traffic from
// and to the given prefixes, in case the policy is DROP (as Docker sets it).
// Without iptables nothing is needed.
func allowForward(id string, prefixes ...netip.Prefix) error {
	tag := fmt.Sprintf(ruleTagFmt, id)
	for _, p := range prefixes {
		ipt := "iptables"
		if p.Addr().Is6() {
			ipt = "ip6tables"
		}
		if _, err := exec.LookPath(ipt); err != nil {
			continue
		}
		for _, dir := range []string{"-s", "-d"} {
			args := []string{"-w", "-I", "FORWARD", dir, p.Masked().String(), "-m", "comment", "--comment", tag, "-j", "ACCEPT"}
			if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s %v: %v: %s", ipt, args, err, out)
			}
		}
	}
	return nil
}
