// Package enforce loads clawd's eBPF programs, attaches them to a container's
// cgroup and interfaces, pins every link so enforcement outlives the daemon,
// and re-adopts pinned links after a restart.
//
// Layout under the pin root (default /sys/fs/bpf/clawd):
//
//	maps/            shared maps (pinned by name, versioned in their names)
//	att/<id>/<hook>  one pinned link per hook of attachment <id>
package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/bpf"
	"github.com/clawd-dev/clawd/daemon/nsenter"
)

// ErrGone means the attachment's cgroup or interfaces no longer exist: the
// container is gone and its pins should be removed.
var ErrGone = errors.New("attachment target is gone")

// Params describe one attachment.
type Params struct {
	ID        string // file-name safe attachment ID
	Cgroup    string // cgroup v2 directory of the container
	Netns     string // network namespace path (e.g. /proc/PID/ns/net); "" skips the tcx layer
	ProxyPort uint16 // TCP listener in the container netns
	DNSPort   uint16 // UDP DNS listener in the container netns
	HasV6     bool   // listeners also exist on ::1
}

// Layers reports which enforcement layers are active for an attachment.
type Layers struct {
	Cgroup   []string `json:"cgroup"`              // attached cgroup hooks
	TCX      []string `json:"tcx,omitempty"`       // container interfaces with a drop-all egress program
	TCXPeers []string `json:"tcx_peers,omitempty"` // host-side veth peers with a drop-all ingress program
	LSM      bool     `json:"lsm"`
	Notes    []string `json:"notes,omitempty"`
}

// Enforcer owns the pin root and the shared maps.
type Enforcer struct {
	root string
	mu   sync.Mutex // serialises attach/detach/adopt
	spec *ebpf.CollectionSpec
	ck   *ebpf.Map
	tp   *ebpf.Map
	st   *ebpf.Map
	ls   *ebpf.Map // clawd listeners -> owning cgroup
	// lsm is the optional lsm_cgroup/socket_create program, shared by every
	// attachment; nil with lsmErr set where the kernel refuses it.
	lsm    *ebpf.Program
	lsmErr error
}

// bpffs refuses file names that contain a dot.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

// New prepares the pin root (mounting bpffs when missing) and opens the
// shared maps, creating them on first use.
func New(root string) (*Enforcer, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock rlimit: %w", err)
	}
	if err := EnsureBPFFS(root); err != nil {
		return nil, err
	}
	for _, d := range []string{"maps", "att"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	spec, err := bpf.LoadClawd()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	e := &Enforcer{root: root, spec: spec}
	var maps bpf.ClawdMaps
	if err := spec.LoadAndAssign(&maps, e.collOpts()); err != nil {
		return nil, fmt.Errorf("open pinned maps (an incompatible older layout must be removed from %s): %w", filepath.Join(root, "maps"), err)
	}
	e.ck, e.tp, e.st, e.ls = maps.ClawdCkV1, maps.ClawdTpV1, maps.ClawdStV1, maps.ClawdLsV1
	// Listeners die with the daemon that opened them: what a predecessor
	// registered names ports nobody serves now (and that anything may
	// bind). The re-adopted attachments register their new ones.
	if err := e.clearListeners(); err != nil {
		e.Close()
		return nil, err
	}
	e.lsm, e.lsmErr = loadLSM()
	return e, nil
}

// loadLSM loads the optional BPF LSM program. Under kernel lockdown, or
// without "bpf" among the active LSMs, the kernel refuses it: clawd then
// relies on the tcx layer alone for non-inet socket families.
func loadLSM() (*ebpf.Program, error) {
	var objs bpf.LsmObjects
	if err := bpf.LoadLsmObjects(&objs, nil); err != nil {
		return nil, fmt.Errorf("lsm_cgroup/socket_create unavailable: %w", err)
	}
	return objs.ClawdSocketCreate, nil
}

// ProbeLSM tries to load the optional LSM program, for clawd doctor.
func ProbeLSM() error {
	p, err := loadLSM()
	if err != nil {
		return err
	}
	return p.Close()
}

