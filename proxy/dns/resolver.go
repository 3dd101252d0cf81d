// Package dns is clawd's per-container DNS forwarder. Every DNS query an
// attached container sends is redirected here; names the policy can never
// allow are answered locally (NXDOMAIN by default) without reaching any
// upstream, so an agent cannot leak data through lookups of arbitrary names.
// Allowed queries are forwarded to the host's resolvers and the A/AAAA
// answers are remembered per container, so the proxy can later check that a
// connection to an IP claiming Host "x" really follows a lookup of "x"
// (Consistent) and can name the destination of raw TCP connections (NamesFor).
//
// Answers are filtered before the agent sees them: an A or AAAA record (or
// an SVCB/HTTPS address hint) whose address is special — loopback,
// link-local, private, the host's own, another container's, or an IPv6 form
// carrying one of those (see internal/addrclass) — is left out unless a
// rule of the container's set names it in cidrs (Config.CIDRCovers), and is
// never remembered. Forwarded queries and left-out records are audited in
// aggregate (one line per container, name, type and outcome per interval).
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

// Response codes for Config.RefuseRcode, re-exported so callers need not
// import github.com/miekg/dns under another name.
const (
	RcodeNameError = mdns.RcodeNameError // NXDOMAIN
	RcodeRefused   = mdns.RcodeRefused
)

// Config configures a Resolver. Zero fields take the documented defaults.
type Config struct {
	// Upstreams are resolver addresses "ip:port". Empty means the nameserver
	// lines of ResolvConf.
	Upstreams []string
	// ResolvConf is read when Upstreams is empty (default /etc/resolv.conf).
	ResolvConf string
	// MayResolve reports whether the policy could ever allow a connection to
	// name (lower case, no trailing dot). nil allows every name.
	MayResolve func(c policy.Container, name string) bool
	// RefuseRcode answers names MayResolve rejects. 0 means RcodeNameError
	// (NXDOMAIN); RcodeRefused is the other sensible choice.
	RefuseRcode int
	// MinTTL is how long answers are remembered at least for Consistent and
	// NamesFor, whatever their TTL: agents cache longer than TTLs say.
	// Default 5m.
	MinTTL time.Duration
	// MaxEntries bounds the remembered (name, address) pairs per container;
	// the oldest are evicted first. Default 10000.
	MaxEntries int
	// MaxInFlight bounds concurrent queries per container so a flood cannot
	// exhaust the daemon; UDP queries beyond it are dropped. Default 64.
	MaxInFlight int
	// Timeout bounds each attempt at one upstream. Default 2s.
	Timeout time.Duration

	// CIDRCovers reports whether a rule of c's set names ip in its cidrs
	// (policy.Engine.CIDRCovers). A special answer address (see Special) is
	// handed to the agent only then. nil: no rule names any range, so every
	// special address is left out.
	CIDRCovers func(c policy.Container, ip netip.Addr) bool
	// HTTPLevel reports whether some rule of any set treats name at the
	// HTTP level (policy.Engine.HTTPLevelInAnySet). Addresses answered for
	// such names (the query name or any name of its CNAME chain) are
	// remembered for StickyTTL, for every container and beyond the
	// per-container memory, so that NamesForAny still ties them to the
	// name when an agent dials them later by address (the DNS memory
	// expired or was evicted). PolicyChanged re-reads the memories after a
	// reload. nil: none.
	HTTPLevel func(name string) bool
	// StickyTTL is how long those addresses are remembered. Default 24h.
	StickyTTL time.Duration
	// Special adds the host's own addresses and attached containers'
	// addresses to the fixed special ranges of addrclass.Of. Nil funcs add
	// nothing.
	Special addrclass.Extra
	// AuditInterval is how often aggregated audit lines (forwarded queries,
	// left-out records) are written; FlushAudit and Forget write them too.
	// Default 1m.
	AuditInterval time.Duration
	// MaxAuditKeys bounds the distinct aggregated lines kept between
	// flushes; a new one beyond it flushes all at once. Default 4096.
	MaxAuditKeys int

	Audit      audit.Sink            // nil = audit.Discard
	Log        *zap.Logger           // nil = zap.NewNop()
	Registerer prometheus.Registerer // nil = no metrics registered
	Now        func() time.Time      // nil = time.Now
}

