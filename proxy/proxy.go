// Package proxy is clawd's transparent proxy. The daemon hands it every TCP
// connection an attached container makes (redirected by eBPF), together with
// the destination the agent dialled; the proxy sniffs the first bytes (TLS,
// HTTP/1.x or anything else), decides by policy, and then splices, forwards
// request by request, holds for approval, or refuses. See README.md.
package proxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/internal/hostaddrs"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/internal/progtext"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/ca"
	"github.com/clawd-dev/clawd/proxy/usage"
	"github.com/clawd-dev/clawd/secrets"
)

// ConnMeta is what the daemon knows about a redirected connection.
type ConnMeta struct {
	Container policy.Container
	OrigDst   netip.AddrPort // what the agent dialled (v4-mapped already unmapped)

	// Program is the process that connected (issue 16, policy binaries:);
	// the zero value is an unknown program, which no allow rule with
	// binaries matches.
	Program policy.Program
}

// Decider decides requests; *policy.Engine implements it.
type Decider interface {
	Decide(policy.Input) policy.Decision
	// HTTPLevel reports whether the rules that could apply to host (""
	// for the address alone) at ip:port need HTTP facts: such a
	// connection is framed or refused, never spliced (see gate.go).
	HTTPLevel(c policy.Container, host string, ip netip.Addr, port uint16) bool
	// CIDRCovers reports whether an allow or approve rule names ip in its
	// cidrs for port: only then is a special address a dial target.
	CIDRCovers(c policy.Container, ip netip.Addr, port uint16) bool
	// UpstreamProxyAddrs are the upstream proxies the policy names by
	// address: clawd's next hops, never an agent's destination.
	UpstreamProxyAddrs() []netip.AddrPort
}

// Approver holds a request until a human decides; *approval.Manager implements it.
type Approver interface {
	Request(ctx context.Context, h approval.Hold) approval.Outcome
}

// Injection is the result of injecting secrets into one request. When it
// also has a Misuse() error method (as *secrets.Injection does), a misuse
// found while the body streamed upstream turns the failed exchange into a
// 403 placeholder_misuse instead of a 502.
type Injection interface {
	// ScrubResponse removes injected secret values the upstream echoed back.
	ScrubResponse(*http.Response)
	// Names lists the injected secrets' names (never values), for logs.
	Names() []string
}

// Injector replaces placeholder keys the agent holds with real secrets. The
// daemon adapts *secrets.Store to it.
type Injector interface {
	// Inject rewrites req in place for host. An error for which
	// IsPlaceholderMisuse is true means the agent sent a placeholder to a
	// host the secret is not bound to: the request is refused with 403.
	Inject(req *http.Request, host string) (Injection, error)
	// BoundTo reports whether any secret is bound to host.
	BoundTo(host string) bool
	// Hint is a short text telling the agent how to get credentials for host.
	Hint(host string) string
}

// ErrPlaceholderMisuse is the sentinel an Injector's error wraps (errors.Is)
// when a placeholder was sent to the wrong host. It is the secrets package's
// own sentinel, so *secrets.Store errors need no mapping. An error may
// instead implement interface{ PlaceholderMisuse() bool }.
var ErrPlaceholderMisuse = secrets.ErrPlaceholderMisuse

// IsPlaceholderMisuse reports whether err signals placeholder misuse.
func IsPlaceholderMisuse(err error) bool {
	if errors.Is(err, ErrPlaceholderMisuse) {
		return true
	}
	var m interface{ PlaceholderMisuse() bool }
	return errors.As(err, &m) && m.PlaceholderMisuse()
}

// Names gives the DNS answers clawd's resolver handed each container;
// proxy/dns implements it.
type Names interface {
	// Consistent reports whether host may be used for a connection to ip:
	// host is the IP literal itself, or a name clawd's DNS resolved to ip
	// for this container.
	Consistent(containerKey, host string, ip netip.Addr) bool
	// NamesFor lists the names clawd's DNS resolved to ip for this container.
	NamesFor(containerKey string, ip netip.Addr) []string
}

