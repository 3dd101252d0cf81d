package proxy

import "net/netip"

// IsHostAddr reports whether a (unmapped, without zone) is one of the
// host's addresses now, scanning the interfaces; an error listing them
// counts as yes (fail closed). It is Config.HostAddr's default, exported
// so the DNS forwarder judges answers by the same rule.
func IsHostAddr(a netip.Addr) bool { return isHostAddr(a) }
