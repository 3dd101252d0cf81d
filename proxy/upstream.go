package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/sys/unix"
)

// upstreamTransport is the handler's RoundTripper. The common request of a
// plain HTTP or an intercepted HTTP/1.1 agent connection (HTTP/1.1, no
// body, no upgrade) is sent and its response read in the calling
// goroutine, on connections it keeps itself (TLS for the intercepted
// ones, see directTLS); everything else goes to the http.Transport
// (fallback).
//
// http.Transport runs two goroutines per upstream connection (writeLoop,
// readLoop) and hands every request and response between them and the
// caller over channels: several goroutine wake-ups per request, each one
// possibly a wake-up of another CPU. Here the request is one write and the
// response is read where it is used.
//
// What reaches the upstream is exactly what http.Transport would send:
// ReverseProxy prepares the request (hop-by-hop headers, Rewrite) as
// before, the same checks refuse invalid header fields, methods and hosts
// before anything is written, and (*http.Request).Write produces the same
// bytes the Transport writes (no extra headers: DisableCompression is on
// and keep-alives are not disabled). The response is parsed by
// http.ReadResponse as in the Transport, with the Transport's header size
// limit, 1xx handling (passed to ReverseProxy's trace) and keep-alive rules;
// a connection is reused only after its response body was read to the end
// and neither side asked to close. A request on a reused connection that
// the upstream had meanwhile closed is retried on a new one when the
// Transport would retry it (replayable requests; nothing written).
type upstreamTransport struct {
	fallback *http.Transport
	direct   bool // the direct path may be used
	dial     func(context.Context) (net.Conn, error)
	// tlsCfg, for an intercepted HTTP/1.1 agent connection (directTLS),
	// makes the direct path speak HTTPS: TLS verified as the fallback
	// verifies it, offering only HTTP/1.1. An upstream that refuses that
	// handshake (an HTTP/2-only server, a bad certificate) sets noTLS and
	// the fallback serves this and every later request, with its own
	// handshake and its own errors.
	tlsCfg *tls.Config
	noTLS  atomic.Bool

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	closed bool
	timer  *time.Timer // closes connections idle past upIdleTimeout
}

// directUpstream enables the direct path (tests compare both paths).
var directUpstream = true

const (
	upMaxIdle   = 4 // as MaxIdleConnsPerHost of the fallback
	upIdleTime  = 90 * time.Second
	upMaxHeader = 10 << 20 // http.Transport's default MaxResponseHeaderBytes
	// tlsHandshakeTimeout is the fallback's TLSHandshakeTimeout.
	tlsHandshakeTimeout = 15 * time.Second
)

func newUpstreamTransport(fallback *http.Transport, direct bool, dial func(context.Context) (net.Conn, error)) *upstreamTransport {
	return &upstreamTransport{fallback: fallback, direct: direct, dial: dial}
}

