package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/daemon/nsenter"
	"github.com/clawd-dev/clawd/policy"
)

// The kernel fast path (issue 18, config `fast-path`): connections a
// container's rule set allows by address and port alone pass in the
// kernel, not through the proxy. policy.FastPath decides what may (its
// doc comment is the contract); this file keeps the kernel's table in step
// with the policy, the attached containers, the host's addresses and the
// secret store, cuts the flows a new table no longer allows, and writes
// the kernel's flow events as audit lines with path "kernel".
//
// The table is rebuilt whole and swapped in at once (enforce.SetFastTable)
// whenever any of its inputs changes: a policy install, an attach or
// detach, a change of the host's addresses (netlink), a new address of an
// upstream proxy, and each sweep (container addresses, secrets). A container with a secret store that
// holds any secret gets no fast path: the proxy refuses placeholders sent
// to hosts they are not bound to, which the kernel cannot see.

// PathKernel is the audit `path` of connections the kernel let through.
const PathKernel = "kernel"

type fastState struct {
	mu      sync.Mutex                  // serialises refreshes
	stopped bool                        // the daemon is shutting down: no table
	tables  map[uint64]policy.FastTable // by container cgroup, as installed
	open    map[uint64]*fastOpen        // flow cookie -> established, its close not yet read
	openMu  sync.Mutex                  // guards open
	events  *enforce.FastEvents         // nil until started
	// readers is readFast: shutdown waits for it before the audit log
	// closes (a batch it took from the ring must reach the log; what is
	// left in the ring waits there for the next daemon).
	readers sync.WaitGroup
	byCg    map[uint64]policy.Container // containers of the installed table
	// installed: tables is what the kernel has (not after an error).
	installed bool
	// gen counts refreshes (attach, detach, reload, sweep): the reader's
	// cache of rule names is dropped when it moves.
	gen atomic.Uint64
}

// fastOpen is an established fast-path connection whose close has not been
// read: its "decision" line, which its "closed" line repeats with the
// bytes and duration.
type fastOpen struct {
	start time.Time   // when it was established; zero: before this daemon started
	mono  uint64      // the same, CLOCK_MONOTONIC ns from the kernel (0: unknown)
	ent   audit.Entry // its decision line
	// gone: checks (checkFastOpen, reader goroutine only) that found the
	// kernel no longer following it, no close read since.
	gone int
	// logged: its decision line is written (its open event read, or by
	// a previous daemon). A flow held since its connect event is not:
	// if its open is lost, checkFastOpen writes it with the close_lost.
	logged bool
}

// fastOn reports whether the fast path is configured.
func (d *Daemon) fastOn() bool { return d.cfg.FastPath && d.enf != nil }

