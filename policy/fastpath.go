package policy

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/clawd-dev/clawd/internal/addrclass"
)

// The kernel fast path (issue 18) is compiled here, and only here.
//
// FastPath lists, for one container, the TCP destinations that its rule
// set allows by address and port alone: the cgroup connect hooks
// (bpf/clawd.c) let those connections through in the kernel instead of
// redirecting them to the proxy. The contract, checked by
// TestFastPathImpliesAllow for random policies: an address and port the
// table passes are decided Allow by a rule naming the address in `cidrs`,
// whatever program dials and whatever name it uses, and nothing else about
// the connection (bytes, SNI, HTTP) could change what the proxy does with
// it. Concretely a destination is fast only when
//
//   - the container's set is in mode enforce (audit mode audits every
//     decision through the proxy) and has no rule that names hosts: the
//     proxy weighs every name clawd's DNS gave for an address and the TLS
//     server name (gate invariants 1 and 2), which the kernel cannot see;
//   - the first rule in file order matching the address and port is an
//     allow rule with `cidrs`, and without HTTP conditions, intercept,
//     readonly, mcp, binaries, budget, rate_limit or upstream_proxy (its
//     own or its set's): each needs the proxy;
//   - no rule treats the destination at the HTTP level (HTTPLevel): the
//     proxy would frame such a connection and refuse what it cannot frame;
//   - the address is outside addrclass.SpecialPrefixes (loopback,
//     link-local and metadata, private, multicast, IPv6 forms carrying an
//     IPv4 address, ...) and outside exclude (the host's own addresses,
//     the containers' addresses, clawd's listeners), even when a cidr
//     names it: those always take the proxy path, which refuses or allows
//     them as today. IPv4-mapped IPv6 is judged as IPv4 by the kernel side
//     before the lookup, so the IPv6 table never holds ::ffff:0:0/96;
//   - the port is not in excludePorts (clawd's own listener ports: on a
//     host address added after compilation they must still be refused).
//
// A set's default action never makes a destination fast (no rule names
// the address). UDP is never fast: clawd admits no UDP but DNS. What the
// kernel cannot do, by construction, is read bytes: the proxy's
// host_mismatch refusal (a TLS server name or HTTP Host that does not
// resolve to the address) has no kernel equivalent; in a set without name
// rules it protects no rule, which is why such sets are the only fast ones.
// The daemon (daemon/fastpath.go) adds what only it knows to exclude: the
// host's, the containers' and the upstream proxies' addresses, clawd's
// ports, and every container while the secret store holds a secret.
//
// The table has longest-prefix semantics (an LPM trie in the kernel): an
// address takes the entry of the longest prefix containing it, and an entry
// with no ports passes nothing. Every cidr of the set and every excluded
// range overlapping one is an entry, so a more specific cidr (a deny rule
// for a /32 inside an allowed /24) or an excluded range shadows the broader
// prefix. An entry whose ports need more than MaxFastSpans ranges passes
// nothing (the proxy decides those destinations).

// MaxFastSpans is the number of port ranges a kernel table entry holds.
const MaxFastSpans = 15

// PortSpan is an inclusive port range.
type PortSpan struct{ Lo, Hi uint16 }

// FastEntry is one prefix of a fast-path table and the TCP ports its
// addresses may reach directly; empty Ports pass nothing.
type FastEntry struct {
	Prefix netip.Prefix
	Ports  []PortSpan
}

// FastTable is a container's fast-path table, IPv4 and IPv6 prefixes.
type FastTable []FastEntry

// Allows is the kernel's lookup: the longest prefix containing a decides.
// IPv4-mapped addresses are judged as IPv4.
func (t FastTable) Allows(a netip.Addr, port uint16) bool {
	a = a.WithZone("").Unmap()
	best := -1
	for i, e := range t {
		if e.Prefix.Addr().Is4() == a.Is4() && e.Prefix.Contains(a) && (best < 0 || e.Prefix.Bits() > t[best].Prefix.Bits()) {
			best = i
		}
	}
	if best < 0 {
		return false
	}
	for _, s := range t[best].Ports {
		if port >= s.Lo && port <= s.Hi {
			return true
		}
	}
	return false
}