// directTLS lets the direct path carry the HTTPS requests of an
// intercepted HTTP/1.1 agent connection: one request at a time, as the
// agent sends them, on an HTTP/1.1 connection of its own (as haproxy or any
// HTTP/1.1 client would), instead of the fallback's HTTP/2 connection with
// its reader and writer goroutines. Without a server name the fallback
// keeps them (it verifies the Host header's name).
func (t *upstreamTransport) directTLS(cfg *tls.Config, sni string) {
	if !directUpstream || sni == "" {
		return
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	t.tlsCfg, t.direct = cfg, true
}

// tlsRefused is a failed TLS handshake of the direct path: the fallback
// tries the request instead.
type tlsRefused struct{ err error }

func (e tlsRefused) Error() string { return e.err.Error() }
func (e tlsRefused) Unwrap() error { return e.err }

// upConn is one upstream connection of the direct path.
type upConn struct {
	c      net.Conn
	rc     syscall.RawConn // c's socket, for the liveness peek; nil if unknown
	r      limitedConn
	br     *bufio.Reader
	w      countingConn
	bw     *bufio.Writer
	reused bool
	idleAt time.Time
	tls    bool // c is TLS over the socket
	// quiet's peek: its buffer and result (errno 0: a byte or EOF).
	peekBuf [1]byte
	peekErr unix.Errno
	peekFn  func(fd uintptr) // uc.peek
}

// limitedConn reads from c with a byte budget while a response header is
// read (the Transport's MaxResponseHeaderBytes); limit < 0 means none.
type limitedConn struct {
	c     net.Conn
	limit int64
}

func (l *limitedConn) Read(p []byte) (int, error) {
	if l.limit == 0 {
		return 0, errHeaderTooBig
	}
	if l.limit > 0 && int64(len(p)) > l.limit {
		p = p[:l.limit]
	}
	n, err := l.c.Read(p)
	if l.limit > 0 {
		l.limit -= int64(n)
	}
	return n, err
}

var errHeaderTooBig = fmt.Errorf("net/http: server response headers exceeded %d bytes; aborted", upMaxHeader)

// countingConn counts the bytes written to c (to tell "nothing written").
type countingConn struct {
	c net.Conn
	n int64
}

func (w *countingConn) Write(p []byte) (int, error) {
	n, err := w.c.Write(p)
	w.n += int64(n)
	return n, err
}

// usable reports whether req can take the direct path.
func (t *upstreamTransport) usable(req *http.Request) bool {
	scheme := "http"
	if t.tlsCfg != nil {
		if t.noTLS.Load() {
			return false
		}
		scheme = "https"
	}
	return t.direct && req.URL != nil && req.URL.Scheme == scheme &&
		(req.Body == nil || req.Body == http.NoBody) && len(req.Trailer) == 0 &&
		req.Cancel == nil && req.Header != nil &&
		// ReverseProxy leaves Connection and Upgrade only on upgrades.
		len(req.Header["Upgrade"]) == 0 && len(req.Header["Connection"]) == 0
}

// RoundTrip implements http.RoundTripper.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.usable(req) {
		return t.fallback.RoundTrip(req)
	}
	// The checks http.Transport makes before it sends anything.
	if err := validateHeaders(req.Header); err != "" {
		return nil, fmt.Errorf("net/http: invalid header %s", err)
	}
	if req.Method != "" && !validMethod(req.Method) {
		return nil, fmt.Errorf("net/http: invalid method %q", req.Method)
	}
	if req.URL.Host == "" {
		return nil, errors.New("http: no Host in request URL")
	}
	ctx := req.Context()
	for {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		uc, err := t.get(ctx)
		if err != nil {
			var tr tlsRefused
			var ne net.Error
			if errors.As(err, &tr) && ctx.Err() == nil && !(errors.As(err, &ne) && ne.Timeout()) {
				// Not a timeout (the fallback would wait as long again):
				// its handshake decides, and its error is the agent's.
				t.noTLS.Store(true)
				return t.fallback.RoundTrip(req)
			}
			return nil, err
		}
		resp, err := t.exchange(ctx, uc, req)
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		var nw nothingWritten
		var rf readFromServer
		switch {
		case !uc.reused:
			// A fresh connection: the Transport does not retry either.
		case errors.As(err, &nw):
			continue // bodyless: nothing to rewind
		case replayable(req) && errors.As(err, &rf):
			continue
		}
		if errors.As(err, &nw) {
			err = nw.err
		}
		if errors.As(err, &rf) {
			err = rf.err // the Transport, too, returns the cause alone
		}
		return nil, err
	}
}

// nothingWritten is a failure before any byte of the request went out.
type nothingWritten struct{ err error }

func (e nothingWritten) Error() string { return e.err.Error() }
func (e nothingWritten) Unwrap() error { return e.err }

// readFromServer is a failure reading the response (as the Transport's
// transportReadFromServerError).
type readFromServer struct{ err error }

func (e readFromServer) Error() string {
	return fmt.Sprintf("net/http: Transport failed to read from server: %v", e.err)
}
func (e readFromServer) Unwrap() error { return e.err }

// replayable is (*http.Request).isReplayable for a request without a body.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

