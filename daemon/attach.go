package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/daemon/procid"
	"github.com/clawd-dev/clawd/daemon/runtime"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy"
	"github.com/clawd-dev/clawd/proxy/ca"
)

// AttachRequest is the body of POST /v1/attach.
type AttachRequest struct {
	Container string `json:"container,omitempty"` // name, ID or unique ID prefix
	Namespace string `json:"namespace,omitempty"` // containerd namespace; "" searches all
	PID       int    `json:"pid,omitempty"`       // attach a process's cgroup directly
	TrustCA   bool   `json:"trust_ca,omitempty"`  // add clawd's CA to the container's trust bundles
}

// UserError is an error caused by the request, not by clawd: the control
// API answers it with 4xx.
type UserError struct {
	Status int
	Err    error
}

func (e *UserError) Error() string { return e.Err.Error() }
func (e *UserError) Unwrap() error { return e.Err }

func userErr(status int, format string, a ...any) error {
	return &UserError{Status: status, Err: fmt.Errorf(format, a...)}
}

// bpffs refuses names with dots, so IDs use only [A-Za-z0-9_-].
var unsafeID = regexp.MustCompile(`[^A-Za-z0-9_-]`)

func attachmentID(c policy.Container) string {
	id := c.Runtime + "_" + c.Namespace + "_" + c.ID
	if c.Namespace == "" {
		id = c.Runtime + "_" + c.ID
	}
	id = unsafeID.ReplaceAllString(id, "_")
	if len(id) > 200 {
		id = id[:200]
	}
	return id
}

// resolve finds the container (and its init PID) a request names.
func (d *Daemon) resolve(ctx context.Context, req AttachRequest) (policy.Container, int, error) {
	if req.PID != 0 {
		if req.PID < 0 {
			return policy.Container{}, 0, userErr(400, "bad pid %d", req.PID)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", req.PID)); err != nil {
			return policy.Container{}, 0, userErr(404, "no process with pid %d", req.PID)
		}
		name := fmt.Sprintf("pid-%d", req.PID)
		if req.Container != "" {
			name = req.Container
		}
		return policy.Container{ID: fmt.Sprintf("pid-%d", req.PID), Name: name, Runtime: "pid"}, req.PID, nil
	}
	if strings.TrimSpace(req.Container) == "" {
		return policy.Container{}, 0, userErr(400, "name a container (or --pid)")
	}
	if len(d.rt) == 0 {
		return policy.Container{}, 0, userErr(503, "no container runtime is reachable (containerd at %s, docker at %s)", d.cfg.ContainerdAddress, d.cfg.DockerHost)
	}
	c, err := d.rt.Resolve(ctx, req.Container, req.Namespace)
	if err != nil {
		return policy.Container{}, 0, &UserError{Status: 404, Err: err}
	}
	if c.PID == 0 {
		return policy.Container{}, 0, userErr(409, "container %s has no running task", c.Name)
	}
	return c.Container, c.PID, nil
}

// Attach resolves and attaches a container.
func (d *Daemon) Attach(ctx context.Context, req AttachRequest) (Record, error) {
	began := time.Now()
	c, pid, err := d.resolve(ctx, req)
	if err != nil {
		return Record{}, err
	}
	return d.attach(began, c, pid, req.TrustCA, false)
}

