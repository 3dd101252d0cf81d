package proxy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/usage"
)

// The gate is the one place where the proxy decides. conn.go and http.go
// gather facts (the container, the destination it dialled, the names clawd's
// DNS gave it for that address, the TLS server name, the framed HTTP
// request) and carry out the verdict the gate returns; they never consult
// the policy themselves. Its rules, each an invariant with tests:
//
//  1. A destination that the container's rule set treats at the HTTP level
//     (the address, the SNI, or any name clawd's DNS gave the container for
//     the address is covered by a rule marked intercept or with an HTTP
//     condition) is never spliced raw: it is framed (TLS interception,
//     HTTP parsing) or refused. How late or how oddly the client's first
//     bytes arrive never changes that.
//  2. A connection-level decision takes the most restrictive rule that
//     applies to any of the destination's names (deny > approve > allow),
//     so a co-hosted name cannot lend its rule to another.
//  3. A special address (loopback, link-local, private, the host's or
//     another container's own; internal/addrclass) is dialled only when the
//     deciding rule names it in `cidrs`: a DNS answer cannot rebind a name
//     rule onto it.
//  4. clawd's own API and metrics, and unspecified addresses, are refused
//     whatever the policy says.
//  5. A rule set in `mode: audit` relaxes only the policy's own verdicts
//     (applyMode): its deny, approve and rate-limit decisions are carried
//     out as allow and audited with `mode: audit, would: ACTION`. Every
//     refusal the gate makes itself stays a refusal in audit mode, because
//     it protects clawd and the host rather than expressing the author's
//     wishes: clawd-internal (its API, metrics, unspecified addresses),
//     special-address (invariant 3: a deny or approve rule naming a
//     special address in cidrs, relaxed to allow, lends it nothing; only an
//     allow rule naming it may reach it, as nobody is asked), host-mismatch,
//     unframable (invariant 1) and "interception not configured". A
//     budget's refusals (spent, unmeterable, unreadable body) are the
//     policy's: in audit mode they go through as would deny. Approve
//     rules do not hold in audit mode (nobody is asked); secrets are
//     injected as in enforce mode. A reload that switches a set to enforce
//     re-decides open streams (live.go) and cuts those now denied.
//  6. An LLM budget (issue 16) applies by the destination, not by the
//     Host header alone: a request whose Host is an address is charged to
//     the budgets of the rules of every name living there, as well as its
//     deciding rule's (another rule naming the address cannot lend it an
//     unbudgeted way in). Every budget admits it against its estimate,
//     reserved until it settles, or it is refused with 429 (admitBudgets).

// stage is how far the sniffer got with a connection's first bytes.
type stage int

const (
	stageLate   stage = iota // no byte arrived within the peek timeout
	stageTLS                 // a whole TLS ClientHello (sni may be "")
	stageBadTLS              // a TLS handshake record without a readable ClientHello
	stageHTTP                // an HTTP/1.x request line
	stageOther               // bytes that are neither
)

// connFacts are the facts known about a connection before any request.
type connFacts struct {
	meta   ConnMeta
	stage  stage
	waited bool     // stageLate after the bounded wait for a slow client, too
	again  bool     // a re-decision of an open splice (rate limits do not apply)
	sni    string   // normalised; "" when absent
	names  []string // names clawd's DNS gave the container for the address
	cls    *classCache
}

// connAction is what conn.go does with a connection.
type connAction int

const (
	actRefuse    connAction = iota // reset, or a TLS alert for TLS stages
	actSplice                      // splice to OrigDst (Approve: hold first)
	actIntercept                   // terminate TLS, then frame HTTP
	actFrame                       // parse HTTP, each request decided by gateRequest
	actWait                        // wait (bounded) for the first bytes, then ask again
)

// connVerdict carries its audit entry: conn.go adds outcome facts (bytes,
// approval) and records it.
type connVerdict struct {
	act  connAction
	d    policy.Decision // for actRefuse and actSplice
	host string          // the name d was decided on; "" for the address alone
	e    audit.Entry
}

// Rule names the gate itself decides with.
const (
	ruleInternal       = "clawd-internal"
	ruleHostMismatch   = "host-mismatch"
	ruleSpecialAddress = "special-address"
	ruleUnframable     = "unframable"
)

// Audit protocols by stage.
func (st stage) proto() string {
	switch st {
	case stageTLS, stageBadTLS:
		return "tls"
	case stageHTTP:
		return "http"
	}
	return "tcp"
}

