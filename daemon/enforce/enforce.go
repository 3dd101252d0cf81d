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
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/bpf"
)

// ErrGone means the attachment's cgroup or interfaces no longer exist: the
// container is gone and its pins should be removed.
var ErrGone = errors.New("attachment target is gone")

// ErrPinned means pins for the attachment ID exist already.
var ErrPinned = errors.New("pins exist")

// Params describe one attachment.
type Params struct {
	ID        string // file-name safe attachment ID
	Cgroup    string // cgroup v2 directory of the container
	Netns     string // network namespace path (e.g. /proc/PID/ns/net); "" skips the tcx layer
	ProxyPort uint16 // TCP listener in the container netns
	DNSPort   uint16 // UDP DNS listener in the container netns
	HasV6     bool   // listeners also exist on ::1
	// FastPath lets connections the fast-path table allows bypass the
	// proxy (issue 18; see fastpath.go). Off: exactly the programs'
	// behaviour without it.
	FastPath bool
}

// Layers reports which enforcement layers are active for an attachment.
type Layers struct {
	Cgroup   []string `json:"cgroup"`              // attached cgroup hooks
	TCX      []string `json:"tcx,omitempty"`       // pins: drop-all egress on the container's interfaces
	TCXPeers []string `json:"tcx_peers,omitempty"` // pins: drop-all ingress on their veth peers, in any netns
	TCXLower []string `json:"tcx_lower,omitempty"` // pins: cgroup-matched programs on macvlan/ipvlan/vlan lower devices
	LSM      bool     `json:"lsm"`
	// Interfaces says, per interface of the container's netns, how a frame
	// sent past tcx egress (PACKET_QDISC_BYPASS, AF_XDP) is caught.
	Interfaces []Iface  `json:"interfaces,omitempty"`
	Notes      []string `json:"notes,omitempty"`
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
	xt   *ebpf.Map // accepted connection -> executable at connect (issue 16)
	// exeErr is set once the kernel refused the programs that record the
	// connecting executable (bpf_get_current_task_btf in cgroup hooks):
	// later copies load without it. Loads run outside mu: exeMu guards it.
	exeMu  sync.Mutex
	exeErr error
	fp     *ebpf.Map // fast-path table slot (array of one LPM trie)
	fl     *ebpf.Map // fast-path flows by socket cookie
	ev     *ebpf.Map // fast-path events (ring buffer)
	fc     *ebpf.Map // fast-path counters
	// lsm is the optional lsm_cgroup/socket_create program, shared by every
	// attachment; nil with lsmErr set where the kernel refuses it.
	lsm    *ebpf.Program
	lsmErr error
	// guardErr says why the executable guard (guard.go) is not running;
	// nil when it is.
	guardErr error
	// live holds each attachment's tcx programs while the daemon runs.
	live map[string]*tcxProgs
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
	e := &Enforcer{root: root, spec: spec, live: map[string]*tcxProgs{}}
	var maps bpf.ClawdMaps
	if err := spec.LoadAndAssign(&maps, e.collOpts()); err != nil {
		return nil, fmt.Errorf("open pinned maps (an incompatible older layout must be removed from %s): %w", filepath.Join(root, "maps"), err)
	}
	e.ck, e.tp, e.st, e.ls = maps.ClawdCkV1, maps.ClawdTpV1, maps.ClawdStV1, maps.ClawdLsV1
	e.xt = maps.ClawdXtV1
	// The cookie-keyed half is only the programs': close this handle.
	maps.ClawdXcV1.Close()
	e.fp, e.fl, e.ev, e.fc = maps.ClawdFpV1, maps.ClawdFlV1, maps.ClawdEvV1, maps.ClawdFcV1
	// The executable guard's marks are only the kernel's (guard.go).
	maps.ClawdXfV1.Close()
	// Listeners die with the daemon that opened them: what a predecessor
	// registered names ports nobody serves now (and that anything may
	// bind). The re-adopted attachments register their new ones.
	if err := e.clearListeners(); err != nil {
		e.Close()
		return nil, err
	}
	e.lsm, e.lsmErr = loadLSM()
	e.guardErr = e.loadGuard()
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
	e.mu.Lock()
	for id, t := range e.live {
		t.Close()
		delete(e.live, id)
	}
	e.mu.Unlock()
	errs := []error{e.ck.Close(), e.tp.Close(), e.st.Close(), e.ls.Close(), e.xt.Close(), e.fp.Close(), e.fl.Close(), e.ev.Close(), e.fc.Close()}
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

const lsmPin = "lsm_socket_create"

// firstLine is an error's first line (a verifier log is long).
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// ExeRecorded reports whether the loaded programs record the connecting
// task's executable (nil), or why not.
func (e *Enforcer) ExeRecorded() error {
	e.exeMu.Lock()
	defer e.exeMu.Unlock()
	return e.exeErr
}

// load loads a fresh copy of the programs with p's constants, recording
// the connecting executable unless the kernel refuses it (then again
// without, once and for all).
func (e *Enforcer) load(p Params, cgid uint64) (*bpf.ClawdObjects, error) {
	if e.ExeRecorded() != nil {
		return e.loadWith(p, cgid, false)
	}
	objs, err := e.loadWith(p, cgid, true)
	if err == nil {
		return objs, nil
	}
	// Only a refusal that loading without the executable cures is the
	// kernel's refusal to tell it.
	objs, err2 := e.loadWith(p, cgid, false)
	if err2 != nil {
		return nil, err2
	}
	e.exeMu.Lock()
	e.exeErr = err
	e.exeMu.Unlock()
	return objs, nil
}

func (e *Enforcer) loadWith(p Params, cgid uint64, readExe bool) (*bpf.ClawdObjects, error) {
	spec := e.spec.Copy()
	sets := []struct {
		name string
		v    any
	}{
		{"proxy_port", p.ProxyPort},
		{"dns_port", p.DNSPort},
		{"has_v6", boolByte(p.HasV6)},
		{"container_cgroup", cgid},
		{"read_exe", boolByte(readExe)},
		{"fast_path", boolByte(p.FastPath)},
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
	// The lower-device programs match the container's sockets by this
	// cgroup: set it before any of them can be attached.
	cg, err := os.Open(p.Cgroup)
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("open cgroup %s: %w", p.Cgroup, err)
	}
	defer cg.Close()
	if err := objs.ClawdSelfCg.Update(uint32(0), uint32(cg.Fd()), ebpf.UpdateAny); err != nil {
		objs.Close()
		return nil, fmt.Errorf("set the container cgroup in clawd_self_cg: %w", err)
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
	cgid, err := CgroupID(p.Cgroup)
	if err != nil {
		return l, err
	}
	// The verifier run is the slow part: outside the lock, so that covering
	// a new interface of another attachment never waits for it.
	objs, err := e.load(p, cgid)
	if err != nil {
		return l, err
	}
	defer objs.Close()
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	if _, err := os.Stat(dir); err == nil {
		return l, fmt.Errorf("attachment %s already exists: %w", p.ID, ErrPinned)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
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
			e.fc.Delete(cgid)
		}
	}()
	// Counters first, so the very first redirect is counted.
	if err := e.st.Update(cgid, bpf.ClawdCounters{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return l, fmt.Errorf("create counters: %w", err)
	}
	if err := e.fc.Update(cgid, bpf.ClawdFpCounters{}, ebpf.UpdateNoExist); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return l, fmt.Errorf("create fast-path counters: %w", err)
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
		var progs *tcxProgs
		if progs, err = cloneTCX(objs); err != nil {
			return l, err
		}
		if l.Interfaces, err = e.cover(p, dir, progs); err != nil {
			progs.Close()
			return l, err
		}
		e.keep(p.ID, progs)
		defer func() {
			if err != nil {
				e.forget(p.ID)
			}
		}()
		tcxLayers(dir, &l)
	}
	l.Notes = append(l.Notes, e.identNotes()...)
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

// identNotes say why no program is known on this host, if so (policy
// binaries: fails closed).
func (e *Enforcer) identNotes() []string {
	var n []string
	if why := e.ExeRecorded(); why != nil {
		n = append(n, fmt.Sprintf("the connect hook cannot record the executable (%s): the kernel cannot tell which program connected or whether it forged its executable, so no program is known and no binaries: rule is satisfied", firstLine(why)))
	}
	if why := e.ExeGuarded(); why != nil {
		n = append(n, fmt.Sprintf("the executable guard is not running (%s): a process could forge its executable (prctl PR_SET_MM), so no program is known and no binaries: rule is satisfied", firstLine(why)))
	}
	return n
}

// Adopt swaps fresh programs (built with p's listener ports) into the pinned
// links of an existing attachment. It returns ErrGone when the cgroup went
// away while no daemon was running.
func (e *Enforcer) Adopt(p Params) (Layers, error) {
	var l Layers
	if err := e.validate(p); err != nil {
		return l, err
	}
	cgid, err := CgroupID(p.Cgroup)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return l, fmt.Errorf("%v: %w", err, ErrGone)
		}
		return l, err // in doubt: not "gone"
	}
	objs, err := e.load(p, cgid)
	if err != nil {
		return l, err
	}
	defer objs.Close()
	progs, err := cloneTCX(objs)
	if err != nil {
		return l, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	ents, err := os.ReadDir(dir)
	if err != nil {
		progs.Close()
		if errors.Is(err, os.ErrNotExist) {
			return l, fmt.Errorf("attachment %s: no pins: %w", p.ID, ErrGone)
		}
		return l, fmt.Errorf("read pins: %w", err)
	}
	e.keep(p.ID, progs)
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
		case progs.forPin(name) != nil:
			prog = progs.forPin(name)
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
			if errors.Is(err, unix.ENOLINK) && isTCXPin(name) {
				// Its interface is gone; the cgroup and the other
				// interfaces are not.
				if err := unpin(filepath.Join(dir, name)); err != nil {
					return l, err
				}
				continue
			}
			if errors.Is(err, unix.ENOLINK) {
				return l, fmt.Errorf("link %s is severed: %w", name, ErrGone)
			}
			return l, fmt.Errorf("update link %s: %w", name, err)
		}
		seen[name] = true
		switch {
		case isTCXPin(name):
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
	if p.Netns != "" {
		// Interfaces that appeared while no daemon ran, and what lies
		// behind them.
		if l.Interfaces, err = e.cover(p, dir, progs); err != nil {
			return l, err
		}
	}
	tcxLayers(dir, &l)
	l.Notes = append(l.Notes, e.identNotes()...)
	return l, nil
}

// RefreshTCX covers interfaces that appeared in the container's netns
// since the last look (a CNI plugin adding a network late, an agent with
// CAP_NET_ADMIN creating one), removes the pins of vanished ones, and
// reports every interface's coverage and the pins it added.
func (e *Enforcer) RefreshTCX(p Params) (ifaces []Iface, added []string, err error) {
	if p.Netns == "" {
		return nil, nil, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	dir := e.dir(p.ID)
	before, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("attachment %s: %w", p.ID, ErrGone)
		}
		return nil, nil, err
	}
	progs := e.live[p.ID]
	if progs == nil {
		cgid, err := CgroupID(p.Cgroup)
		if err != nil {
			return nil, nil, err
		}
		objs, err := e.load(p, cgid)
		if err != nil {
			return nil, nil, err
		}
		progs, err = cloneTCX(objs)
		objs.Close()
		if err != nil {
			return nil, nil, err
		}
		e.keep(p.ID, progs)
	}
	ifaces, err = e.cover(p, dir, progs)
	had := map[string]bool{}
	for _, ent := range before {
		had[ent.Name()] = true
	}
	after, _ := os.ReadDir(dir)
	for _, ent := range after {
		if !had[ent.Name()] {
			added = append(added, ent.Name())
		}
	}
	return ifaces, added, err
}

