// Package sockmap relays allowed passthrough flows inside the kernel: the
// agent's socket and the upstream socket go into a BPF sockhash whose
// sk_skb verdict program (bpf/splice.c) queues each arriving segment straight
// onto the other socket's send path, so the bytes never cross into clawd.
//
// clawd still owns both sockets: one goroutine per direction waits for the
// end of the stream (and copies, in order, whatever the kernel handed to
// userspace instead), passes a half-close on once every byte before it has
// reached the other socket, and reports the byte counts for the audit line.
package sockmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/bpf"
)

// Relay owns the sockhash and its verdict program. It is safe for
// concurrent use. Nothing is pinned: the relayed sockets belong to the
// daemon and close with it.
type Relay struct {
	objs      bpf.SpliceObjects
	active    sync.WaitGroup // Pipe calls in progress
	testArmed func()         // tests: called once a pair is set up
}

// New loads bpf/splice.c and attaches its verdict program to the sockhash.
func New() (*Relay, error) {
	r := &Relay{}
	if err := bpf.LoadSpliceObjects(&r.objs, nil); err != nil {
		return nil, fmt.Errorf("load sockmap relay: %w", err)
	}
	err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  r.objs.ClawdSpSocks.FD(),
		Program: r.objs.ClawdSplice,
		Attach:  ebpf.AttachSkSKBStreamVerdict,
	})
	if err != nil {
		r.objs.Close()
		return nil, fmt.Errorf("attach sockmap verdict: %w", err)
	}
	return r, nil
}

// Close waits for the Pipe calls in progress (cancel their contexts first),
// then detaches the program and frees the maps.
func (r *Relay) Close() error {
	r.active.Wait()
	link.RawDetachProgram(link.RawDetachProgramOptions{
		Target:  r.objs.ClawdSpSocks.FD(),
		Program: r.objs.ClawdSplice,
		Attach:  ebpf.AttachSkSKBStreamVerdict,
	})
	return r.objs.Close()
}

// ErrNotRelayed means Pipe did nothing: the caller copies the flow itself.
var ErrNotRelayed = errors.New("not relayed in the kernel")

// Result is what a relayed flow carried.
type Result struct {
	AToB, BToA int64 // bytes, pre included in AToB
	InKernel   int64 // how many of them the kernel moved by itself
}

// side is one socket of a pair.
type side struct {
	c      *net.TCPConn
	rc     syscall.RawConn
	cookie uint64
	armed  bool  // the kernel redirects this side's bytes to its peer
	user   int64 // bytes clawd copied into this side's peer from userspace
}

// Pipe relays a and b until both directions have ended, sending pre (bytes
// clawd already read from a) to b first. A clean end of one direction is
// passed on as a half-close; an error closes both. The sockets are not
// closed when both directions end cleanly: that is the caller's. An error
// wrapping ErrNotRelayed means nothing was done.
func (r *Relay) Pipe(ctx context.Context, a, b *net.TCPConn, pre []byte) (Result, error) {
	r.active.Add(1)
	defer r.active.Done()
	sa, err := newSide(a)
	if err != nil {
		return Result{}, err
	}
	sb, err := newSide(b)
	if err != nil {
		return Result{}, err
	}
	defer r.forget(sa.cookie, sb.cookie)

	// The kernel hands the verdict program whole segments, including one
	// that userspace has already read part of, which would then be sent
	// twice. clawd has read (sniffed) the start of the agent's stream, so
	// it takes the rest of what is queued too, and the socket joins the
	// sockhash on a segment boundary.
	rest, ok := readQueued(sa.rc, maxQueued)
	pre = append(pre[:len(pre):len(pre)], rest...)

	// Flow and peer entries first (unarmed), then the sockets: a segment
	// that arrives before its socket is armed poisons it and is handed to
	// userspace. A socket already past ESTABLISHED (the agent half-closed)
	// cannot join: that flow is copied in userspace.
	if ok && r.insert(sa, sb) == nil {
		sa.armed = r.arm(sa.cookie, sb.cookie) == nil
		sb.armed = r.arm(sb.cookie, sa.cookie) == nil
	}
	if len(pre) > 0 {
		// Written after arming: the upstream's answer is then the kernel's
		// to redirect. Egress is untouched by the sockhash.
		if _, err := b.Write(pre); err != nil {
			closeBoth(a, b)
			return Result{}, fmt.Errorf("write buffered bytes upstream: %w", err)
		}
	}
	if r.testArmed != nil {
		r.testArmed()
	}

	stop := context.AfterFunc(ctx, func() { closeBoth(a, b) })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	var errAB error
	go func() {
		defer wg.Done()
		errAB = r.direction(ctx, sa, sb, int64(len(pre)))
	}()
	errBA := r.direction(ctx, sb, sa, 0)
	wg.Wait()

	ka, kb := r.redirected(sa.cookie), r.redirected(sb.cookie)
	res := Result{AToB: int64(len(pre)) + sa.user + ka, BToA: sb.user + kb, InKernel: ka + kb}
	return res, errors.Join(errAB, errBA)
}

// direction carries src's stream to dst until its end, then half-closes dst
// once every byte has reached dst's send queue. extra counts bytes the caller
// already wrote to dst.
//
// While src is armed the kernel moves its bytes; this goroutine only waits
// for the end of the stream. If instead src turns readable with data (bytes
// that reached it before it joined the sockhash and so never met the verdict
// program, or bytes the program handed to userspace), the socket is
// disarmed, what the kernel already queued on dst is let through first, and
// the rest is copied here, in order.
func (r *Relay) direction(ctx context.Context, src, dst *side, extra int64) error {
	if src.armed {
		eof, err := r.watch(src, dst, extra)
		switch {
		case errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
			return nil // closed by the other direction or by ctx
		case err != nil:
			closeBoth(src.c, dst.c)
			return fmt.Errorf("relay wait: %w", err)
		case eof:
			drain(ctx, dst.rc, extra+r.redirected(src.cookie))
			dst.c.CloseWrite()
			return nil
		}
		r.disarm(src)
		drain(ctx, dst.rc, extra+r.redirected(src.cookie))
	}
	// Plain reads, never io.Copy: between two TCP conns io.Copy splices,
	// and splice(2) reads the receive queue behind the sockhash's back.
	buf := make([]byte, 32<<10)
	for {
		n, err := src.c.Read(buf)
		if n > 0 {
			if _, werr := dst.c.Write(buf[:n]); werr != nil {
				closeBoth(src.c, dst.c)
				return fmt.Errorf("relay write: %w", werr)
			}
			src.user += int64(n)
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			drain(ctx, dst.rc, extra+src.user+r.redirected(src.cookie))
			dst.c.CloseWrite()
			return nil
		case errors.Is(err, net.ErrClosed):
			return nil // closed by the other direction or by ctx
		default:
			closeBoth(src.c, dst.c)
			return fmt.Errorf("relay read: %w", err)
		}
	}
}

// maxQueued bounds what readQueued takes: a socket's receive buffer, at
// most a few MiB.
const maxQueued = 8 << 20

// readQueued reads what is in the socket's receive queue now, without
// waiting. A read that returns less than asked for has emptied the queue,
// so it ended on a segment boundary (a read that fills the buffer may not
// have). ok is false if the queue did not empty within max bytes, or at the
// end of the stream or an error: the flow is then copied in userspace, from
// the bytes read on.
func readQueued(rc syscall.RawConn, max int) (b []byte, ok bool) {
	rc.Control(func(fd uintptr) {
		inq, _ := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		buf := make([]byte, min(max, inq+64<<10))
		for len(b) < max {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
				ok = true
				return
			case n <= 0:
				return
			}
			b = append(b, buf[:n]...)
			if n < len(buf) {
				ok = true
				return
			}
		}
	})
	return b, ok
}

// A redirected segment is queued on the peer's send path whatever that
// socket's buffer holds, so a reader slower than its writer (an agent that
// stops reading a download) would let the kernel queue without bound. The
// watcher measures the backlog (redirected, but not yet in the peer's send
// queue) and, past maxBacklog, moves the flow to userspace, where the
// socket's receive window pushes back on the writer again. It checks often
// while bytes move and rarely when the flow idles.
const (
	maxBacklog = 4 << 20
	busyCheck  = 2 * time.Millisecond
	idleCheck  = time.Second
)

// watch waits, while src is armed, for the end of its stream (eof), for
// bytes that userspace must copy, or for a backlog past maxBacklog (both
// false, nil).
func (r *Relay) watch(src, dst *side, extra int64) (eof bool, err error) {
	defer src.c.SetReadDeadline(time.Time{})
	interval, last := busyCheck, int64(-1)
	for {
		src.c.SetReadDeadline(time.Now().Add(interval))
		eof, err := waitReadable(src.rc)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return eof, err
		}
		moved := r.redirected(src.cookie)
		if sent, open := queued(dst.rc); open && extra+moved-sent > maxBacklog {
			return false, nil
		}
		if moved == last {
			interval = min(2*interval, idleCheck)
		} else {
			interval = busyCheck
		}
		last = moved
	}
}

// waitReadable waits until the socket has data for userspace (false) or
// has reached the end of its stream (true), without consuming anything.
func waitReadable(rc syscall.RawConn) (eof bool, err error) {
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return !errors.Is(perr, unix.EAGAIN) && !errors.Is(perr, unix.EINTR)
	})
	if err != nil {
		return false, err
	}
	if perr != nil {
		return false, perr
	}
	return n == 0, nil
}

func newSide(c *net.TCPConn) (*side, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRelayed, err)
	}
	var cookie uint64
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
	}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotRelayed, err)
	}
	if serr != nil {
		return nil, fmt.Errorf("%w: socket cookie: %w", ErrNotRelayed, serr)
	}
	return &side{c: c, rc: rc, cookie: cookie}, nil
}

// insert records the pair (unarmed) and adds both sockets to the sockhash.
// On failure the sockets that made it in stay there unarmed: removing one
// would drop whatever the kernel queued for userspace on it meanwhile.
func (r *Relay) insert(a, b *side) error {
	for _, s := range []struct{ me, peer *side }{{a, b}, {b, a}} {
		if err := r.objs.ClawdSpFlows.Update(s.me.cookie, bpf.SpliceFlow{}, ebpf.UpdateNoExist); err != nil {
			return fmt.Errorf("sockmap flow: %w", err)
		}
		if err := r.objs.ClawdSpPeers.Update(s.me.cookie, bpf.SplicePeer{Cookie: s.peer.cookie}, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("sockmap peer: %w", err)
		}
	}
	for _, s := range []*side{a, b} {
		var uerr error
		if err := s.rc.Control(func(fd uintptr) {
			uerr = r.objs.ClawdSpSocks.Update(s.cookie, uint64(fd), ebpf.UpdateNoExist)
		}); err != nil {
			return fmt.Errorf("sockmap: %w", err)
		}
		if uerr != nil {
			return fmt.Errorf("sockmap insert: %w", uerr)
		}
	}
	return nil
}

func (r *Relay) arm(me, peer uint64) error {
	return r.objs.ClawdSpPeers.Update(me, bpf.SplicePeer{Cookie: peer, Armed: 1}, ebpf.UpdateExist)
}

// disarm hands s's later bytes to userspace. The verdict program runs under
// the socket's lock; a TCP_INFO read takes that lock too, so once it returns
// no verdict that still saw the socket armed is in flight and the redirected
// count is final.
func (r *Relay) disarm(s *side) {
	var p bpf.SplicePeer
	if r.objs.ClawdSpPeers.Lookup(s.cookie, &p) == nil {
		p.Armed = 0
		r.objs.ClawdSpPeers.Update(s.cookie, p, ebpf.UpdateExist)
	}
	s.rc.Control(func(fd uintptr) { unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	s.armed = false
}

// redirected is how many bytes the kernel moved from the socket with this
// cookie to its peer.
func (r *Relay) redirected(cookie uint64) int64 {
	var f bpf.SpliceFlow
	if err := r.objs.ClawdSpFlows.Lookup(cookie, &f); err != nil {
		return 0
	}
	return int64(f.Bytes)
}

func (r *Relay) forget(cookies ...uint64) {
	for _, c := range cookies {
		r.objs.ClawdSpPeers.Delete(c)
		r.objs.ClawdSpFlows.Delete(c)
	}
}

// drain waits until want bytes in all have entered the socket's send queue
// (acknowledged plus still queued), or the connection is no longer open for
// sending, or ctx ends.
func drain(ctx context.Context, rc syscall.RawConn, want int64) {
	for d := 20 * time.Microsecond; ; d = min(2*d, 10*time.Millisecond) {
		sent, open := queued(rc)
		if !open || sent >= want {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// queued is the number of bytes ever written to the socket's send queue.
// TCP_INFO is read before SIOCOUTQ: an acknowledgement arriving between the
// two then makes the sum smaller, never larger, than the truth.
func queued(rc syscall.RawConn) (int64, bool) {
	var info *unix.TCPInfo
	var outq int
	var ierr, oerr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		outq, oerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
	}); err != nil || ierr != nil || oerr != nil {
		return 0, false
	}
	switch info.State {
	case unix.BPF_TCP_ESTABLISHED, unix.BPF_TCP_CLOSE_WAIT:
	default:
		return 0, false
	}
	return int64(info.Bytes_acked) + int64(outq), true
}

func closeBoth(a, b *net.TCPConn) {
	a.Close()
	b.Close()
}