func refuse(rule, reason string) policy.Decision {
	return policy.Decision{Action: policy.Deny, Rule: rule, Reason: reason}
}

// gateConn decides a connection from what its first bytes showed.
func (s *Server) gateConn(f connFacts) connVerdict {
	m := f.meta
	ip := m.OrigDst.Addr()
	v := connVerdict{e: s.entry(m, f.stage.proto())}
	v.e.SNI = f.sni
	if s.internal(m.OrigDst) {
		if f.stage == stageHTTP {
			v.act = actFrame // every request gets the 403 that says why
			return v
		}
		v.d = refuse(ruleInternal, "destination is clawd itself or the host (unspecified address)")
		return v
	}
	if f.stage == stageTLS && f.sni != "" && !s.consistent(m.Container, f.sni, ip) {
		v.e.Host = f.sni
		v.d = refuse(ruleHostMismatch, "host_mismatch: server name does not resolve to the destination")
		return v
	}
	hosts := slices.Clone(f.names)
	if f.sni != "" {
		// The name the client claims first: a default decision is its.
		hosts = append([]string{f.sni}, slices.DeleteFunc(slices.Clone(hosts), func(n string) bool { return n == f.sni })...)
	}
	// Names other containers were given for the address (and the sticky
	// memory of HTTP-level names) decide whether it is HTTP-level: the
	// server is the same whoever looked it up. The connection-level
	// decision below weighs this container's own names, as the issue's
	// invariant 3 states; a hard-coded address whose only names are
	// other containers' is decided by the address.
	if s.httpLevel(m, hosts) || s.httpLevel(m, s.namesForAny(m)) {
		switch f.stage {
		case stageLate:
			if !f.waited {
				v.act = actWait
				return v
			}
			v.d = refuse(ruleUnframable, "the client sent nothing; this destination has HTTP-level rules, so clawd waits for a request and does not splice")
		case stageTLS:
			switch {
			case f.sni == "":
				v.d = refuse(ruleUnframable, "TLS without a server name to a destination with HTTP-level rules: clawd must see the name to intercept")
			case s.cfg.CA == nil:
				v.e.Host = f.sni
				v.d = refuse("default", "interception not configured")
			default:
				v.e.Host = f.sni
				v.act = actIntercept
			}
		case stageBadTLS:
			v.d = refuse(ruleUnframable, "unreadable TLS ClientHello to a destination with HTTP-level rules")
		case stageOther:
			v.d = refuse(ruleUnframable, "neither TLS nor an HTTP request to a destination with HTTP-level rules")
		default:
			v.act = actFrame
		}
		return v
	}
	if f.stage == stageHTTP {
		v.act = actFrame
		return v
	}
	v.d, v.host = s.connDecision(m, hosts, f.again)
	v.d = s.guardAddr(v.d, policy.Input{Container: m.Container, DstIP: ip, DstPort: m.OrigDst.Port(), Recheck: f.again, Program: m.Program}, f.cls)
	if f.stage == stageBadTLS && v.d.Action != policy.Deny && !v.d.ByCIDR {
		// A ClientHello crypto/tls cannot read (a trailing-dot or otherwise
		// invalid name, SSLv2 framing, larger than the sniff buffer) names
		// no host clawd could check: only a rule naming the address may
		// let it through unread.
		v.d = refuse(ruleUnframable, "unreadable TLS ClientHello: only a rule that names the address in cidrs can allow TLS whose server name clawd cannot read")
	}
	v.e.Host = v.host
	if severity(v.d) == severity(refuse("", "")) && f.stage == stageLate && !f.waited {
		// A slow client (a loaded host, a busy agent) whose connection the
		// destination alone would deny (or would, in audit mode): decide it
		// on what it sends.
		v.act = actWait
		return v
	}
	if v.d.Action != policy.Deny {
		v.act = actSplice
	}
	return v
}

// httpLevel reports whether any of hosts, or the address alone, is treated
// at the HTTP level on this destination.
func (s *Server) httpLevel(m ConnMeta, hosts []string) bool {
	ip, port := m.OrigDst.Addr(), m.OrigDst.Port()
	if s.cfg.Decider.HTTPLevel(m.Container, "", ip, port) {
		return true
	}
	for _, h := range hosts {
		if s.cfg.Decider.HTTPLevel(m.Container, h, ip, port) {
			return true
		}
	}
	return false
}

// namesForAny are the names clawd's DNS gave any container for the
// destination address (Names may implement it; see proxy/dns).
func (s *Server) namesForAny(m ConnMeta) []string {
	if n, ok := s.cfg.Names.(interface{ NamesForAny(netip.Addr) []string }); ok {
		return n.NamesForAny(m.OrigDst.Addr())
	}
	return nil
}

