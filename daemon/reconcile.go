package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/policy"
)

// Reconciling pins with state at start (and at every sweep, for what was in
// doubt). Pins are the enforcement; state is what clawd knows of them.
//   - A record whose cgroup is gone: pins and record removed.
//   - A record whose cgroup lives: adopted (fresh listeners, fresh programs
//     swapped into the pinned links).
//   - Anything in doubt (the cgroup cannot be stat'ed, no process leads to
//     its netns yet, the programs fail to load): the pins stay, the
//     container stays cut off (its connects find no listener), `clawd ls`
//     shows it "in doubt" and the sweep tries again.
//   - Pins without a record (state dir lost or changed, a crash between
//     pinning and saving): adopted when their cgroup lives and the container
//     can be identified, removed when their cgroup is gone, kept (cut off,
//     in doubt) otherwise. Each outcome is audited.

// doubtful is a pinned attachment clawd could not adopt.
type doubtful struct {
	Record
	Reason string
	Since  time.Time
}

// adoptAll re-adopts every attachment after a (re)start and reconciles
// pins that have no state.
func (d *Daemon) adoptAll() {
	recs, errs := d.state.Load()
	for _, err := range errs {
		d.log.Error("attachment state", zap.Error(err))
	}
	known := map[string]bool{}
	for _, r := range recs {
		known[r.ID] = true
		d.tryAdopt(r, false)
	}
	pinned, err := d.enf.Pinned()
	if err != nil {
		d.log.Error("list pins", zap.Error(err))
	}
	for _, id := range pinned {
		if !known[id] {
			d.orphan(id)
		}
	}
}

// tryAdopt adopts r, or removes it when its cgroup is gone, or keeps it in
// doubt. retry marks a sweep's retry (audited only when the outcome changes).
func (d *Daemon) tryAdopt(r Record, retry bool) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.mu.Lock()
	_, live := d.atts[r.ID]
	d.mu.Unlock()
	if live {
		d.takeDoubt(r.ID)
		return
	}
	err := d.adopt(r)
	entry := audit.Entry{Event: audit.EventReadopt, Container: r.Container.Name, ContainerID: r.Container.ID, Runtime: r.Container.Runtime}
	switch {
	case err == nil:
		d.takeDoubt(r.ID)
		entry.Action = audit.ActionAdopt
	case errors.Is(err, enforce.ErrGone):
		d.log.Info("container gone: removing attachment", zap.String("container", r.Container.Name), zap.Error(err))
		d.enf.Detach(r.ID, r.CgroupID)
		d.state.Remove(r.ID)
		d.takeDoubt(r.ID) // last: listed until its pins are gone
		entry.Action, entry.Reason = audit.ActionRemove, err.Error()
	default:
		first := d.markDoubt(r, err.Error())
		if !first && retry {
			return
		}
		d.log.Error("re-adoption in doubt: pins kept, the container stays cut off (clawd retries at every sweep; `clawd detach` removes it)",
			zap.String("container", r.Container.Name), zap.String("cgroup", r.Cgroup), zap.Error(err))
		entry.Action, entry.Reason = audit.ActionKeep, err.Error()
	}
	d.audit.Log(entry)
}

// adopt re-adopts one recorded attachment (opMu held).
func (d *Daemon) adopt(r Record) error {
	gone, err := cgroupGone(r.Cgroup, r.CgroupID)
	if err != nil {
		return fmt.Errorf("cannot tell whether cgroup %s lives: %w", r.Cgroup, err)
	}
	if gone {
		return fmt.Errorf("cgroup %s is gone: %w", r.Cgroup, enforce.ErrGone)
	}
	ns, ino, err := netnsOfCgroup(r.Cgroup, r.Netns)
	if err != nil {
		return fmt.Errorf("reach the network namespace of cgroup %s: %w", r.Cgroup, err)
	}
	ls, err := openListeners(fdPath(ns))
	if err != nil {
		ns.Close()
		return err
	}
	if err := d.enf.RegisterListeners(r.CgroupID, ls.kernel()); err != nil {
		d.enf.UnregisterListeners(ls.kernel())
		ls.Close()
		ns.Close()
		return err
	}
	layers, err := d.enf.Adopt(enforce.Params{ID: r.ID, Cgroup: r.Cgroup, Netns: fdPath(ns),
		ProxyPort: ls.tcpPort(), DNSPort: ls.udpPort(), HasV6: ls.hasV6(), FastPath: d.cfg.FastPath})
	if err != nil {
		d.enf.UnregisterListeners(ls.kernel())
		ls.Close()
		ns.Close()
		return err
	}
	r.Netns = ino
	r.Layers.Cgroup, r.Layers.TCX, r.Layers.TCXPeers, r.Layers.TCXLower = layers.Cgroup, layers.TCX, layers.TCXPeers, layers.TCXLower
	r.Layers.LSM, r.Layers.Interfaces = layers.LSM, layers.Interfaces
	if err := d.state.Save(r); err != nil {
		d.log.Error("save attachment state", zap.Error(err))
	}
	d.serve(r, ls)
	d.track(r.ID, ns)
	d.log.Info("re-adopted", zap.String("container", r.Container.Name), zap.Uint16("proxy_port", ls.tcpPort()))
	d.mu.Lock()
	a := d.atts[r.ID]
	d.mu.Unlock()
	if risk := d.uncoveredRisk(r.Cgroup, layers.Interfaces); risk != "" && a != nil {
		d.cutOff(a, describeUncovered(layers.Interfaces)+"; "+risk)
	}
	return nil
}

