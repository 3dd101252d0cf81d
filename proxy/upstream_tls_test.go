package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// tlsUpstream is an HTTPS upstream that counts the TCP connections it
// accepted and says which protocol each request came on.
func tlsUpstream(t *testing.T, h2Only bool) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	u := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		io.WriteString(w, "hello "+r.URL.Path)
	}))
	u.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	u.EnableHTTP2 = true
	u.StartTLS()
	u.TLS.NextProtos = []string{"h2", "http/1.1"} // as a real server lists them (httptest: h2 alone)
	if h2Only {
		// As a strict HTTP/2 server (gRPC's, say): a client that does
		// not offer h2 fails the handshake. (The listener handshakes with
		// this config; Go's own server would accept HTTP/1.1.)
		u.TLS.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			if !slices.Contains(chi.SupportedProtos, "h2") {
				return nil, errors.New("h2 only")
			}
			return nil, nil
		}
	}
	t.Cleanup(u.Close)
	return u, &conns
}

func interceptEnv(t *testing.T, u *httptest.Server) (*env, *http.Client) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(u.Certificate())
	dec := newDecider(policy.Allow)
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = roots })
	clawdPool := x509.NewCertPool()
	clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
	addr := u.Listener.Addr().String()
	return e, e.client(mustAddrPort(addr), &tls.Config{RootCAs: clawdPool, NextProtos: []string{"http/1.1"}}, false)
}

// An intercepted HTTP/1.1 agent's requests take one HTTP/1.1 upstream
// connection, reused while the agent keeps its own: what the upstream saw
// and how many connections it accepted.
func TestInterceptHTTP1UpstreamReused(t *testing.T) {
	u, conns := tlsUpstream(t, false)
	e, cl := interceptEnv(t, u)
	for _, p := range []string{"/a", "/b", "/c"} {
		resp := mustGet(t, cl, "https://example.com"+p)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello "+p || resp.Header.Get("X-Upstream-Proto") != "HTTP/1.1" {
			t.Fatalf("%s: %d %q over %s", p, resp.StatusCode, b, resp.Header.Get("X-Upstream-Proto"))
		}
		if ent := e.audit.next(t); ent.Path != p || ent.Status != 200 || ent.Proto != "https" {
			t.Errorf("audit: %+v", ent)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections for 3 keep-alive requests, want 1", n)
	}
}

// An upstream that speaks only HTTP/2 refuses the HTTP/1.1-only handshake:
// the request is not lost, it goes on HTTP/2 as before.
func TestInterceptH2OnlyUpstreamFallsBack(t *testing.T) {
	u, _ := tlsUpstream(t, true)
	e, cl := interceptEnv(t, u)
	for _, p := range []string{"/a", "/b"} {
		resp := mustGet(t, cl, "https://example.com"+p)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "hello "+p || resp.Header.Get("X-Upstream-Proto") != "HTTP/2.0" {
			t.Fatalf("%s: %d %q over %s", p, resp.StatusCode, b, resp.Header.Get("X-Upstream-Proto"))
		}
		if ent := e.audit.next(t); ent.Path != p || ent.Status != 200 {
			t.Errorf("audit: %+v", ent)
		}
	}
}

// An upstream whose certificate does not verify gets the same answer on
// either path: 502, clawd's own reason, nothing forwarded.
func TestInterceptUpstreamBadCertSameAnswer(t *testing.T) {
	for _, direct := range []bool{true, false} {
		old := directUpstream
		directUpstream = direct
		u, _ := tlsUpstream(t, false)
		hits := atomic.Int64{}
		u.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })
		dec := newDecider(policy.Allow)
		dec.intercept["example.com"] = true
		e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = x509.NewCertPool() }) // trusts nothing
		clawdPool := x509.NewCertPool()
		clawdPool.AppendCertsFromPEM(e.ca.CertPEM())
		cl := e.client(mustAddrPort(u.Listener.Addr().String()), &tls.Config{RootCAs: clawdPool, NextProtos: []string{"http/1.1"}}, false)
		resp := mustGet(t, cl, "https://example.com/x")
		m := jsonBody(t, resp)
		directUpstream = old
		if resp.StatusCode != 502 || m["error"] != "upstream_unreachable" || m["reason"] != "the upstream's TLS certificate did not verify" || hits.Load() != 0 {
			t.Errorf("direct=%v: %d %v (upstream hits %d)", direct, resp.StatusCode, m, hits.Load())
		}
		if ent := e.audit.next(t); ent.Status != 502 || ent.Reason != "upstream unreachable: the upstream's TLS certificate did not verify" {
			t.Errorf("direct=%v: audit %+v", direct, ent)
		}
	}
}