// attach attaches a resolved container; began is when the request began
// (logged as "took": what an operator waits for, runtime lookup included).
func (d *Daemon) attach(began time.Time, c policy.Container, pid int, trustCA, auto bool) (Record, error) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	id := attachmentID(c)
	d.reapIfGoneLocked(id)
	d.mu.Lock()
	_, dup := d.atts[id]
	d.mu.Unlock()
	if dup {
		return Record{}, userErr(409, "container %s is already attached", c.Name)
	}
	cg, err := enforce.CgroupOfPID(pid)
	if err != nil {
		return Record{}, userErr(409, "%v", err)
	}
	cgid, err := enforce.CgroupID(cg)
	if err != nil {
		return Record{}, err
	}
	d.mu.Lock()
	other, dupCg := d.byCgroup[cgid]
	d.mu.Unlock()
	if dupCg {
		return Record{}, userErr(409, "cgroup %s is already attached (as %s)", cg, other.Container.Name)
	}
	// The netns is held open from here on: the process named may exit.
	ns, err := netnsOfPID(pid, cg)
	if err != nil {
		return Record{}, userErr(409, "%v", err)
	}
	nsPath := fdPath(ns)
	if same, err := sameNetns(nsPath, "/proc/self/ns/net"); err != nil || same {
		ns.Close()
		if err != nil {
			return Record{}, err
		}
		return Record{}, userErr(409, "container %s shares the host network namespace: clawd cannot isolate a host-network container", c.Name)
	}
	nsIno, err := fdInode(ns)
	if err != nil {
		ns.Close()
		return Record{}, err
	}
	params := enforce.Params{ID: id, Cgroup: cg, Netns: nsPath, FastPath: d.cfg.FastPath}
	ifs, err := d.enf.Survey(params)
	if err != nil {
		ns.Close()
		return Record{}, fmt.Errorf("inspect the interfaces of %s: %w", c.Name, err)
	}
	if err := d.checkCoverage(c.Name, cg, ifs); err != nil {
		ns.Close()
		return Record{}, err
	}
	ls, err := openListeners(nsPath)
	if err != nil {
		ns.Close()
		return Record{}, err
	}
	rec := Record{ID: id, Container: c, PID: pid, Cgroup: cg, CgroupID: cgid, Netns: nsIno, AttachedAt: time.Now().UTC(), Auto: auto}
	// State first: a crash between here and the pins leaves a record the
	// next start reconciles, never pins nobody knows about.
	if err := d.state.Save(rec); err != nil {
		ls.Close()
		ns.Close()
		return Record{}, err
	}
	// Listeners are registered before the programs run, so the first
	// datagram to another pod container's listener is refused already.
	if err := d.enf.RegisterListeners(cgid, ls.kernel()); err != nil {
		d.enf.UnregisterListeners(ls.kernel())
		ls.Close()
		ns.Close()
		d.state.Remove(id)
		return Record{}, fmt.Errorf("attach %s: %w", c.Name, err)
	}
	params.ProxyPort, params.DNSPort, params.HasV6 = ls.tcpPort(), ls.udpPort(), ls.hasV6()
	layers, err := d.attachPins(c, params)
	if err == nil {
		// The layout may have changed since the survey.
		if err = d.checkCoverage(c.Name, cg, layers.Interfaces); err != nil {
			d.enf.Detach(id, cgid)
		}
	}
	if err != nil {
		d.enf.UnregisterListeners(ls.kernel())
		ls.Close()
		ns.Close()
		d.state.Remove(id)
		var ue *UserError
		if errors.As(err, &ue) {
			return Record{}, err
		}
		return Record{}, fmt.Errorf("attach %s: %w", c.Name, err)
	}
	rec.Layers = layers
	if err := d.state.Save(rec); err != nil {
		d.log.Error("save attachment state", zap.Error(err))
	}
	d.serve(rec, ls)
	d.track(id, ns)
	d.refreshFast("attached " + c.Name)
	if trustCA {
		in, err := ca.InstallTrust(fmt.Sprintf("/proc/%d/root", pid), d.ca.CertPEM())
		if err != nil {
			d.log.Warn("install CA in container", zap.String("container", c.Name), zap.Error(err))
		} else {
			d.log.Info("installed clawd CA in container", zap.String("container", c.Name), zap.Strings("bundles", in.Bundles),
				zap.Strings("files", in.Files), zap.Strings("certifi", in.Certifi), zap.Strings("java", in.Java))
			for _, s := range in.Skipped {
				d.log.Warn("trust store left alone: see clawd doctor --container", zap.String("container", c.Name), zap.String("path", s.Path), zap.String("why", s.Why))
			}
		}
	}
	took := time.Since(began)
	d.audit.Log(audit.Entry{Event: audit.EventAttach, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels, Action: audit.ActionAttach,
		DurationMS: float64(took.Microseconds()) / 1000})
	d.log.Info("attached", zap.String("container", c.Name), zap.String("runtime", c.Runtime), zap.String("namespace", c.Namespace),
		zap.String("cgroup", cg), zap.Uint16("proxy_port", ls.tcpPort()), zap.Uint16("dns_port", ls.udpPort()),
		zap.Strings("tcx", layers.TCX), zap.Strings("tcx_peers", layers.TCXPeers), zap.Strings("tcx_lower", layers.TCXLower), zap.Bool("auto", auto), zap.Duration("took", took))
	return rec, nil
}