// orphan reconciles the pins of attachment id, which has no state record.
func (d *Daemon) orphan(id string) {
	entry := audit.Entry{Event: audit.EventOrphanPins, ContainerID: id}
	keep := func(r Record, why string) {
		if !d.markDoubt(r, why) {
			return // known already, for the same reason
		}
		d.log.Error("pins without state kept: the container stays cut off (`clawd detach "+id+"` removes them)", zap.String("id", id), zap.String("why", why))
		entry.Action, entry.Reason = audit.ActionKeep, why
		d.audit.Log(entry)
	}
	remove := func(why string) {
		d.log.Warn("pins without state removed", zap.String("id", id), zap.String("why", why))
		d.enf.Detach(id, 0)
		d.takeDoubt(id)
		entry.Action, entry.Reason = audit.ActionRemove, why
		d.audit.Log(entry)
	}
	stub := Record{ID: id, Container: policy.Container{ID: id, Name: id}}
	cgid, err := d.enf.PinnedCgroup(id)
	if err != nil {
		keep(stub, err.Error())
		return
	}
	if cgid == 0 {
		remove("its cgroup was removed")
		return
	}
	cg, err := enforce.CgroupPathByID(cgid)
	if errors.Is(err, os.ErrNotExist) {
		remove("its cgroup was removed")
		return
	}
	stub.CgroupID, stub.Cgroup = cgid, cg
	if err != nil {
		keep(stub, "find its cgroup: "+err.Error())
		return
	}
	c, err := d.identify(id, cg)
	if err != nil {
		keep(stub, "cgroup "+cg+" lives but the container cannot be identified: "+err.Error())
		return
	}
	r := Record{ID: id, Container: c, Cgroup: cg, CgroupID: cgid, AttachedAt: time.Now().UTC()}
	d.opMu.Lock()
	err = d.adopt(r)
	d.opMu.Unlock()
	if err != nil {
		keep(r, "adopt: "+err.Error())
		return
	}
	d.takeDoubt(id)
	d.log.Warn("pins without state adopted", zap.String("id", id), zap.String("container", c.Name), zap.String("cgroup", cg))
	entry.Container, entry.ContainerID, entry.Runtime, entry.Action = c.Name, c.ID, c.Runtime, audit.ActionAdopt
	d.audit.Log(entry)
}

