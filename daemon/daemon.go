// Package daemon is clawd's long-running process: it owns the attachments
// (eBPF links, per-container listeners, state), the control socket, the host
// API and metrics listeners, and wires policy, proxy, DNS, secrets and
// approvals together.
package daemon

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/channels"
	"github.com/clawd-dev/clawd/approval/summary"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/audit/otlp"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/daemon/procid"
	"github.com/clawd-dev/clawd/daemon/runtime"
	"github.com/clawd-dev/clawd/fleet"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/internal/atomicfile"
	"github.com/clawd-dev/clawd/internal/hostaddrs"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy"
	"github.com/clawd-dev/clawd/proxy/ca"
	"github.com/clawd-dev/clawd/proxy/dns"
	"github.com/clawd-dev/clawd/proxy/usage"
	"github.com/clawd-dev/clawd/secrets"
)

// Version is set at build time (-ldflags "-X ...daemon.Version=...").
var Version = "dev"

// Daemon is one running clawd.
type Daemon struct {
	cfg Config
	log *zap.Logger

	apiToken  string                  // of the host approval API
	mounts    map[string]http.Handler // channels' callback handlers on the public listener
	listeners []approval.Listener     // channels that open their own connection for clicks

	reg     *prometheus.Registry
	started time.Time

	enf       *enforce.Enforcer
	progs     *procid.Resolver // which program made a connection (policy binaries:)
	state     *stateStore
	policy    *policy.Engine
	secrets   *secrets.Store
	approvals *approval.Manager
	fleet     *fleet.Fleet // nil unless fleet.database is set
	proxy     *proxy.Server
	usage     *usage.Ledger // LLM budgets (issue 16): budgets.json in the state dir
	dns       *dns.Resolver
	audit     *audit.Logger
	auditExp  *otlp.Exporter // nil without audit-otlp (auditx)
	ca        *ca.CA
	rt        runtime.Multi

	ctx    context.Context // cancelled when the daemon stops serving
	cancel context.CancelFunc
	conns  sync.WaitGroup

	mu       sync.Mutex // guards atts, byCgroup, doubt and attachments' mutable fields; attach/detach hold opMu
	opMu     sync.Mutex
	atts     map[string]*attachment
	byCgroup map[uint64]*attachment
	doubt    map[string]*doubtful // pinned, not re-adopted: cut off until they are (reconcile.go)
	addrs    *ctrAddrs            // interface addresses of attached containers' namespaces
	hosts    *hostaddrs.Set       // the host's own addresses (kept current by Run)

	fast fastState // the kernel fast path (fastpath.go)
}

type attachment struct {
	Record
	ls     *listeners
	cancel context.CancelFunc
	conns  connLimit

	netns     *os.File   // the container's network namespace, held open while attached
	stopWatch func()     // stops the link watcher
	covMu     sync.Mutex // serialises coverage refreshes
	cutOff    string     // why clawd froze the container ("" if it did not)
}

// silenceStdLog discards the standard library's log output: net/http
// writes there, quoting upstream bytes (an unsolicited answer on an idle
// connection, which may echo an injected secret). clawd's own lines go
// through zap, their texts chosen by clawd.
func silenceStdLog() { stdlog.SetOutput(io.Discard) }

