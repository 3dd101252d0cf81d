package dns

import (
	"net/netip"
	"strings"
)

// Consistent reports whether a connection to ip may claim to be for host.
// It is when host is ip written as a literal ("10.0.0.1", "::1", "[::1]"),
// or when this resolver answered a query of this container for host with ip
// (directly or through a CNAME chain) no longer ago than the answer is
// remembered. host is compared case-insensitively, ignoring a trailing dot.
func (r *Resolver) Consistent(containerKey, host string, ip netip.Addr) bool {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return false
	}
	lit := host
	if strings.HasPrefix(lit, "[") && strings.HasSuffix(lit, "]") {
		lit = lit[1 : len(lit)-1]
	}
	if a, err := netip.ParseAddr(lit); err == nil {
		return a.WithZone("").Unmap() == ip
	}
	s := r.lookupState(containerKey)
	if s == nil {
		return false
	}
	name := normalize(host)
	return validName(name) && s.answers.has(name, ip, r.now())
}

// NamesFor returns the names this resolver answered with ip for the
// container and still remembers: names the container asked for first, then
// names met as CNAME targets on the way. It returns nil when there are none.
func (r *Resolver) NamesFor(containerKey string, ip netip.Addr) []string {
	s := r.lookupState(containerKey)
	if s == nil {
		return nil
	}
	names := s.answers.names(ip.WithZone("").Unmap(), r.now())
	if len(names) == 0 {
		return nil
	}
	return names
}
