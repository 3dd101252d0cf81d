package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/policy"
)

// Upstream proxies (the policy's `upstream_proxy`). Every upstream dial of
// an allowed connection goes through the decision's proxy when it names
// one: a CONNECT to OrigDst, the address the agent dialled and the gate
// checked, never a name (the name only travels inside the tunnel, as SNI
// and Host). Spliced connections are spliced through the tunnel,
// intercepted HTTPS is TLS to the upstream inside it (verified for the
// agent's name), and plain HTTP is a tunnel too rather than absolute-form
// requests to the proxy: with absolute-form the proxy would resolve the
// agent's Host name itself and could reach another address than the one
// the policy decided, and it would read (and could change) every header
// including injected secrets. One mechanism for all three also means one
// code path to review.
//
// The proxy's own address is dialled by clawd (Config.Dial, the host's
// netns); it is the operator's, not an agent destination, so no rule
// covers it. Its credential (a clawd secret, "user:password") is resolved
// at each dial through Config.ProxyCredential and goes only into the
// Proxy-Authorization header of the CONNECT: never into an error, log
// line or audit entry.

// connectTimeout bounds the dial, TLS handshake and CONNECT exchange with
// an upstream proxy.
const connectTimeout = 30 * time.Second

// maxConnectResponse bounds the proxy's answer to a CONNECT.
const maxConnectResponse = 64 << 10

// proxyError is a failure of the upstream proxy leg. Its text is safe to
// show the agent and the audit log: it holds the proxy's address and
// status, never the credential.
type proxyError struct {
	reason string // the audit reason ("upstream proxy refused: 407")
	err    error  // the cause, if any (a dial or TLS error)
}

func (e *proxyError) Error() string {
	if e.err != nil {
		return e.reason + ": " + e.err.Error()
	}
	return e.reason
}

func (e *proxyError) Unwrap() error { return e.err }

// proxyReason is the audit reason for an upstream failure through a proxy.
func proxyReason(err error) (string, bool) {
	var pe *proxyError
	if errors.As(err, &pe) {
		return pe.reason, true
	}
	return "", false
}

// dialRoute dials dst directly or, when up names one, through the
// upstream proxy.
func (s *Server) dialRoute(ctx context.Context, up policy.UpstreamProxy, dst netip.AddrPort) (net.Conn, error) {
	if up.IsZero() {
		return s.cfg.Dial(ctx, "tcp", dst.String())
	}
	return s.dialViaProxy(ctx, up, dst)
}

// dialViaProxy opens a CONNECT tunnel to dst through up.
func (s *Server) dialViaProxy(ctx context.Context, up policy.UpstreamProxy, dst netip.AddrPort) (net.Conn, error) {
	auth, err := s.proxyAuth(up)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	c, err := s.cfg.Dial(ctx, "tcp", up.Addr)
	if err != nil {
		return nil, &proxyError{reason: "upstream proxy unreachable", err: err}
	}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		s.noteProxyAddr(ap) // the address it resolved to: never an agent destination
	}
	// The exchange below blocks on the socket: cancelling (the agent went
	// away, a reload ended the stream) or the timeout closes it.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	fail := func(e *proxyError) (net.Conn, error) {
		stop()
		c.Close()
		if ctx.Err() != nil && e.err == nil {
			e.err = context.Cause(ctx)
		}
		return nil, e
	}
	pc := c
	if up.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{
			ServerName: up.Host(),
			RootCAs:    s.cfg.UpstreamRoots,
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
		})
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(&proxyError{reason: "upstream proxy TLS failed", err: err})
		}
		pc = tc
	}
	target := dst.String() // the checked address, never a name
	var b strings.Builder
	b.WriteString("CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n")
	if auth != "" {
		b.WriteString("Proxy-Authorization: " + auth + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := pc.Write([]byte(b.String())); err != nil {
		return fail(&proxyError{reason: "upstream proxy unreachable", err: err})
	}
	lc := &limitedConn{c: pc, limit: maxConnectResponse}
	br := bufio.NewReaderSize(lc, 4<<10)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		if lc.limit == 0 {
			err = errors.New("response header too large")
		}
		return fail(&proxyError{reason: "upstream proxy answered no valid CONNECT response", err: err})
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.log.Debug("upstream proxy refused CONNECT", zap.String("proxy", up.Scheme+"://"+up.Addr),
			zap.String("dst", target), zap.Int("status", resp.StatusCode))
		return fail(&proxyError{reason: fmt.Sprintf("upstream proxy refused: %d", resp.StatusCode)})
	}
	if !stop() {
		c.Close()
		return nil, &proxyError{reason: "upstream proxy unreachable", err: context.Cause(ctx)}
	}
	if n := br.Buffered(); n > 0 {
		// Bytes the upstream sent right after the tunnel opened (a
		// server-speaks-first protocol) are replayed first.
		lc.limit = -1
		return &bufConn{Conn: pc, r: br}, nil
	}
	return pc, nil // a plain proxy's tunnel is the *net.TCPConn: splice(2) and idle checks work
}

