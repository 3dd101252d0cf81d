package enforce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/clawd-dev/clawd/bpf"
)

// The kernel fast path's maps (issue 18; bpf/clawd.c's header): the table
// the connect hooks consult (one slot holding an LPM trie, replaced whole),
// the flows they let through, and the ring buffer of their open and close
// events. What goes into the table is decided by policy.FastPath, never
// here.

// PortSpan is an inclusive port range.
type PortSpan struct{ Lo, Hi uint16 }

// FastEntry is one prefix of a container's fast-path table; empty Ports
// pass nothing (the entry shadows broader ones).
type FastEntry struct {
	Prefix netip.Prefix
	Ports  []PortSpan
}

// maxSpans is FP_SPANS in clawd.c.
const maxSpans = len(bpf.ClawdFpPorts{}.Lo)

func fastKey(cgid uint64, p netip.Prefix) bpf.ClawdFpKey {
	k := bpf.ClawdFpKey{Cg: [2]uint32{uint32(cgid), uint32(cgid >> 32)}}
	// A v4-mapped prefix stays IPv6 (an entry of the IPv6 table, which
	// the programs never ask for mapped addresses: they look those up as
	// IPv4).
	a := p.Addr()
	if a.Is4() {
		k.Family = 4
		v := a.As4()
		copy(k.Addr[:], v[:])
	} else {
		k.Family = 6
		v := a.As16()
		copy(k.Addr[:], v[:])
	}
	k.Prefixlen = uint32(96 + p.Bits())
	return k
}

// SetFastTable replaces the whole fast-path table (every container's, by
// cgroup ID) in one update of its slot: a connect sees the old table or the
// new one, never a mixture. An empty tabs leaves a table that passes
// nothing.
func (e *Enforcer) SetFastTable(tabs map[uint64][]FastEntry) error {
	ms := e.spec.Maps["clawd_fp_v1"]
	if ms == nil || ms.InnerMap == nil {
		return errors.New("bpf object lacks the fast-path table")
	}
	inner, err := ebpf.NewMap(ms.InnerMap.Copy())
	if err != nil {
		return fmt.Errorf("create fast-path table: %w", err)
	}
	defer inner.Close()
	for cgid, tab := range tabs {
		for _, fe := range tab {
			if !fe.Prefix.IsValid() || fe.Prefix.Addr().Zone() != "" {
				return fmt.Errorf("fast-path entry %v: not an IPv4 or IPv6 prefix", fe.Prefix)
			}
			var v bpf.ClawdFpPorts
			if len(fe.Ports) <= maxSpans {
				for i, s := range fe.Ports {
					v.Lo[i], v.Hi[i] = s.Lo, s.Hi
				}
				v.N = uint16(len(fe.Ports))
			}
			k := fastKey(cgid, fe.Prefix.Masked())
			if err := inner.Update(&k, &v, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("fast-path entry %v: %w", fe.Prefix, err)
			}
		}
	}
	if err := e.fp.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("install fast-path table: %w", err)
	}
	return nil
}

// ClearFastTable empties the table's slot: nothing takes the fast path.
func (e *Enforcer) ClearFastTable() error {
	if err := e.fp.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("clear fast-path table: %w", err)
	}
	return nil
}

// FastFlow is one connection the kernel let through.
type FastFlow struct {
	Cookie      uint64
	Cgroup      uint64 // the container's cgroup ID
	Netns       uint64 // network namespace cookie
	Src, Dst    netip.AddrPort
	TGID        uint32
	Established bool
	Closed      bool // TCP closed; the record lingers for its last frames
	// CloseLost: closed, and its close event found no room in the ring
	// buffer (set by the kernel, cleared by ClearFastCloseLost once the
	// close_lost line is written).
	CloseLost bool
	// OpenLost: its open event found no room in the ring buffer; its
	// packets are dropped, and the daemon deletes the record once its
	// lines are written.
	OpenLost bool
}

