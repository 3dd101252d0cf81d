package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

// sniffBufSize holds a whole TLS record (at most 2^14 bytes plus header and
// expansion allowance) so the ClientHello can be peeked in one piece.
const sniffBufSize = 1<<14 + 2048 + 5

// conn is one connection being served.
type conn struct {
	s      *Server
	c      net.Conn
	br     *bufio.Reader
	meta   ConnMeta
	ctx    context.Context // cancelled when ServeConn's ctx is or it returns
	cancel context.CancelFunc
	st     *connState
	start  time.Time
	cls    classCache // the destination's address class, computed once
	gen    uint64     // the Server's Recheck generation when serving began
}

func (cc *conn) serve() {
	s := cc.s
	cc.gen = s.gen.Load() // before any decision: see trackChecked
	cc.br = bufio.NewReaderSize(cc.c, sniffBufSize)
	f := connFacts{meta: cc.meta, names: cc.names(), cls: &cc.cls}
	// Deadlines are on the real clock: they bound real sockets.
	cc.c.SetReadDeadline(time.Now().Add(s.cfg.PeekTimeout))
	_, err := cc.br.Peek(1)
	cc.c.SetReadDeadline(time.Time{})
	if err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the agent closed before sending anything
		}
		f.stage = stageLate
		v := s.gateConn(f)
		if v.act != actWait {
			cc.carry(v, f, sniffed{}) // a server-speaks-first protocol
			return
		}
		if !cc.waitFirstBytes() {
			f.waited = true
			cc.carry(s.gateConn(f), f, sniffed{})
			return
		}
		// The client spoke late: decide on what it sent, like any other.
	}
	cc.c.SetReadDeadline(time.Now().Add(helloTimeout))
	res := sniff(cc.br)
	cc.c.SetReadDeadline(time.Time{})
	f.stage, f.sni = res.stage, res.sni
	cc.carry(s.gateConn(f), f, res)
}

