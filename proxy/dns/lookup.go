package dns

import (
	"net/netip"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// Consistent reports whether a connection to ip may claim to be for host.
// It is when host is ip written as a literal ("10.0.0.1", "::1", "[::1]"),
// or when this resolver answered a query of this container for host with ip
// (directly or through a CNAME chain) no longer ago than the answer is
// remembered. host is read by hostname.Normalize (case, one trailing dot,
// a port and brackets ignored).
func (r *Resolver) Consistent(containerKey, host string, ip netip.Addr) bool {
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return false
	}
	h := hostname.Normalize(host)
	if a, ok := hostname.IP(h); ok {
		return a == ip
	}
	s := r.lookupState(containerKey)
	if s == nil {
		return false
	}
	return hostname.Valid(h) && s.answers.has(h, ip, r.now())
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