// hostPrefixes are the host's own addresses, as /32 and /128 prefixes.
func (d *Daemon) hostPrefixes() ([]netip.Prefix, error) {
	addrs, err := d.hosts.Addrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// refreshFast recompiles and installs the fast-path table, then cuts the
// open fast-path flows it no longer allows. Errors leave an empty table
// (fail closed: everything takes the proxy path).
func (d *Daemon) refreshFast(why string) { d.refreshFastGone(why, nil) }

// refreshFastGone is refreshFast after gone was detached (nil: none): its
// flows are cut as its own, with its identity in their revoked lines and
// SOCK_DESTROY in its network namespace, which the caller keeps open
// until this returns.
func (d *Daemon) refreshFastGone(why string, gone *attachment) {
	if !d.fastOn() {
		return
	}
	fs := &d.fast
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.stopped {
		return
	}
	tables, byCg, err := d.compileFast()
	if err == nil && fs.installed && reflect.DeepEqual(tables, fs.tables) {
		// Unchanged: no new map, but still re-decide the open flows
		// (a flow may have opened on a table since replaced).
		fs.gen.Add(1)
		d.cutFast(why, tables, gone)
		return
	}
	if err == nil {
		tabs := make(map[uint64][]enforce.FastEntry, len(tables))
		for cg, t := range tables {
			tabs[cg] = toEnforce(t)
		}
		err = d.enf.SetFastTable(tabs)
	}
	if err != nil {
		d.log.Error("fast path: table not installed; every connection takes the proxy path", zap.String("why", why), zap.Error(err))
		tables = nil
		if cerr := d.enf.ClearFastTable(); cerr != nil {
			d.log.Error("fast path: clear table", zap.Error(cerr))
		}
	}
	fs.tables, fs.byCg, fs.installed = tables, byCg, err == nil
	fs.gen.Add(1)
	n := 0
	for _, t := range tables {
		n += len(t)
	}
	cut := d.cutFast(why, tables, gone)
	d.log.Debug("fast path table installed", zap.String("why", why), zap.Int("containers", len(tables)), zap.Int("entries", n), zap.Int("cut", cut))
}

func (d *Daemon) compileFast() (map[uint64]policy.FastTable, map[uint64]policy.Container, error) {
	p := d.policy.Current()
	if p == nil {
		return nil, nil, errors.New("no policy")
	}
	exclude, err := d.hostPrefixes()
	if err != nil {
		return nil, nil, fmt.Errorf("list host addresses: %w", err)
	}
	ports := forbiddenPorts(d.cfg.APIListen, d.cfg.MetricsListen, d.cfg.WebhookListen)
	// The proxy refuses its own upstream proxies as destinations
	// (clawd-internal): excluded whole, every port.
	if d.proxy != nil {
		for _, ap := range d.proxy.ProxyAddrs() {
			a := ap.Addr().Unmap()
			exclude = append(exclude, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	d.addrs.mu.RLock()
	for a := range d.addrs.count {
		exclude = append(exclude, netip.PrefixFrom(a, a.BitLen()))
	}
	d.addrs.mu.RUnlock()
	noSecrets := d.secrets == nil || len(d.secrets.List()) == 0
	tables := map[uint64]policy.FastTable{}
	byCg := map[uint64]policy.Container{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.atts {
		if a.cutOff != "" || !noSecrets {
			continue
		}
		if t := p.FastPath(a.Container, exclude, ports); len(t) > 0 {
			tables[a.CgroupID] = t
			byCg[a.CgroupID] = a.Container
		}
	}
	return tables, byCg, nil
}

func toEnforce(t policy.FastTable) []enforce.FastEntry {
	out := make([]enforce.FastEntry, 0, len(t))
	for _, e := range t {
		fe := enforce.FastEntry{Prefix: e.Prefix}
		for _, s := range e.Ports {
			fe.Ports = append(fe.Ports, enforce.PortSpan{Lo: s.Lo, Hi: s.Hi})
		}
		out = append(out, fe)
	}
	return out
}

// cutFast closes every open fast-path flow that tables do not allow (gone:
// an attachment just removed, see refreshFastGone):
// SOCK_DESTROY in the container's network namespace resets the socket (and
// the peer); where that fails its record goes, so its packets stop at the
// egress filters.
func (d *Daemon) cutFast(why string, tables map[uint64]policy.FastTable, gone *attachment) (cut int) {
	flows, err := d.enf.FastFlows()
	if err != nil {
		d.log.Error("fast path: list flows", zap.Error(err))
	}
	for _, f := range flows {
		if f.Closed {
			continue
		}
		if t, ok := tables[f.Cgroup]; ok && t.Allows(f.Dst.Addr(), f.Dst.Port()) {
			continue
		}
		cut++
		d.mu.Lock()
		a := d.byCgroup[f.Cgroup]
		if a == nil && gone != nil && gone.CgroupID == f.Cgroup {
			a = gone // detached just now: still its flow
		}
		var nsPath string
		var c policy.Container
		if a != nil {
			c = a.Container
			if a.netns != nil {
				nsPath = fdPath(a.netns)
			}
		}
		d.mu.Unlock()
		// SOCK_DESTROY first, the record kept: the reset it sends must
		// pass the egress filters so the peer learns of the cut too (the
		// dead socket sends nothing else). Without it, the record goes
		// and the flow's packets stop there.
		destroyed := false
		if f.Established && nsPath != "" {
			err := nsenter.Do(nsPath, func() error { return sockDestroy(f) })
			if err != nil {
				d.log.Warn("fast path: SOCK_DESTROY (the flow's packets are dropped regardless)", zap.String("dst", f.Dst.String()), zap.Error(err))
			}
			destroyed = err == nil
		}
		if !destroyed {
			if err := d.enf.ForgetFastFlow(f.Cookie); err != nil {
				d.log.Error("fast path: forget flow", zap.Error(err))
			}
			// Without its record no close will be reported: the
			// revoked line below is the connection's last.
			d.fast.openMu.Lock()
			o := d.fast.open[f.Cookie]
			delete(d.fast.open, f.Cookie)
			d.fast.openMu.Unlock()
			if o != nil && !o.logged {
				// Held since its connect, no line yet: its
				// decision line before its revoked one.
				dec := o.ent
				dec.Time = time.Now().UTC()
				d.audit.Log(dec)
			}
		}
		d.audit.Log(audit.Entry{Event: audit.EventRevoked, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels,
			Dst: f.Dst.String(), Src: srcOf(f), Proto: "tcp", Path: PathKernel, Action: audit.ActionRevoked, PID: f.TGID,
			Reason: fmt.Sprintf("%s: the rule set no longer allows %s by address and port", why, f.Dst)})
	}
	return cut
}

// sockDestroy resets the TCP socket of f (SOCK_DESTROY, matched by its
// addresses and cookie); call it inside the socket's network namespace.
func sockDestroy(f enforce.FastFlow) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("open sock_diag: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(sockDiagTimeout.Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DESTROY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	ne.PutUint32(req[8:], 1)
	r := req[unix.NLMSG_HDRLEN:]
	src, dst := f.Src.Addr(), f.Dst.Addr()
	r[0] = unix.AF_INET
	if !src.Is4() {
		r[0] = unix.AF_INET6
	}
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], ^uint32(0))
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], f.Src.Port())
	binary.BigEndian.PutUint16(id[2:], f.Dst.Port())
	putAddr(id[4:20], src)
	putAddr(id[20:36], dst)
	ne.PutUint32(id[40:], uint32(f.Cookie))
	ne.PutUint32(id[44:], uint32(f.Cookie>>32))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("SOCK_DESTROY: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("SOCK_DESTROY answer: %w", err)
	}
	if n >= unix.NLMSG_HDRLEN+4 && ne.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if e := int32(ne.Uint32(buf[unix.NLMSG_HDRLEN:])); e != 0 {
			return unix.Errno(-e)
		}
	}
	return nil
}