// Config configures a Server. Decider is required.
type Config struct {
	Decider  Decider
	Approver Approver // nil: approve decisions are denied ("approval not configured")
	Injector Injector // nil: no secret injection
	Names    Names    // nil: only IP-literal hosts are consistent with a destination

	CA            *ca.CA         // signs leaves for intercepted hosts; nil refuses interception
	UpstreamRoots *x509.CertPool // verifies intercepted upstreams; nil = system roots

	// Forbidden are clawd's own addresses (API, metrics): always denied,
	// whatever the policy says, with rule "clawd-internal". OrigDst lives in
	// the container's network namespace, so a container's 127.0.0.1 is its
	// own loopback, not the host's; it is therefore not denied by default
	// (the daemon lists addresses that are reachable from containers).
	Forbidden []netip.AddrPort
	// ForbiddenPorts are ports clawd listens on at a wildcard (or loopback)
	// address: on them every address the host has at decision time is
	// denied, including addresses added after start (the host side of each
	// new container's veth), which a snapshot in Forbidden would miss.
	ForbiddenPorts []uint16
	// HostAddr reports whether a is currently one of the host's addresses;
	// nil scans net.InterfaceAddrs (failing closed). Tests replace it.
	HostAddr func(a netip.Addr) bool
	// ContainerAddr reports whether a is an address of an attached
	// container's network namespace (the daemon's registry, refreshed at
	// attach, re-adoption and sweep): another agent is no dial target for
	// a name rule. nil: no address is known to be a container's.
	ContainerAddr func(a netip.Addr) bool
	// OnProxyAddr, when set, is called (on its own goroutine) each time
	// an upstream proxy's name resolves to an address not seen before:
	// the kernel fast path must exclude it at once (ProxyAddrs).
	OnProxyAddr func()
	// Classify says whether a destination address is special (loopback,
	// private, link-local, the host's or a container's own): such an
	// address is dialled only for a rule naming it in cidrs. nil:
	// addrclass.Extra{Host: HostAddr, Container: ContainerAddr}.Classify.
	Classify func(a netip.Addr) addrclass.Class

	Audit      audit.Sink            // nil: audit.Discard
	Log        *zap.Logger           // nil: zap.NewNop()
	Registerer prometheus.Registerer // nil: metrics are not registered

	// PeekTimeout is how long to wait for the client's first bytes before
	// treating the connection as raw TCP (server-speaks-first protocols
	// such as SMTP or SSH). Default 1s.
	PeekTimeout time.Duration
	// SlowClientWait is how much longer a client that sent nothing within
	// PeekTimeout may take to send its first bytes, when its destination
	// alone would be denied (a loaded host must not turn an HTTP request
	// into a refused raw connection). Default 30s.
	SlowClientWait time.Duration
	// MaxHoldBody bounds a request body buffered for approval or for a
	// policy body condition; bigger bodies get 413. Default 16 MiB.
	MaxHoldBody int64
	// PreviewLimit bounds the body preview put on approval cards. Default 4 KiB.
	PreviewLimit int
	// BudgetDrain bounds how long clawd keeps reading a budgeted answer
	// the agent hung up on, for its closing usage (proxy/usage.go): from
	// the moment the agent left. 0 means the default, 2 minutes; past it
	// the request costs its estimate.
	BudgetDrain time.Duration
	// MaxBufferedBytes bounds the request-body bytes held in memory at once
	// for all containers together: bodies held for approval, read for a
	// body condition, or decoded for secret injection, raw and decoded
	// bytes both counted. A body that would pass it is refused with 503
	// and Retry-After (413 when it alone is bigger than the bound). 0 means
	// the default, 256 MiB; negative means no bound.
	MaxBufferedBytes int64
	// MaxBufferedBytesPerContainer is the same bound for each container on
	// its own. 0 means the default, 64 MiB; negative means no bound.
	MaxBufferedBytesPerContainer int64
	// Dial dials upstreams (always OrigDst) and upstream proxies (the
	// policy's upstream_proxy address), from the host. Default: a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ProxyCredential resolves the `credential:` of an upstream proxy (a
	// clawd-owned secret, *secrets.Store.Credential) to "user:password"
	// for Proxy-Authorization Basic. Its errors must never hold the value.
	// nil: a route that names a credential fails (the agent gets a 502,
	// the audit line "upstream proxy credential NAME unavailable"); it is
	// never sent without one.
	ProxyCredential func(name string) (string, error)
	// Now is the clock for decisions and durations. Default time.Now.
	Now func() time.Time

	// LLM budgets (issue 16, budget): Usage keeps what each container spent
	// of the rules' `budget:` (the daemon's is persisted in its state
	// directory). nil: a ledger in memory, lost when the Server goes.
	Usage *usage.Ledger
}

