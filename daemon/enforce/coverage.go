package enforce

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// Iface is one interface of a container's network namespace and how clawd
// covers it: what stops a frame that a packet socket with
// PACKET_QDISC_BYPASS (or an AF_XDP socket) hands straight to its driver,
// past the tcx egress program that drops everything else.
type Iface struct {
	Name    string `json:"name"`
	Index   int    `json:"index"`
	Kind    string `json:"kind"`
	Covered bool   `json:"covered"`
	Via     string `json:"via,omitempty"`  // covered: ViaInside, ViaPeer, ViaLower or ViaTun
	How     string `json:"how,omitempty"`  // covered: what catches its frames
	Note    string `json:"note,omitempty"` // covered, with this known limit
	Why     string `json:"why,omitempty"`  // not covered: where its frames go
}

// How an interface is covered (Iface.Via).
const (
	ViaInside = "inside"     // what it sends re-enters the container netns, or goes nowhere
	ViaPeer   = "veth-peer"  // tcx ingress on its veth peer, in any netns
	ViaLower  = "lower"      // cgroup-matched tcx on its lower device
	ViaTun    = "tun-holder" // only processes of the container hold the tun/tap
)

// Uncovered returns the interfaces clawd cannot cover.
func Uncovered(ifs []Iface) []Iface {
	var out []Iface
	for _, i := range ifs {
		if !i.Covered {
			out = append(out, i)
		}
	}
	return out
}

// far says where a frame goes that an interface's driver transmits.
type far int

const (
	farInside far = iota // back into the container netns, or nowhere
	farPeer              // a veth peer in another netns: all its ingress is the container's
	farLower             // a lower device in another netns, shared with others
	farTun               // the processes holding the tun/tap device
	farNone              // something clawd cannot hook
)

// linkFacts are what the kernel reports of an interface.
type linkFacts struct {
	Name   string
	Index  int
	Kind   string
	NsID   int  // IFLA_LINK_NETNSID: the other side's netns; -1 when it is the interface's own
	Parent int  // IFLA_LINK: the veth peer's or lower device's ifindex, in NsID's netns
	Local  bool // a macvlan/ipvlan that delivers frames to its siblings directly
}

func factsOf(l netlink.Link) linkFacts {
	a := l.Attrs()
	f := linkFacts{Name: a.Name, Index: a.Index, Kind: l.Type(), NsID: a.NetNsID, Parent: a.ParentIndex}
	switch v := l.(type) {
	case *netlink.Macvlan:
		f.Local = v.Mode == netlink.MACVLAN_MODE_BRIDGE || v.Mode == netlink.MACVLAN_MODE_DEFAULT
	case *netlink.Macvtap:
		f.Local = v.Mode == netlink.MACVLAN_MODE_BRIDGE || v.Mode == netlink.MACVLAN_MODE_DEFAULT
	case *netlink.IPVlan:
		f.Local = v.Flag != netlink.IPVLAN_FLAG_PRIVATE && v.Flag != netlink.IPVLAN_FLAG_VEPA
	case *netlink.IPVtap:
		f.Local = v.Flag != netlink.IPVLAN_FLAG_PRIVATE && v.Flag != netlink.IPVLAN_FLAG_VEPA
	}
	return f
}

func kinds(ks ...string) map[string]bool {
	m := map[string]bool{}
	for _, k := range ks {
		m[k] = true
	}
	return m
}

var (
	// Devices that transmit through a lower device with dev_queue_xmit.
	lowerKinds = kinds("macvlan", "macvtap", "ipvlan", "ipvtap", "vlan", "macsec")
	// Tunnels that encapsulate and route in their link netns, which the
	// kernel reports (IFLA_LINK_NETNSID) when it is not their own.
	tunnelKinds = kinds("vxlan", "geneve", "ipip", "gre", "gretap", "erspan", "vti", "ip6tnl",
		"ip6gre", "ip6gretap", "ip6erspan", "sit", "vti6", "bareudp", "xfrm")
	// Devices that hand frames to their ports, which live in the same netns.
	masterKinds = kinds("bridge", "bond", "team", "vrf", "hsr")
	// Devices whose transmit frees the frame.
	sinkKinds = kinds("dummy", "nlmon", "ifb")
)

// plan is how an interface is covered: far, and the text for Iface.
type plan struct {
	far  far
	text string // How (covered) or Why (farNone)
	note string
}

const dropsAll = "tcx egress drops every frame"

// classify decides how an interface can be covered from what the kernel
// reports of it. The rule behind it: a frame that skips tcx egress goes to
// the device's driver; covered means clawd knows where that driver puts it
// and catches it there, or it can only come back into the container netns
// (whose interfaces all drop their egress) or go nowhere.
func classify(f linkFacts) plan {
	other := f.NsID >= 0
	switch {
	case f.Kind == "veth" && other:
		return plan{far: farPeer}
	case f.Kind == "veth":
		return plan{far: farInside, text: dropsAll + "; its peer is in the container netns too"}
	case lowerKinds[f.Kind] && other:
		p := plan{far: farLower}
		if f.Local && (f.Kind == "macvlan" || f.Kind == "macvtap") {
			p.note = "bridge mode: broadcast and multicast frames also reach the other macvlan interfaces of the lower device directly (never the wire)"
		} else if f.Local {
			p.note = "frames addressed to another ipvlan of the same lower device (another container, a host ipvlan) are delivered to it directly, not through the lower device"
		}
		return p
	case lowerKinds[f.Kind]:
		return plan{far: farInside, text: dropsAll + "; its lower device is in the container netns too"}
	case tunnelKinds[f.Kind] && other:
		return plan{far: farNone, text: "a " + f.Kind + " tunnel whose underlay is another netns: what it encapsulates is sent from there"}
	case tunnelKinds[f.Kind]:
		return plan{far: farInside, text: dropsAll + "; what it encapsulates is routed in the container netns"}
	case masterKinds[f.Kind]:
		return plan{far: farInside, text: dropsAll + "; it forwards to its ports, which are in the container netns"}
	case sinkKinds[f.Kind]:
		return plan{far: farInside, text: dropsAll + "; a " + f.Kind + " device sends nowhere"}
	case f.Kind == "tun" || f.Kind == "tuntap": // the kernel's kind; vishvananda/netlink's name for it
		return plan{far: farTun}
	case f.Kind == "device":
		return plan{far: farNone, text: "a hardware or driver device: frames that bypass tcx egress go straight to its driver and the wire"}
	}
	return plan{far: farNone, text: fmt.Sprintf("a %s device clawd cannot see past: frames that bypass tcx egress go straight to its driver", f.Kind)}
}