// startFast installs the first table, starts the event reader and watches
// the host's addresses.
func (d *Daemon) startFast() {
	if !d.cfg.FastPath {
		if d.enf != nil {
			// Off means no table: a copy of the programs built while
			// it was on passes nothing either.
			d.enf.ClearFastTable()
		}
		return
	}
	d.fast.open = map[uint64]*fastOpen{}
	d.refreshFast("daemon started")
	ev, err := d.enf.OpenFastEvents()
	if err != nil {
		d.log.Error("fast path: no kernel audit events", zap.Error(err))
	} else {
		d.fast.events = ev
		d.adoptFastFlows()
		d.fast.readers.Add(1)
		go func() {
			defer d.fast.readers.Done()
			d.readFast(ev)
		}()
		go func() {
			<-d.ctx.Done()
			ev.Close()
		}()
	}
	// A new address (the host side of a new veth) must leave the table at once.
	d.hosts.OnChange(func() { d.refreshFast("host addresses changed") })
}

// Per-connection audit (issue 18): a fast-path connection gets a
// "decision" line when the kernel reports it established (so it is in the
// log even if its end never is) and a "closed" line with its bytes and
// duration when it ends; a connect that never got established gets one
// "decision" line when it fails. Both come from sockops events in the ring
// buffer, which readFast drains in batches: a batch's lines go to the
// audit log with one write, and the rule name is decided once per
// destination and refresh (ruleCache), not per event.
//
// The kernel can stop following an established connection before its end
// is reported: its record in the shared LRU flow map evicted by other
// connects, or its close event dropped (ring buffer full, counted in
// ev_lost). readFast looks up the records of the connections it holds open
// every fastCheckEvery; one found gone (or closed) at two checks with the
// ring buffer drained in between, and no close read, gets a "close_lost"
// line (its packets are dropped from then on: the egress filters pass
// recorded flows only).

