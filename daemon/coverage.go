package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon/enforce"
)

// A frame sent past tcx egress (a packet socket with PACKET_QDISC_BYPASS,
// AF_XDP) is caught only where clawd covers what lies behind the interface
// (enforce.Iface). Where it cannot, packet sockets must be impossible: the
// BPF LSM layer refuses them at socket(), else no process of the container
// may be able to hold CAP_NET_RAW, which creating one needs. Otherwise clawd
// refuses to attach, and a container that gets there later is cut off.

const capNetRaw = 13

// netRawHolders returns the processes (and threads) in cgroup cg or below
// that hold CAP_NET_RAW or could gain it: in any of their inheritable,
// permitted, effective, bounding or ambient sets. Processes gone meanwhile
// are skipped; any other read error is returned, never read as "none".
func netRawHolders(cg string) ([]int, error) {
	pids, err := enforce.CgroupProcs(cg)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			if gonePID(err) {
				continue
			}
			return nil, err
		}
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
			if err != nil {
				if gonePID(err) {
					continue
				}
				return nil, err
			}
			caps, err := statusCaps(b)
			if err != nil {
				return nil, fmt.Errorf("pid %d: %w", pid, err)
			}
			if caps&(1<<capNetRaw) != 0 {
				out = append(out, pid)
				break
			}
		}
	}
	return out, nil
}

func gonePID(err error) bool { return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) }

// statusCaps ORs the capability sets of a /proc/PID/status.
func statusCaps(b []byte) (uint64, error) {
	var all uint64
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"} {
			if v, ok := strings.CutPrefix(l, k); ok {
				c, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					return 0, fmt.Errorf("bad %s line %q", k, l)
				}
				all |= c
				n++
			}
		}
	}
	if n < 4 { // CapAmb is missing on old kernels
		return 0, errors.New("no capability sets in status")
	}
	return all, nil
}

// uncoveredRisk says why an uncovered interface matters for cgroup cg: ""
// when it does not (the LSM layer refuses packet sockets, or no process can
// hold CAP_NET_RAW).
func (d *Daemon) uncoveredRisk(cg string, ifs []enforce.Iface) string {
	if len(enforce.Uncovered(ifs)) == 0 {
		return ""
	}
	ok, lsmErr := d.enf.LSMAvailable()
	if ok {
		return ""
	}
	holders, err := netRawHolders(cg)
	if err == nil && len(holders) == 0 {
		return ""
	}
	who := "clawd could not read the capabilities of the container's processes (" + errString(err) + ")"
	if err == nil {
		var ps []string
		for i, p := range holders {
			if i == 5 {
				ps = append(ps, "…")
				break
			}
			ps = append(ps, strconv.Itoa(p))
		}
		who = "processes of the container can hold CAP_NET_RAW (pid " + strings.Join(ps, ", ") + ")"
	}
	return fmt.Sprintf("the BPF LSM layer, which would refuse packet sockets, is unavailable (%s), and %s", errString(lsmErr), who)
}

func errString(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}

// coverageFix is what an operator can do about an uncovered interface.
const coverageFix = "start the container without CAP_NET_RAW (docker/nerdctl run --cap-drop NET_RAW; Kubernetes securityContext.capabilities.drop: [NET_RAW]), " +
	"or give it a network clawd covers (a veth: Docker's bridge driver, the CNI bridge/ptp plugins; macvlan; ipvlan), " +
	"or enable the BPF LSM (boot with lsm=...,bpf and without kernel lockdown)"

// describeUncovered names the uncovered interfaces and where their frames go.
func describeUncovered(ifs []enforce.Iface) string {
	var parts []string
	for _, i := range enforce.Uncovered(ifs) {
		parts = append(parts, fmt.Sprintf("interface %s (%s) is not covered: %s", i.Name, i.Kind, i.Why))
	}
	return strings.Join(parts, "; ")
}

// refusal is the error of an attach refused for an uncovered layout.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