// names are the names clawd's DNS gave this container for the destination.
func (cc *conn) names() []string {
	if cc.s.cfg.Names == nil {
		return nil
	}
	var out []string
	for _, n := range cc.s.cfg.Names.NamesFor(cc.meta.Container.Key(), cc.meta.OrigDst.Addr()) {
		if n = hostname.Normalize(n); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// allNames are the names clawd's DNS gave this container or any other for
// the destination.
func (cc *conn) allNames(netip.AddrPort) []string {
	out := cc.names()
	for _, n := range cc.s.namesForAny(cc.meta) {
		if n = hostname.Normalize(n); hostname.Valid(n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// carry carries out a connection verdict of the gate.
func (cc *conn) carry(v connVerdict, f connFacts, res sniffed) {
	s := cc.s
	deny := func() { resetClose(cc.c) }
	if f.stage == stageTLS || f.stage == stageBadTLS {
		deny = func() { tlsAlertClose(cc.c) }
	}
	switch v.act {
	case actIntercept:
		cc.serveIntercept(res, &v.e)
	case actFrame:
		cc.serveHTTP(&bufConn{Conn: cc.c, r: cc.br}, newHandler(cc, "http", ""))
	case actSplice:
		proto := f.stage.proto()
		url := proto + "://" + cc.meta.OrigDst.String()
		if v.host != "" {
			url = proto + "://" + net.JoinHostPort(v.host, strconv.Itoa(int(cc.meta.OrigDst.Port())))
		}
		cc.act(v, f, url, deny)
	default:
		s.record(v.e, v.d, cc.start)
		deny()
	}
}

// waitFirstBytes waits (bounded) for the agent's first bytes after the peek
// timeout passed; false if none came.
func (cc *conn) waitFirstBytes() bool {
	cc.c.SetReadDeadline(time.Now().Add(cc.s.cfg.SlowClientWait))
	_, err := cc.br.Peek(1)
	cc.c.SetReadDeadline(time.Time{})
	return err == nil
}

// act carries out a connection-level allow or approve: hold when asked,
// then splice, with the verdict re-decided on every reload and revocation
// while the splice lasts.
func (cc *conn) act(v connVerdict, f connFacts, url string, deny func()) {
	s := cc.s
	d, e := v.d, &v.e
	var out approval.Outcome
	if d.Action == policy.Approve {
		var ok bool
		out, ok = cc.holdConn(d, url, v.host)
		if !ok {
			e.Action = audit.ActionDeny
			if out.Status != "" {
				e.Action = out.Status
			}
			e.By, e.ApprovalID, e.Reason = out.By, out.ID, out.Reason
			s.record(*e, d, cc.start)
			deny()
			return
		}
		e.Action, e.By, e.ApprovalID = out.Status, out.By, out.ID
	}
	f.waited, f.again = true, true // a re-decision never waits
	cc.splice(e, d.UpstreamProxy, func() (policy.Decision, bool) {
		nv := s.gateConn(f)
		if nv.act != actSplice {
			if nv.act != actRefuse {
				nv.d = refuse(ruleUnframable, "the destination now has HTTP-level rules, which a spliced connection cannot follow")
			}
			return nv.d, false
		}
		if !s.stillAllowed(d, out, nv.d) {
			return nv.d, false
		}
		return routeKept(d, nv.d)
	})
	s.record(*e, d, cc.start)
}

// holdConn asks the approver about a whole connection. The agent is watched
// meanwhile: if it disconnects, the hold is cancelled.
func (cc *conn) holdConn(d policy.Decision, url, host string) (approval.Outcome, bool) {
	s := cc.s
	if s.cfg.Approver == nil {
		return approval.Outcome{Status: audit.ActionDeny, Reason: "approval not configured"}, false
	}
	ctx, stop := cc.watchClient()
	s.m.held.Inc()
	out := s.cfg.Approver.Request(ctx, approval.Hold{
		Container:  cc.meta.Container,
		URL:        url,
		Host:       host,
		Dst:        cc.meta.OrigDst.String(),
		BodySize:   -1,
		Rule:       d.Rule,
		Timeout:    d.ApprovalTimeout,
		Route:      d.Route,
		Generation: d.Generation,
		Program:    cc.meta.Program,
	})
	s.m.held.Dec()
	stop()
	return out, out.Approved
}

// watchClient returns a context cancelled when the agent closes its side.
// Bytes the agent sends meanwhile stay buffered in br for the splice. stop
// must be called before br or c is used again.
func (cc *conn) watchClient() (context.Context, func()) {
	ctx, cancel := context.WithCancel(cc.ctx)
	done := make(chan struct{})
	var stopping sync.Mutex // guards stopped
	stopped := false
	go func() {
		defer close(done)
		for {
			_, err := cc.br.Peek(cc.br.Buffered() + 1)
			if err == nil {
				continue
			}
			stopping.Lock()
			st := stopped
			stopping.Unlock()
			if !st && !errors.Is(err, bufio.ErrBufferFull) {
				cancel()
			}
			return
		}
	}()
	return ctx, func() {
		stopping.Lock()
		stopped = true
		stopping.Unlock()
		cc.c.SetReadDeadline(time.Unix(1, 0)) // wake the watcher
		<-done
		cc.c.SetReadDeadline(time.Time{})
		cancel()
	}
}

// splice connects the agent to OrigDst: the sniffed bytes are replayed, then
// both directions are copied. The agent's conn is handed to io.Copy as is,
// so between two *net.TCPConn the kernel splices (TCPConn.ReadFrom).
func (cc *conn) splice(e *audit.Entry, route policy.UpstreamProxy, recheck func() (policy.Decision, bool)) {
	s := cc.s
	// Tracked before the upstream is dialled, and decided again first if
	// the policy changed while the connection was being decided or held: a
	// reload that lands now closes it, one that landed before refuses it.
	ctx, cancel := context.WithCancel(cc.ctx)
	defer cancel()
	var mu sync.Mutex
	var up net.Conn
	kill := func() {
		cancel()
		cc.c.Close()
		mu.Lock()
		if up != nil {
			up.Close()
		}
		mu.Unlock()
	}
	s.setHooks(cc.st, func() {}, kill)
	untrack, ok := s.trackChecked(&live{entry: *e, recheck: recheck, kill: kill}, cc.gen)
	defer untrack()
	if !ok {
		e.Action, e.Reason = audit.ActionDeny, "the policy changed before the connection opened"
		resetClose(cc.c)
		return
	}
	c, err := s.dialRoute(ctx, route, cc.meta.OrigDst)
	if err != nil {
		s.m.upstreamErrors.Inc()
		s.log.Debug("upstream dial failed", zap.String("dst", cc.meta.OrigDst.String()), zap.Error(err))
		e.Reason = "upstream unreachable"
		if r, ok := proxyReason(err); ok {
			e.Reason = r
		}
		resetClose(cc.c)
		return
	}
	mu.Lock()
	up = c
	mu.Unlock()
	defer up.Close()
	if ctx.Err() != nil { // killed while dialling
		return
	}

	if n := cc.br.Buffered(); n > 0 {
		b, _ := cc.br.Peek(n)
		w, err := up.Write(b)
		e.BytesOut += int64(w)
		if err != nil {
			s.m.upstreamErrors.Inc()
			resetClose(cc.c)
			return
		}
	}
	var wg sync.WaitGroup
	var out int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := io.Copy(up, cc.c)
		out = n
		finish(up, cc.c, err)
	}()
	in, err := io.Copy(cc.c, up)
	finish(cc.c, up, err)
	wg.Wait()
	e.BytesIn, e.BytesOut = in, e.BytesOut+out
}

// finish ends one direction: a clean EOF is passed on as a half-close; an
// error tears both sides down.
func finish(dst, src net.Conn, err error) {
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
	}
	dst.Close()
	src.Close()
}

// serveIntercept terminates TLS with a leaf from clawd's CA and proxies the
// HTTP requests inside, each decided on its own.
func (cc *conn) serveIntercept(res sniffed, e *audit.Entry) {
	s := cc.s
	if s.cfg.CA == nil {
		d := policy.Decision{Action: policy.Deny, Rule: "default", Reason: "interception not configured"}
		s.record(*e, d, cc.start)
		tlsAlertClose(cc.c)
		return
	}
	protos := []string{"http/1.1"}
	if slices.Contains(res.alpn, "h2") {
		protos = []string{"h2", "http/1.1"}
	}
	sni := res.sni
	var sentCert atomic.Bool
	tc := tls.Server(&bufConn{Conn: cc.c, r: cc.br}, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: protos,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			sentCert.Store(true)
			return s.cfg.CA.Leaf(sni)
		},
	})
	cc.c.SetDeadline(time.Now().Add(helloTimeout))
	if err := tc.HandshakeContext(cc.ctx); err != nil {
		if how, ok := certRejection(err, sentCert.Load()); ok {
			s.recordUntrusted(*e, how, cc.meta)
			return
		}
		s.log.Debug("intercept handshake failed", zap.String("sni", sni), zap.Error(err))
		return
	}
	cc.c.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		cc.serveH2(tc, newHandler(cc, "https", sni))
		return
	}
	h := newHandler(cc, "https", sni)
	h.tr.directTLS(h.upstreamTLS(), sni) // one request at a time: HTTP/1.1 upstream too
	cc.serveHTTP(tc, h)
}

// tlsAlertClose refuses a TLS client with a fatal access_denied alert, so
// the agent sees a clear TLS error rather than a reset.
func tlsAlertClose(c net.Conn) {
	// record type alert(21), version TLS 1.2, length 2, level fatal(2), access_denied(49)
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{21, 3, 3, 0, 2, 2, 49})
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		// Drain briefly so closing with unread bytes does not turn our
		// alert into a reset the client never reads.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, io.LimitReader(c, 1<<16))
	}
	c.Close()
}

// resetClose closes with RST, so a denied raw TCP client fails at once.
func resetClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// kill closes the agent's connection, ending whatever runs on it.
func (cc *conn) kill() { cc.c.Close() }
