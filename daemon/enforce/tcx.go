package enforce

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/bpf"
	"github.com/clawd-dev/clawd/daemon/nsenter"
)

// Pins of the tcx layer, under att/<id>/. Every name ends in the ifindex of
// an interface in the container's netns, so ifindexes of other namespaces
// never collide.
const (
	tcxEgressPrefix  = "tcx-egress-"      // drop-all egress on the container's interface
	tcxPeerOfPrefix  = "tcx-peer-of-"     // drop-all ingress on its veth peer, in any netns
	tcxLowerEgPrefix = "tcx-lower-eg-of-" // cgroup-matched egress on its lower device
	tcxLowerInPrefix = "tcx-lower-in-of-" // cgroup-matched ingress on its lower device
	// tcxLegacyPeerPrefix + the host-side ifindex: a host-netns veth peer,
	// as clawd pinned it before peers in other namespaces were followed.
	// Still adopted and counted as covering that peer.
	tcxLegacyPeerPrefix = "tcx-peer-"
)

// tcxProgs are an attachment's loaded tcx programs, kept while the daemon
// runs so that a new interface is covered with one attach, not a verifier run.
type tcxProgs struct {
	egress, ingress, lowerEg, lowerIn *ebpf.Program
}

func cloneTCX(o *bpf.ClawdObjects) (*tcxProgs, error) {
	var t tcxProgs
	var err error
	for _, c := range []struct {
		dst **ebpf.Program
		src *ebpf.Program
	}{{&t.egress, o.ClawdTcxEgress}, {&t.ingress, o.ClawdTcxIngress}, {&t.lowerEg, o.ClawdLowerEgress}, {&t.lowerIn, o.ClawdLowerIngress}} {
		if *c.dst, err = c.src.Clone(); err != nil {
			t.Close()
			return nil, fmt.Errorf("keep tcx programs: %w", err)
		}
	}
	return &t, nil
}

func (t *tcxProgs) Close() {
	if t == nil {
		return
	}
	for _, p := range []*ebpf.Program{t.egress, t.ingress, t.lowerEg, t.lowerIn} {
		if p != nil {
			p.Close()
		}
	}
}

// forPin is the program that belongs in the tcx pin called name.
func (t *tcxProgs) forPin(name string) *ebpf.Program {
	switch {
	case strings.HasPrefix(name, tcxEgressPrefix):
		return t.egress
	case strings.HasPrefix(name, tcxLowerEgPrefix):
		return t.lowerEg
	case strings.HasPrefix(name, tcxLowerInPrefix):
		return t.lowerIn
	case strings.HasPrefix(name, tcxPeerOfPrefix), strings.HasPrefix(name, tcxLegacyPeerPrefix):
		return t.ingress
	}
	return nil
}

func isTCXPin(name string) bool { return strings.HasPrefix(name, "tcx-") }

// pinnedIfindex is the interface a pinned tcx link is attached to; 0 when
// its device is gone (the link lives on, detached).
func pinnedIfindex(path string) (int, error) {
	lk, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return 0, err
	}
	defer lk.Close()
	info, err := lk.Info()
	if err != nil {
		return 0, err
	}
	if t := info.TCX(); t != nil {
		return int(t.Ifindex), nil
	}
	return 0, fmt.Errorf("%s is not a tcx link", path)
}

// alive reports whether the pin exists and is attached to ifindex (any
// interface when ifindex is 0).
func alive(path string, ifindex int) (bool, error) {
	idx, err := pinnedIfindex(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return idx != 0 && (ifindex == 0 || idx == ifindex), nil
}

// unpin detaches a pinned link and removes its pin.
func unpin(path string) error {
	if lk, err := link.LoadPinnedLink(path, nil); err == nil {
		if err := lk.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			lk.Close()
			return fmt.Errorf("detach %s: %w", filepath.Base(path), err)
		}
		lk.Close()
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// attachPin attaches prog to an interface of the calling thread's netns,
// first in its tcx chain, and pins the link.
func attachPin(pin string, ifindex int, prog *ebpf.Program, at ebpf.AttachType) error {
	lk, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at, Anchor: link.Head()})
	if err != nil {
		return err
	}
	defer lk.Close()
	if err := lk.Pin(pin); err != nil {
		lk.Close()
		return fmt.Errorf("pin %s: %w", filepath.Base(pin), err)
	}
	return nil
}