// checkCoverage refuses a container whose interfaces clawd cannot cover
// while a packet socket could use them.
func (d *Daemon) checkCoverage(name, cg string, ifs []enforce.Iface) error {
	risk := d.uncoveredRisk(cg, ifs)
	if risk == "" {
		return nil
	}
	return &UserError{Status: 409, Err: &refusal{fmt.Sprintf("refusing to attach %s: %s; %s, so a packet socket (PACKET_QDISC_BYPASS) could send frames there past clawd. Fix: %s",
		name, describeUncovered(ifs), risk, coverageFix)}}
}

// refreshCoverage covers an attachment's new interfaces and re-checks the
// ones clawd cannot cover (their holders, the container's capabilities):
// run on every netlink link event in the container's netns and at every
// sweep. A container that can now send frames past clawd is cut off
// (frozen) until that changes; one cut off for that reason is thawed once
// it cannot.
func (d *Daemon) refreshCoverage(a *attachment, why string) {
	a.covMu.Lock()
	defer a.covMu.Unlock()
	p := d.params(a)
	if p.Netns == "" {
		return // detached meanwhile
	}
	ifs, added, err := d.enf.RefreshTCX(p)
	if err != nil {
		if !errors.Is(err, enforce.ErrGone) {
			d.log.Warn("cover interfaces", zap.String("container", a.Container.Name), zap.String("on", why), zap.Error(err))
		}
		return
	}
	if len(added) > 0 {
		d.log.Info("new interfaces covered", zap.String("container", a.Container.Name), zap.String("on", why), zap.Strings("pins", added))
	}
	d.mu.Lock()
	if d.atts[a.ID] != a {
		d.mu.Unlock()
		return // detached meanwhile: no state to write
	}
	changed := fmt.Sprint(a.Layers.Interfaces) != fmt.Sprint(ifs) || len(added) > 0
	a.Layers.Interfaces = ifs
	if len(added) > 0 {
		a.Layers.TCX, a.Layers.TCXPeers, a.Layers.TCXLower = nil, nil, nil
		l := d.enf.Layers(a.ID)
		a.Layers.TCX, a.Layers.TCXPeers, a.Layers.TCXLower = l.TCX, l.TCXPeers, l.TCXLower
	}
	rec := a.Record
	d.mu.Unlock()
	if changed {
		if err := d.state.Save(rec); err != nil {
			d.log.Error("save attachment state", zap.Error(err))
		}
	}
	risk := d.uncoveredRisk(a.Cgroup, ifs)
	if risk != "" {
		d.cutOff(a, describeUncovered(ifs)+"; "+risk)
	} else {
		d.restore(a)
	}
}

// cutOff freezes an attached container's cgroup: none of its processes
// runs, so none sends a frame, until restore or detach thaws it.
func (d *Daemon) cutOff(a *attachment, reason string) {
	d.mu.Lock()
	already := a.cutOff != ""
	a.cutOff = reason
	d.mu.Unlock()
	if already {
		return
	}
	if err := os.WriteFile(filepath.Join(a.Cgroup, "cgroup.freeze"), []byte("1"), 0); err != nil {
		d.log.Error("cut off container: freeze failed", zap.String("container", a.Container.Name), zap.Error(err))
	}
	d.log.Error("container cut off (frozen): it can send frames clawd does not see", zap.String("container", a.Container.Name),
		zap.String("reason", reason), zap.String("fix", coverageFix))
	d.audit.Log(audit.Entry{Event: audit.EventCutOff, Container: a.Container.Name, ContainerID: a.Container.ID, Runtime: a.Container.Runtime,
		Action: audit.ActionFreeze, Reason: reason})
}

// restore thaws a container clawd cut off, once it is covered again.
func (d *Daemon) restore(a *attachment) {
	d.mu.Lock()
	was := a.cutOff
	a.cutOff = ""
	d.mu.Unlock()
	if was == "" {
		return
	}
	os.WriteFile(filepath.Join(a.Cgroup, "cgroup.freeze"), []byte("0"), 0)
	d.log.Info("container covered again: thawed", zap.String("container", a.Container.Name))
	d.audit.Log(audit.Entry{Event: audit.EventCutOff, Container: a.Container.Name, ContainerID: a.Container.ID, Runtime: a.Container.Runtime,
		Action: audit.ActionThaw, Reason: "covered again"})
}