// LSMAvailable reports whether the lsm_cgroup layer can be used on this
// host, and why not.
func (e *Enforcer) LSMAvailable() (bool, error) { return e.lsm != nil, e.lsmErr }

func (e *Enforcer) collOpts() *ebpf.CollectionOptions {
	return &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: filepath.Join(e.root, "maps")}}
}

// Close releases the daemon's handles. Pinned links stay in force.
func (e *Enforcer) Close() error {
	errs := []error{e.ck.Close(), e.tp.Close(), e.st.Close(), e.ls.Close()}
	if e.lsm != nil {
		errs = append(errs, e.lsm.Close())
	}
	return errors.Join(errs...)
}

// Root is the pin root directory.
func (e *Enforcer) Root() string { return e.root }

func (e *Enforcer) dir(id string) string { return filepath.Join(e.root, "att", id) }

// hooks maps pin names to cgroup attach types and programs.
type hook struct {
	name   string
	attach ebpf.AttachType
	prog   func(*bpf.ClawdPrograms) *ebpf.Program
}

// cgroupHooks in attach order. sockops and the reverse-mapping hooks come
// before connect4/6: a connect redirected before sockops were in place would
// reach the proxy with no original destination recorded.
var cgroupHooks = []hook{
	{"sockops", ebpf.AttachCGroupSockOps, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdSockops }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdGetpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdGetpeername6 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdRecvmsg4 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdRecvmsg6 }},
	{"sock_create", ebpf.AttachCGroupInetSockCreate, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdSockCreate }},
	{"setsockopt", ebpf.AttachCGroupSetsockopt, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdSetsockopt }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdSendmsg6 }},
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdConnect6 }},
	{"egress", ebpf.AttachCGroupInetEgress, func(p *bpf.ClawdPrograms) *ebpf.Program { return p.ClawdEgress }},
}

const (
	lsmPin          = "lsm_socket_create"
	tcxEgressPrefix = "tcx-egress-" // + container-side ifindex
	tcxPeerPrefix   = "tcx-peer-"   // + host-side ifindex
)

// load loads a fresh copy of the programs with p's constants.
func (e *Enforcer) load(p Params, cgid uint64) (*bpf.ClawdObjects, error) {
	spec := e.spec.Copy()
	sets := []struct {
		name string
		v    any
	}{
		{"proxy_port", p.ProxyPort},
		{"dns_port", p.DNSPort},
		{"has_v6", boolByte(p.HasV6)},
		{"container_cgroup", cgid},
	}
	for _, s := range sets {
		v, ok := spec.Variables[s.name]
		if !ok {
			return nil, fmt.Errorf("bpf object lacks variable %s", s.name)
		}
		if err := v.Set(s.v); err != nil {
			return nil, fmt.Errorf("set %s: %w", s.name, err)
		}
	}
	var objs bpf.ClawdObjects
	if err := spec.LoadAndAssign(&objs, e.collOpts()); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load bpf programs: %+v", ve)
		}
		return nil, fmt.Errorf("load bpf programs: %w", err)
	}
	return &objs, nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func (e *Enforcer) validate(p Params) error {
	if !idRE.MatchString(p.ID) {
		return fmt.Errorf("bad attachment id %q", p.ID)
	}
	if p.ProxyPort == 0 || p.DNSPort == 0 {
		return errors.New("listener ports must be set")
	}
	if _, bad := NetClsActive(); bad {
		return errors.New("cgroup v1 net_cls/net_prio is mounted on this host, which silently disables cgroup v2 socket matching: clawd would fail open. Unmount it (umount the net_cls,net_prio hierarchy) or boot with cgroup_no_v1=net_cls,net_prio")
	}
	return nil
}

