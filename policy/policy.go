package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// Policy is a parsed, validated, indexed policy file. It is immutable after
// Parse except for rate-limit state, and safe for concurrent use.
type Policy struct {
	file   string
	def    *ruleSet   // containers that match no set
	sets   []*ruleSet // in file order; the first whose match selects a container wins
	nrules int        // enabled rules
	limits *limiter
	gen    uint64 // set by Engine.install

	proxiesOnce sync.Once // UpstreamProxies, computed on first use
	proxies     []string
	proxyAddrs  []netip.AddrPort
}

// ruleSet is one set of rules plus the index that makes Decide cost about
// the same for 10 or 10,000 rules: rules are looked up by host (exact map and
// a map of "*.suffix" globs) and by destination address (one map per CIDR
// prefix length in use, the classic hash-per-length longest-prefix scheme);
// only rules without any destination condition sit in a list scanned every
// time. Candidates from the lists are merged in rule order so first match
// wins, and every candidate has already matched the destination.
type ruleSet struct {
	name       string
	line       int
	sel        *selector
	def        Action
	defTimeout time.Duration
	route      *Route  // who is asked for the set's approve rules; nil = the daemon's default
	rules      []*rule // enabled rules, file order

	exact  map[string][]int32       // host -> rule indexes, ascending
	suffix map[string][]int32       // "example.com" for "*.example.com" -> rule indexes
	cidr   map[netip.Prefix][]int32 // masked prefix -> rule indexes
	lens4  []int                    // IPv4 prefix lengths present in cidr
	lens6  []int                    // IPv6 prefix lengths present in cidr
	other  []int32                  // rules without hosts or cidrs: any destination

	interceptAll    bool
	interceptExact  map[string]bool
	interceptSuffix map[string]bool
	resolveAll      bool // some allow/approve rule does not need a host name

	upstream UpstreamProxy // the set's upstream_proxy; zero: none

	// Learn, then enforce (issue 16 C).
	audit     bool            // mode: audit
	nextSteps string          // next_steps for the set's default decisions
	ruleNames map[string]bool // every rule's name, disabled ones too (policy suggest --diff)
}

type rule struct {
	name    string
	line    int
	enabled bool
	idx     int32

	hosts     []hostPattern
	ports     []portRange
	cidrs     []netip.Prefix
	methods   []string
	paths     []pathPattern
	headers   []headerCond
	body      [][]byte // lower case; all must occur
	readonly  bool
	action    Action
	timeout   time.Duration
	route     *Route // who is asked; nil = the daemon's default route
	rate      *rateSpec
	intercept bool
	reason    string
	httpCond  bool // needs HTTP facts (method/path/header/body/readonly)
	// upstream is the rule's upstream_proxy: nil inherits the set's, a
	// zero value is "none".
	upstream *UpstreamProxy
	// nextSteps is the rule's next_steps text for the agent (issue 16 C).
	nextSteps string

	// binaries (issue 16): which programs the rule is for; nil: any.
	binaries []binaryPattern

	// LLM budgets (issue 16, budget): the rule's `budget:`; nil: none.
	budget *Budget

	// MCP tool calls (issue 16, "mcp"; policy/mcp.go): the rule reads
	// JSON-RPC bodies and decides tools/call by tools.
	mcp   bool
	tools []toolRule

	// Reasons built once at parse time: formatting them per decision would
	// cost more than the whole indexed lookup.
	allowReason, approveReason string
}

func (r *rule) prepare() {
	r.allowReason = fmt.Sprintf("allowed by rule %q", r.name)
	r.approveReason = fmt.Sprintf("rule %q requires human approval", r.name)
	if r.reason != "" {
		r.allowReason += ": " + r.reason
		r.approveReason += ": " + r.reason
	}
}

func newSet(name string, line int) *ruleSet {
	return &ruleSet{
		name:            name,
		line:            line,
		def:             Deny,
		defTimeout:      DefaultApprovalTimeout,
		exact:           map[string][]int32{},
		cidr:            map[netip.Prefix][]int32{},
		suffix:          map[string][]int32{},
		interceptExact:  map[string]bool{},
		interceptSuffix: map[string]bool{},
	}
}

