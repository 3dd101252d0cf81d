package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Engine holds the running policy and swaps it atomically on reload.
// Rate-limit state lives in the Engine, so reloading the policy does not
// hand every container a fresh burst.
type Engine struct {
	path   string
	log    *zap.Logger
	limits *limiter
	cur    atomic.Pointer[Policy]

	// Debounce is how long Watch waits after the last file event before
	// reloading; editors and ConfigMap swaps produce bursts of events.
	Debounce time.Duration

	mu         sync.Mutex // serializes reloads and guards the fields below
	lastErr    error
	lastReload time.Time
	lastSum    [32]byte // content of the last file Watch acted on
	now        func() time.Time
	onWatch    func() // test hook: called once the watch is in place

	reloads *prometheus.CounterVec
	rules   prometheus.Gauge

	onInstall []func() // after every install but the first; guarded by mu
	gens      uint64   // policies installed so far; guarded by mu
	check     func(*Policy) error
}

// SetCheck makes every later reload also run check (the daemon checks
// approval routes against the channels it configured); a policy that fails
// it is refused like a broken file and the running one kept. The running
// policy is checked at once: its error is returned and kept as LastError.
func (e *Engine) SetCheck(check func(*Policy) error) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.check = check
	if check == nil {
		return nil
	}
	if err := check(e.cur.Load()); err != nil {
		e.lastErr = err
		return err
	}
	return nil
}

// OnInstall registers f to run after every reload that installed a new
// policy (the proxy re-decides open connections then). f runs inside the
// serialised reload, after the new policy is in force: it must not call
// Reload or OnInstall.
func (e *Engine) OnInstall(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onInstall = append(e.onInstall, f)
}

// NewEngine loads the policy at path. A policy that fails to load is an
// error: the daemon must not start on a broken policy. A missing file is
// not: the Engine denies everything (and LastError says why) until the
// file appears. reg may be nil.
func NewEngine(path string, log *zap.Logger, reg prometheus.Registerer) (*Engine, error) {
	if log == nil {
		log = zap.NewNop()
	}
	e := &Engine{
		path:     path,
		log:      log.With(zap.String("policy", path)),
		limits:   newLimiter(),
		Debounce: 200 * time.Millisecond,
		now:      time.Now,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawd_policy_reloads_total",
			Help: "Policy reloads by result (success or failure).",
		}, []string{"result"}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clawd_policy_rules",
			Help: "Enabled rules in the running policy.",
		}),
	}
	e.reloads.WithLabelValues("success")
	e.reloads.WithLabelValues("failure")
	if reg != nil {
		var err error
		if e.reloads, err = register(reg, e.reloads); err != nil {
			return nil, err
		}
		if e.rules, err = register(reg, e.rules); err != nil {
			return nil, err
		}
	}
	data, p, err := readPolicy(path)
	if errors.Is(err, fs.ErrNotExist) {
		// A DaemonSet can start before its ConfigMap is mounted: enforce
		// (deny everything) rather than leave attached containers cut off
		// by a daemon that never starts, and load the file when it appears.
		p, _ = Parse([]byte(denyAllPolicy), path+" (missing)")
		e.install(p, nil)
		e.lastErr = fmt.Errorf("no policy file at %s: denying everything until it appears", path)
		e.log.Warn("no policy file: every connection is denied until it appears", zap.String("path", path))
		return e, nil
	}
	if err != nil {
		e.reloads.WithLabelValues("failure").Inc()
		return nil, err
	}
	e.install(p, data)
	e.log.Info("policy loaded", zap.Int("rules", p.Rules()), zap.Strings("sets", p.Sets()))
	return e, nil
}

// denyAllPolicy is in force while the policy file does not exist.
const denyAllPolicy = "default:\n  default_action: deny\n  rules: []\n"

// register registers c, or reuses an identical collector already there (a
// second Engine in tests, or a restart within one process).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("policy metrics: %w", err)
	}
	return c, nil
}

func readPolicy(path string) ([]byte, *Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load policy: %w", err)
	}
	if len(data) > maxPolicySize {
		return data, nil, fmt.Errorf("load policy %s: file is larger than %d bytes", path, maxPolicySize)
	}
	p, err := Parse(data, path)
	return data, p, err
}

// install makes p the running policy. Callers hold e.mu (or own e).
func (e *Engine) install(p *Policy, data []byte) {
	p.limits = e.limits
	e.gens++
	p.gen = e.gens
	e.cur.Store(p)
	e.lastErr = nil
	e.lastReload = e.now()
	e.lastSum = [32]byte{}
	if data != nil {
		e.lastSum = sha256.Sum256(data)
	}
	e.rules.Set(float64(p.Rules()))
	e.reloads.WithLabelValues("success").Inc()
}