// Survey reports how each interface of p's netns would be covered, without
// attaching anything.
func (e *Enforcer) Survey(p Params) ([]Iface, error) {
	if p.Netns == "" {
		return nil, nil
	}
	return e.cover(p, e.dir(p.ID), nil)
}

// keep stores an attachment's live tcx programs (under e.mu).
func (e *Enforcer) keep(id string, t *tcxProgs) {
	if old := e.live[id]; old != nil && old != t {
		old.Close()
	}
	e.live[id] = t
}

// forget closes an attachment's live tcx programs (under e.mu).
func (e *Enforcer) forget(id string) {
	e.live[id].Close()
	delete(e.live, id)
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
		e.fc.Delete(cgroupID)
	}
	e.forget(id)
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
	TGID   uint32 // host PID of the process that connected (0: not recorded)
	// Exe is the executable that process ran at connect(), as
	// stat(/proc/PID/exe) reports it; nil when not recorded (a kernel
	// that refuses to tell, programs of an older clawd).
	Exe *FileID
	// Forged: the process had replaced its executable (prctl PR_SET_MM)
	// since its last exec when it connected (bpf/guard.c); Exe is nil.
	Forged bool
}

// FileID is a file's device (as stat reports it) and inode.
type FileID struct{ Dev, Ino uint64 }

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
	o := Orig{Dst: origAddr(v), Cgroup: v.Cgroup, TGID: v.Tgid}
	var x bpf.ClawdExeId
	if err := e.xt.Lookup(&k, &x); err == nil {
		e.xt.Delete(&k)
		if x.Dev == ExeForged && x.Ino == ExeForged {
			o.Forged = true
		} else {
			o.Exe = &FileID{Dev: userDev(x.Dev), Ino: x.Ino}
		}
	}
	return o, true
}