// exchange sends req on uc and reads the response header. On error uc is
// closed.
func (t *upstreamTransport) exchange(ctx context.Context, uc *upConn, req *http.Request) (*http.Response, error) {
	// Cancelling the request (the agent went away) closes the connection,
	// as the Transport does; a blocked read or write then fails at once.
	stop := context.AfterFunc(ctx, func() { uc.c.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		uc.c.Close()
		return nil, err
	}
	start := uc.w.n
	err := req.Write(uc.bw)
	if err == nil {
		err = uc.bw.Flush()
	}
	if err != nil {
		if uc.w.n == start {
			err = nothingWritten{err}
		}
		return fail(err)
	}
	uc.r.limit = upMaxHeader
	// As in the Transport: no first byte is a failure to read from the
	// server (retried on a reused connection), a bad response after it
	// a broken connection (never retried).
	if _, err := uc.br.Peek(1); err != nil {
		return fail(readFromServer{err})
	}
	trace := httptrace.ContextClientTrace(ctx)
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(uc.br, req)
		if err != nil {
			if uc.r.limit == 0 {
				err = errHeaderTooBig
			}
			return fail(fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", err))
		}
		code := resp.StatusCode
		if 100 <= code && code <= 199 && code != http.StatusSwitchingProtocols {
			if trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
				uc.r.limit = upMaxHeader
			}
			continue
		}
		break
	}
	uc.r.limit = -1
	if resp.StatusCode <= 199 {
		// Only 101 gets here. No upgrade was asked for (those go to the
		// Transport), so ReverseProxy refuses it; like the Transport, hand
		// over the connection if it is a protocol switch, never reuse it.
		// (The cancel hook stays: the end of the request closes it.)
		if resp.StatusCode == http.StatusSwitchingProtocols && upgradeType(resp.Header) != "" {
			resp.Body = &switchedBody{br: uc.br, c: uc.c}
		} else {
			uc.c.Close()
		}
		return resp, nil
	}
	keep := !resp.Close && !req.Close
	if req.Method == "HEAD" || resp.ContentLength == 0 {
		t.release(uc, keep && stop())
		return resp, nil
	}
	resp.Body = &upBody{rc: resp.Body, t: t, uc: uc, stop: stop, keep: keep}
	return resp, nil
}

// upgradeType is the protocol h upgrades to, or "" (as ReverseProxy reads it).
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// upBody is a direct response body: at its end the connection goes back
// to the idle list (if both sides keep it alive); closed early, the
// connection is closed, not drained.
type upBody struct {
	rc   io.ReadCloser
	t    *upstreamTransport
	uc   *upConn
	stop func() bool
	keep bool
	done bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *upBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *upBody) finish(eof bool) {
	b.done = true
	stopped := b.stop()
	if eof {
		b.rc.Close() // at EOF: reads nothing more (the trailer is in)
	}
	b.t.release(b.uc, eof && b.keep && stopped)
}

// switchedBody is the connection after a 101, as the Transport hands it
// over (a read-write body).
type switchedBody struct {
	br *bufio.Reader
	c  net.Conn
}

func (b *switchedBody) Read(p []byte) (int, error)  { return b.br.Read(p) }
func (b *switchedBody) Write(p []byte) (int, error) { return b.c.Write(p) }
func (b *switchedBody) Close() error                { return b.c.Close() }

// get returns an idle connection that is still open and silent, or dials.
func (t *upstreamTransport) get(ctx context.Context) (*upConn, error) {
	now := time.Now()
	t.mu.Lock()
	for n := len(t.idle); n > 0; n = len(t.idle) {
		uc := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if now.Sub(uc.idleAt) < upIdleTime && uc.quiet() {
			return uc, nil
		}
		uc.c.Close()
		t.mu.Lock()
	}
	t.mu.Unlock()
	raw, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	c := raw
	if t.tlsCfg != nil {
		tc := tls.Client(raw, t.tlsCfg)
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err == nil && tc.ConnectionState().NegotiatedProtocol != "http/1.1" {
			// A server that did not take the offer (no ALPN at all, or
			// one that ignores protocols it cannot serve, as an HTTP/2-
			// only terminator may) is left to the fallback, which offers
			// h2 too and reads its answer.
			err = errors.New("the upstream did not agree to HTTP/1.1 (ALPN)")
		}
		if err != nil {
			raw.Close()
			return nil, tlsRefused{err}
		}
		c = tc
	}
	uc := &upConn{c: c, tls: c != raw}
	// The liveness peek looks at the socket, and under TLS at what
	// crypto/tls holds too (quiet).
	if sc, ok := raw.(syscall.Conn); ok {
		uc.rc, _ = sc.SyscallConn()
		uc.peekFn = uc.peek
	}
	uc.r = limitedConn{c: c, limit: -1}
	uc.w = countingConn{c: c}
	uc.br = bufio.NewReaderSize(&uc.r, 4<<10)
	uc.bw = bufio.NewWriterSize(&uc.w, 4<<10)
	return uc, nil
}