// connDecision is the connection-level decision: the most restrictive rule
// that applies to any of hosts (deny > approve > allow). Decisions by a
// set's default action apply only when no rule does; with no names the
// address alone decides.
func (s *Server) connDecision(m ConnMeta, hosts []string, again bool) (policy.Decision, string) {
	in := policy.Input{Container: m.Container, DstIP: m.OrigDst.Addr(), DstPort: m.OrigDst.Port(), Recheck: again, Program: m.Program}
	if len(hosts) == 0 {
		return s.decideConn(in), ""
	}
	var best, dflt policy.Decision
	bestHost, dfltHost := "", ""
	have, haveDflt := false, false
	for _, h := range hosts {
		in.Host = h
		d := s.decideConn(in)
		if d.Rule == "default" {
			if !haveDflt {
				dflt, dfltHost, haveDflt = d, h, true
			}
			continue
		}
		if !have || severity(d) > severity(best) {
			best, bestHost, have = d, h, true
		}
	}
	if have {
		return best, bestHost
	}
	return dflt, dfltHost
}

// severity ranks a decision by what enforcement does with it: in audit
// mode by the action it would take (Would), so invariant 2 still picks the
// most restrictive name's rule for the audit line.
func severity(d policy.Decision) int {
	a := d.Action
	if d.Would != "" {
		a = d.Would
	}
	switch a {
	case policy.Allow:
		return 0
	case policy.Approve:
		return 1
	}
	return 2
}

// decideConn decides a connection-level Input (no HTTP facts). A body
// condition cannot match a connection, so NeedBody is answered with an empty
// known body.
func (s *Server) decideConn(in policy.Input) policy.Decision {
	d := s.decide(in)
	if d.NeedBody {
		in.BodyKnown = true
		d = s.decide(in)
	}
	return d
}

// guardAddr refuses an allow or approve decision for a special address
// unless a rule that allows it names the address (and port) in its cidrs
// (invariant 3); and then the address's own decision (in without the host
// name, so the cidrs rules decide) applies too, the stricter of the two:
// a name rule cannot lend its allow to an address whose cidrs rule asks
// for approval.
func (s *Server) guardAddr(d policy.Decision, in policy.Input, cache *classCache) policy.Decision {
	if d.Action == policy.Deny || d.ByCIDR {
		return d
	}
	ip := in.DstIP
	cls := cache.get(s, ip)
	if cls == addrclass.Public {
		return d
	}
	if !s.cfg.Decider.CIDRCovers(in.Container, ip, in.DstPort) {
		return refuse(ruleSpecialAddress, fmt.Sprintf(
			"destination %s is a %s address; only a rule that names it in cidrs may reach it (a DNS answer pointing a name there is not enough)", ip, cls))
	}
	in.Host = ""
	byAddr := s.decide(in)
	if byAddr.NeedBody {
		return byAddr // the request's caller buffers the body and asks again
	}
	if byAddr.Audit && (byAddr.Would != policy.Allow || !byAddr.ByCIDR) {
		// Mode audit asks nobody: a cidrs rule that would only hold the
		// address (or refuse it) relaxed to allow lends it nothing; only
		// one that allows it does.
		return refuse(ruleSpecialAddress, fmt.Sprintf(
			"destination %s is a %s address; in mode audit only a rule that allows it in cidrs may reach it (one that would hold it for approval is not enough: nobody is asked)", ip, cls))
	}
	if severity(byAddr) > severity(d) {
		return byAddr
	}
	return d
}

// classify is the address class of ip (Config.Classify).
func (s *Server) classify(ip netip.Addr) addrclass.Class { return s.cfg.Classify(ip) }

// classCache classifies a connection's destination once: the host's
// addresses are listed by a system call, too slow for every request.
type classCache struct {
	once sync.Once
	c    addrclass.Class
}

func (cc *classCache) get(s *Server, ip netip.Addr) addrclass.Class {
	if cc == nil {
		return s.classify(ip)
	}
	cc.once.Do(func() { cc.c = s.classify(ip) })
	return cc.c
}