func (s *ruleSet) add(r *rule) {
	r.prepare()
	r.idx = int32(len(s.rules))
	s.rules = append(s.rules, r)
	for _, h := range r.hosts {
		m := s.exact
		if h.glob {
			m = s.suffix
		}
		if l := m[h.name]; len(l) == 0 || l[len(l)-1] != r.idx {
			m[h.name] = append(l, r.idx)
		}
		if r.intercept {
			if h.glob {
				s.interceptSuffix[h.name] = true
			} else {
				s.interceptExact[h.name] = true
			}
		}
	}
	// A rule with hosts and cidrs is in both indexes; the merge deduplicates.
	for _, c := range r.cidrs {
		if l := s.cidr[c]; len(l) == 0 || l[len(l)-1] != r.idx {
			s.cidr[c] = append(l, r.idx)
		}
		if c.Addr().Is4() {
			s.lens4 = addLen(s.lens4, c.Bits())
		} else {
			s.lens6 = addLen(s.lens6, c.Bits())
		}
	}
	if len(r.hosts) == 0 && len(r.cidrs) == 0 {
		s.other = append(s.other, r.idx)
		if r.intercept {
			s.interceptAll = true
		}
	}
	if (len(r.hosts) == 0 || len(r.cidrs) > 0) && (r.readonly || r.action != Deny) {
		s.resolveAll = true
	}
}

// maxHostLen is the longest valid DNS name. Longer "hosts" (a hostile Host
// header) match no host rule and skip the per-label lookups, whose cost
// grows with the square of the length.
const maxHostLen = 253

func addLen(lens []int, bits int) []int {
	for _, l := range lens {
		if l == bits {
			return lens
		}
	}
	return append(lens, bits)
}

func (s *ruleSet) intercepts(host string) bool {
	if host == "" || len(host) > maxHostLen {
		return false
	}
	if s.interceptAll {
		return true
	}
	if s.interceptExact[host] {
		return true
	}
	for i := 0; i < len(host); i++ {
		if host[i] == '.' && s.interceptSuffix[host[i+1:]] {
			return true
		}
	}
	return false
}

// interceptsPattern reports whether every host matched by h is intercepted.
func (s *ruleSet) interceptsPattern(h hostPattern) bool {
	if s.interceptAll {
		return true
	}
	if !h.glob && s.intercepts(h.name) {
		return true
	}
	for name := range s.interceptSuffix {
		if (hostPattern{name: name, glob: true}).covers(h) {
			return true
		}
	}
	return false
}

// File is the name the policy was parsed from.
func (p *Policy) File() string { return p.file }

// Rules is the number of enabled rules over all sets.
func (p *Policy) Rules() int { return p.nrules }

// Sets names the rule sets in evaluation order, ending with "default".
func (p *Policy) Sets() []string {
	out := make([]string, 0, len(p.sets)+1)
	for _, s := range p.sets {
		out = append(out, s.name)
	}
	return append(out, p.def.name)
}

func (p *Policy) setFor(c Container) *ruleSet {
	for _, s := range p.sets {
		if s.sel.match(c) {
			return s
		}
	}
	return p.def
}

// SetFor names the rule set that applies to c ("default" when no set's
// match selects it).
func (p *Policy) SetFor(c Container) string { return p.setFor(c).name }

// Intercepts reports whether TLS from c to host should be terminated by
// clawd so that method, path, header and body rules can apply.
func (p *Policy) Intercepts(c Container, host string) bool {
	return p.setFor(c).intercepts(hostname.Normalize(host))
}

// MayResolve reports whether some rule in c's set could allow or approve a
// connection to the DNS name. When false, the DNS resolver can answer
// NXDOMAIN. Rules matching by IP, rules without hosts and a non-deny
// default make every name resolvable, since the address decides there.
func (p *Policy) MayResolve(c Container, name string) bool {
	s := p.setFor(c)
	if s.resolveAll || s.def != Deny || s.audit {
		// In audit mode nothing is refused by policy, DNS included: the
		// connection that follows is decided (and audited) by address.
		return true
	}
	name = hostname.Normalize(name)
	if name == "" || len(name) > maxHostLen {
		return false
	}
	if s.anyAllows(s.exact[name]) {
		return true
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' && s.anyAllows(s.suffix[name[i+1:]]) {
			return true
		}
	}
	return false
}