// New builds a daemon from its settings; Run starts it.
func New(cfg Config, log *zap.Logger) (*Daemon, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("clawd daemon must run as root (it loads eBPF programs and enters network namespaces)")
	}
	// Secret values live in this process's memory: no core dumps, and no
	// ptrace or /proc/PID/mem access by anything but root.
	unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	silenceStdLog()
	for _, dir := range []string{cfg.StateDir, filepath.Dir(cfg.Socket), filepath.Dir(cfg.AuditLog)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	d := &Daemon{
		cfg: cfg, log: log, reg: prometheus.NewRegistry(), started: time.Now(),
		atts: map[string]*attachment{}, byCgroup: map[uint64]*attachment{}, doubt: map[string]*doubtful{}, addrs: newCtrAddrs(), hosts: &hostaddrs.Set{},
	}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.ctx, d.cancel = context.WithCancel(context.Background())
	var err error
	if d.enf, err = enforce.New(cfg.PinRoot); err != nil {
		return nil, err
	}
	// Without cgroup v2 nothing can be attached; programs are then unknown.
	cgRoot, cgErr := enforce.Cgroup2Mount()
	d.progs = procid.New("/proc", func(pid int) (uint64, error) {
		if cgErr != nil {
			return 0, cgErr
		}
		return enforce.CgroupIDOfPID(cgRoot, pid)
	})
	if d.progs.MaxHashSize, err = cfg.programHashMax(); err != nil {
		return nil, err
	}
	if d.state, err = newStateStore(cfg.StateDir); err != nil {
		return nil, err
	}
	if err := d.openAudit(); err != nil {
		return nil, err
	}
	d.audit.OnError = func(err error) { log.Error("audit log write failed", zap.Error(err)) }
	if d.policy, err = policy.NewEngine(cfg.Policy, log.Named("policy"), d.reg); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if d.secrets, err = secrets.Open(cfg.SecretsFile, cfg.SecretsKey); err != nil {
		return nil, fmt.Errorf("secrets: %w", err)
	}
	if err := d.secrets.Instrument(d.reg); err != nil {
		return nil, err
	}
	if d.ca, err = ca.LoadOrCreate(filepath.Join(cfg.StateDir, "ca")); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	rcode, err := cfg.dnsRcode()
	if err != nil {
		return nil, err
	}
	if d.dns, err = dns.New(dns.Config{
		Upstreams:   cfg.DNSUpstreams,
		RefuseRcode: rcode,
		MayResolve:  d.policy.MayResolve,
		CIDRCovers:  func(c policy.Container, ip netip.Addr) bool { return d.policy.CIDRCovers(c, ip, 0) },
		HTTPLevel:   d.policy.HTTPLevelInAnySet,
		// Answers pointing a name at the host or at an attached container
		// are rebinding, as are the fixed special ranges.
		Special:       addrclass.Extra{Host: d.hosts.Has, Container: d.addrs.Has},
		AuditInterval: cfg.DNSAuditInterval,
		Audit:         d.audit, Log: log.Named("dns"), Registerer: d.reg,
	}); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if d.fleet, err = d.newFleet(); err != nil {
		return nil, err
	}
	if d.approvals, err = d.newApprovals(); err != nil {
		return nil, fmt.Errorf("approvals: %w", err)
	}
	roots, err := upstreamRoots(cfg.UpstreamCAFile)
	if err != nil {
		return nil, err
	}
	forbidden, err := forbiddenAddrs(cfg.APIListen, cfg.MetricsListen, cfg.WebhookListen)
	if err != nil {
		return nil, err
	}
	bufTotal, bufPerCtr, err := cfg.bufferBudgets()
	if err != nil {
		return nil, err
	}
	// LLM budgets (issue 16): what containers spent survives restarts; a
	// ledger clawd cannot read stops it (forgetting spent budgets would
	// fail open).
	if d.usage, err = usage.Open(filepath.Join(cfg.StateDir, "budgets.json"), func(err error) {
		log.Warn("budget ledger not saved", zap.Error(err))
	}); err != nil {
		return nil, err
	}
	if d.proxy, err = proxy.New(proxy.Config{
		Decider: d.policy, Approver: d.approvals, Injector: injector{d.secrets}, Names: d.dns,
		CA: d.ca, UpstreamRoots: roots, Forbidden: forbidden, ForbiddenPorts: forbiddenPorts(cfg.APIListen, cfg.MetricsListen, cfg.WebhookListen),
		ContainerAddr: d.addrs.Has, HostAddr: d.hosts.Has,
		// upstream_proxy credentials are clawd-owned secrets, never an
		// agent's (Store.Credential refuses those).
		ProxyCredential: d.secrets.Credential,
		Audit:           d.audit, Log: log.Named("proxy"), Registerer: d.reg,
		PeekTimeout: cfg.PeekTimeout, MaxBufferedBytes: bufTotal, MaxBufferedBytesPerContainer: bufPerCtr,
		Usage:       d.usage,
		OnProxyAddr: func() { d.refreshFast("upstream proxy address") },
	}); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	// An open connection never outlives the rule or grant that allowed it.
	d.proxy.SetUpstreamProxies(d.policy.Current().UpstreamProxies())
	d.policy.OnInstall(func() {
		d.proxy.SetUpstreamProxies(d.policy.Current().UpstreamProxies())
		d.proxy.Recheck("policy reloaded")
		d.refreshFast("policy reloaded")
	})
	d.approvals.OnRevoke(func() { d.proxy.Recheck("grant revoked") })
	d.rt = d.newRuntimes()
	d.reg.MustRegister(&bpfCollector{d: d})
	return d, nil
}

