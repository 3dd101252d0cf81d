package harness

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Docker networks with a driver that puts the container's interface on a
// parent device (macvlan, ipvlan) use 203.0.113.240/28: the top four
// container slots, reserved with their host-wide locks.
const (
	dockerNetSlot = 60
	dockerNetCIDR = "203.0.113.240/28"
	dockerNetGW   = "203.0.113.241"
)

// Network creates a Docker network with driver ("macvlan" or "ipvlan", in
// its default mode) on a parent interface of its own: a host veth cdm<id>
// whose far end sits in the upstream's netns at 203.0.113.241/28, the
// network's gateway. Containers on it (RunOpts.DockerNetwork) reach the
// upstream over that link, not through the host's routing. Removed at
// t.Cleanup.
func (d *Docker) Network(t testing.TB, up *Upstream, driver string) string {
	t.Helper()
	name, cleanup, err := d.network(up, driver)
	if err != nil {
		t.Fatalf("docker network %s: %v", driver, err)
	}
	t.Cleanup(cleanup) // after the containers on it (registered later, removed first)
	return name
}

func (d *Docker) network(up *Upstream, driver string) (name string, cleanup func(), err error) {
	id := shortID(8)
	if err := markOwned(id); err != nil {
		return "", nil, err
	}
	parent := "cdm" + id
	name = "clawd-" + driver + "-" + id
	var locks []*os.File
	cleanup = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		d.docker(ctx, nil, "network", "rm", name)
		cancel()
		deleteLink(parent)
		for _, l := range locks {
			l.Close()
		}
		unmarkOwned(id)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for i := dockerNetSlot; i < numSlots; {
		l, ok, err := tryLock(fmt.Sprintf("slot-%d", i))
		if err != nil {
			return "", nil, err
		}
		if !ok {
			if time.Now().After(deadline) {
				return "", nil, fmt.Errorf("container subnet slot %d stays in use", i)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		locks = append(locks, l)
		i++
	}
	ns, err := netns.GetFromPath(up.Netns)
	if err != nil {
		return "", nil, err
	}
	defer ns.Close()
	la := netlink.NewLinkAttrs()
	la.Name = parent
	far := "p" + parent
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: far, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		return "", nil, fmt.Errorf("add veth %s: %w", parent, err)
	}
	host, err := netlink.LinkByName(parent)
	if err != nil {
		return "", nil, err
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return "", nil, err
	}
	var gwMAC string
	err = withHandle(up.Netns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(far)
		if err != nil {
			return err
		}
		a := addrOf(netip.PrefixFrom(netip.MustParseAddr(dockerNetGW), 28))
		if err := h.AddrAdd(l, a); err != nil {
			return err
		}
		gwMAC = l.Attrs().HardwareAddr.String()
		return h.LinkSetUp(l)
	})
	if err != nil {
		return "", nil, fmt.Errorf("gateway side in the upstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, stderr, err := d.docker(ctx, nil, "network", "create", "-d", driver, "--subnet", dockerNetCIDR, "--gateway", dockerNetGW,
		"-o", "parent="+parent, name); err != nil {
		return "", nil, fmt.Errorf("docker network create: %v: %s", err, stderr)
	}
	d.netMu.Lock()
	if d.netGatewayMAC == nil {
		d.netGatewayMAC = map[string]string{}
	}
	d.netGatewayMAC[name] = gwMAC
	d.netMu.Unlock()
	return name, cleanup, nil
}

// KernelHasLinkKind reports whether the kernel can create links of kind
// (e.g. "ipvlan"), trying one on a veth in a scratch network namespace.
func KernelHasLinkKind(kind string) (bool, error) {
	name := "clawd-k-" + shortID(8)
	path, err := newNamedNetns(name)
	if err != nil {
		return false, err
	}
	defer deleteNetns(path)
	var has bool
	err = withHandle(path, func(h *netlink.Handle) error {
		la := netlink.NewLinkAttrs()
		la.Name = "kv0"
		if err := h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "kv1"}); err != nil {
			return err
		}
		p, err := h.LinkByName("kv0")
		if err != nil {
			return err
		}
		ca := netlink.NewLinkAttrs()
		ca.Name, ca.ParentIndex = "kx0", p.Attrs().Index
		var l netlink.Link = &netlink.GenericLink{LinkAttrs: ca, LinkType: kind}
		if kind == "ipvlan" {
			l = &netlink.IPVlan{LinkAttrs: ca}
		}
		err = h.LinkAdd(l)
		has = err == nil
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		return err
	})
	return has, err
}