const (
	fastBatch = 256 // events per read of the ring buffer at most
	// fastCoalesce: after a batch the reader waits this long before the
	// next read, so that events arriving meanwhile make one batch (one
	// write) instead of a wake-up and a write each. The ring buffer holds
	// about 10,000 events: it cannot fill in this time.
	fastCoalesce = 2 * time.Millisecond
)

// fastCheckEvery is how often readFast checks the open connections'
// records: the sweep interval, at most a minute.
func (d *Daemon) fastCheckEvery() time.Duration {
	t := d.cfg.SweepInterval
	if t <= 0 || t > time.Minute {
		t = time.Minute
	}
	return t
}

// ruleCache remembers the rule that allows a (container, destination) for
// one policy and one refresh generation: the table the kernel has is
// rebuilt at every refresh, and the policy decides the rule.
type ruleCache struct {
	p   *policy.Policy
	gen uint64
	m   map[ruleKey]string
}

type ruleKey struct {
	cg  uint64
	dst netip.AddrPort
}

const maxRuleCache = 4096

func (rc *ruleCache) rule(d *Daemon, cg uint64, c policy.Container, dst netip.AddrPort) string {
	p := d.policy.Current()
	if p == nil || c.ID == "" {
		return ""
	}
	if g := d.fast.gen.Load(); rc.p != p || rc.gen != g || len(rc.m) >= maxRuleCache {
		rc.p, rc.gen, rc.m = p, g, make(map[ruleKey]string)
	}
	k := ruleKey{cg, dst}
	r, ok := rc.m[k]
	if !ok {
		r = p.Decide(policy.Input{Container: c, DstIP: dst.Addr(), DstPort: dst.Port(), Recheck: true}).Rule
		rc.m[k] = r
	}
	return r
}

// srcOf is f's source, known from its connect on (a record an older
// program wrote has it once established only).
func srcOf(f enforce.FastFlow) string {
	if !f.Src.Addr().IsValid() || f.Src.Port() == 0 {
		return ""
	}
	return f.Src.String()
}

const (
	reasonFast      = "allowed by address and port; passed in the kernel (fast path)"
	reasonNeverEst  = reasonFast + "; the connection was never established (bytes_out: what was sent with the SYN, TCP Fast Open data the upstream may have read)"
	reasonClosed    = "the connection passed in the kernel (fast path) ended"
	reasonEvicted   = "the kernel no longer follows this connection (its flow record was evicted from the flow map or removed): its packets are dropped from here on, and its bytes and end are not known"
	reasonOpenLost  = "the kernel stopped following this connection before its open was reported (its open event was lost to a full ring buffer, or its record evicted): its packets are dropped from here on; its first SYN may have carried data (TCP Fast Open); its bytes and end are not known"
	reasonEventLost = "the kernel reported this connection closed but its close event was lost (ring buffer full): its bytes are not known"
)

// fastEntry is the decision line of flow f.
func (d *Daemon) fastEntry(f enforce.FastFlow, rc *ruleCache) audit.Entry {
	d.mu.Lock()
	var c policy.Container
	if a := d.byCgroup[f.Cgroup]; a != nil {
		c = a.Container
	}
	d.mu.Unlock()
	return audit.Entry{Event: audit.EventDecision, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels,
		Dst: f.Dst.String(), Src: srcOf(f), Proto: "tcp", Path: PathKernel, Rule: rc.rule(d, f.Cgroup, c, f.Dst),
		Action: audit.ActionAllow, PID: f.TGID, Reason: reasonFast}
}

// adoptFastFlows, at start, takes the established connections the kernel
// follows as open (a previous daemon wrote their decision lines, or their
// open events wait in the ring buffer): their close, or its loss, is
// audited too.
func (d *Daemon) adoptFastFlows() {
	flows, err := d.enf.FastFlows()
	if err != nil {
		d.log.Warn("fast path: list flows at start", zap.Error(err))
	}
	d.adoptFlows(flows, true)
}