// Attach attaches and pins every layer for p. On error nothing stays attached.
func (e *Enforcer) Attach(p Params) (l Layers, err error) {
	if err := e.validate(p); err != nil {
		return l, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	if _, err := os.Stat(dir); err == nil {
		return l, fmt.Errorf("attachment %s already exists", p.ID)
	}
	cgid, err := CgroupID(p.Cgroup)
	if err != nil {
		return l, err
	}
	objs, err := e.load(p, cgid)
	if err != nil {
		return l, err
	}
	defer objs.Close()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return l, fmt.Errorf("create pin dir: %w", err)
	}
	var links []link.Link
	defer func() {
		for _, lk := range links {
			if err != nil {
				lk.Unpin()
			}
			lk.Close()
		}
		if err != nil {
			os.RemoveAll(dir)
			e.st.Delete(cgid)
		}
	}()
	// Counters first, so the very first redirect is counted.
	if err := e.st.Update(cgid, bpf.ClawdCounters{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return l, fmt.Errorf("create counters: %w", err)
	}
	for _, h := range cgroupHooks {
		lk, err := link.AttachCgroup(link.CgroupOptions{Path: p.Cgroup, Attach: h.attach, Program: h.prog(&objs.ClawdPrograms)})
		if err != nil {
			return l, fmt.Errorf("attach %s to %s: %w", h.name, p.Cgroup, err)
		}
		links = append(links, lk)
		if err := lk.Pin(filepath.Join(dir, h.name)); err != nil {
			return l, fmt.Errorf("pin %s: %w", h.name, err)
		}
		l.Cgroup = append(l.Cgroup, h.name)
	}
	if p.Netns != "" {
		tl, err := e.attachTCX(p, dir, objs)
		links = append(links, tl.links...)
		l.TCX, l.TCXPeers, l.Notes = tl.ifaces, tl.peers, tl.notes
		if err != nil {
			return l, err
		}
	}
	if e.lsm == nil {
		l.Notes = append(l.Notes, fmt.Sprintf("%v: the tcx layer drops AF_PACKET/AF_XDP frames instead", e.lsmErr))
		return l, nil
	}
	lk, err := link.AttachCgroup(link.CgroupOptions{Path: p.Cgroup, Attach: ebpf.AttachLSMCgroup, Program: e.lsm})
	if err != nil {
		// The program loaded, so the kernel supports the hook: a failure
		// to attach it is a hole, not a missing feature.
		return l, fmt.Errorf("attach lsm_cgroup/socket_create to %s: %w", p.Cgroup, err)
	}
	links = append(links, lk)
	if err := lk.Pin(filepath.Join(dir, lsmPin)); err != nil {
		return l, fmt.Errorf("pin %s: %w", lsmPin, err)
	}
	l.LSM = true
	return l, nil
}

type tcxResult struct {
	links  []link.Link
	ifaces []string
	peers  []string
	notes  []string
}

// attachTCX attaches drop-all programs to every non-loopback interface in the
// container's netns (egress) and to the host-side peer of each veth (ingress:
// a packet socket with PACKET_QDISC_BYPASS skips the egress hook).
func (e *Enforcer) attachTCX(p Params, dir string, objs *bpf.ClawdObjects) (tcxResult, error) {
	var r tcxResult
	type peer struct {
		name   string
		index  int // ifindex of the peer in its own netns
		inside int // ifindex of the container side
	}
	var peers []peer
	err := nsenter.Do(p.Netns, func() error {
		ls, err := linksWithoutPin(dir)
		if err != nil {
			return err
		}
		for _, lnk := range ls {
			a := lnk.Attrs()
			pin := egressPin(dir, a.Index)
			lk, err := link.AttachTCX(link.TCXOptions{Interface: a.Index, Program: objs.ClawdTcxEgress, Attach: ebpf.AttachTCXEgress})
			if err != nil {
				return fmt.Errorf("attach tcx egress to %s: %w", a.Name, err)
			}
			r.links = append(r.links, lk)
			if err := lk.Pin(pin); err != nil {
				return fmt.Errorf("pin tcx egress %s: %w", a.Name, err)
			}
			r.ifaces = append(r.ifaces, a.Name)
			if v, ok := lnk.(*netlink.Veth); ok {
				idx, err := netlink.VethPeerIndex(v)
				if err == nil {
					peers = append(peers, peer{name: a.Name, index: idx, inside: a.Index})
				}
			}
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	for _, pr := range peers {
		pin := filepath.Join(dir, fmt.Sprintf("%s%d", tcxPeerPrefix, pr.index))
		if _, err := os.Stat(pin); err == nil {
			continue
		}
		hl, err := netlink.LinkByIndex(pr.index)
		if err != nil {
			r.notes = append(r.notes, fmt.Sprintf("veth peer of %s is not in the host netns: its ingress is not covered", pr.name))
			continue
		}
		hv, ok := hl.(*netlink.Veth)
		if !ok {
			r.notes = append(r.notes, fmt.Sprintf("peer of %s is not a veth in the host netns", pr.name))
			continue
		}
		if back, err := netlink.VethPeerIndex(hv); err != nil || back != pr.inside {
			r.notes = append(r.notes, fmt.Sprintf("host interface %d is not the peer of %s", pr.index, pr.name))
			continue
		}
		lk, err := link.AttachTCX(link.TCXOptions{Interface: pr.index, Program: objs.ClawdTcxIngress, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return r, fmt.Errorf("attach tcx ingress to host peer %s: %w", hv.Attrs().Name, err)
		}
		r.links = append(r.links, lk)
		if err := lk.Pin(pin); err != nil {
			return r, fmt.Errorf("pin tcx peer %s: %w", hv.Attrs().Name, err)
		}
		r.peers = append(r.peers, hv.Attrs().Name)
	}
	return r, nil
}

// RefreshTCX covers interfaces that appeared in the container's netns after
// attach (a CNI plugin or runtime adding the network late, or an agent with
// CAP_NET_ADMIN creating one). It returns the interfaces newly covered.
func (e *Enforcer) RefreshTCX(p Params) ([]string, error) {
	if p.Netns == "" {
		return nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("attachment %s: %w", p.ID, ErrGone)
	}
	cgid, err := CgroupID(p.Cgroup)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrGone)
	}
	// Loading programs costs a verifier run: only when something is uncovered.
	if missing, err := uncovered(p.Netns, dir); err != nil || !missing {
		return nil, err
	}
	objs, err := e.load(p, cgid)
	if err != nil {
		return nil, err
	}
	defer objs.Close()
	r, err := e.attachTCX(p, dir, objs)
	for _, lk := range r.links {
		lk.Close()
	}
	return append(r.ifaces, r.peers...), err
}

// egressPin is the pin of the tcx egress link on container interface index.
func egressPin(dir string, index int) string {
	return filepath.Join(dir, fmt.Sprintf("%s%d", tcxEgressPrefix, index))
}

// linksWithoutPin lists the non-loopback interfaces of the current netns
// (call it inside nsenter.Do) that have no pinned tcx egress program yet.
func linksWithoutPin(dir string) ([]netlink.Link, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list container interfaces: %w", err)
	}
	var out []netlink.Link
	for _, lnk := range ls {
		a := lnk.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		if _, err := os.Stat(egressPin(dir, a.Index)); err == nil {
			continue // already covered
		}
		out = append(out, lnk)
	}
	return out, nil
}

// uncovered reports whether a non-loopback interface of the netns lacks its
// pinned tcx egress program.
func uncovered(netns, dir string) (bool, error) {
	missing := false
	err := nsenter.Do(netns, func() error {
		ls, err := linksWithoutPin(dir)
		missing = len(ls) > 0
		return err
	})
	return missing, err
}

// Adopt swaps fresh programs (built with p's listener ports) into the pinned
// links of an existing attachment. It returns ErrGone when the cgroup went
// away while no daemon was running.
func (e *Enforcer) Adopt(p Params) (Layers, error) {
	var l Layers
	if err := e.validate(p); err != nil {
		return l, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return l, fmt.Errorf("attachment %s: no pins: %w", p.ID, ErrGone)
		}
		return l, fmt.Errorf("read pins: %w", err)
	}
	cgid, err := CgroupID(p.Cgroup)
	if err != nil {
		return l, fmt.Errorf("%v: %w", err, ErrGone)
	}
	objs, err := e.load(p, cgid)
	if err != nil {
		return l, err
	}
	defer objs.Close()
	byName := map[string]*ebpf.Program{}
	for _, h := range cgroupHooks {
		byName[h.name] = h.prog(&objs.ClawdPrograms)
	}
	seen := map[string]bool{}
	for _, ent := range ents {
		name := ent.Name()
		var prog *ebpf.Program
		switch {
		case byName[name] != nil:
			prog = byName[name]
		case strings.HasPrefix(name, tcxEgressPrefix):
			prog = objs.ClawdTcxEgress
		case strings.HasPrefix(name, tcxPeerPrefix):
			prog = objs.ClawdTcxIngress
		case name == lsmPin:
			if e.lsm == nil {
				// Leave the old program in place: still enforcing.
				l.LSM = true
				continue
			}
			prog = e.lsm
		default:
			continue
		}
		lk, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			return l, fmt.Errorf("load pinned link %s: %w", name, err)
		}
		err = lk.Update(prog)
		lk.Close()
		if err != nil {
			if errors.Is(err, unix.ENOLINK) {
				return l, fmt.Errorf("link %s is severed: %w", name, ErrGone)
			}
			return l, fmt.Errorf("update link %s: %w", name, err)
		}
		seen[name] = true
		switch {
		case strings.HasPrefix(name, tcxEgressPrefix):
			l.TCX = append(l.TCX, name)
		case strings.HasPrefix(name, tcxPeerPrefix):
			l.TCXPeers = append(l.TCXPeers, name)
		case name == lsmPin:
			l.LSM = true
		default:
			l.Cgroup = append(l.Cgroup, name)
		}
	}
	for _, h := range cgroupHooks {
		if !seen[h.name] {
			// A hook pinned by an older version is missing: attach it now
			// rather than run with a hole.
			lk, err := link.AttachCgroup(link.CgroupOptions{Path: p.Cgroup, Attach: h.attach, Program: h.prog(&objs.ClawdPrograms)})
			if err != nil {
				return l, fmt.Errorf("attach missing hook %s: %w", h.name, err)
			}
			err = lk.Pin(filepath.Join(dir, h.name))
			lk.Close()
			if err != nil {
				return l, fmt.Errorf("pin %s: %w", h.name, err)
			}
			l.Cgroup = append(l.Cgroup, h.name)
		}
	}
	e.st.Update(cgid, bpf.ClawdCounters{}, ebpf.UpdateNoExist)
	return l, nil
}

