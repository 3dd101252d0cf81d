package dns

import (
	"container/list"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// maxChain bounds how many CNAMEs are followed in one answer.
const maxChain = 16

// pairKey is one remembered fact: name resolved to ip.
type pairKey struct {
	name string
	ip   netip.Addr
}

type pair struct {
	pairKey
	expires time.Time
	queried bool // name was the query name, not only a CNAME target
}

// answerSet remembers which names resolved to which addresses for one
// container, bounded to max pairs with the least recently answered evicted
// first. The caller holds no lock; answerSet locks itself.
type answerSet struct {
	mu    sync.Mutex
	max   int
	order *list.List // of *pair, least recently answered first
	pairs map[pairKey]*list.Element
	byIP  map[netip.Addr]map[string]*list.Element
}

func newAnswerSet(max int) *answerSet {
	return &answerSet{

		max:   max,
		order: list.New(),
		pairs: map[pairKey]*list.Element{},
		byIP:  map[netip.Addr]map[string]*list.Element{},
	}
}

// record remembers the A and AAAA records of an upstream answer to qname,
// following the CNAME chain from qname: with qname -> CNAME x -> A ip, both
// qname and x resolved to ip. Records off the chain are ignored. Each pair
// is kept for the chain's smallest TTL, but at least minTTL.
func (s *answerSet) record(qname string, answer []mdns.RR, now time.Time, minTTL time.Duration) {
	type target struct {
		name string
		ttl  uint32
	}
	cnames := map[string]target{}
	for _, rr := range answer {
		if cn, ok := rr.(*mdns.CNAME); ok {
			// A name that is not plain ends the chain: distinct odd
			// names must not meet as one hostname.Invalid link.
			owner, to := hostname.Normalize(cn.Hdr.Name), hostname.Normalize(cn.Target)
			if hostname.Valid(owner) && hostname.Valid(to) {
				cnames[owner] = target{to, cn.Hdr.Ttl}
			}
		}
	}
	chain := []string{qname}
	ttlTo := map[string]uint32{qname: math.MaxUint32} // smallest TTL on the way to a name
	for cur := qname; len(chain) <= maxChain; {
		t, ok := cnames[cur]
		if _, seen := ttlTo[t.name]; !ok || seen {
			break
		}
		ttlTo[t.name] = min(ttlTo[cur], t.ttl)
		chain = append(chain, t.name)
		cur = t.name
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range answer {
		owner := hostname.Normalize(rr.Header().Name)
		pos := slices.Index(chain, owner)
		if pos < 0 {
			continue
		}
		keep := max(time.Duration(min(ttlTo[owner], rr.Header().Ttl))*time.Second, minTTL)
		for _, ip := range answerAddrs(rr) {
			if !ip.IsValid() {
				continue
			}
			for i, name := range chain[:pos+1] {
				s.add(pairKey{name, ip.Unmap()}, now.Add(keep), i == 0)
			}
		}
	}
	s.prune(now)
}

// add inserts or refreshes one pair. s.mu is held.
func (s *answerSet) add(k pairKey, expires time.Time, queried bool) {
	if el, ok := s.pairs[k]; ok {
		p := el.Value.(*pair)
		if expires.After(p.expires) {
			p.expires = expires
		}
		p.queried = p.queried || queried
		s.order.MoveToBack(el)
		return
	}
	el := s.order.PushBack(&pair{pairKey: k, expires: expires, queried: queried})
	s.pairs[k] = el
	if s.byIP[k.ip] == nil {
		s.byIP[k.ip] = map[string]*list.Element{}
	}
	s.byIP[k.ip][k.name] = el
	for s.order.Len() > s.max {
		s.remove(s.order.Front())
	}
}

// prune drops expired pairs from the old end. s.mu is held.
func (s *answerSet) prune(now time.Time) {
	for el := s.order.Front(); el != nil && !now.Before(el.Value.(*pair).expires); el = s.order.Front() {
		s.remove(el)
	}
}

func (s *answerSet) remove(el *list.Element) {
	p := s.order.Remove(el).(*pair)
	delete(s.pairs, p.pairKey)
	if m := s.byIP[p.ip]; m != nil {
		delete(m, p.name)
		if len(m) == 0 {
			delete(s.byIP, p.ip)
		}
	}
}

// has reports whether name resolved to ip and has not expired at now.
func (s *answerSet) has(name string, ip netip.Addr, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.pairs[pairKey{name, ip}]
	return ok && now.Before(el.Value.(*pair).expires)
}

// names returns the unexpired names that resolved to ip: query names first,
// then CNAME targets, each group sorted.
func (s *answerSet) names(ip netip.Addr, now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []*pair
	for _, el := range s.byIP[ip] {
		if p := el.Value.(*pair); now.Before(p.expires) {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *pair) int {
		if a.queried != b.queried {
			if a.queried {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.name
	}
	return out
}

// snapshot returns the unexpired pairs.
func (s *answerSet) snapshot(now time.Time) []pair {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]pair, 0, len(s.pairs))
	for _, el := range s.pairs {
		if p := el.Value.(*pair); now.Before(p.expires) {
			out = append(out, *p)
		}
	}
	return out
}

// remember adds one pair until expires.
func (s *answerSet) remember(k pairKey, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.add(k, expires, true)
}

// answerAddrs are the addresses a record gives a client to dial: A, AAAA,
// and the ipv4hint/ipv6hint values of SVCB and HTTPS records (clients
// dial those too).
func answerAddrs(rr mdns.RR) []netip.Addr {
	var svcb *mdns.SVCB
	switch rr := rr.(type) {
	case *mdns.A:
		a, _ := netip.AddrFromSlice(rr.A.To4())
		return []netip.Addr{a}
	case *mdns.AAAA:
		a, _ := netip.AddrFromSlice(rr.AAAA.To16())
		return []netip.Addr{a}
	case *mdns.SVCB:
		svcb = rr
	case *mdns.HTTPS:
		svcb = &rr.SVCB
	default:
		return nil
	}
	var out []netip.Addr
	for _, kv := range svcb.Value {
		var hint []net.IP
		switch v := kv.(type) {
		case *mdns.SVCBIPv4Hint:
			hint = v.Hint
		case *mdns.SVCBIPv6Hint:
			hint = v.Hint
		}
		for _, h := range hint {
			if a, ok := netip.AddrFromSlice(h); ok {
				out = append(out, a)
			}
		}
	}
	return out
}
