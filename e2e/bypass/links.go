package main

import (
	"net/netip"

	"github.com/vishvananda/netlink"
)

// newLinkPacket uses CAP_NET_ADMIN in the container's netns to create a
// link on top of eth0 (a macvlan, or an 802.1Q VLAN) and sends packet-socket
// frames on it: they leave through eth0, whose tcx program must drop them.
func newLinkPacket(name, kind string, up netip.Addr) {
	parent, err := netlink.LinkByName(*iface)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "bp" + kind[:2]
	attrs.ParentIndex = parent.Attrs().Index
	var l netlink.Link
	switch kind {
	case "macvlan":
		l = &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
	default:
		l = &netlink.Vlan{LinkAttrs: attrs, VlanId: 100}
	}
	if err := netlink.LinkAdd(l); err != nil {
		report(name, "blocked", "create "+kind+": "+err.Error())
		return
	}
	defer netlink.LinkDel(l)
	if err := netlink.LinkSetUp(l); err != nil {
		report(name, "blocked", "up: "+err.Error())
		return
	}
	old := *iface
	*iface = attrs.Name
	defer func() { *iface = old }()
	packet(name, up, false)
}