// Detach removes every link of an attachment. Removing the pins of links
// whose target is gone is not an error.
func (e *Enforcer) Detach(id string, cgroupID uint64) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("bad attachment id %q", id)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(id)
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read pins: %w", err)
	}
	var errs []error
	for _, ent := range ents {
		path := filepath.Join(dir, ent.Name())
		if lk, err := link.LoadPinnedLink(path, nil); err == nil {
			// Detach explicitly: other holders of the link (none expected)
			// must not keep the container cut off after a detach either.
			if err := lk.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("detach %s: %w", ent.Name(), err))
			}
			lk.Close()
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if cgroupID != 0 {
		e.st.Delete(cgroupID)
	}
	return errors.Join(errs...)
}

// Pinned lists the IDs of attachments that have pins.
func (e *Enforcer) Pinned() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(e.root, "att"))
	if err != nil {
		return nil, fmt.Errorf("list attachments: %w", err)
	}
	var ids []string
	for _, ent := range ents {
		if ent.IsDir() {
			ids = append(ids, ent.Name())
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Orig is the original destination of a redirected connection.
type Orig struct {
	Dst    netip.AddrPort
	Cgroup uint64 // cgroup of the socket that connected
}

// OrigDst looks up (and forgets) the original destination of a connection
// accepted by the proxy, by the container's netns cookie and the client's
// source port and family (4 or 6, with v4-mapped clients counting as 4).
func (e *Enforcer) OrigDst(netns uint64, port uint16, family int) (Orig, bool) {
	k := bpf.ClawdTupleKey{Netns: netns, Port: port, Family: uint16(family)}
	var v bpf.ClawdOrig
	if err := e.tp.Lookup(&k, &v); err != nil {
		return Orig{}, false
	}
	e.tp.Delete(&k)
	return Orig{Dst: origAddr(v), Cgroup: v.Cgroup}, true
}

func origAddr(v bpf.ClawdOrig) netip.AddrPort {
	var a netip.Addr
	if v.Family == 4 {
		a = netip.AddrFrom4([4]byte(v.Addr[:4]))
	} else {
		a = netip.AddrFrom16(v.Addr)
	}
	// Port holds network-order bytes read as a native integer.
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v.Port)
	port := binary.BigEndian.Uint16(b[:])
	return netip.AddrPortFrom(a, port)
}

// Listener is one of clawd's listener sockets, as the kernel's
// other-container check knows it.
type Listener struct {
	Netns  uint64 // netns cookie
	Port   uint16
	Stream bool // TCP; false: UDP
}

func (l Listener) key() bpf.ClawdListenerKey {
	k := bpf.ClawdListenerKey{Netns: l.Netns, Port: l.Port, Type: unix.SOCK_DGRAM}
	if l.Stream {
		k.Type = unix.SOCK_STREAM
	}
	return k
}

// RegisterListeners records ls as the listeners of the container with
// cgroupID. In a network namespace shared by several attached containers
// (a pod), the connect and sendmsg programs then refuse every other
// container's connects and datagrams to them: each container's DNS goes to
// its own listener, decided by its own rule set.
func (e *Enforcer) RegisterListeners(cgroupID uint64, ls []Listener) error {
	var errs []error
	for _, l := range ls {
		if err := e.ls.Put(l.key(), cgroupID); err != nil {
			errs = append(errs, fmt.Errorf("register listener port %d: %w", l.Port, err))
		}
	}
	return errors.Join(errs...)
}

// UnregisterListeners forgets listeners that were closed.
func (e *Enforcer) UnregisterListeners(ls []Listener) {
	for _, l := range ls {
		e.ls.Delete(l.key())
	}
}

func (e *Enforcer) clearListeners() error {
	var (
		k    bpf.ClawdListenerKey
		v    uint64
		keys []bpf.ClawdListenerKey
	)
	it := e.ls.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("list stale listeners: %w", err)
	}
	for _, k := range keys {
		if err := e.ls.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove stale listener: %w", err)
		}
	}
	return nil
}