func (s *ruleSet) anyAllows(idx []int32) bool {
	for _, i := range idx {
		if r := s.rules[i]; r.readonly || r.action != Deny {
			return true
		}
	}
	return false
}

// maxLists bounds the candidate lists merged on the stack; a host with more
// labels than this falls back to a heap slice.
const maxLists = 16

// Decide evaluates in against the container's rule set: the first rule in
// file order whose conditions all hold decides; when none does, the set's
// default action does. It only mutates rate-limit state.
func (p *Policy) Decide(in Input) Decision {
	d := p.decide(in)
	d.Generation = p.gen
	return d
}

// SetMode is the mode of the rule set that applies to c.
func (p *Policy) SetMode(c Container) Mode {
	if p.setFor(c).audit {
		return AuditMode
	}
	return Enforce
}

// Generation numbers the policies an Engine installed (1, 2, …); 0 for a
// Policy no Engine installed.
func (p *Policy) Generation() uint64 { return p.gen }

func (p *Policy) decide(in Input) Decision {
	s := p.setFor(in.Container)
	host := hostname.Normalize(in.Host)
	d := Decision{Intercept: s.intercepts(host), UpstreamProxy: s.upstream, Audit: s.audit}

	// Candidate lists: exact host, each "*.suffix" the host falls under,
	// each CIDR containing the address, and the any-destination rules.
	var buf [maxLists][]int32
	lists := buf[:0]
	if host != "" && len(host) <= maxHostLen {
		if l := s.exact[host]; len(l) > 0 {
			lists = append(lists, l)
		}
		for i := 0; i < len(host); i++ {
			if host[i] != '.' {
				continue
			}
			if l := s.suffix[host[i+1:]]; len(l) > 0 {
				lists = append(lists, l)
			}
		}
	}
	if in.DstIP.IsValid() && len(s.cidr) > 0 {
		ip := in.DstIP.WithZone("").Unmap()
		lens := s.lens6
		if ip.Is4() {
			lens = s.lens4
		}
		for _, bits := range lens {
			if pfx, err := ip.Prefix(bits); err == nil {
				if l := s.cidr[pfx]; len(l) > 0 {
					lists = append(lists, l)
				}
			}
		}
	}
	if len(s.other) > 0 {
		lists = append(lists, s.other)
	}

	var segs []string // normalized path, computed on first need
	var pathErr error
	pathDone := false

	for {
		// Pick the lowest rule index at the head of any list.
		best := int32(-1)
		for _, l := range lists {
			if len(l) > 0 && (best < 0 || l[0] < best) {
				best = l[0]
			}
		}
		if best < 0 {
			break
		}
		for j, l := range lists {
			if len(l) > 0 && l[0] == best {
				lists[j] = l[1:]
			}
		}
		r := s.rules[best]

		// The indexes matched the destination; the rest is checked here.
		if len(r.ports) > 0 && !portIn(r.ports, in.DstPort) {
			continue
		}
		if !r.binariesMatch(in.Program) {
			continue
		}
		if r.httpCond {
			if in.Method == "" {
				// No HTTP facts (raw TCP, TLS passthrough): the rule cannot
				// apply. Intercepted TLS is decided request by request by
				// the proxy, never here, and letting a connection through
				// because it *might* be HTTPS would open raw TCP (ssh to an
				// intercepted host) to rules meant for reads.
				continue
			}
			if len(r.methods) > 0 && !methodIn(r.methods, in.Method) {
				continue
			}
			if len(r.paths) > 0 {
				if !pathDone {
					segs, pathErr = normalizePath(in.Path)
					pathDone = true
				}
				if pathErr != nil {
					d.Action = Deny
					d.Rule = r.name
					d.NextSteps = r.nextSteps
					d.Reason = fmt.Sprintf("denied: %v; rule %q matches by path, so send the path in plain form", pathErr, r.name)
					return d
				}
				if !anyPath(r.paths, segs) {
					continue
				}
			}
			if !headersMatch(r.headers, in) {
				continue
			}
			if len(r.body) > 0 || r.mcp {
				if !in.BodyKnown {
					d.Action = Deny
					d.Rule = r.name
					d.NeedBody = true
					d.Reason = fmt.Sprintf("rule %q looks at the request body; buffer it and decide again", r.name)
					return d
				}
				if !bodyMatch(r.body, in.Body) {
					continue
				}
			}
			if r.mcp {
				var a Action
				a, d.MCP = r.decideMCP(in)
				return p.finishAs(s, r, a, in, d, host)
			}
		}
		return p.finish(s, r, in, d, host)
	}

	d.Rule = "default"
	d.Action = s.def
	d.NextSteps = s.nextSteps
	switch s.def {
	case Allow:
		d.Reason = fmt.Sprintf("allowed by the default action of set %q", s.name)
	case Approve:
		d.ApprovalTimeout = s.defTimeout
		d.Route = s.route
		d.Reason = fmt.Sprintf("no rule matched %s; set %q holds it for approval by default", describeDst(host, in), s.name)
	default:
		d.Reason = fmt.Sprintf("no rule allows %s for container %q (set %q); add a rule to the policy to allow it", describeDst(host, in), containerName(in.Container), s.name)
	}
	return d
}

