package dns

import (
	"net/netip"
	"slices"

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

// NamesForAny returns the names this resolver answered with ip for any
// container, deduplicated. The proxy uses them only to tell whether an
// address belongs to a host some rule treats at the HTTP level: an agent
// that dials a hard-coded address it never looked up must not get a raw
// splice to a host another container (or it, earlier) resolved there.
func (r *Resolver) NamesForAny(ip netip.Addr) []string {
	r.mu.Lock()
	states := make([]*containerState, 0, len(r.containers))
	for _, s := range r.containers {
		states = append(states, s)
	}
	r.mu.Unlock()
	ip = ip.WithZone("").Unmap()
	now := r.now()
	out := r.sticky.names(ip, now)
	for _, s := range states {
		for _, n := range s.answers.names(ip, now) {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	return out
}