// Counters are the per-container BPF counters.
type Counters struct {
	Redirected  uint64 `json:"redirected"`
	DNS         uint64 `json:"dns"`
	UDPRefused  uint64 `json:"udp_refused"`
	SockRefused uint64 `json:"sock_refused"`
	OptRefused  uint64 `json:"opt_refused"`
	PktDropped  uint64 `json:"pkt_dropped"`
	IfDropped   uint64 `json:"if_dropped"`
}

// Counters reads a container's counters.
func (e *Enforcer) Counters(cgroupID uint64) (Counters, error) {
	var c bpf.ClawdCounters
	if err := e.st.Lookup(cgroupID, &c); err != nil {
		return Counters{}, fmt.Errorf("read counters: %w", err)
	}
	return Counters{c.Redirected, c.Dns, c.UdpRefused, c.SockRefused, c.OptRefused, c.PktDropped, c.IfDropped}, nil
}

// Probe loads the programs into the kernel without attaching or pinning
// anything, to tell whether this kernel accepts them.
func Probe() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	spec, err := bpf.LoadClawd()
	if err != nil {
		return err
	}
	for _, m := range spec.Maps {
		if m.Pinning != ebpf.PinNone { // clawd's own maps, not .rodata
			m.Pinning = ebpf.PinNone
			m.MaxEntries = 16
		}
	}
	var objs bpf.ClawdObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return err
	}
	return objs.Close()
}
