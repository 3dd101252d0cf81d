package dns

import (
	"net"
	"net/netip"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

// dropped is one address left out of an answer, and why.
type dropped struct {
	ip    netip.Addr
	class addrclass.Class
}

func (d dropped) reason() string {
	return "answer address is " + string(d.class) + ": not a dial target for rules by name (no rule names it in cidrs)"
}

// filter removes from resp, in place, every address that must not reach
// the agent: A and AAAA records in any section, and SVCB/HTTPS ipv4hint and
// ipv6hint values (clients dial those too), whose address is special for c
// (see keep). When that leaves the answer section without an address record
// of its own although it had some, the whole answer section is emptied
// (CNAMEs included), so the agent gets NOERROR with no records (NODATA)
// rather than a chain that ends nowhere.
//
// NODATA, not NXDOMAIN: NXDOMAIN says the name has no records of any type
// and is cached that way (RFC 2308), which would also hide a usable answer
// of the other address family; NODATA is about this type only.
func (r *Resolver) filter(c policy.Container, resp *mdns.Msg) []dropped {
	var out []dropped
	had := hasAddr(resp.Answer)
	resp.Answer = r.filterRRs(c, resp.Answer, &out)
	if had && len(out) > 0 && !hasAddr(resp.Answer) {
		resp.Answer = nil
	}
	resp.Ns = r.filterRRs(c, resp.Ns, &out)
	resp.Extra = r.filterRRs(c, resp.Extra, &out)
	return out
}

// keep reports whether ip may be handed to c, and its class.
func (r *Resolver) keep(c policy.Container, ip netip.Addr) (bool, addrclass.Class) {
	class := r.special.Classify(ip)
	if class == addrclass.Public {
		return true, class
	}
	return r.cidrCovers != nil && r.cidrCovers(c, ip.WithZone("").Unmap()), class
}

func (r *Resolver) filterRRs(c policy.Container, rrs []mdns.RR, out *[]dropped) []mdns.RR {
	kept := rrs[:0]
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *mdns.A:
			if !r.keepIP(c, v.A.To4(), out) {
				continue
			}
		case *mdns.AAAA:
			if !r.keepIP(c, v.AAAA, out) {
				continue
			}
		case *mdns.SVCB:
			v.Value = r.filterHints(c, v.Value, out)
		case *mdns.HTTPS:
			v.Value = r.filterHints(c, v.Value, out)
		}
		kept = append(kept, rr)
	}
	// Clear the tail so dropped records are not kept alive by the array.
	for i := len(kept); i < len(rrs); i++ {
		rrs[i] = nil
	}
	return kept
}

// keepIP classifies one record's address; an unparsable one is dropped.
func (r *Resolver) keepIP(c policy.Container, b net.IP, out *[]dropped) bool {
	ip, ok := netip.AddrFromSlice(b)
	if !ok {
		*out = append(*out, dropped{class: addrclass.Reserved})
		return false
	}
	if ok, class := r.keep(c, ip); !ok {
		*out = append(*out, dropped{ip: ip, class: class})
		return false
	}
	return true
}

// filterHints drops special addresses from ipv4hint/ipv6hint; a hint left
// empty is removed (an empty hint is malformed).
func (r *Resolver) filterHints(c policy.Container, kvs []mdns.SVCBKeyValue, out *[]dropped) []mdns.SVCBKeyValue {
	kept := kvs[:0]
	for _, kv := range kvs {
		switch h := kv.(type) {
		case *mdns.SVCBIPv4Hint:
			h.Hint = r.filterIPs(c, h.Hint, out)
			if len(h.Hint) == 0 {
				continue
			}
		case *mdns.SVCBIPv6Hint:
			h.Hint = r.filterIPs(c, h.Hint, out)
			if len(h.Hint) == 0 {
				continue
			}
		}
		kept = append(kept, kv)
	}
	return kept
}

func (r *Resolver) filterIPs(c policy.Container, ips []net.IP, out *[]dropped) []net.IP {
	kept := ips[:0]
	for _, b := range ips {
		if r.keepIP(c, b, out) {
			kept = append(kept, b)
		}
	}
	return kept
}

// hasAddr reports whether rrs hold an A or AAAA record.
func hasAddr(rrs []mdns.RR) bool {
	for _, rr := range rrs {
		switch rr.(type) {
		case *mdns.A, *mdns.AAAA:
			return true
		}
	}
	return false
}
