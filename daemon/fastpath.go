package daemon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
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
	open    map[uint64]time.Time        // flow cookie -> when it opened
	openMu  sync.Mutex                  // guards open
	events  *enforce.FastEvents         // nil until started
	byCg    map[uint64]policy.Container // containers of the installed table
	// installed: tables is what the kernel has (not after an error).
	installed bool
}

// fastOn reports whether the fast path is configured.
func (d *Daemon) fastOn() bool { return d.cfg.FastPath && d.enf != nil }

// hostPrefixes are the host's own addresses, as /32 and /128 prefixes.
func hostPrefixes() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, x := range addrs {
		var ip net.IP
		switch v := x.(type) {
		case *net.IPNet:
			ip = v.IP
		case *net.IPAddr:
			ip = v.IP
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// refreshFast recompiles and installs the fast-path table, then cuts the
// open fast-path flows it no longer allows. Errors leave an empty table
// (fail closed: everything takes the proxy path).
func (d *Daemon) refreshFast(why string) {
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
		d.cutFast(why, tables)
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
	n := 0
	for _, t := range tables {
		n += len(t)
	}
	cut := d.cutFast(why, tables)
	d.log.Debug("fast path table installed", zap.String("why", why), zap.Int("containers", len(tables)), zap.Int("entries", n), zap.Int("cut", cut))
}

func (d *Daemon) compileFast() (map[uint64]policy.FastTable, map[uint64]policy.Container, error) {
	p := d.policy.Current()
	if p == nil {
		return nil, nil, errors.New("no policy")
	}
	exclude, err := hostPrefixes()
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

// cutFast closes every open fast-path flow that tables do not allow:
// SOCK_DESTROY in the container's network namespace resets the socket (and
// the peer); where that fails its record goes, so its packets stop at the
// egress filters.
func (d *Daemon) cutFast(why string, tables map[uint64]policy.FastTable) (cut int) {
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
		}
		d.audit.Log(audit.Entry{Event: audit.EventRevoked, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels,
			Dst: f.Dst.String(), Proto: "tcp", Path: PathKernel, Action: audit.ActionRevoked, PID: f.TGID,
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
	d.fast.open = map[uint64]time.Time{}
	d.refreshFast("daemon started")
	ev, err := d.enf.OpenFastEvents()
	if err != nil {
		d.log.Error("fast path: no kernel audit events", zap.Error(err))
	} else {
		d.fast.events = ev
		go d.readFast(ev)
		go func() {
			<-d.ctx.Done()
			ev.Close()
		}()
	}
	go d.watchHostAddrs()
}

// watchHostAddrs refreshes the table when the host's addresses change: a
// new address (the host side of a new veth) must leave the table at once.
func (d *Daemon) watchHostAddrs() {
	for d.ctx.Err() == nil {
		ch := make(chan netlink.AddrUpdate, 64)
		done := make(chan struct{})
		if err := netlink.AddrSubscribe(ch, done); err != nil {
			d.log.Error("fast path: watch host addresses", zap.Error(err))
			close(done)
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
			continue
		}
	loop:
		for {
			select {
			case <-d.ctx.Done():
				close(done)
				return
			case _, ok := <-ch:
				if !ok {
					break loop
				}
				d.refreshFast("host addresses changed")
			}
		}
		close(done)
	}
}

// readFast turns kernel flow events into audit lines: one decision line
// per connection when it closes, with its bytes, like the proxy's.
func (d *Daemon) readFast(ev *enforce.FastEvents) {
	for {
		e, err := ev.Read()
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			d.log.Warn("fast path: event", zap.Error(err))
			continue
		}
		fs := &d.fast
		fs.openMu.Lock()
		if e.Open {
			fs.open[e.Flow.Cookie] = time.Now()
			fs.openMu.Unlock()
			continue
		}
		start, known := fs.open[e.Flow.Cookie]
		delete(fs.open, e.Flow.Cookie)
		fs.openMu.Unlock()
		d.mu.Lock()
		var c policy.Container
		if a := d.byCgroup[e.Flow.Cgroup]; a != nil {
			c = a.Container
		}
		d.mu.Unlock()
		rule := ""
		if p := d.policy.Current(); p != nil && c.ID != "" {
			rule = p.Decide(policy.Input{Container: c, DstIP: e.Flow.Dst.Addr(), DstPort: e.Flow.Dst.Port(), Recheck: true}).Rule
		}
		ent := audit.Entry{Event: audit.EventDecision, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels,
			Dst: e.Flow.Dst.String(), Proto: "tcp", Path: PathKernel, Rule: rule, Action: audit.ActionAllow, PID: e.Flow.TGID,
			Reason:  "allowed by address and port; passed in the kernel (fast path)",
			BytesIn: int64(e.BytesReceived), BytesOut: int64(e.BytesSent)}
		if !e.Flow.Established {
			ent.Reason = "allowed by address and port; passed in the kernel (fast path); the connection was never established"
		}
		if known {
			ent.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		}
		d.audit.Log(ent)
	}
}