// UpstreamProxyAddrs are the running policy's upstream proxies named by address.
func (e *Engine) UpstreamProxyAddrs() []netip.AddrPort { return e.cur.Load().UpstreamProxyAddrs() }

// Current is the running policy.
func (e *Engine) Current() *Policy { return e.cur.Load() }

// Decide evaluates in against the running policy.
func (e *Engine) Decide(in Input) Decision { return e.cur.Load().Decide(in) }

// Intercepts reports whether TLS from c to host is terminated by clawd.
func (e *Engine) Intercepts(c Container, host string) bool {
	return e.cur.Load().Intercepts(c, host)
}

// MayResolve reports whether a DNS name could lead to an allowed connection.
func (e *Engine) MayResolve(c Container, name string) bool {
	return e.cur.Load().MayResolve(c, name)
}

// Reload re-reads the policy file. When it fails validation the running
// policy stays in force and the error is kept for LastError.
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reloadLocked()
}

func (e *Engine) reloadLocked() error {
	data, p, err := readPolicy(e.path)
	if data != nil {
		e.lastSum = [32]byte{}
		if data != nil {
			e.lastSum = sha256.Sum256(data)
		}
	}
	if err == nil && e.check != nil {
		err = e.check(p)
	}
	if err != nil {
		e.lastErr = err
		e.reloads.WithLabelValues("failure").Inc()
		e.log.Error("policy reload failed; keeping the running policy",
			zap.Int("running_rules", e.cur.Load().Rules()), zap.Error(err))
		return err
	}
	old := e.cur.Load().Rules()
	e.install(p, data)
	e.log.Info("policy reloaded", zap.Int("rules", p.Rules()), zap.Int("previous_rules", old), zap.Strings("sets", p.Sets()))
	for _, f := range e.onInstall {
		f()
	}
	return nil
}

// LastError is the error of the most recent reload, nil if it succeeded.
func (e *Engine) LastError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// LastReload is when a policy was last installed successfully.
func (e *Engine) LastReload() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastReload
}

// Watch reloads the policy when its file changes, until ctx ends. It
// watches the file's directory rather than the file: editors replace files
// by renaming a new one over them, and Kubernetes swaps a ConfigMap by
// re-pointing the "..data" symlink, and both would silently end a watch on
// the old inode. Bursts of events are debounced, and a reload only happens
// when the content actually changed.
func (e *Engine) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	defer w.Close()
	dir, base := filepath.Split(e.path)
	if dir == "" {
		dir = "."
	}
	for {
		err := w.Add(dir)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch policy directory %s: %w", dir, err)
		}
		// Not mounted yet (a ConfigMap volume): look again shortly.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	if _, err := os.Stat(e.path); err == nil {
		e.reloadIfChanged() // it may have appeared while the watch was not there
	}
	e.log.Info("watching policy for changes", zap.String("dir", dir))
	if e.onWatch != nil {
		e.onWatch()
	}

	var timer *time.Timer
	var fire <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			name := filepath.Base(ev.Name)
			// The file itself, or Kubernetes' ..data / ..2024_xx dirs.
			if name != base && !strings.HasPrefix(name, "..") {
				continue
			}
			if timer == nil {
				timer = time.NewTimer(e.Debounce)
			} else {
				timer.Reset(e.Debounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			e.log.Warn("policy watcher error", zap.Error(err))
		case <-fire:
			fire = nil
			e.reloadIfChanged()
		}
	}
}

func (e *Engine) reloadIfChanged() {
	data, err := os.ReadFile(e.path)
	if err != nil {
		// Mid-swap the file can be briefly missing; the create event that
		// follows triggers another attempt.
		e.log.Warn("policy file unreadable; keeping the running policy", zap.Error(err))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if sha256.Sum256(data) == e.lastSum {
		e.log.Debug("policy directory changed but the policy content did not; not reloading")
		return
	}
	_ = e.reloadLocked()
}

// HTTPLevel is Policy.HTTPLevel on the running policy.
func (e *Engine) HTTPLevel(c Container, host string, ip netip.Addr, port uint16) bool {
	return e.cur.Load().HTTPLevel(c, host, ip, port)
}

// CIDRCovers is Policy.CIDRCovers on the running policy.
func (e *Engine) CIDRCovers(c Container, ip netip.Addr, port uint16) bool {
	return e.cur.Load().CIDRCovers(c, ip, port)
}

// HTTPLevelInAnySet is Policy.HTTPLevelInAnySet on the running policy.
func (e *Engine) HTTPLevelInAnySet(host string) bool {
	return e.cur.Load().HTTPLevelInAnySet(host)
}