// Resolver forwards DNS queries for attached containers. It is safe for
// concurrent use by any number of ServePacket and ServeConn calls.
type Resolver struct {
	upstreams   []string
	mayResolve  func(policy.Container, string) bool
	refuseRcode int
	minTTL      time.Duration
	maxEntries  int
	maxInFlight int
	timeout     time.Duration
	cidrCovers  func(policy.Container, netip.Addr) bool
	special     addrclass.Extra
	auditEvery  time.Duration
	agg         *aggregator
	audit       audit.Sink
	log         *zap.Logger
	now         func() time.Time
	queries     *prometheus.CounterVec

	// exchange sends one query upstream; tests and the fuzz target replace it.
	exchange func(ctx context.Context, q *mdns.Msg) (*mdns.Msg, error)

	mu         sync.Mutex
	containers map[string]*containerState

	httpLevel func(string) bool
	stickyTTL time.Duration
	sticky    *answerSet // addresses of HTTP-level names, all containers
}

// containerState is everything the resolver keeps for one container.
type containerState struct {
	sem     chan struct{} // in-flight query slots
	answers *answerSet
}

// maxSticky bounds the remembered addresses of HTTP-level names. Only
// names some rule treats at the HTTP level get in (API hosts, a handful),
// so an agent cannot flush it by looking up arbitrary names.
const maxSticky = 65536

// Query results, the values of the "result" metric label.
const (
	resultForwarded = "forwarded"
	resultRefused   = "refused"
	resultServfail  = "servfail"
	resultMalformed = "malformed"
	resultDropped   = "dropped" // over the in-flight limit
)

// New checks cfg and returns a Resolver.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		mayResolve:  cfg.MayResolve,
		refuseRcode: cfg.RefuseRcode,
		minTTL:      cfg.MinTTL,
		maxEntries:  cfg.MaxEntries,
		maxInFlight: cfg.MaxInFlight,
		timeout:     cfg.Timeout,
		cidrCovers:  cfg.CIDRCovers,
		special:     cfg.Special,
		auditEvery:  cfg.AuditInterval,
		audit:       cfg.Audit,
		log:         cfg.Log,
		now:         cfg.Now,
		containers:  map[string]*containerState{},
	}
	r.httpLevel, r.stickyTTL = cfg.HTTPLevel, cfg.StickyTTL
	if r.stickyTTL <= 0 {
		r.stickyTTL = 24 * time.Hour
	}
	r.sticky = newAnswerSet(maxSticky)
	if r.refuseRcode == 0 {
		r.refuseRcode = mdns.RcodeNameError
	}
	if _, ok := mdns.RcodeToString[r.refuseRcode]; !ok || r.refuseRcode > 15 {
		return nil, fmt.Errorf("dns: invalid refuse rcode %d", cfg.RefuseRcode)
	}
	if r.minTTL < 0 || r.maxEntries < 0 || r.maxInFlight < 0 || r.timeout < 0 || r.auditEvery < 0 || cfg.MaxAuditKeys < 0 {
		return nil, errors.New("dns: negative MinTTL, MaxEntries, MaxInFlight, Timeout, AuditInterval or MaxAuditKeys")
	}
	if r.auditEvery == 0 {
		r.auditEvery = time.Minute
	}
	if r.minTTL == 0 {
		r.minTTL = 5 * time.Minute
	}
	if r.maxEntries == 0 {
		r.maxEntries = 10000
	}
	if r.maxInFlight == 0 {
		r.maxInFlight = 64
	}
	if r.timeout == 0 {
		r.timeout = 2 * time.Second
	}
	if r.audit == nil {
		r.audit = audit.Discard{}
	}
	if r.log == nil {
		r.log = zap.NewNop()
	}
	if r.now == nil {
		r.now = time.Now
	}
	maxKeys := cfg.MaxAuditKeys
	if maxKeys == 0 {
		maxKeys = 4096
	}
	r.agg = newAggregator(r.audit, r.now, maxKeys)

	ups := cfg.Upstreams
	if len(ups) == 0 {
		var err error
		if ups, err = readResolvConf(cfg.ResolvConf); err != nil {
			return nil, err
		}
	}
	for _, u := range ups {
		ap, err := netip.ParseAddrPort(u)
		if err != nil || ap.Port() == 0 {
			return nil, fmt.Errorf("dns: upstream %q is not ip:port", u)
		}
		r.upstreams = append(r.upstreams, ap.String())
	}
	r.exchange = r.forward

	r.queries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "clawd_dns_queries_total",
		Help: "DNS queries from attached containers, by result.",
	}, []string{"result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.queries); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("dns: register metrics: %w", err)
			}
			r.queries = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return r, nil
}

// readResolvConf returns the nameservers of a resolv.conf file as ip:port.
func readResolvConf(path string) ([]string, error) {
	if path == "" {
		path = "/etc/resolv.conf"
	}
	cc, err := mdns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("dns: read upstreams: %w", err)
	}
	var ups []string
	for _, s := range cc.Servers {
		ups = append(ups, net.JoinHostPort(s, cc.Port))
	}
	if len(ups) == 0 {
		return nil, fmt.Errorf("dns: no nameserver in %s", path)
	}
	return ups, nil
}