// reqFacts are the facts of one framed HTTP request.
type reqFacts struct {
	key string // the container's Key
	sni string // intercepted server name; "" for plain HTTP
	in  policy.Input
	cls *classCache // the connection's
	// names lists the names clawd's DNS gave this container or any other
	// for the destination (asked only when Host is an address).
	names func(netip.AddrPort) []string
	// body reads the request body's facts for a budget's estimate (asked
	// only when a budget applies): its length (-1: unknown), whether it
	// is encoded, and its first bytes (all of it when known).
	body func() (n int64, encoded bool, peek []byte)
	// encodedBody: the request body has a Content-Encoding. A budget's
	// estimate needs it decoded: the gate asks for the body (NeedBody).
	encodedBody bool
}

// gateRequest decides one HTTP request. A NeedBody decision asks the caller
// to buffer the body and call again with in.BodyKnown set. A decision with
// a Budget that is not Deny was admitted by the budget ledger (unless
// in.Recheck): the caller settles it exactly once (see usage.go).
func (s *Server) gateRequest(f reqFacts, dst netip.AddrPort) policy.Decision {
	if s.internal(dst) {
		return refuse(ruleInternal, "destination is clawd itself or the host (unspecified address)")
	}
	host := f.in.Host
	if (f.sni != "" && host != f.sni) || !s.consistentKey(f.key, host, dst.Addr()) {
		return refuse(ruleHostMismatch, "host does not resolve to the destination the agent connected to")
	}
	d := s.decide(f.in)
	if d.NeedBody {
		return d
	}
	var budgets []*policy.Budget // of every name's rule (invariant 6)
	addBudget := func(b *policy.Budget) {
		if b != nil && !slices.ContainsFunc(budgets, func(x *policy.Budget) bool { return x.ID == b.ID }) {
			budgets = append(budgets, b)
		}
	}
	if hostname.IsIP(host) && f.names != nil {
		// Host is the address itself (or absent): the server behind it is
		// whatever name lives there, so each name's rules apply too, the
		// most restrictive winning, as for a connection (invariant 2).
		in := f.in
		for _, n := range f.names(dst) {
			in.Host = n
			nd := s.decide(in)
			if nd.NeedBody || nd.Rule != "default" && severity(nd) > severity(d) {
				d = nd
			}
			if d.NeedBody {
				return d
			}
			if nd.Action != policy.Deny || nd.Would != "" {
				addBudget(nd.Budget)
			}
		}
	}
	d = s.guardAddr(d, f.in, f.cls)
	if d.Action == policy.Deny || d.NeedBody {
		return d
	}
	names := budgets
	budgets = nil
	addBudget(d.Budget) // the deciding rule's first
	for _, b := range names {
		addBudget(b)
	}
	if len(budgets) == 0 {
		return d
	}
	if d.Budget == nil {
		d.Budget = budgets[0]
	}
	if f.in.Recheck {
		return d // admitted once, when it was forwarded
	}
	if why := unmeterable(f.in, budgets); why != "" {
		if !d.Audit {
			d.Action, d.BudgetRefused, d.Reason = policy.Deny, "budget_unmeterable", why
			return d
		}
		// Mode audit (invariant 5): a budget's verdict, like a spent
		// one, goes through recorded as would deny (at its estimate).
		d.Would, d.Reason = policy.Deny, why
	}
	if !f.in.BodyKnown && (f.encodedBody || f.body != nil && bodyLonger(f.body)) {
		// The estimate reads the whole body: a compressed one hides its
		// max_tokens, a longer one than the peek may name it (again:
		// JSON parsers keep the last) after it. Such a body is buffered
		// (and decoded) first, bounded like any body clawd reads.
		d.NeedBody = true
		return d
	}
	return s.admitBudgets(f, d, budgets)
}

// bodyLonger reports a body longer than the estimate's peek (or of
// unknown length and not over within it).
func bodyLonger(body func() (int64, bool, []byte)) bool {
	n, _, peek := body()
	return n < 0 || n > int64(len(peek))
}