// proxyAuth is the Proxy-Authorization value for up ("" for none).
func (s *Server) proxyAuth(up policy.UpstreamProxy) (string, error) {
	if up.Credential == "" {
		return "", nil
	}
	unavailable := &proxyError{reason: "upstream proxy credential " + up.Credential + " unavailable"}
	if s.cfg.ProxyCredential == nil {
		return "", unavailable
	}
	v, err := s.cfg.ProxyCredential(up.Credential)
	if err != nil {
		// The resolver's error names the secret, never its value (see
		// Config.ProxyCredential); it is logged for the operator, not
		// shown to the agent.
		s.log.Warn("upstream proxy credential unavailable", zap.String("credential", up.Credential), zap.Error(err))
		return "", unavailable
	}
	user, _, ok := strings.Cut(v, ":")
	if !ok || user == "" || strings.ContainsAny(v, "\r\n") {
		s.log.Warn("upstream proxy credential is not user:password", zap.String("credential", up.Credential))
		return "", &proxyError{reason: "upstream proxy credential " + up.Credential + " is not user:password"}
	}
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(v)), nil
}

// routeKept reports whether an open stream decided as was may stay on its
// upstream route under the new decision now: a stream is bound to the
// proxy (or the direct path) it was dialled through, so a reload that
// changes the route ends it and the next connection or request takes the
// new one. When it may not, the returned decision says why.
func routeKept(was, now policy.Decision) (policy.Decision, bool) {
	if was.UpstreamProxy == now.UpstreamProxy {
		return now, true
	}
	now.Reason = fmt.Sprintf("the upstream proxy changed from %s to %s", was.UpstreamProxy, now.UpstreamProxy)
	return now, false
}

// SetUpstreamProxies tells the proxy the upstream proxies the policy names
// (host:port): they are clawd's next hops and never an agent's destination,
// or an agent could open its own CONNECT through them to anywhere. Literal
// addresses count at once; names count as they resolve (here, in the
// background, and at every dial).
func (s *Server) SetUpstreamProxies(addrs []string) {
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			s.noteProxyAddr(ap)
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return
			}
			p, _ := strconv.ParseUint(port, 10, 16)
			for _, ip := range ips {
				s.noteProxyAddr(netip.AddrPortFrom(ip.Unmap(), uint16(p)))
			}
		}()
	}
}

func (s *Server) noteProxyAddr(ap netip.AddrPort) {
	_, seen := s.proxyAddrs.LoadOrStore(netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port()), true)
	if !seen && s.cfg.OnProxyAddr != nil {
		go s.cfg.OnProxyAddr()
	}
}

// ProxyAddrs lists the upstream proxies' addresses: those the policy names
// literally and those their names resolved to. An agent never dials them.
func (s *Server) ProxyAddrs() []netip.AddrPort {
	out := append([]netip.AddrPort(nil), s.cfg.Decider.UpstreamProxyAddrs()...)
	s.proxyAddrs.Range(func(k, _ any) bool {
		out = append(out, k.(netip.AddrPort))
		return true
	})
	return out
}

// isProxyAddr reports whether dst is an upstream proxy's address: one the
// running policy names literally, or one a proxy name resolved to.
func (s *Server) isProxyAddr(dst netip.AddrPort) bool {
	dst = netip.AddrPortFrom(dst.Addr().Unmap().WithZone(""), dst.Port())
	for _, a := range s.cfg.Decider.UpstreamProxyAddrs() {
		if a == dst {
			return true
		}
	}
	_, ok := s.proxyAddrs.Load(dst)
	return ok
}