func sameNetns(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, fmt.Errorf("stat %s: %w", a, err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, fmt.Errorf("stat %s: %w", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// Detach finds an attachment by ID, container name or ID prefix (within
// containerd namespace ns when ns is not "") and removes it.
func (d *Daemon) Detach(ref, ns, reason string) (Record, error) {
	a, err := d.find(ref, ns)
	if err != nil {
		if r, ok := d.findDoubt(ref, ns); ok {
			return r, d.detach(r.ID, reason)
		}
		return Record{}, err
	}
	return a.Record, d.detach(a.ID, reason)
}

func (d *Daemon) find(ref, ns string) (*attachment, error) {
	ref = strings.TrimPrefix(strings.TrimSpace(ref), "/")
	if ref == "" {
		return nil, userErr(400, "name an attached container")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.atts[ref]; ok && (ns == "" || a.Container.Namespace == ns) {
		return a, nil
	}
	var exact, hits []*attachment
	for _, a := range d.atts {
		if ns != "" && a.Container.Namespace != ns {
			continue
		}
		if a.Container.Name == ref || a.Container.ID == ref {
			exact = append(exact, a)
		} else if strings.HasPrefix(a.Container.ID, ref) {
			hits = append(hits, a)
		}
	}
	if len(exact) > 0 {
		hits = exact
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		if ns != "" {
			return nil, userErr(404, "container %q is not attached in namespace %q", ref, ns)
		}
		return nil, userErr(404, "container %q is not attached", ref)
	}
	var names []string
	for _, h := range hits {
		names = append(names, h.ID)
	}
	slices.Sort(names)
	return nil, userErr(409, "%q is ambiguous: %s (name the namespace with --namespace)", ref, strings.Join(names, ", "))
}

func (d *Daemon) detach(id, reason string) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	return d.detachLocked(id, reason)
}

// detachLocked is detach with opMu held.
func (d *Daemon) detachLocked(id, reason string) error {
	d.mu.Lock()
	a, ok := d.atts[id]
	if ok {
		delete(d.atts, id)
		delete(d.byCgroup, a.CgroupID)
	}
	d.mu.Unlock()
	var cgid uint64
	if ok {
		a.cancel()
		a.ls.Close()
		d.enf.UnregisterListeners(a.ls.kernel())
		d.addrs.remove(a.ID)
		cgid = a.CgroupID
		d.dns.Forget(a.Container.Key())
		d.proxy.Forget(a.Container.Key())
	} else if dbt := d.takeDoubt(id); dbt != nil {
		cgid = dbt.CgroupID
	}
	err := d.enf.Detach(id, cgid)
	if rerr := d.state.Remove(id); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if ok {
		d.audit.Log(audit.Entry{Event: audit.EventDetach, Container: a.Container.Name, ContainerID: a.Container.ID, Runtime: a.Container.Runtime, Action: audit.ActionDetach, Reason: reason})
		d.log.Info("detached", zap.String("container", a.Container.Name), zap.String("reason", reason))
		// The refresh cuts its fast-path flows as its own (container
		// name, SOCK_DESTROY): its netns is released only after it.
		d.refreshFastGone("detached "+a.Container.Name, a)
		d.untrack(a)
	}
	return err
}

// serve registers the attachment and starts its accept loops.
func (d *Daemon) serve(r Record, ls *listeners) {
	ctx, cancel := context.WithCancel(d.ctx)
	a := &attachment{Record: r, ls: ls, cancel: cancel}
	d.mu.Lock()
	d.atts[r.ID] = a
	d.byCgroup[r.CgroupID] = a
	d.mu.Unlock()
	for _, ln := range []net.Listener{ls.tcp4, ls.tcp6} {
		if ln != nil {
			go d.acceptLoop(ctx, a, ln)
		}
	}
	for _, pc := range []net.PacketConn{ls.udp4, ls.udp6} {
		if pc != nil {
			go func(pc net.PacketConn) {
				local := pc.LocalAddr().(*net.UDPAddr).AddrPort()
				check := func(src netip.AddrPort) error { return d.checkSender(a, local, src) }
				if err := d.dns.ServePacketChecked(ctx, pc, r.Container, check); err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
					d.log.Warn("dns listener stopped", zap.String("container", r.Container.Name), zap.Error(err))
				}
			}(pc)
		}
	}
}

// checkSender vouches that a datagram from src to a's DNS listener at
// local was sent by a socket of a's cgroup (or of a cgroup below it). In a
// network namespace shared by several containers (a pod) anyone there can
// reach the listener on loopback: the kernel programs refuse other attached
// containers, but processes of unattached containers (a pod's sandbox, a
// sidecar) run no program. So the kernel is asked which socket sent the
// datagram and which cgroup that socket belongs to; only a's own are
// answered, by a's rules.
//
// A socket's cgroup is where it was created: a container handing its
// socket to another one (SCM_RIGHTS) delegates its own rule set, which it
// could as well do by relaying answers.
func (d *Daemon) checkSender(a *attachment, local, src netip.AddrPort) error {
	cg, err := a.ls.diag.udpSenderCgroup(local, src)
	if err != nil {
		return fmt.Errorf("cannot tell which socket sent it from %s: %v", src, err)
	}
	if cg == a.CgroupID {
		return nil
	}
	d.mu.Lock()
	other, known := d.byCgroup[cg]
	d.mu.Unlock()
	if known {
		return fmt.Errorf("sent by container %s to the DNS listener of %s (shared network namespace)", other.Container.Name, a.Container.Name)
	}
	if cgroupBelow(a.Cgroup, cg) {
		return nil
	}
	return fmt.Errorf("sent from cgroup %d, which is not container %s's (shared network namespace)", cg, a.Container.Name)
}

// cgroupBelow reports whether the cgroup with ID id is a descendant of the
// cgroup directory dir (cgroup v2 IDs are directory inode numbers).
func cgroupBelow(dir string, id uint64) bool {
	found := false
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if p != dir {
			if cid, err := enforce.CgroupID(p); err == nil && cid == id {
				found = true
				return fs.SkipAll
			}
		}
		return nil
	})
	return found
}

