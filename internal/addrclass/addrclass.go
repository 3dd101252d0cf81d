// Package addrclass owns one question: is an IP address one that an agent
// must not reach through a rule that names a host? Loopback, link-local
// (cloud metadata included), private and unique-local ranges, shared
// (CGNAT) space, multicast, unspecified and reserved addresses are; so are
// IPv6 forms that carry one of those IPv4 addresses (v4-mapped, the
// deprecated v4-compatible ::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64
// 64:ff9b::/96 and 64:ff9b:1::/48 at any RFC 6052 prefix length, 6to4 2002::/16, Teredo 2001::/32). A DNS answer that
// points a name at such an address is the classic rebinding attack; clawd
// dials it only when a rule names the range in `cidrs`.
//
// The host's own addresses and other containers' addresses are not fixed
// ranges: callers pass them as Extra.
package addrclass

import "net/netip"

// Class names why an address is special. The zero Class is an ordinary
// public address.
type Class string

const (
	Public      Class = ""
	Unspecified Class = "unspecified"
	Loopback    Class = "loopback"
	LinkLocal   Class = "link-local"
	Private     Class = "private"
	Shared      Class = "shared-address-space" // 100.64.0.0/10, carrier-grade NAT
	Multicast   Class = "multicast"
	Reserved    Class = "reserved"
	Host        Class = "host" // one of the host's own addresses (Extra)
	Container   Class = "container"
)

var reserved4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, broadcast
}

var (
	shared4   = netip.MustParsePrefix("100.64.0.0/10")
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	nat64loc  = netip.MustParsePrefix("64:ff9b:1::/48")
	sixToFour = netip.MustParsePrefix("2002::/16")
	teredo    = netip.MustParsePrefix("2001::/32")
	v4compat  = netip.MustParsePrefix("::/96")
	siit      = netip.MustParsePrefix("::ffff:0:0:0/96") // RFC 2765 IPv4-translated
	discard6  = netip.MustParsePrefix("100::/64")
)

// Of classifies a. An invalid address is Reserved (fail closed).
func Of(a netip.Addr) Class {
	if !a.IsValid() {
		return Reserved
	}
	a = a.WithZone("").Unmap()
	// netip's predicates cover both families (fc00::/7 is Private).
	switch {
	case a.IsUnspecified():
		return Unspecified
	case a.IsLoopback():
		return Loopback
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return LinkLocal
	case a.IsMulticast():
		return Multicast
	case a.IsPrivate():
		return Private
	}
	if a.Is4() {
		if shared4.Contains(a) {
			return Shared
		}
		for _, p := range reserved4 {
			if p.Contains(a) {
				return Reserved
			}
		}
		return Public
	}
	if discard6.Contains(a) {
		return Reserved
	}
	if nat64loc.Contains(a) {
		// A local-use NAT64 prefix can be any RFC 6052 length: fail
		// closed on whichever placement carries a special address.
		// (/48, /56, /64, /96 layouts; a zero placement is no evidence).
		b := a.As16()
		found := Public
		for _, v4 := range [][4]byte{{b[6], b[7], b[9], b[10]}, {b[7], b[9], b[10], b[11]},
			{b[9], b[10], b[11], b[12]}, {b[12], b[13], b[14], b[15]}} {
			switch c := Of(netip.AddrFrom4(v4)); c {
			case Public:
			case Unspecified, Reserved:
				if found == Public {
					found = c
				}
			default:
				return c
			}
		}
		return found
	}
	if v4, ok := Embedded(a); ok {
		return Of(v4)
	}
	return Public
}

// Embedded returns the IPv4 address an IPv6 address carries by a
// translation or tunnelling convention (v4-mapped, v4-compatible, NAT64,
// 6to4, Teredo's obfuscated client address).
func Embedded(a netip.Addr) (netip.Addr, bool) {
	if a.Is4() {
		return a, true
	}
	b := a.As16()
	switch {
	case a.Is4In6():
		return a.Unmap(), true
	case nat64.Contains(a), v4compat.Contains(a), siit.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case nat64loc.Contains(a):
		// RFC 8215 local-use prefix, /48 with the RFC 6052 layout for /48:
		// v4 in bytes 6,7 and 9,10 (byte 8 is the u octet).
		return netip.AddrFrom4([4]byte{b[6], b[7], b[9], b[10]}), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	case teredo.Contains(a):
		return netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]}), true
	}
	return netip.Addr{}, false
}

// Extra tells whether an address is the host's own or another container's;
// either may be nil.
type Extra struct {
	Host      func(netip.Addr) bool
	Container func(netip.Addr) bool
}

// Classify is Of, then the Extra checks for an otherwise public address
// (and for the IPv4 address it embeds).
func (x Extra) Classify(a netip.Addr) Class {
	if c := Of(a); c != Public {
		return c
	}
	a = a.WithZone("").Unmap()
	cands := []netip.Addr{a}
	if v4, ok := Embedded(a); ok && v4 != a {
		cands = append(cands, v4)
	}
	for _, c := range cands {
		if x.Host != nil && x.Host(c) {
			return Host
		}
		if x.Container != nil && x.Container(c) {
			return Container
		}
	}
	return Public
}

// specialPrefixes is a superset of the addresses Of does not call Public,
// as ranges: every address outside them that Of sees is Public (the test
// checks that). IPv6 forms that carry an IPv4 address are listed whole,
// whatever address they carry.
var specialPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/96"),           // unspecified, loopback, v4-compatible
	netip.MustParsePrefix("::ffff:0:0/96"),   // v4-mapped (judged as IPv4 elsewhere)
	netip.MustParsePrefix("::ffff:0:0:0/96"), // SIIT
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// SpecialPrefixes lists ranges that hold every address Of does not call
// Public (and some it does: 6to4 or NAT64 forms of public addresses). A
// caller that needs ranges rather than a per-address answer (the kernel
// fast path, policy.FastPath) excludes them whole. The host's and the
// containers' own addresses are not in it.
func SpecialPrefixes() []netip.Prefix {
	return append([]netip.Prefix(nil), specialPrefixes...)
}