// admitBudgets carries out invariant 6 (LLM budgets, issue 16): a request
// is admitted under every budget that applies to it (see gateRequest), its
// estimate reserved in each, or refused with 429: budget_exhausted when a
// window cannot fit it, budget_busy when only what requests in flight
// reserved is in the way. An admitted request is settled by http.go, once
// (usage.go).
func (s *Server) admitBudgets(f reqFacts, d policy.Decision, budgets []*policy.Budget) policy.Decision {
	var est usage.Estimate
	if f.body != nil {
		est = usage.EstimateRequest(f.body())
	} else {
		est = usage.EstimateRequest(0, false, nil)
	}
	if est.Refused != "" {
		if !d.Audit {
			d.Action, d.BudgetRefused, d.Reason = policy.Deny, "budget_unreadable_body", est.Refused
			return d
		}
		d.Would, d.Reason = policy.Deny, est.Refused // mode audit, as above
	}
	now := s.cfg.Now()
	name := f.in.Container.Name
	key := f.in.Container.BudgetKey()
	for i, b := range budgets {
		k := usage.Key{Container: key, Budget: b.ID}
		ok, why := s.usage.Admit(k, name, b, est.Total(), now)
		switch {
		case ok:
		case d.Audit:
			// Mode audit (invariant 5): a spent budget is a policy
			// verdict, so the request goes through, recorded as
			// would deny, and its usage still counts.
			s.usage.Enter(k, name, b, est.Total(), now)
			d.Would, d.Reason = policy.Deny, why.Reason
		default:
			for _, a := range budgets[:i] {
				s.usage.Settle(usage.Key{Container: key, Budget: a.ID}, a, est.Total(), false, 0, now)
			}
			d.Action, d.BudgetSpent, d.BudgetBusy, d.RetryAfter, d.Reason = policy.Deny, true, why.Busy, why.Retry, why.Reason
			d.Budget = b
			d.Rule = b.ID[strings.LastIndexByte(b.ID, '/')+1:] // the budget's rule refuses
			return d
		}
	}
	d.Budgets, d.BudgetIn, d.BudgetOut = budgets, est.In, est.Out
	d.BudgetReferenced = est.Referenced
	d.BudgetAskUsage = est.Stream && !est.UsageAsked && chatPath(f.in.Path)
	return d
}

// requestPath is a request target's path without its query.
func requestPath(target string) string {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	return strings.TrimRight(target, "/")
}

// chatPath says whether a request is for an OpenAI-style (chat)
// completions endpoint, whose streams report usage only when asked
// (stream_options.include_usage).
func chatPath(target string) bool {
	p := requestPath(target)
	return strings.HasSuffix(p, "/chat/completions") || strings.HasSuffix(p, "/v1/completions") || p == "/completions"
}

// unmeterable says why a request under budgets cannot be metered, unless
// every one of them opts in (LLM budgets, issue 16): an upgraded
// connection (websocket: OpenAI Realtime; policy.Budget.Websocket) and
// batch creation (its requests run later and their results are not
// metered; policy.Budget.Batches). "": it can be.
func unmeterable(in policy.Input, budgets []*policy.Budget) string {
	every := func(opt func(*policy.Budget) bool) bool {
		for _, b := range budgets {
			if !opt(b) {
				return false
			}
		}
		return true
	}
	h := in.Header.Clone()
	stripH2CUpgrade(h) // never forwarded
	if up := upgradeType(h); up != "" || in.Method == "CONNECT" {
		if strings.EqualFold(up, "websocket") && every(func(b *policy.Budget) bool { return b.Websocket }) {
			return ""
		}
		return fmt.Sprintf("an upgraded connection (%q) under an LLM budget is not metered per response; the rule's budget must opt in with websocket: true", up)
	}
	if in.Method == "POST" && batchPath(in.Path) && !every(func(b *policy.Budget) bool { return b.Batches }) {
		return "batch creation under an LLM budget is not metered (its requests run later, their results are not read); the rule's budget must opt in with batches: true"
	}
	return ""
}

// batchPath says whether a request target creates a batch: OpenAI and
// Azure (/batches), Anthropic (/messages/batches), Bedrock
// (/model-invocation-job), Gemini (:batchGenerateContent), Vertex
// (/batchPredictionJobs).
func batchPath(target string) bool {
	p := strings.ToLower(requestPath(target))
	for _, suffix := range []string{"/batches", "/model-invocation-job", ":batchgeneratecontent", "/batchpredictionjobs"} {
		if strings.HasSuffix(p, suffix) {
			return true
		}
	}
	return false
}

// applyMode carries out a rule set's mode on a policy decision (invariant
// 5). In mode audit the policy's verdict becomes Would and the action
// allow. A relaxed deny or approve loses ByCIDR: a rule naming an address
// that would refuse it or hold it for a human (nobody is asked in audit
// mode) does not make it a dial target; guardAddr then asks whether an
// allowing rule names it. A NeedBody decision is a question, not a
// verdict: the caller buffers the body and asks again.
func applyMode(d policy.Decision) policy.Decision {
	if !d.Audit || d.NeedBody {
		return d
	}
	d.Would = d.Action
	if d.Action != policy.Allow {
		d.ByCIDR = false
	}
	d.Action = policy.Allow
	d.RateLimited, d.RetryAfter = false, 0
	return d
}