// refreshAddrs re-reads the interface addresses of a's network namespace
// (the one clawd holds open: the process named at attach may be gone) for
// the container-address registry.
func (d *Daemon) refreshAddrs(a *attachment) {
	d.mu.Lock()
	if a.netns == nil {
		d.mu.Unlock()
		return // not tracked yet, or detached
	}
	// A duplicate, so that a detach closing the held one cannot pull the
	// fd number from under the lookup.
	fd, err := unix.Dup(int(a.netns.Fd()))
	d.mu.Unlock()
	if err != nil {
		d.log.Debug("container addresses", zap.String("container", a.Container.Name), zap.Error(err))
		return
	}
	ns := os.NewFile(uintptr(fd), "netns")
	defer ns.Close()
	addrs, err := netnsAddrs(fdPath(ns))
	if err != nil {
		d.log.Debug("container addresses", zap.String("container", a.Container.Name), zap.Error(err))
		return
	}
	// Under mu: a detach either removed a already (nothing is set) or
	// removes the entry after this.
	d.mu.Lock()
	changed := false
	if d.atts[a.ID] == a {
		changed = d.addrs.set(a.ID, addrs)
	}
	d.mu.Unlock()
	if changed {
		d.refreshFast("container addresses of " + a.Container.Name)
	}
}

func (d *Daemon) acceptLoop(ctx context.Context, a *attachment, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("accept", zap.String("container", a.Container.Name), zap.Error(err))
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !a.conns.admit(d.cfg.MaxConnsPerContainer) {
			c.Close()
			if a.conns.shouldWarn(time.Now(), 10*time.Second) {
				d.log.Warn("connection limit reached: refusing new connections", zap.String("container", a.Container.Name), zap.Int("max-conns-per-container", d.cfg.MaxConnsPerContainer))
			}
			continue
		}
		d.conns.Add(1)
		go func() {
			defer d.conns.Done()
			defer a.conns.release()
			d.handle(ctx, a, c)
		}()
	}
}