// adoptFlows holds as open the flows of flows whose end is still to be
// audited: with established, those not closed (at start: established or
// still connecting);
// always, those whose close event was lost (marked close_lost by the
// kernel), or whose open event was lost (open_lost), which checkFastOpen
// then writes as close_lost (and the decision line missing). A closed record
// without the mark is one whose close was read (or an old one): ignored.
func (d *Daemon) adoptFlows(flows []enforce.FastFlow, established bool) {
	var rc ruleCache
	fs := &d.fast
	for _, f := range flows {
		// Connecting (not closed, not established): its connect event
		// was read by a previous daemon (or waits in the ring), which
		// wrote no line; it may carry Fast Open data already.
		// Marked open_lost: no decision line was written (its open
		// event found no room), and its Fast Open SYN may have carried
		// data.
		if !f.CloseLost && !f.OpenLost && !(established && !f.Closed) {
			continue
		}
		fs.openMu.Lock()
		if o := fs.open[f.Cookie]; o == nil {
			fs.open[f.Cookie] = &fastOpen{ent: d.fastEntry(f, &rc), logged: f.Established && !f.OpenLost}
		} else if f.OpenLost {
			o.logged = false // held since its connect; its open was lost
		}
		fs.openMu.Unlock()
	}
}

// fastClock turns the kernel's event times (CLOCK_MONOTONIC) into wall
// time: the reader batches events, so the time one is read says little.
type fastClock struct {
	now  time.Time
	mono int64 // CLOCK_MONOTONIC at now, ns
}

func readClock() fastClock {
	var ts unix.Timespec
	c := fastClock{now: time.Now().UTC()}
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil {
		c.mono = ts.Nano()
	}
	return c
}

// at is when an event stamped mono happened (now if unknown).
func (c fastClock) at(mono uint64) time.Time {
	if mono == 0 || c.mono == 0 || int64(mono) > c.mono {
		return c.now
	}
	return c.now.Add(-time.Duration(c.mono - int64(mono)))
}

// fastLine appends the audit line of event e, if it has one, to ents.
func (d *Daemon) fastLine(ents []audit.Entry, e enforce.FastEvent, rc *ruleCache, clk fastClock) []audit.Entry {
	fs := &d.fast
	now := clk.at(e.Mono)
	if e.Connect {
		// Held from before its first SYN, no line yet: its open or
		// close writes it, or checkFastOpen if both are lost.
		ent := d.fastEntry(e.Flow, rc)
		fs.openMu.Lock()
		if fs.open[e.Flow.Cookie] == nil {
			fs.open[e.Flow.Cookie] = &fastOpen{start: now, mono: e.Mono, ent: ent}
		}
		fs.openMu.Unlock()
		return ents
	}
	if e.Open {
		ent := d.fastEntry(e.Flow, rc)
		ent.Time = now
		fs.openMu.Lock()
		fs.open[e.Flow.Cookie] = &fastOpen{start: now, mono: e.Mono, ent: ent, logged: true}
		fs.openMu.Unlock()
		return append(ents, ent)
	}
	fs.openMu.Lock()
	o := fs.open[e.Flow.Cookie]
	delete(fs.open, e.Flow.Cookie)
	fs.openMu.Unlock()
	var ent audit.Entry
	if o != nil {
		ent = o.ent
	} else {
		ent = d.fastEntry(e.Flow, rc)
	}
	ent.Time = now
	ent.BytesIn, ent.BytesOut = int64(e.BytesReceived), int64(e.BytesSent)
	if !e.Flow.Established {
		// Never established: no decision line was written; this is it.
		ent.Reason = reasonNeverEst
		return append(ents, ent)
	}
	if o != nil && !o.logged {
		// Established with no open read (an adopted connect): its
		// decision line first.
		dec := d.fastEntry(e.Flow, rc)
		dec.Time = now
		ents = append(ents, dec)
	}
	ent.Event, ent.Reason = audit.EventClosed, reasonClosed
	switch {
	case o != nil && o.mono != 0 && e.Mono >= o.mono:
		ent.DurationMS = float64((e.Mono-o.mono)/1000) / 1000
	case o != nil && !o.start.IsZero():
		ent.DurationMS = float64(now.Sub(o.start).Microseconds()) / 1000
	}
	return append(ents, ent)
}