func (p *Policy) finish(s *ruleSet, r *rule, in Input, d Decision, host string) Decision {
	return p.finishAs(s, r, r.action, in, d, host)
}

// finishAs completes the decision of rule r with action a (the rule's
// action, or for an mcp rule the most restrictive of the request's calls).
func (p *Policy) finishAs(s *ruleSet, r *rule, a Action, in Input, d Decision, host string) Decision {
	d.Rule = r.name
	d.Action = a
	d.NextSteps = r.nextSteps
	d.ByCIDR = r.coversIP(in.DstIP)
	if r.upstream != nil {
		d.UpstreamProxy = *r.upstream
	}
	if r.readonly {
		if methodIn(readMethods, in.Method) {
			d.Action = Allow
		} else {
			d.Action = Approve
		}
	}
	if r.rate != nil && d.Action != Deny && p.limits != nil && !in.Recheck {
		now := in.Now
		if now.IsZero() {
			now = time.Now()
		}
		if ok, retry := p.limits.take(limitKey{set: s.name, rule: r.name, n: r.rate.n, per: r.rate.per, who: limiterID(in.Container)}, *r.rate, now); !ok {
			d.Action = Deny
			d.RateLimited = true
			d.RetryAfter = retry
			d.Reason = fmt.Sprintf("rate limit of rule %q (%d per %s) exceeded; retry after %s", r.name, r.rate.n, unitName(r.rate.per), retry)
			return d
		}
	}
	if d.Action != Deny {
		d.Budget = r.budget // the gate charges it (LLM budgets, issue 16)
	}
	switch d.Action {
	case Allow:
		d.Reason = r.allowReason
	case Approve:
		d.ApprovalTimeout = r.timeout
		d.Route = r.route
		if r.readonly {
			d.Reason = fmt.Sprintf("rule %q is read-only: %s needs human approval", r.name, in.Method)
		} else {
			d.Reason = r.approveReason
		}
	case Deny:
		d.Reason = fmt.Sprintf("denied by rule %q for %s", r.name, describeDst(host, in))
		if r.reason != "" {
			d.Reason += ": " + r.reason
		}
	}
	if m := d.MCP; m != nil && a != r.action {
		d.Reason = m.reason(r)
	}
	return d
}

func describeDst(host string, in Input) string {
	switch {
	case host != "" && in.DstPort != 0:
		return fmt.Sprintf("host %q port %d", host, in.DstPort)
	case host != "":
		return fmt.Sprintf("host %q", host)
	case in.DstIP.IsValid():
		return fmt.Sprintf("%s", netip.AddrPortFrom(in.DstIP, in.DstPort))
	case in.DstPort != 0:
		return fmt.Sprintf("port %d", in.DstPort)
	}
	return "this destination"
}

func containerName(c Container) string {
	if c.Name != "" {
		return c.Name
	}
	return c.ID
}

var readMethods = []string{"GET", "HEAD", "OPTIONS"}

// methodIn compares methods case-insensitively: HTTP says methods are
// case-sensitive, but some servers upper-case them, and a deny rule for
// DELETE must not be dodged by sending "delete".
func methodIn(methods []string, m string) bool {
	for _, x := range methods {
		if strings.EqualFold(x, m) {
			return true
		}
	}
	return false
}

