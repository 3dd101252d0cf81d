package harness

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// setupNetwork gives the container its network namespace: a new one, or (for
// Docker) existingNs bind-mounted at /run/netns/clawd-c-<short>. With mode
// "veth" (or "") it also gets a veth to the host from a free subnet slot.
func (ct *Container) setupNetwork(mode, existingNs, peerNs string) (err error) {
	if mode != "" && mode != "veth" && mode != "none" {
		return fmt.Errorf("unknown network mode %q (want \"veth\" or \"none\")", mode)
	}
	if err := markOwned(ct.short); err != nil {
		return err
	}
	name := "clawd-c-" + ct.short
	if existingNs != "" {
		if ct.Netns, err = bindNetns(existingNs, name); err != nil {
			return err
		}
		// Docker disables IPv6 in --network none namespaces.
		err = inNetns(ct.Netns, func() error {
			for _, f := range []string{"all", "default", "lo"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+f+"/disable_ipv6", []byte("0\n"), 0o644); err != nil {
					return fmt.Errorf("enable IPv6: %w", err)
				}
			}
			return disableDAD("all", "default")
		})
	} else {
		ct.Netns, err = newNamedNetns(name)
	}
	if err != nil {
		return err
	}
	if mode == "none" {
		return nil
	}
	if err := enableForwarding(); err != nil {
		return err
	}
	slot, lock, err := allocSlot()
	if err != nil {
		return err
	}
	ct.slotLock = lock
	base := netip.AddrFrom4([4]byte{203, 0, 113, byte(4 * slot)})
	ct.HostIPv4, ct.IPv4 = base.Next(), base.Next().Next()
	ct.HostIPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:c:%x::1", slot))
	ct.IPv6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:c:%x::2", slot))
	ct.HostVeth = "cc" + ct.short
	hostV4, hostV6 := netip.PrefixFrom(ct.HostIPv4, 30), netip.PrefixFrom(ct.HostIPv6, 64)
	spec := vethSpec{
		hostName: ct.HostVeth, nsPath: ct.Netns, nsName: "eth0",
		hostV4: hostV4, hostV6: hostV6,
		innerV4: netip.PrefixFrom(ct.IPv4, 30), innerV6: netip.PrefixFrom(ct.IPv6, 64),
	}
	if peerNs != "" {
		// The far end goes into peerNs, with the addresses the host side
		// would have had.
		ct.HostVeth, ct.peerNs = "", peerNs
		if err := setupVethIn(peerNs, "cc"+ct.short, spec); err != nil {
			return fmt.Errorf("container network: %w", err)
		}
		ct.GatewayMAC, err = macIn(peerNs, "cc"+ct.short)
		return err
	}
	if err := setupVeth(spec); err != nil {
		return fmt.Errorf("container network: %w", err)
	}
	if b, err := os.ReadFile("/sys/class/net/" + ct.HostVeth + "/address"); err == nil {
		ct.GatewayMAC = strings.TrimSpace(string(b))
	}
	return allowForward(ct.short, hostV4, hostV6)
}

// setupVethIn is setupVeth with the "host" side created in netns ns.
func setupVethIn(ns, name string, spec vethSpec) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(ns)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		err = setupVeth(spec)
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, serr) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

func macIn(ns, name string) (string, error) {
	var mac string
	err := withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(name)
		if err == nil {
			mac = l.Attrs().HardwareAddr.String()
		}
		return err
	})
	return mac, err
}

// joinNetwork puts the container into other's network namespace.
func (ct *Container) joinNetwork(other *Container) {
	ct.joined = true
	ct.Netns = other.Netns
	ct.IPv4, ct.IPv6 = other.IPv4, other.IPv6
	ct.HostVeth, ct.HostIPv4, ct.HostIPv6 = other.HostVeth, other.HostIPv4, other.HostIPv6
	ct.GatewayMAC = other.GatewayMAC
}

func (ct *Container) teardownNetwork() {
	if ct.short == "" || ct.joined {
		return
	}
	if ct.HostVeth != "" {
		deleteLink(ct.HostVeth)
	}
	if ct.peerNs != "" {
		withHandle(ct.peerNs, func(h *netlink.Handle) error {
			if l, err := h.LinkByName("cc" + ct.short); err == nil {
				h.LinkDel(l)
			}
			return nil
		})
	}
	if ct.Netns != "" {
		deleteNetns(ct.Netns)
	}
	removeTaggedRules(ct.short)
	if ct.slotLock != nil {
		ct.slotLock.Close()
		ct.slotLock = nil
	}
	unmarkOwned(ct.short)
}

// HostHeldTap creates a tap device name in the container's network
// namespace whose queue this test process holds, as slirp4netns or pasta
// do: every frame the device transmits comes to the host process, not to
// the container. Closed (and so removed) at t.Cleanup.
func (ct *Container) HostHeldTap(t testing.TB, name string) *os.File {
	t.Helper()
	var f *os.File
	err := inNetns(ct.Netns, func() error {
		var err error
		if f, err = os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr); err != nil {
			f.Close()
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		l, err := netlink.LinkByName(name)
		if err != nil {
			f.Close()
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("host-held tap in %s: %v", ct.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// AddHostVeth adds a veth after the fact, as a CNI plugin attaching a second
// network would: hostName stays in the host netns, its peer becomes inner in
// the container's netns; both up, no addresses. Removed at t.Cleanup.
func (ct *Container) AddHostVeth(t testing.TB, hostName, inner string) {
	t.Helper()
	ns, err := netns.GetFromPath(ct.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = hostName
	tmp := "t" + hostName
	if len(tmp) > 15 {
		tmp = tmp[:15]
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: tmp, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		t.Fatalf("add veth %s: %v", hostName, err)
	}
	t.Cleanup(func() { deleteLink(hostName) })
	if l, err := netlink.LinkByName(hostName); err == nil {
		netlink.LinkSetUp(l)
	}
	err = withHandle(ct.Netns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(tmp)
		if err != nil {
			return err
		}
		if err := h.LinkSetName(l, inner); err != nil {
			return err
		}
		return h.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("peer %s in %s: %v", inner, ct.Name, err)
	}
}