// userDev turns the kernel's internal dev_t (major << 20 | minor) into
// the encoding stat returns.
func userDev(k uint64) uint64 {
	return unix.Mkdev(uint32(k>>20), uint32(k&(1<<20-1)))
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
			if m.Type == ebpf.RingBuf {
				m.MaxEntries = uint32(os.Getpagesize()) // a ring is pages
			}
		}
	}
	var objs bpf.ClawdObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return err
	}
	return objs.Close()
}

// PinnedCgroup returns the ID of the cgroup attachment id's pinned cgroup
// links are attached to: 0 when every one of them is severed (the cgroup was
// removed). It identifies pins that have no state record.
func (e *Enforcer) PinnedCgroup(id string) (uint64, error) {
	if !idRE.MatchString(id) {
		return 0, fmt.Errorf("bad attachment id %q", id)
	}
	dir := e.dir(id)
	n := 0
	for _, h := range append(cgroupHooks, hook{name: lsmPin}) {
		lk, err := link.LoadPinnedLink(filepath.Join(dir, h.name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("load pinned link %s: %w", h.name, err)
		}
		info, err := lk.Info()
		lk.Close()
		if err != nil {
			return 0, fmt.Errorf("link info %s: %w", h.name, err)
		}
		n++
		if c := info.Cgroup(); c != nil && c.CgroupId != 0 {
			return c.CgroupId, nil
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("attachment %s has no pinned cgroup link", id)
	}
	return 0, nil
}