// FastPath compiles c's fast-path table (see the contract above). exclude
// lists further ranges that must take the proxy path (the host's and the
// containers' addresses); excludePorts ports that must (clawd's own).
func (p *Policy) FastPath(c Container, exclude []netip.Prefix, excludePorts []uint16) FastTable {
	s := p.setFor(c)
	if s.audit {
		return nil
	}
	for _, r := range s.rules {
		if len(r.hosts) > 0 {
			return nil
		}
	}
	var prefixes []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, r := range s.rules {
		for _, c := range r.cidrs {
			if !seen[c] {
				seen[c] = true
				prefixes = append(prefixes, c)
			}
		}
	}
	if len(prefixes) == 0 {
		return nil
	}
	excl := addrclass.SpecialPrefixes()
	for _, x := range exclude {
		if x.IsValid() {
			if x.Addr().Is4In6() {
				x = netip.PrefixFrom(x.Addr().Unmap(), max(x.Bits()-96, 0))
			}
			excl = append(excl, x.Masked())
		}
	}
	var t FastTable
	for _, x := range excl {
		if seen[x] {
			continue
		}
		for _, c := range prefixes {
			if x.Overlaps(c) {
				seen[x] = true
				t = append(t, FastEntry{Prefix: x})
				break
			}
		}
	}
	for _, pfx := range prefixes {
		e := FastEntry{Prefix: pfx}
		excluded := false
		for _, x := range excl {
			if x.Bits() <= pfx.Bits() && x.Overlaps(pfx) {
				excluded = true
				break
			}
		}
		if !excluded {
			e.Ports = s.fastPorts(pfx, excludePorts)
		}
		t = append(t, e)
	}
	sort.Slice(t, func(i, j int) bool {
		a, b := t[i].Prefix, t[j].Prefix
		if a.Addr() != b.Addr() {
			return a.Addr().Less(b.Addr())
		}
		return a.Bits() < b.Bits()
	})
	return t
}

// fastPorts is the port set of the addresses whose longest cidr is pfx:
// their candidate rules are those with a cidr containing pfx, and those
// with no destination condition.
func (s *ruleSet) fastPorts(pfx netip.Prefix, excludePorts []uint16) []PortSpan {
	var cands []*rule
	for _, r := range s.rules {
		if len(r.hosts) == 0 && len(r.cidrs) == 0 {
			cands = append(cands, r)
			continue
		}
		for _, c := range r.cidrs {
			if c.Bits() <= pfx.Bits() && c.Contains(pfx.Addr()) {
				cands = append(cands, r)
				break
			}
		}
	}
	// Port boundaries: between two, every candidate covers all or none.
	bounds := []int{1, 65536}
	for _, r := range cands {
		for _, pr := range r.ports {
			bounds = append(bounds, int(pr.lo), int(pr.hi)+1)
		}
	}
	for _, p := range excludePorts {
		bounds = append(bounds, int(p), int(p)+1)
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	var out []PortSpan
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i], bounds[i+1]-1
		if lo < 1 || lo > 65535 {
			continue
		}
		if !s.fastAt(cands, uint16(lo), excludePorts) {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].Hi)+1 == lo {
			out[n-1].Hi = uint16(hi)
		} else {
			out = append(out, PortSpan{uint16(lo), uint16(hi)})
		}
	}
	if len(out) > MaxFastSpans {
		return nil
	}
	return out
}

// fastAt decides one port for a candidate list (in file order).
func (s *ruleSet) fastAt(cands []*rule, port uint16, excludePorts []uint16) bool {
	if slices.Contains(excludePorts, port) {
		return false
	}
	covers := func(r *rule) bool { return len(r.ports) == 0 || portIn(r.ports, port) }
	for _, r := range cands {
		if covers(r) && (r.httpCond || r.intercept || r.mcp) {
			return false // the proxy frames this destination
		}
	}
	for _, r := range cands {
		if !covers(r) {
			continue
		}
		return s.fastRule(r)
	}
	return false
}

// fastRule reports whether r, deciding a connection, needs nothing but the
// address and port.
func (s *ruleSet) fastRule(r *rule) bool {
	up := s.upstream
	if r.upstream != nil {
		up = *r.upstream
	}
	return r.action == Allow && len(r.cidrs) > 0 && len(r.hosts) == 0 &&
		!r.httpCond && !r.intercept && !r.readonly && !r.mcp &&
		len(r.binaries) == 0 && r.budget == nil && r.rate == nil && up.IsZero()
}