// identify finds the container whose attachment ID is id and whose
// cgroup is cg: for --pid attachments the ID itself, else the runtime's
// container with that ID whose task runs in cg.
func (d *Daemon) identify(id, cg string) (policy.Container, error) {
	if rest, ok := strings.CutPrefix(id, "pid_"); ok && strings.HasPrefix(rest, "pid-") {
		return policy.Container{ID: rest, Name: rest, Runtime: "pid"}, nil
	}
	if len(d.rt) == 0 {
		return policy.Container{}, errors.New("no container runtime is reachable")
	}
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, r := range d.rt { // each runtime on its own: one down must not hide the others
		cs, err := r.List(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, c := range cs {
			if attachmentID(c.Container) != id || c.PID == 0 {
				continue
			}
			if in, err := enforce.PIDInCgroup(c.PID, cg); err == nil && in {
				return c.Container, nil
			}
		}
	}
	return policy.Container{}, errors.Join(append([]error{errors.New("no running container of the runtimes has this attachment ID and cgroup")}, errs...)...)
}

// markDoubt records r as in doubt; it reports whether it was not before.
func (d *Daemon) markDoubt(r Record, reason string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	old, had := d.doubt[r.ID]
	if had && old.Reason == reason {
		return false
	}
	since := time.Now().UTC()
	if had {
		since = old.Since
	}
	d.doubt[r.ID] = &doubtful{Record: r, Reason: reason, Since: since}
	return !had
}

func (d *Daemon) takeDoubt(id string) *doubtful {
	d.mu.Lock()
	defer d.mu.Unlock()
	x := d.doubt[id]
	delete(d.doubt, id)
	return x
}

// findDoubt finds an attachment in doubt by ID, name or ID prefix.
func (d *Daemon) findDoubt(ref, ns string) (Record, bool) {
	ref = strings.TrimPrefix(strings.TrimSpace(ref), "/")
	d.mu.Lock()
	defer d.mu.Unlock()
	var hits []Record
	for _, x := range d.doubt {
		if ns != "" && x.Container.Namespace != ns {
			continue
		}
		if x.ID == ref || x.Container.Name == ref || x.Container.ID == ref || strings.HasPrefix(x.Container.ID, ref) {
			hits = append(hits, x.Record)
		}
	}
	if len(hits) != 1 {
		return Record{}, false
	}
	return hits[0], true
}

// retryDoubt is the sweep's second chance for what is in doubt.
func (d *Daemon) retryDoubt() {
	d.mu.Lock()
	var rs []*doubtful
	for _, x := range d.doubt {
		rs = append(rs, x)
	}
	d.mu.Unlock()
	for _, x := range rs {
		if x.Container.Runtime == "" { // pins without a record, not identified yet
			d.orphan(x.ID)
			continue
		}
		d.tryAdopt(x.Record, true)
	}
}

// reapIfGone detaches attachment id if its cgroup is gone.
func (d *Daemon) reapIfGone(id string) {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	d.reapIfGoneLocked(id)
}

func (d *Daemon) reapIfGoneLocked(id string) {
	d.mu.Lock()
	a, ok := d.atts[id]
	d.mu.Unlock()
	if !ok {
		return
	}
	if gone, err := cgroupGone(a.Cgroup, a.CgroupID); err == nil && gone {
		if err := d.detachLocked(id, "container gone (its cgroup was removed)"); err != nil {
			d.log.Warn("detach", zap.String("container", a.Container.Name), zap.Error(err))
		}
	}
}

// attachPins pins a new attachment. Pins already there for its ID (with no
// attachment clawd knows of) are adopted when they enforce this very
// cgroup, and removed first otherwise.
func (d *Daemon) attachPins(c policy.Container, p enforce.Params) (enforce.Layers, error) {
	d.takeDoubt(p.ID)
	l, err := d.enf.Attach(p)
	if !errors.Is(err, enforce.ErrPinned) {
		return l, err
	}
	entry := audit.Entry{Event: audit.EventOrphanPins, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime}
	cgid, perr := d.enf.PinnedCgroup(p.ID)
	if want, werr := enforce.CgroupID(p.Cgroup); perr == nil && werr == nil && cgid == want {
		if l, err = d.enf.Adopt(p); err == nil {
			entry.Action, entry.Reason = audit.ActionAdopt, "attach found pins for this cgroup without state"
			d.audit.Log(entry)
			d.log.Warn("pins without state adopted by attach", zap.String("container", c.Name))
		}
		return l, err
	}
	if err := d.enf.Detach(p.ID, 0); err != nil {
		return l, err
	}
	entry.Action, entry.Reason = audit.ActionRemove, "attach found pins of another cgroup without state"
	d.audit.Log(entry)
	return d.enf.Attach(p)
}

// killRefused kills a labelled container clawd refused to attach: it asked
// to run only under clawd, and running it unattached would fail open.
func (d *Daemon) killRefused(c policy.Container, pid int, err error) {
	var r *refusal
	if !errors.As(err, &r) {
		return
	}
	cg, cerr := enforce.CgroupOfPID(pid)
	if cerr != nil {
		return
	}
	if kerr := os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0); kerr != nil {
		d.log.Error("kill refused container", zap.String("container", c.Name), zap.Error(kerr))
		return
	}
	d.log.Error("labelled container killed: clawd cannot cover it", zap.String("container", c.Name))
	d.audit.Log(audit.Entry{Event: audit.EventAttach, Container: c.Name, ContainerID: c.ID, Runtime: c.Runtime, Labels: c.Labels,
		Action: audit.ActionDeny, Reason: "killed: " + r.Error()})
}

// doubtInfos are the attachments in doubt, for `clawd ls`.
func (d *Daemon) doubtInfos() []AttachmentInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []AttachmentInfo
	for _, x := range d.doubt {
		out = append(out, AttachmentInfo{Record: x.Record, State: StateInDoubt, Reason: x.Reason})
	}
	return out
}