// state returns the container's state, creating it on first use.
func (r *Resolver) state(key string) *containerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.containers[key]
	if s == nil {
		s = &containerState{
			sem:     make(chan struct{}, r.maxInFlight),
			answers: newAnswerSet(r.maxEntries),
		}
		r.containers[key] = s
	}
	return s
}

// lookupState returns the container's state or nil.
func (r *Resolver) lookupState(key string) *containerState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.containers[key]
}

// Forget drops everything remembered for a detached container and writes
// its pending aggregated audit lines. Call it after the container's
// ServePacket and ServeConn calls have returned, or answers still in flight
// may be remembered again.
func (r *Resolver) Forget(containerKey string) {
	r.mu.Lock()
	delete(r.containers, containerKey)
	r.mu.Unlock()
	r.agg.flush(containerKey)
}

// FlushAudit writes every pending aggregated audit line (call it on
// shutdown, before the audit sink closes).
func (r *Resolver) FlushAudit() { r.agg.flush("") }

// RunAudit writes the aggregated audit lines every AuditInterval until ctx
// is done, then once more.
func (r *Resolver) RunAudit(ctx context.Context) {
	t := time.NewTicker(r.auditEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.FlushAudit()
			return
		case <-t.C:
			r.FlushAudit()
		}
	}
}

// handle answers one DNS message from container c. It returns nil when the
// message must be dropped without an answer. UDP answers are truncated (TC
// set) to the size the client accepts, so it retries over TCP. A non-nil
// refuse says the message is not c's to ask (see SenderCheck): it is
// answered REFUSED and audited, nothing is forwarded.
func (r *Resolver) handle(ctx context.Context, c policy.Container, packet []byte, udp bool, refuse error) []byte {
	req := new(mdns.Msg)
	if err := req.Unpack(packet); err != nil || req.Response {
		// Garbage, or a response (answering it could start a loop).
		r.queries.WithLabelValues(resultMalformed).Inc()
		return nil
	}
	var resp *mdns.Msg
	if refuse != nil {
		resp = r.refuseSender(c, req, refuse)
	} else {
		resp = r.answer(ctx, c, req)
	}
	resp.Compress = true
	if udp {
		resp.Truncate(udpSize(req))
	}
	out, err := resp.Pack()
	if err != nil {
		r.log.Debug("dns: pack answer", zap.Error(err))
		resp = new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
		if out, err = resp.Pack(); err != nil {
			return nil
		}
	}
	return out
}

// answer decides one parsed query and returns the message to send back.
func (r *Resolver) answer(ctx context.Context, c policy.Container, req *mdns.Msg) *mdns.Msg {
	if req.Opcode != mdns.OpcodeQuery {
		r.queries.WithLabelValues(resultMalformed).Inc()
		return reply(req, mdns.RcodeNotImplemented)
	}
	if len(req.Question) != 1 {
		r.queries.WithLabelValues(resultMalformed).Inc()
		return new(mdns.Msg).SetRcodeFormatError(req)
	}
	q := req.Question[0]
	// Only plain names are asked upstream: anything else (escaped dots,
	// binary bytes, IP literals) could make the policy's string match
	// disagree with the labels the upstream resolves.
	name := hostname.Normalize(q.Name)
	if !hostname.Valid(name) || !r.allowed(c, name) {
		if !hostname.Valid(name) {
			name = q.Name // audit what was asked, not hostname.Invalid
		}
		r.queries.WithLabelValues(resultRefused).Inc()
		r.audit.Log(audit.Entry{
			Time:        r.now(),
			Event:       audit.EventDNS,
			Container:   c.Name,
			ContainerID: c.ID,
			Runtime:     c.Runtime,
			Labels:      c.Labels,
			Host:        name,
			QType:       qtypeString(q.Qtype),
			Proto:       audit.ProtoDNS,
			Action:      audit.ActionDNSDeny,
			Reason:      "name not allowed by policy",
		})
		return reply(req, r.refuseRcode)
	}
	if q.Qclass != mdns.ClassINET || q.Qtype == mdns.TypeAXFR || q.Qtype == mdns.TypeIXFR {
		// Zone transfers and other classes have no place in an agent's work.
		r.queries.WithLabelValues(resultRefused).Inc()
		return reply(req, mdns.RcodeRefused)
	}

	up := new(mdns.Msg)
	up.SetQuestion(mdns.Fqdn(name), q.Qtype)
	up.RecursionDesired = req.RecursionDesired
	up.CheckingDisabled = req.CheckingDisabled
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	up.SetEdns0(1232, do)

	resp, err := r.exchange(ctx, up)
	if err != nil {
		r.queries.WithLabelValues(resultServfail).Inc()
		r.log.Debug("dns: forward", zap.String("name", name), zap.Error(err))
		return reply(req, mdns.RcodeServerFailure)
	}
	r.queries.WithLabelValues(resultForwarded).Inc()
	qtype := qtypeString(q.Qtype)
	r.agg.add(c, aggKey{action: audit.ActionDNSForward, name: name, qtype: qtype, reason: "upstream " + rcodeString(resp.Rcode)})
	// Leave special addresses out before anything is remembered: what the
	// agent is not told, Consistent and NamesFor must not vouch for.
	for _, d := range r.filter(c, resp) {
		r.agg.add(c, aggKey{action: audit.ActionDNSDropRecord, name: name, qtype: qtype, dst: d.ip.String(), reason: d.reason()})
	}
	if resp.Rcode == mdns.RcodeSuccess {
		r.state(c.Key()).answers.record(name, resp.Answer, r.now(), r.minTTL)
		if r.httpLevel != nil && r.chainHTTPLevel(name, resp.Answer) {
			r.sticky.record(name, resp.Answer, r.now(), r.stickyTTL)
		}
	}

	// Hand the upstream answer back as the reply to the client's query: its
	// ID and its question (with the client's letter case, which some
	// resolvers randomise to detect spoofing).
	resp.Id = req.Id
	resp.Question = req.Question
	if req.IsEdns0() == nil {
		extra := resp.Extra[:0]
		for _, rr := range resp.Extra {
			if rr.Header().Rrtype != mdns.TypeOPT {
				extra = append(extra, rr)
			}
		}
		resp.Extra = extra
	}
	return resp
}