// readFast turns kernel flow events into audit lines (see above) until
// the events are closed.
func (d *Daemon) readFast(ev *enforce.FastEvents) {
	var (
		rc      ruleCache
		evs     []enforce.FastEvent
		ents    []audit.Entry
		drained bool // the ring buffer was found empty since the last check
	)
	every := d.fastCheckEvery()
	next := time.Now().Add(every)
	for {
		var err error
		evs, err = ev.ReadBatch(evs[:0], fastBatch, next)
		clk := readClock()
		now := clk.now
		ents = ents[:0]
		for _, e := range evs {
			ents = d.fastLine(ents, e, &rc, clk)
		}
		if len(evs) < fastBatch && (err == nil || errors.Is(err, os.ErrDeadlineExceeded)) {
			drained = true // ReadBatch stopped at an empty ring
		}
		var marked []uint64
		if !now.Before(next) {
			ents, marked = d.checkFastOpen(ents, drained, now)
			drained, next = false, now.Add(every)
		}
		d.audit.LogBatch(ents)
		// Their close_lost lines are written: the marks go, so that a
		// later daemon does not write them again (a record marked
		// open_lost goes whole: its socket's packets stay dropped).
		for _, c := range marked {
			if err := d.enf.ClearFastMarks(c); err != nil {
				d.log.Warn("fast path: clear close_lost or open_lost mark", zap.Error(err))
			}
		}
		clear(ents) // no labels kept alive by the buffer
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
		case errors.Is(err, os.ErrClosed):
			return
		default:
			d.log.Warn("fast path: event", zap.Error(err))
		}
		if len(evs) > 0 {
			select {
			case <-d.ctx.Done():
			case <-time.After(fastCoalesce):
			}
		}
	}
}

// checkFastOpen looks up the record of every connection held open and
// appends a close_lost line for each that the kernel stopped following
// (no record, or closed without a close event read) at this check and the
// one before, with the ring buffer drained in between: a close event
// still queued at the first look is read before the drain.
func (d *Daemon) checkFastOpen(ents []audit.Entry, drained bool, now time.Time) ([]audit.Entry, []uint64) {
	fs := &d.fast
	// Records marked close_lost that are not held (a connect never
	// established, or one adopted by no daemon) are held from here: the
	// checks below write their close_lost lines.
	flows, err := d.enf.FastFlows()
	if err != nil {
		d.log.Warn("fast path: list flows", zap.Error(err))
	}
	d.adoptFlows(flows, false)
	var marked []uint64 // close_lost records whose line is written here
	type held struct {
		cookie uint64
		o      *fastOpen
	}
	fs.openMu.Lock()
	all := make([]held, 0, len(fs.open))
	for k, o := range fs.open {
		all = append(all, held{k, o})
	}
	fs.openMu.Unlock()
	lost := 0
	for _, h := range all {
		f, ok, err := d.enf.FastFlow(h.cookie)
		if err != nil {
			d.log.Warn("fast path: look up flow", zap.Error(err))
			continue
		}
		if ok && !f.Closed && !f.OpenLost {
			h.o.gone = 0
			continue
		}
		if h.o.gone == 0 || !drained {
			h.o.gone = 1
			continue
		}
		fs.openMu.Lock()
		still := fs.open[h.cookie] == h.o
		if still {
			delete(fs.open, h.cookie)
		}
		fs.openMu.Unlock()
		if !still {
			continue // its close was read meanwhile
		}
		ent := h.o.ent
		if !h.o.logged {
			// Held since its connect event, its open never read
			// (lost: sockops dropped the record) or never made: its
			// first SYN, which may have carried Fast Open data,
			// left, so it gets its decision line now.
			dec := ent
			dec.Time = now
			ents = append(ents, dec)
		}
		ent.Time, ent.Event, ent.Reason = now, audit.EventCloseLost, reasonEvicted
		switch {
		case ok && f.OpenLost:
			ent.Reason = reasonOpenLost
			marked = append(marked, h.cookie)
		case ok:
			ent.Reason = reasonEventLost
			if f.CloseLost {
				marked = append(marked, h.cookie)
			}
		case !h.o.logged:
			ent.Reason = reasonOpenLost
		}
		if !h.o.start.IsZero() {
			ent.DurationMS = float64(now.Sub(h.o.start).Microseconds()) / 1000
		}
		ents = append(ents, ent)
		lost++
	}
	if lost > 0 {
		d.log.Warn("fast path: connections whose end the kernel did not report (close_lost audit lines)", zap.Int("connections", lost))
	}
	return ents, marked
}