func portIn(ports []portRange, p uint16) bool {
	for _, r := range ports {
		if r.lo <= p && p <= r.hi {
			return true
		}
	}
	return false
}

func anyPath(paths []pathPattern, segs []string) bool {
	for _, pp := range paths {
		if pp.match(segs) {
			return true
		}
	}
	return false
}

func headersMatch(conds []headerCond, in Input) bool {
	for _, h := range conds {
		ok := false
		for _, v := range in.Header[h.name] {
			if glob(h.value, v) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func bodyMatch(needles [][]byte, body []byte) bool {
	for _, n := range needles {
		if !containsFold(body, n) {
			return false
		}
	}
	return true
}

// HTTPLevel reports whether c's rule set treats a connection to host (the
// SNI, or a name clawd's DNS gave c for ip; "" for none) at ip:port at the
// HTTP level: some rule that could apply to it is marked `intercept` or has
// an HTTP condition (method, path, header, body, readonly). Such a
// connection must never be spliced raw: the proxy frames it (TLS
// interception, HTTP parsing) or refuses it, whatever the timing or shape of
// its first bytes. Rules whose ports exclude port do not count, so ssh to a
// host whose HTTP rules name port 443 stays a connection-level decision;
// port 0 means any port (the DNS resolver, which knows none).
func (p *Policy) HTTPLevel(c Container, host string, ip netip.Addr, port uint16) bool {
	return p.setFor(c).httpLevel(host, ip, port)
}

func (s *ruleSet) httpLevel(host string, ip netip.Addr, port uint16) bool {
	level := func(idx []int32) bool {
		for _, i := range idx {
			r := s.rules[i]
			if (r.intercept || r.httpCond) && (len(r.ports) == 0 || port == 0 || portIn(r.ports, port)) {
				return true
			}
		}
		return false
	}
	if level(s.other) {
		return true
	}
	if host = hostname.Normalize(host); host != "" && len(host) <= maxHostLen {
		if level(s.exact[host]) {
			return true
		}
		for i := 0; i < len(host); i++ {
			if host[i] == '.' && level(s.suffix[host[i+1:]]) {
				return true
			}
		}
	}
	found := false
	s.eachCIDR(ip, func(idx []int32) bool {
		found = level(idx)
		return !found
	})
	return found
}

// CIDRCovers reports whether some rule of c's set that can allow or approve
// names ip in its `cidrs`, for port (0: any port; DNS answers know none).
// Special addresses (loopback, private, the host's own, ...; see
// internal/addrclass) are dial targets only then.
func (p *Policy) CIDRCovers(c Container, ip netip.Addr, port uint16) bool {
	s := p.setFor(c)
	found := false
	s.eachCIDR(ip, func(idx []int32) bool {
		for _, i := range idx {
			r := s.rules[i]
			if (r.readonly || r.action != Deny) && (port == 0 || len(r.ports) == 0 || portIn(r.ports, port)) {
				found = true
				return false
			}
		}
		return true
	})
	return found
}

// eachCIDR calls f with the rule list of every CIDR in use that contains ip,
// until f returns false.
func (s *ruleSet) eachCIDR(ip netip.Addr, f func([]int32) bool) {
	if !ip.IsValid() || len(s.cidr) == 0 {
		return
	}
	ip = ip.WithZone("").Unmap()
	lens := s.lens6
	if ip.Is4() {
		lens = s.lens4
	}
	for _, bits := range lens {
		if pfx, err := ip.Prefix(bits); err == nil {
			if l := s.cidr[pfx]; len(l) > 0 && !f(l) {
				return
			}
		}
	}
}

// coversIP reports whether one of r's cidrs contains ip.
func (r *rule) coversIP(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("").Unmap()
	for _, c := range r.cidrs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// HTTPLevelInAnySet is HTTPLevel(c, host, no address, any port) for every
// container at once: true when some set treats host at the HTTP level.
// The DNS resolver remembers addresses of such names for every container.
func (p *Policy) HTTPLevelInAnySet(host string) bool {
	for _, s := range append(slices.Clone(p.sets), p.def) {
		if s.httpLevel(host, netip.Addr{}, 0) {
			return true
		}
	}
	return false
}