func flowOf(cookie uint64, f bpf.ClawdFlow) FastFlow {
	var d, s netip.Addr
	if f.Family == 4 {
		d = netip.AddrFrom4([4]byte(f.Daddr[:4]))
		s = netip.AddrFrom4([4]byte(f.Saddr[:4]))
	} else {
		d = netip.AddrFrom16(f.Daddr)
		s = netip.AddrFrom16(f.Saddr)
	}
	return FastFlow{Cookie: cookie, Cgroup: f.Cgroup, Netns: f.Netns, Src: netip.AddrPortFrom(s, f.Sport),
		Dst: netip.AddrPortFrom(d, f.Dport), TGID: f.Tgid, Established: f.Established != 0, Closed: f.Closed != 0,
		CloseLost: f.CloseLost != 0, OpenLost: f.OpenLost != 0}
}

// FastFlows lists the fast-path flows the kernel records (connecting,
// established, or closed and not yet reclaimed). The map holds up to
// 262144 records, most of them closed ones waiting for the LRU: it is read
// in batches (a few syscalls), not a lookup per key.
func (e *Enforcer) FastFlows() ([]FastFlow, error) {
	const chunk = 4096
	keys := make([]uint64, chunk)
	vals := make([]bpf.ClawdFlow, chunk)
	var out []FastFlow
	var cur ebpf.MapBatchCursor
	for {
		n, err := e.fl.BatchLookup(&cur, keys, vals, nil)
		for i := range n {
			out = append(out, flowOf(keys[i], vals[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return e.fastFlowsOneByOne()
		}
		if err != nil {
			return out, err
		}
	}
}

// fastFlowsOneByOne is FastFlows for kernels without batch lookups.
func (e *Enforcer) fastFlowsOneByOne() ([]FastFlow, error) {
	var out []FastFlow
	var k uint64
	var v bpf.ClawdFlow
	it := e.fl.Iterate()
	for it.Next(&k, &v) {
		out = append(out, flowOf(k, v))
	}
	return out, it.Err()
}

// FastFlow looks up one flow's record; ok is false when the kernel has
// none (never made, forgotten, or evicted by the LRU).
func (e *Enforcer) FastFlow(cookie uint64) (f FastFlow, ok bool, err error) {
	var v bpf.ClawdFlow
	if err := e.fl.Lookup(cookie, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return FastFlow{}, false, nil
		}
		return FastFlow{}, false, err
	}
	return flowOf(cookie, v), true, nil
}

// ClearFastMarks, once the daemon wrote the lines a mark stands for (so
// that a later daemon does not write them again), deletes a record marked
// open_lost (its packets stay dropped: no record) and clears the
// close_lost mark of a closed one (the record stays for its last frames).
// The kernel no longer writes either record; a socket that connects again
// gets a new record (not closed, not marked), which is left alone.
func (e *Enforcer) ClearFastMarks(cookie uint64) error {
	var v bpf.ClawdFlow
	if err := e.fl.Lookup(cookie, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return err
	}
	if v.OpenLost != 0 {
		return e.ForgetFastFlow(cookie)
	}
	if v.CloseLost == 0 || v.Closed == 0 {
		return nil
	}
	v.CloseLost = 0
	if err := e.fl.Update(cookie, &v, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// ForgetFastFlow drops a flow's record: its packets stop passing the
// egress filters at once (the connection is cut even if SOCK_DESTROY
// cannot reach it).
func (e *Enforcer) ForgetFastFlow(cookie uint64) error {
	if err := e.fl.Delete(cookie); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// FastEvent is a fast-path flow starting to connect (Connect: before its
// first SYN, no bytes), opening (Open) or closing, with the bytes it
// carried.
type FastEvent struct {
	Connect       bool
	Open          bool
	Flow          FastFlow
	BytesSent     uint64 // acknowledged by the peer
	BytesReceived uint64
	// Mono is when it happened, CLOCK_MONOTONIC nanoseconds; 0 when the
	// program that wrote it predates the field.
	Mono uint64
}

// FastEvents reads the kernel's fast-path events until Close. Not safe for
// concurrent use: one goroutine reads.
type FastEvents struct {
	r   *ringbuf.Reader
	rec ringbuf.Record // reused: no allocation per event
}

// OpenFastEvents starts reading the event ring buffer. One reader at a
// time: events go to whichever reads first.
func (e *Enforcer) OpenFastEvents() (*FastEvents, error) {
	r, err := ringbuf.NewReader(e.ev)
	if err != nil {
		return nil, fmt.Errorf("open fast-path events: %w", err)
	}
	return &FastEvents{r: r}, nil
}

// Read blocks for the next event; after Close it returns os.ErrClosed.
func (fe *FastEvents) Read() (FastEvent, error) {
	evs, err := fe.ReadBatch(nil, 1, time.Time{})
	if len(evs) == 1 {
		return evs[0], err
	}
	return FastEvent{}, err
}

// ReadBatch appends to dst the events waiting in the ring buffer, at most
// max of them, blocking until there is at least one or until deadline (a
// zero deadline: no bound; past it, os.ErrDeadlineExceeded). After Close it
// returns os.ErrClosed. A malformed record is skipped and reported as the
// error along with the events read before it.
func (fe *FastEvents) ReadBatch(dst []FastEvent, max int, deadline time.Time) ([]FastEvent, error) {
	fe.r.SetDeadline(deadline)
	for len(dst) < max {
		if err := fe.r.ReadInto(&fe.rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) {
				return dst, os.ErrClosed
			}
			return dst, err
		}
		ev, ok := decodeFastEvent(fe.rec.RawSample)
		if !ok {
			return dst, fmt.Errorf("fast-path event: %d bytes, want %d", len(fe.rec.RawSample), fastEventLen)
		}
		dst = append(dst, ev)
		// Only what is already in the ring: the first event may block,
		// the rest never do.
		if fe.r.AvailableBytes() == 0 {
			break
		}
	}
	return dst, nil
}

// fastEventLen is sizeof(struct fp_event) (TestDecodeFastEventMatchesBinaryRead);
// fastEventLenV1 its size before the field ns, which a ring buffer pinned
// by an older clawd may still hold.
const (
	fastEventLen   = 104
	fastEventLenV1 = 96
)

// decodeFastEvent decodes struct fp_event by hand: binary.Read would
// reflect and allocate for every event.
func decodeFastEvent(b []byte) (FastEvent, bool) {
	if len(b) < fastEventLenV1 {
		return FastEvent{}, false
	}
	var mono uint64
	if len(b) >= fastEventLen {
		mono = binary.NativeEndian.Uint64(b[96:])
	}
	ne := binary.NativeEndian
	var f bpf.ClawdFlow
	copy(f.Daddr[:], b[24:40])
	copy(f.Saddr[:], b[40:56])
	f.Dport, f.Sport = ne.Uint16(b[56:]), ne.Uint16(b[58:])
	f.Family, f.Established, f.FinIn, f.Closed = b[60], b[61], b[62], b[63]
	f.Tgid = ne.Uint32(b[64:])
	f.CloseLost, f.OpenLost = b[68], b[69]
	f.Cgroup, f.Netns = ne.Uint64(b[72:]), ne.Uint64(b[80:])
	kind := ne.Uint32(b[88:])
	return FastEvent{Connect: kind == 3, Open: kind == 1, Flow: flowOf(ne.Uint64(b[0:]), f),
		BytesSent: ne.Uint64(b[8:]), BytesReceived: ne.Uint64(b[16:]), Mono: mono}, true
}

// Close stops Read.
func (fe *FastEvents) Close() error { return fe.r.Close() }

// FastCounters are a container's fast-path counters.
type FastCounters struct {
	Fast   uint64 `json:"fast"`    // TCP connects let through in the kernel
	EvLost uint64 `json:"ev_lost"` // events lost to a full ring buffer
}

// FastCounters reads a container's fast-path counters.
func (e *Enforcer) FastCounters(cgroupID uint64) (FastCounters, error) {
	var c bpf.ClawdFpCounters
	if err := e.fc.Lookup(cgroupID, &c); err != nil {
		return FastCounters{}, err
	}
	return FastCounters{Fast: c.Fast, EvLost: c.EvLost}, nil
}
