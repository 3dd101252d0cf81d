package harness

import (
	"fmt"
	"net/netip"
	"os"
)

// setupNetwork gives the container its network namespace: a new one, or (for
// Docker) existingNs bind-mounted at /run/netns/clawd-c-<short>. With mode
// "veth" (or "") it also gets a veth to the host from a free subnet slot.
func (ct *Container) setupNetwork(mode, existingNs string) (err error) {
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
	err = setupVeth(vethSpec{
		hostName: ct.HostVeth, nsPath: ct.Netns, nsName: "eth0",
		hostV4: hostV4, hostV6: hostV6,
		innerV4: netip.PrefixFrom(ct.IPv4, 30), innerV6: netip.PrefixFrom(ct.IPv6, 64),
	})
	if err != nil {
		return fmt.Errorf("container network: %w", err)
	}
	return allowForward(ct.short, hostV4, hostV6)
}

// joinNetwork puts the container into other's network namespace.
func (ct *Container) joinNetwork(other *Container) {
	ct.joined = true
	ct.Netns = other.Netns
	ct.IPv4, ct.IPv6 = other.IPv4, other.IPv6
	ct.HostVeth, ct.HostIPv4, ct.HostIPv6 = other.HostVeth, other.HostIPv4, other.HostIPv6
}

func (ct *Container) teardownNetwork() {
	if ct.short == "" || ct.joined {
		return
	}
	if ct.HostVeth != "" {
		deleteLink(ct.HostVeth)
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