// refuseSender answers a query that SenderCheck says is not c's: REFUSED,
// audited, never forwarded.
func (r *Resolver) refuseSender(c policy.Container, req *mdns.Msg, why error) *mdns.Msg {
	r.queries.WithLabelValues(resultRefused).Inc()
	e := audit.Entry{
		Time:        r.now(),
		Event:       audit.EventDNS,
		Container:   c.Name,
		ContainerID: c.ID,
		Runtime:     c.Runtime,
		Labels:      c.Labels,
		Proto:       audit.ProtoDNS,
		Action:      audit.ActionDNSDeny,
		Reason:      "query refused: " + why.Error(),
	}
	if len(req.Question) == 1 {
		e.Host = hostname.Normalize(req.Question[0].Name)
		if !hostname.Valid(e.Host) {
			e.Host = ""
		}
		e.QType = qtypeString(req.Question[0].Qtype)
	}
	r.audit.Log(e)
	return reply(req, mdns.RcodeRefused)
}

func qtypeString(t uint16) string {
	if s, ok := mdns.TypeToString[t]; ok {
		return s
	}
	return fmt.Sprintf("TYPE%d", t)
}

func rcodeString(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

func (r *Resolver) allowed(c policy.Container, name string) bool {
	return r.mayResolve == nil || r.mayResolve(c, name)
}

// reply is an empty answer to req with rcode.
func reply(req *mdns.Msg, rcode int) *mdns.Msg {
	m := new(mdns.Msg).SetRcode(req, rcode)
	m.RecursionAvailable = true
	return m
}

// udpSize is the largest UDP answer the client accepts.
func udpSize(req *mdns.Msg) int {
	size := mdns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > size {
		size = int(opt.UDPSize())
	}
	return min(size, mdns.MaxMsgSize)
}

// chainHTTPLevel reports whether qname or a name its answer's CNAMEs lead
// through is treated at the HTTP level: an alias anyone can create must not
// keep the target's addresses out of the sticky memory.
func (r *Resolver) chainHTTPLevel(qname string, answer []mdns.RR) bool {
	if r.httpLevel(qname) {
		return true
	}
	for _, rr := range answer {
		if cn, ok := rr.(*mdns.CNAME); ok {
			for _, n := range []string{cn.Hdr.Name, cn.Target} {
				if h := hostname.Normalize(n); hostname.Valid(h) && r.httpLevel(h) {
					return true
				}
			}
		}
	}
	return false
}

// PolicyChanged moves what the per-container memories know of names the
// running policy now treats at the HTTP level into the sticky memory, so a
// reload that makes a resolved name HTTP-level protects its addresses too
// (the proxy calls it from Recheck).
func (r *Resolver) PolicyChanged() {
	if r.httpLevel == nil {
		return
	}
	r.mu.Lock()
	states := make([]*containerState, 0, len(r.containers))
	for _, s := range r.containers {
		states = append(states, s)
	}
	r.mu.Unlock()
	now := r.now()
	for _, st := range states {
		for _, p := range st.answers.snapshot(now) {
			if r.httpLevel(p.name) {
				r.sticky.remember(p.pairKey, now.Add(r.stickyTTL))
			}
		}
	}
}