const (
	defaultPeekTimeout  = time.Second
	defaultMaxHoldBody  = 16 << 20
	defaultPreviewLimit = 4 << 10
	// helloTimeout bounds reading the rest of a TLS ClientHello or HTTP
	// request head once the first byte arrived.
	helloTimeout = 10 * time.Second
)

// Server is the transparent proxy. It is safe for concurrent use.
type Server struct {
	cfg       Config
	log       *zap.Logger
	audit     audit.Sink
	m         *metrics
	forbidden map[netip.AddrPort]bool
	// proxyAddrs are the upstream proxies' addresses (netip.AddrPort →
	// true): clawd's next hops, refused as agent destinations.
	proxyAddrs sync.Map
	fbPorts    map[uint16]bool
	decisions  decisionCounters
	untrusted  untrustedCounts
	budget     *bodyBudget   // memory of buffered request bodies (body.go)
	usage      *usage.Ledger // LLM budgets (usage.go)

	liveMu sync.Mutex
	live   map[*live]struct{} // open streams re-decided by Recheck
	gen    atomic.Uint64      // Recheck calls so far

	mu      sync.Mutex
	closing bool
	conns   map[*connState]struct{}
	wg      sync.WaitGroup
}

// connState tracks one ServeConn for Shutdown.
type connState struct {
	drain func() // stop taking new requests on this connection
	kill  func() // close everything now
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Decider == nil {
		return nil, errors.New("proxy: Decider is required")
	}
	if cfg.PeekTimeout < 0 || cfg.MaxHoldBody < 0 || cfg.PreviewLimit < 0 {
		return nil, errors.New("proxy: PeekTimeout, MaxHoldBody and PreviewLimit must not be negative")
	}
	if cfg.SlowClientWait <= 0 {
		cfg.SlowClientWait = 30 * time.Second
	}
	if cfg.PeekTimeout == 0 {
		cfg.PeekTimeout = defaultPeekTimeout
	}
	if cfg.MaxHoldBody == 0 {
		cfg.MaxHoldBody = defaultMaxHoldBody
	}
	if cfg.PreviewLimit == 0 {
		cfg.PreviewLimit = defaultPreviewLimit
	}
	if cfg.BudgetDrain <= 0 {
		cfg.BudgetDrain = budgetDrainTime
	}
	if cfg.MaxBufferedBytes == 0 {
		cfg.MaxBufferedBytes = defaultMaxBufferedBytes
	}
	if cfg.MaxBufferedBytesPerContainer == 0 {
		cfg.MaxBufferedBytesPerContainer = defaultMaxBufferedBytesPerContainer
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		cfg.Dial = d.DialContext
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard{}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Log,
		audit:     cfg.Audit,
		m:         m,
		forbidden: make(map[netip.AddrPort]bool),
		fbPorts:   make(map[uint16]bool),
		conns:     make(map[*connState]struct{}),
		live:      make(map[*live]struct{}),
	}
	s.budget = newBodyBudget(cfg.MaxBufferedBytes, cfg.MaxBufferedBytesPerContainer, m)
	if s.usage = cfg.Usage; s.usage == nil {
		s.usage, _ = usage.Open("", nil)
	}
	if err := registerUsage(cfg.Registerer, s.usage, cfg.Now); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	for _, ap := range cfg.Forbidden {
		s.forbidden[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
	}
	for _, p := range cfg.ForbiddenPorts {
		s.fbPorts[p] = true
	}
	if s.cfg.HostAddr == nil {
		s.cfg.HostAddr = isHostAddr
	}
	if s.cfg.Classify == nil {
		s.cfg.Classify = addrclass.Extra{Host: s.cfg.HostAddr, Container: s.cfg.ContainerAddr}.Classify
	}
	return s, nil
}

// ServeConn proxies one redirected connection and blocks until it is done.
// It always closes c. Cancelling ctx drains: no new HTTP requests are taken
// on c, in-flight work finishes (Shutdown forces the rest).
func (s *Server) ServeConn(ctx context.Context, c net.Conn, m ConnMeta) {
	m.OrigDst = netip.AddrPortFrom(m.OrigDst.Addr().Unmap(), m.OrigDst.Port())
	st := &connState{drain: func() {}, kill: func() { c.Close() }}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.conns[st] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.m.active.Inc()
	defer func() {
		s.m.active.Dec()
		s.mu.Lock()
		delete(s.conns, st)
		s.mu.Unlock()
		s.wg.Done()
	}()
	defer c.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs := &conn{s: s, c: c, meta: m, ctx: ctx, cancel: cancel, st: st, start: s.cfg.Now()}
	cs.serve()
}

// Shutdown stops taking connections and requests, waits for in-flight work
// until ctx is done, then closes whatever is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for st := range s.conns {
		st.drain()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for st := range s.conns {
		st.kill()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// setDrain replaces the drain and kill hooks of a connection; it runs drain
// at once when the server is already shutting down.
func (s *Server) setHooks(st *connState, drain, kill func()) {
	s.mu.Lock()
	st.drain, st.kill = drain, kill
	closing := s.closing
	s.mu.Unlock()
	if closing {
		drain()
	}
}

// internal reports whether dst is clawd's own API/metrics or an
// unspecified address (0.0.0.0, ::, ::ffff:0.0.0.0), which a connect from
// the host turns into its own loopback: the proxy dials from the host, so an
// agent asking for 0.0.0.0:PORT would otherwise reach every service bound
// to the host's loopback, clawd's API and metrics among them. (Loopback
// itself never arrives from the kernel side: the container's own loopback
// is not redirected.)
func (s *Server) internal(dst netip.AddrPort) bool {
	a := dst.Addr().Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return true
	}
	a = a.WithZone("")
	if s.forbidden[netip.AddrPortFrom(a, dst.Port())] || s.isProxyAddr(dst) {
		return true
	}
	return s.fbPorts[dst.Port()] && s.cfg.HostAddr(a)
}

// isHostAddr reports whether a is one of the host's addresses now, listing
// them (no watch: the daemon passes its watched set as HostAddr).
func isHostAddr(a netip.Addr) bool { return unwatched.Has(a) }

var unwatched hostaddrs.Set

// decide runs the policy, with clawd's own guards in front of it.
func (s *Server) decide(in policy.Input) policy.Decision {
	if s.internal(netip.AddrPortFrom(in.DstIP, in.DstPort)) {
		return policy.Decision{Action: policy.Deny, Rule: "clawd-internal", Reason: "destination is clawd itself or the host (unspecified address)"}
	}
	if in.Now.IsZero() {
		in.Now = s.cfg.Now()
	}
	d := s.cfg.Decider.Decide(in)
	if d.NeedBody {
		if !in.BodyKnown {
			return d // the caller buffers the body and asks again
		}
		d.NeedBody = false // asking again cannot help: fail closed below
	}
	if d.Action != policy.Allow && d.Action != policy.Approve && d.Action != policy.Deny {
		// An engine bug must fail closed.
		return policy.Decision{Action: policy.Deny, Rule: d.Rule, Reason: "invalid policy action"}
	}
	return applyMode(d)
}

// consistent reports whether host may be used with the destination IP: the
// anti-domain-fronting check.
func (s *Server) consistent(c policy.Container, host string, ip netip.Addr) bool {
	if a, ok := hostname.IP(host); ok {
		return a.Unmap() == ip
	}
	if s.cfg.Names == nil {
		return false
	}
	return s.cfg.Names.Consistent(c.Key(), host, ip)
}

// consistentKey is consistent for a container whose Key is key (the HTTP
// handler computes it once per connection).
func (s *Server) consistentKey(key, host string, ip netip.Addr) bool {
	if a, ok := hostname.IP(host); ok {
		return a.Unmap() == ip
	}
	if s.cfg.Names == nil {
		return false
	}
	return s.cfg.Names.Consistent(key, host, ip)
}

func (s *Server) entry(m ConnMeta, proto string) audit.Entry {
	return audit.Entry{
		Event:       audit.EventDecision,
		Container:   m.Container.Name,
		ContainerID: m.Container.ID,
		Runtime:     m.Container.Runtime,
		Labels:      m.Container.Labels,
		Dst:         m.OrigDst.String(),
		Proto:       proto,
		// ident (issue 16)
		Program:       programName(m.Program),
		ProgramSHA256: m.Program.SHA256,
		Cmdline:       progtext.Escape(m.Program.Cmdline),
		PID:           m.Program.PID,
	}
}

// programName is the audit line's program: its path (escaped: a file name
// can hold line breaks, bidi overrides or invalid UTF-8), "unknown" when
// clawd could not tell, "(deleted)" for a known program whose file is gone.
func programName(p policy.Program) string {
	switch {
	case !p.Known:
		return "unknown"
	case p.Path == "":
		return "(deleted)"
	}
	return progtext.Escape(p.Path)
}

func (s *Server) record(e audit.Entry, d policy.Decision, start time.Time) {
	now := s.cfg.Now()
	e.Time = now.UTC()
	e.DurationMS = float64(now.Sub(start).Microseconds()) / 1000
	if e.Rule == "" {
		e.Rule = d.Rule
	}
	if e.Action == "" {
		e.Action = string(d.Action)
	}
	if e.Reason == "" && (d.Action != policy.Allow || d.Would != "" && d.Would != policy.Allow) {
		e.Reason = d.Reason
	}
	if d.Audit && d.Would != "" {
		e.Mode, e.Would = string(policy.AuditMode), string(d.Would)
	}
	s.decisions.get(s.m.decisions, e.Action, e.Rule).Inc()
	s.audit.Log(e)
	// The operator's log names every connection too, with the same facts as
	// the audit line (never header values or bodies). Per-request HTTP
	// decisions are at debug level: the audit log already holds each one,
	// and a second write per request is a measurable share of the latency.
	lvl := zap.InfoLevel
	if e.Proto == "http" || e.Proto == "https" {
		lvl = zap.DebugLevel
	}
	// Check first: building the fields costs an allocation even when the
	// level is off.
	ce := s.log.Check(lvl, "decision")
	if ce == nil {
		return
	}
	ce.Write(zap.String("container", e.Container), zap.String("dst", e.Dst),
		zap.String("proto", e.Proto), zap.String("host", e.Host), zap.String("method", e.Method),
		zap.String("path", e.Path), zap.String("action", e.Action), zap.String("rule", e.Rule),
		zap.Int("status", e.Status), zap.Int64("bytes_in", e.BytesIn), zap.Int64("bytes_out", e.BytesOut),
		zap.Float64("duration_ms", e.DurationMS))
}