// cover inspects every interface of the container's netns and, with progs
// set, makes sure each is covered: a drop-all egress program on it, and on
// what lies behind it (a veth peer's ingress, a lower device's egress and
// ingress) the programs that catch frames sent past that egress. With progs
// nil it only reports what attaching would cover. Pins of interfaces that
// are gone are removed. It runs under e.mu or on a dir nobody else uses.
func (e *Enforcer) cover(p Params, dir string, progs *tcxProgs) ([]Iface, error) {
	var facts []linkFacts
	err := nsenter.Do(p.Netns, func() error {
		ls, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list container interfaces: %w", err)
		}
		for _, lnk := range ls {
			a := lnk.Attrs()
			if a.Flags&net.FlagLoopback != 0 {
				continue
			}
			facts = append(facts, factsOf(lnk))
			if progs == nil {
				continue
			}
			pin := filepath.Join(dir, tcxEgressPrefix+strconv.Itoa(a.Index))
			ok, err := alive(pin, a.Index)
			if err != nil {
				return fmt.Errorf("check tcx egress on %s: %w", a.Name, err)
			}
			if ok {
				continue
			}
			// A missing or detached egress pin means a new device: what
			// was pinned behind an old one with this index is not its.
			if err := unpinFar(dir, a.Index); err != nil {
				return err
			}
			if err := unpin(pin); err != nil {
				return err
			}
			if err := attachPin(pin, a.Index, progs.egress, ebpf.AttachTCXEgress); err != nil {
				return fmt.Errorf("attach tcx egress to %s: %w", a.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if progs != nil {
		if err := gcPins(dir, facts); err != nil {
			return nil, err
		}
	}
	ns := &farNetns{path: p.Netns}
	defer ns.close()
	var out []Iface
	for _, f := range facts {
		i, err := e.coverFar(p, dir, progs, f, ns)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Index < out[b].Index })
	return out, nil
}

// coverFar covers what lies behind one interface.
func (e *Enforcer) coverFar(p Params, dir string, progs *tcxProgs, f linkFacts, ns *farNetns) (Iface, error) {
	i := Iface{Name: f.Name, Index: f.Index, Kind: f.Kind}
	pl := classify(f)
	i.Note = pl.note
	idx := strconv.Itoa(f.Index)
	switch pl.far {
	case farInside:
		i.Covered, i.Via, i.How = true, ViaInside, pl.text
		return i, nil
	case farNone:
		i.Why = pl.text
		return i, nil
	case farTun:
		return tunCoverage(i, p)
	}
	where, err := ns.describe(f.NsID)
	if err != nil {
		return i, err
	}
	type want struct {
		pin  string
		prog *ebpf.Program
		at   ebpf.AttachType
	}
	var wants []want
	i.Via = ViaLower
	if pl.far == farPeer {
		i.Via = ViaPeer
		i.How = fmt.Sprintf("%s; tcx ingress on its veth peer (ifindex %d %s) drops what bypasses it", dropsAll, f.Parent, where)
		var prog *ebpf.Program
		if progs != nil {
			prog = progs.ingress
		}
		wants = []want{{tcxPeerOfPrefix + idx, prog, ebpf.AttachTCXIngress}}
		if ok, err := alive(filepath.Join(dir, tcxLegacyPeerPrefix+strconv.Itoa(f.Parent)), f.Parent); err == nil && ok && where == "in the host netns" {
			i.Covered = true
			return i, nil
		}
	} else {
		i.How = fmt.Sprintf("%s; tcx egress and ingress on its lower device (ifindex %d %s) drop the frames of the container's sockets that bypass it", dropsAll, f.Parent, where)
		var eg, in *ebpf.Program
		if progs != nil {
			eg, in = progs.lowerEg, progs.lowerIn
		}
		wants = []want{{tcxLowerEgPrefix + idx, eg, ebpf.AttachTCXEgress}, {tcxLowerInPrefix + idx, in, ebpf.AttachTCXIngress}}
	}
	var missing []want
	for _, w := range wants {
		ok, err := alive(filepath.Join(dir, w.pin), f.Parent)
		if err != nil {
			return i, fmt.Errorf("check %s: %w", w.pin, err)
		}
		if !ok {
			missing = append(missing, w)
		}
	}
	if len(missing) == 0 {
		i.Covered = true
		return i, nil
	}
	path, err := ns.open(f.NsID)
	if err != nil {
		i.How, i.Via = "", ""
		i.Why = fmt.Sprintf("what lies behind it (ifindex %d, netnsid %d) is in a network namespace clawd cannot open: %v", f.Parent, f.NsID, err)
		return i, nil
	}
	if progs == nil {
		i.Covered = true // attaching would cover it
		return i, nil
	}
	err = nsenter.Do(path, func() error {
		l, err := netlink.LinkByIndex(f.Parent)
		if err != nil {
			return fmt.Errorf("find ifindex %d %s behind %s: %w", f.Parent, where, f.Name, err)
		}
		if pl.far == farPeer && l.Type() != "veth" {
			return fmt.Errorf("ifindex %d %s is a %s, not the veth peer of %s", f.Parent, where, l.Type(), f.Name)
		}
		for _, w := range missing {
			pin := filepath.Join(dir, w.pin)
			if err := unpin(pin); err != nil {
				return err
			}
			if err := attachPin(pin, f.Parent, w.prog, w.at); err != nil {
				return fmt.Errorf("attach tcx to %s (behind %s): %w", l.Attrs().Name, f.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return i, err
	}
	i.Covered = true
	return i, nil
}

// unpinFar removes the pins behind the container interface ifindex.
func unpinFar(dir string, ifindex int) error {
	idx := strconv.Itoa(ifindex)
	for _, pre := range []string{tcxPeerOfPrefix, tcxLowerEgPrefix, tcxLowerInPrefix} {
		if err := unpin(filepath.Join(dir, pre+idx)); err != nil {
			return err
		}
	}
	return nil
}

// gcPins removes the pins of container interfaces that no longer exist, so
// programs for vanished interfaces do not pile up on shared lower devices.
func gcPins(dir string, present []linkFacts) error {
	have := map[string]bool{}
	for _, f := range present {
		have[strconv.Itoa(f.Index)] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read pins: %w", err)
	}
	for _, ent := range ents {
		name := ent.Name()
		var idx string
		for _, pre := range []string{tcxEgressPrefix, tcxPeerOfPrefix, tcxLowerEgPrefix, tcxLowerInPrefix} {
			if strings.HasPrefix(name, pre) {
				idx = strings.TrimPrefix(name, pre)
			}
		}
		if idx == "" || have[idx] {
			continue
		}
		if err := unpin(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// Layers lists attachment id's tcx pins by kind.
func (e *Enforcer) Layers(id string) Layers {
	var l Layers
	tcxLayers(e.dir(id), &l)
	return l
}

// tcxLayers lists an attachment's tcx pins by kind.
func tcxLayers(dir string, l *Layers) {
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		switch n := ent.Name(); {
		case strings.HasPrefix(n, tcxEgressPrefix):
			l.TCX = append(l.TCX, n)
		case strings.HasPrefix(n, tcxLowerEgPrefix), strings.HasPrefix(n, tcxLowerInPrefix):
			l.TCXLower = append(l.TCXLower, n)
		case strings.HasPrefix(n, tcxPeerOfPrefix), strings.HasPrefix(n, tcxLegacyPeerPrefix):
			l.TCXPeers = append(l.TCXPeers, n)
		}
	}
}

// farNetns resolves the netns IDs an interface of the container's netns
// reports (IFLA_LINK_NETNSID) to namespaces clawd can enter.
type farNetns struct {
	path   string // the container's netns
	h      *netlink.Handle
	selfID *int
	opened map[int]*os.File
}

func (n *farNetns) handle() (*netlink.Handle, error) {
	if n.h != nil {
		return n.h, nil
	}
	ns, err := netns.GetFromPath(n.path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", n.path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", n.path, err)
	}
	n.h = h
	return h, nil
}

// describe names the netns nsid: "in the host netns" when it is clawd's own.
func (n *farNetns) describe(nsid int) (string, error) {
	if n.selfID == nil {
		h, err := n.handle()
		if err != nil {
			return "", err
		}
		f, err := os.Open("/proc/self/ns/net")
		if err != nil {
			return "", err
		}
		id, err := h.GetNetNsIdByFd(int(f.Fd()))
		f.Close()
		if err != nil {
			id = -1
		}
		n.selfID = &id
	}
	if nsid == *n.selfID {
		return "in the host netns", nil
	}
	return fmt.Sprintf("in netns id %d", nsid), nil
}

// open returns a path (valid until close) that enters the netns nsid.
func (n *farNetns) open(nsid int) (string, error) {
	if f, ok := n.opened[nsid]; ok {
		return fdPath(f), nil
	}
	h, err := n.handle()
	if err != nil {
		return "", err
	}
	f, err := netnsByID(h, nsid)
	if err != nil {
		return "", err
	}
	if n.opened == nil {
		n.opened = map[int]*os.File{}
	}
	n.opened[nsid] = f
	return fdPath(f), nil
}

func (n *farNetns) close() {
	if n.h != nil {
		n.h.Close()
	}
	for _, f := range n.opened {
		f.Close()
	}
}

func fdPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }
