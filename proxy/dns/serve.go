package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/policy"
)

// tcpIdle is how long a DNS-over-TCP connection may sit between queries
// (RFC 7766 suggests seconds; agents reconnect cheaply).
const tcpIdle = 30 * time.Second

// SenderCheck tells whether the datagram that came from src was sent by the
// container whose listener received it. A non-nil error refuses the query:
// it is answered REFUSED and audited with the error as the reason, and
// nothing is forwarded. It is called once per datagram, concurrently.
type SenderCheck func(src netip.AddrPort) error

// ServePacket answers DNS queries arriving on pc, all from container c,
// until ctx is done or pc is closed; both end it with a nil error. pc stays
// the caller's to close (ctx ending sets a past read deadline on it).
// Queries beyond the container's in-flight limit are dropped (the client
// retries). ServePacket returns only after every answer it started has been
// sent or abandoned.
func (r *Resolver) ServePacket(ctx context.Context, pc net.PacketConn, c policy.Container) error {
	return r.ServePacketChecked(ctx, pc, c, nil)
}

// ServePacketChecked is ServePacket for a listener that others can reach
// too (several containers sharing a network namespace): check decides, for
// every datagram, whether it is c's. A nil check trusts every sender.
func (r *Resolver) ServePacketChecked(ctx context.Context, pc net.PacketConn, c policy.Container, check SenderCheck) error {
	st := r.state(c.Key())
	// Unblock ReadFrom when ctx ends without closing the caller's socket.
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dns: read query: %w", err)
		}
		select {
		case st.sem <- struct{}{}:
		default:
			r.queries.WithLabelValues(resultDropped).Inc()
			continue
		}
		packet := append([]byte(nil), buf[:n]...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-st.sem }()
			var refuse error
			if check != nil {
				refuse = check(addrPortOf(addr))
			}
			if out := r.handle(ctx, c, packet, true, refuse); out != nil {
				if _, err := pc.WriteTo(out, addr); err != nil {
					r.log.Debug("dns: write answer", zap.Error(err))
				}
			}
		}()
	}
}

// ServeConn answers length-prefixed DNS queries on a TCP connection from
// container c, one after another, until the client closes it, sends a
// malformed message, stays idle too long or ctx is done. It closes conn.
func (r *Resolver) ServeConn(ctx context.Context, conn net.Conn, c policy.Container) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	st := r.state(c.Key())

	var lenBuf [2]byte
	buf := make([]byte, 65535)
	for {
		conn.SetReadDeadline(time.Now().Add(tcpIdle))
		if _, err := io.ReadFull(conn, lenBuf[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lenBuf[:]))
		if _, err := io.ReadFull(conn, buf[:n]); err != nil {
			return
		}
		select {
		case st.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		out := r.handle(ctx, c, buf[:n], false, nil)
		<-st.sem
		if out == nil || len(out) > 65535 {
			return
		}
		msg := make([]byte, 2+len(out))
		binary.BigEndian.PutUint16(msg, uint16(len(out)))
		copy(msg[2:], out)
		conn.SetWriteDeadline(time.Now().Add(tcpIdle))
		if _, err := conn.Write(msg); err != nil {
			return
		}
	}
}

// addrPortOf is the address of a datagram's sender; an address of another
// kind is the zero AddrPort (which a SenderCheck must refuse).
func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return u.AddrPort()
	}
	return netip.AddrPort{}
}