// quiet reports whether an idle connection is still open with nothing to
// read: the upstream neither closed it nor sent anything unasked (the
// Transport's reader notices both while the connection is idle). One
// non-blocking peek.
func (uc *upConn) quiet() bool {
	if uc.br.Buffered() > 0 {
		return false
	}
	if uc.rc == nil {
		// Unknown (a Dial whose conns have no socket): bytes the upstream
		// sent unasked could be read as the next answer. Not reused.
		return false
	}
	if cerr := uc.rc.Control(uc.peekFn); cerr != nil {
		return false
	}
	if uc.peekErr != unix.EAGAIN {
		return false // EOF, data or an error
	}
	if uc.tls {
		// crypto/tls holds whole records it read but has not decrypted,
		// and the decrypted rest of a record nobody asked for: stray
		// bytes (an answer sent unasked, a close_notify) the socket
		// peek cannot see. A read through TLS that may not wait tells;
		// its timeout leaves the connection as it was.
		uc.c.SetReadDeadline(time.Unix(1, 0))
		_, err := uc.br.Peek(1)
		uc.c.SetReadDeadline(time.Time{})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return false
		}
	}
	return true
}

// peek is quiet's non-blocking one-byte MSG_PEEK on the socket, a method
// value made once per connection (a closure per request allocates), with
// recvfrom(2) called directly (unix.Recvfrom allocates the peer address).
func (uc *upConn) peek(fd uintptr) {
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&uc.peekBuf[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	uc.peekErr = e
}

// release returns uc to the idle list, or closes it.
func (t *upstreamTransport) release(uc *upConn, reuse bool) {
	if reuse && uc.br.Buffered() == 0 {
		uc.reused = true
		uc.idleAt = time.Now()
		t.mu.Lock()
		if !t.closed && len(t.idle) < upMaxIdle {
			t.idle = append(t.idle, uc)
			if t.timer == nil {
				t.timer = time.AfterFunc(upIdleTime, t.closeStale)
			} else {
				t.timer.Reset(upIdleTime)
			}
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
	}
	uc.c.Close()
}

// closeStale closes connections idle for upIdleTime.
func (t *upstreamTransport) closeStale() {
	now := time.Now()
	t.mu.Lock()
	var stale []*upConn
	keep := t.idle[:0]
	for _, uc := range t.idle {
		if now.Sub(uc.idleAt) >= upIdleTime {
			stale = append(stale, uc)
		} else {
			keep = append(keep, uc)
		}
	}
	clear(t.idle[len(keep):])
	t.idle = keep
	if len(keep) > 0 {
		t.timer.Reset(upIdleTime - now.Sub(keep[0].idleAt))
	}
	t.mu.Unlock()
	for _, uc := range stale {
		uc.c.Close()
	}
}

// CloseIdleConnections closes the idle connections of both paths; the
// direct path keeps no more once the agent connection is done.
func (t *upstreamTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.closed = true
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
	for _, uc := range idle {
		uc.c.Close()
	}
	t.fallback.CloseIdleConnections()
}

// validateHeaders is net/http's check of outgoing header fields.
func validateHeaders(h http.Header) string {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Sprintf("field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				// Don't include the value in the error,
				// because it may be sensitive.
				return fmt.Sprintf("field value for %q", k)
			}
		}
	}
	return ""
}

// validMethod is net/http's check of a request method (a token).
func validMethod(m string) bool {
	return len(m) > 0 && strings.IndexFunc(m, func(r rune) bool { return !httpguts.IsTokenRune(r) }) == -1
}