func (d *Daemon) handle(ctx context.Context, a *attachment, c net.Conn) {
	acceptedAt := procid.BootNow()
	ra, ok := c.RemoteAddr().(*net.TCPAddr)
	if !ok {
		c.Close()
		return
	}
	fam := 6
	ip, _ := netip.AddrFromSlice(ra.IP)
	if ip.Unmap().Is4() {
		fam = 4
	}
	o, ok := d.enf.OrigDst(a.ls.netns, uint16(ra.Port), fam)
	if !ok {
		// Not redirected by clawd's programs: an iptables REDIRECT inside
		// the container netns (the classic way, kept for comparison
		// benchmarks) records the destination in conntrack instead.
		if dst, nat := natOriginalDst(c); nat {
			o, ok = enforce.Orig{Dst: dst, Cgroup: a.CgroupID}, true
		}
	}
	if !ok {
		// Someone in the container dialled the listener itself: there is
		// nothing to forward to.
		d.log.Debug("connection without original destination", zap.String("container", a.Container.Name), zap.Stringer("from", ra))
		c.Close()
		return
	}
	owner := a
	if o.Cgroup != a.CgroupID {
		// Containers sharing a netns (a pod) share the listener: the
		// socket's cgroup says which one connected.
		d.mu.Lock()
		if b, ok := d.byCgroup[o.Cgroup]; ok {
			owner = b
		}
		d.mu.Unlock()
	}
	dst := netip.AddrPortFrom(o.Dst.Addr().Unmap(), o.Dst.Port())
	if dst.Port() == 53 {
		d.dns.ServeConn(ctx, c, owner.Container)
		return
	}
	if dst.Addr().IsLoopback() {
		// The container's loopback is never redirected; a loopback
		// destination here would be dialled on the host's loopback.
		d.log.Warn("refused a loopback destination", zap.String("container", owner.Container.Name), zap.Stringer("dst", dst))
		c.Close()
		return
	}
	// Which program connected: resolved now, before the proxy reads a byte,
	// and kept for the connection's life (a fd handed on or an exec later
	// does not change it). Unknown fails closed in policy.
	// The kernel's record is required (issue 16 round 2): without the
	// executable guard, or without a record of the executable at connect()
	// (a kernel that refuses to tell, NAT, programs of an older clawd),
	// a process could have forged /proc/PID/exe (prctl PR_SET_MM).
	prog, err := policy.Program{PID: o.TGID}, error(nil)
	switch {
	case o.Forged:
		err = fmt.Errorf("process %d replaced its executable (prctl PR_SET_MM) since its last exec", o.TGID)
	case d.enf.ExeGuarded() != nil:
		err = fmt.Errorf("the executable guard is not running: %w", d.enf.ExeGuarded())
	case o.Exe == nil:
		err = errors.New("the kernel did not record the executable that connected")
	default:
		prog, err = d.progs.Resolve(o.TGID, o.Cgroup, acceptedAt, &procid.FileID{Dev: o.Exe.Dev, Ino: o.Exe.Ino})
	}
	if err != nil {
		d.log.Debug("program unknown", zap.String("container", owner.Container.Name), zap.Stringer("dst", dst), zap.Error(err))
	}
	d.proxy.ServeConn(ctx, c, proxy.ConnMeta{Container: owner.Container, OrigDst: dst, Program: prog})
}

// watchEvents attaches labelled containers when their task is created and
// detaches containers whose task exited. The runtimes' streams are merged
// and deduplicated (a Docker container is reported once, by its Docker name
// and labels, at containerd's task create); events repeat after a runtime
// reconnects, so handling is idempotent.
func (d *Daemon) watchEvents() {
	if len(d.rt) == 0 {
		return
	}
	evs, errs := d.rt.Events(d.ctx)
	for {
		select {
		case <-d.ctx.Done():
			return
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			d.log.Debug("runtime events", zap.Error(err))
		case ev, ok := <-evs:
			if !ok {
				return
			}
			d.onEvent(ev)
		}
	}
}

func (d *Daemon) onEvent(ev runtime.Event) {
	id := attachmentID(ev.Container.Container)
	switch ev.Type {
	case runtime.TaskCreated:
		if ev.Container.PID == 0 {
			return
		}
		d.notePeer(ev.Container)
		labels := ev.Container.Labels
		auto, podApp := runtime.AutoAttach(labels), runtime.IsPodApp(ev.Container)
		if !auto && !podApp {
			return
		}
		d.mu.Lock()
		_, done := d.atts[id]
		d.mu.Unlock()
		if done {
			return
		}
		// Hold the container's first process until it is attached.
		thaw := freezeCgroupOf(ev.Container.PID)
		defer thaw()
		if !auto {
			// Kubernetes puts pod labels only on the pod's sandbox: attach
			// the app containers of a labelled pod too.
			sb, ok := runtime.PodAutoAttach(d.ctx, ev.Container, d.rt.List)
			if !ok {
				return
			}
			labels = sb
		}
		trust := labels["clawd.trust-ca"] == "true" || labels["clawd.dev/trust-ca"] == "true"
		if _, err := d.attach(time.Now(), ev.Container.Container, ev.Container.PID, trust, true); err != nil {
			d.log.Error("auto-attach failed", zap.String("container", ev.Container.Name), zap.Error(err))
			d.killRefused(ev.Container.Container, ev.Container.PID, err)
		}
	case runtime.TaskExited:
		// Only a cgroup that is gone ends an attachment: the sweep
		// detaches it once the runtime has removed the cgroup.
		d.forgetPeer(ev.Container)
		d.reapIfGone(id)
	}
}