func (d *Daemon) newApprovals() (*approval.Manager, error) {
	c := d.cfg
	token := c.APIToken
	if token == "" {
		var err error
		if token, err = loadOrCreateToken(filepath.Join(c.StateDir, "api-token")); err != nil {
			return nil, err
		}
	}
	public := c.PublicURL
	if public == "" {
		public = "http://" + c.APIListen
	}
	specs := c.Approval.ChannelSpecs()
	built, err := channels.Build(specs, func(name string) (approval.Env, error) {
		dir := filepath.Join(c.StateDir, "channels", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return approval.Env{}, err
		}
		// Only an explicitly configured public URL is one a platform can
		// call back; the default API address is the host's own.
		return approval.Env{Log: d.log.Named("approval." + name), PublicURL: c.PublicURL, StateDir: dir, Secret: d.credential}, nil
	})
	if err != nil {
		return nil, err
	}
	m, err := approval.New(approval.Config{
		DBPath: filepath.Join(c.StateDir, "approvals.db"), Store: d.fleetStore(), // fleet: issue 17
		Channels: built.Channels, Approvers: built.Approvers, Platforms: built.Platforms, Summarizers: summary.Default(),
		Redactor: d.secrets, Audit: d.audit,
		Log: d.log.Named("approval"), Registerer: d.reg,
		PublicURL:  public,
		MaxPending: c.Approval.MaxPending, MaxPendingPerContainer: c.Approval.MaxPendingPerContainer,
		CardsElsewhere: d.leasedCards(built.Channels), // fleet: the lease holder posts them
	})
	if err != nil {
		return nil, err
	}
	// Policies whose approve rules nobody configured can answer are
	// refused like broken files (the running one stays).
	dir := channels.Directory(specs)
	if err := d.policy.SetCheck(func(p *policy.Policy) error { return p.CheckRoutes(dir, nil) }); err != nil {
		m.Shutdown()
		return nil, err
	}
	d.serveFleet(m)
	d.apiToken = token
	d.mounts = built.Mounts(m)
	d.listeners = built.Listeners()
	return m, nil
}

func (d *Daemon) newRuntimes() runtime.Multi {
	var m runtime.Multi
	if d.cfg.ContainerdAddress != "" {
		r, err := runtime.NewContainerd(d.cfg.ContainerdAddress, d.cfg.Namespaces)
		if err != nil {
			d.log.Warn("containerd runtime unavailable", zap.Error(err))
		} else {
			m = append(m, r)
		}
	}
	if d.cfg.DockerHost != "" {
		r, err := runtime.NewDocker(d.cfg.DockerHost)
		if err != nil {
			d.log.Warn("docker runtime unavailable", zap.Error(err))
		} else {
			m = append(m, r)
		}
	}
	return m
}

func upstreamRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("upstream-ca-file: %w", err)
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("upstream-ca-file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// forbiddenAddrs lists every host address at which clawd's API or metrics
// answer. A container reaches the host's addresses only through the proxy,
// which dials from the host, so these are what must be refused.
func forbiddenAddrs(listens ...string) ([]netip.AddrPort, error) {
	var out []netip.AddrPort
	local, err := hostaddrs.List()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, l := range listens {
		if l == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return nil, err
		}
		out = append(out, ap)
		if ap.Addr().IsUnspecified() || ap.Addr().IsLoopback() {
			// Unspecified: every local address answers. Loopback: guard
			// anyway, in case a container shares a route to it.
			for _, a := range local {
				out = append(out, netip.AddrPortFrom(a, ap.Port()))
			}
		}
	}
	return out, nil
}

// forbiddenPorts are the ports of listens on a wildcard or loopback address:
// the proxy denies them on every address the host has when it decides, so
// addresses added after start (new containers' veths) are covered too.
func forbiddenPorts(listens ...string) []uint16 {
	var out []uint16
	for _, l := range listens {
		if ap, err := netip.ParseAddrPort(l); err == nil && (ap.Addr().IsUnspecified() || ap.Addr().IsLoopback()) {
			out = append(out, ap.Port())
		}
	}
	return out
}

func loadOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	t := hex.EncodeToString(buf)
	if err := atomicfile.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", err
	}
	return t, nil
}

// injector adapts the secret store to the proxy's interface.
type injector struct{ s *secrets.Store }

func (i injector) Inject(r *http.Request, host string) (proxy.Injection, error) {
	inj, err := i.s.Inject(r, host)
	if inj == nil {
		return nil, err
	}
	return inj, err
}
func (i injector) BoundTo(host string) bool   { return i.s.BoundTo(host) }
func (i injector) ScansBody(host string) bool { return i.s.ScansBody(host) }
func (i injector) Hint(host string) string    { return secrets.Hint(host) }

// Run serves until ctx is cancelled, then drains and returns. Pins stay in
// place: attached containers stay cut off while no daemon runs.
func (d *Daemon) Run(ctx context.Context) error {
	go d.hosts.Watch(d.ctx, func(err error) {
		d.log.Warn("watch host addresses (each decision lists them meanwhile)", zap.Error(err))
	})
	d.adoptAll()
	d.startFast()

	ctl, err := d.listenControl()
	if err != nil {
		return err
	}
	servers := []*http.Server{{Handler: d.controlHandler(), ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{ctl}

	apiLn, err := net.Listen("tcp", d.cfg.APIListen)
	if err != nil {
		ctl.Close()
		return fmt.Errorf("listen api %s: %w", d.cfg.APIListen, err)
	}
	servers = append(servers, &http.Server{Handler: d.publicHandler(), ReadHeaderTimeout: 10 * time.Second})
	listeners = append(listeners, apiLn)
	if d.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", d.cfg.MetricsListen)
		if err != nil {
			ctl.Close()
			apiLn.Close()
			return fmt.Errorf("listen metrics %s: %w", d.cfg.MetricsListen, err)
		}
		servers = append(servers, &http.Server{Handler: d.metricsHandler(), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, mln)
	}
	for i, s := range servers {
		go s.Serve(listeners[i])
	}
	if d.cfg.WebhookListen != "" {
		wln, err := net.Listen("tcp", d.cfg.WebhookListen)
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen webhook %s: %w", d.cfg.WebhookListen, err)
		}
		ws := d.webhookServer()
		servers = append(servers, ws)
		go ws.ServeTLS(wln, "", "")
		d.log.Info("admission webhook listening", zap.String("addr", d.cfg.WebhookListen), zap.String("cert", d.cfg.WebhookCert))
	}

	go func() {
		if err := d.policy.Watch(d.ctx); err != nil && d.ctx.Err() == nil {
			d.log.Error("policy watcher stopped", zap.Error(err))
		}
	}()
	go func() {
		if err := d.secrets.Watch(d.ctx, d.log.Named("secrets")); err != nil && d.ctx.Err() == nil {
			d.log.Error("secret watcher stopped", zap.Error(err))
		}
	}()
	go d.watchEvents()
	go d.sweepLoop()
	for _, l := range d.listeners {
		run := func(ctx context.Context) {
			if err := l.Run(ctx, d.approvals); err != nil && ctx.Err() == nil {
				d.log.Error("approval channel stopped", zap.Error(err))
			}
		}
		if c, ok := l.(approval.Channel); ok && d.fleet != nil && approval.IsExclusive(c) {
			// One host of the fleet at a time (docs/fleet.md).
			go d.fleet.RunExclusive(d.ctx, c, run)
			continue
		}
		go run(d.ctx)
	}
	go d.dns.RunAudit(d.ctx)
	if d.fleet != nil {
		go d.fleet.Run(d.ctx)
		go d.fleet.ShipAudit(d.ctx, d.cfg.AuditLog)
	}

	sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	d.log.Info("clawd ready", zap.String("version", Version), zap.String("socket", d.cfg.Socket),
		zap.String("api", d.cfg.APIListen), zap.Int("attachments", d.count()))

	<-ctx.Done()
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	d.log.Info("clawd stopping: draining connections", zap.Duration("timeout", d.cfg.DrainTimeout))
	return d.shutdown(servers)
}

func (d *Daemon) shutdown(servers []*http.Server) error {
	// No fast path without a daemon to audit it and to follow the policy:
	// from here on every connect takes the proxy path, and fails there.
	if d.fastOn() {
		d.fast.mu.Lock()
		d.fast.stopped = true
		if err := d.enf.ClearFastTable(); err != nil {
			d.log.Error("fast path: clear table", zap.Error(err))
		}
		d.fast.mu.Unlock()
	}
	// Stop accepting first: from here on, connects of attached containers
	// are refused by the kernel (no listener), never let through.
	d.mu.Lock()
	for _, a := range d.atts {
		a.ls.Close()
		d.enf.UnregisterListeners(a.ls.kernel())
	}
	d.mu.Unlock()
	d.approvals.Shutdown()
	dctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout)
	defer cancel()
	err := d.proxy.Shutdown(dctx)
	done := make(chan struct{})
	go func() { d.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-dctx.Done():
		d.log.Warn("drain timeout: closing remaining connections")
	}
	d.cancel()
	for _, s := range servers {
		s.Shutdown(dctx)
	}
	os.Remove(d.cfg.Socket)
	for _, r := range d.rt {
		r.Close()
	}
	if d.fleet != nil {
		d.fleet.Close()
	}
	d.dns.FlushAudit()
	d.usage.Close()
	d.fast.readers.Wait() // d.cancel closed its events
	d.audit.Close()
	d.closeAuditExport()
	d.enf.Close()
	return err
}

func (d *Daemon) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.atts)
}

// metricsHandler serves /metrics and, with --pprof, Go's profiles under
// /debug/pprof/ (host-side only: containers can never reach this listener).
func (d *Daemon) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	if d.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Reload re-reads the policy and reopens the audit log (SIGHUP).
func (d *Daemon) Reload() error {
	err := d.policy.Reload()
	if rerr := d.audit.Reopen(); rerr != nil {
		d.log.Error("reopen audit log", zap.Error(rerr))
	}
	if serr := d.secrets.Reload(); serr != nil {
		d.log.Error("reload secrets (keeping the last good copy)", zap.Error(serr))
	}
	return err
}
