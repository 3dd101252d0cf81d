package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/proxy/ca"
)

// BenchmarkHTTPKeepAlive measures one keep-alive GET on loopback: straight
// to the upstream ("direct") and through the proxy with the real policy
// engine and a real audit log file, as plain HTTP and as intercepted HTTPS
// (HTTP/1.1 from the agent, h2 to the upstream where it offers it). The
// proxy's added cost per request is the difference to "direct". The client
// reads each response in its own goroutine (no client Transport), so the
// figures are the server side's.
//
//	go test -run '^$' -bench HTTPKeepAlive -benchmem ./proxy/
func BenchmarkHTTPKeepAlive(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	up := httptest.NewServer(handler)
	defer up.Close()
	upTLS := httptest.NewUnstartedServer(handler)
	upTLS.EnableHTTP2 = true
	upTLS.StartTLS()
	upTLS.TLS.NextProtos = []string{"h2", "http/1.1"} // as a real server lists them
	defer upTLS.Close()
	upAddr := netip.MustParseAddrPort(up.Listener.Addr().String())
	upTLSAddr := netip.MustParseAddrPort(upTLS.Listener.Addr().String())

	p, err := policy.Parse([]byte(`
version: 1
default:
  default_action: deny
  rules:
    - name: held
      hosts: example.com
      methods: POST
      action: approve
    - name: http
      hosts: example.com
      intercept: true
      action: allow
`), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	al, err := audit.Open(filepath.Join(b.TempDir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer al.Close()
	roots := x509.NewCertPool()
	roots.AddCert(upTLS.Certificate())
	e := newBenchEnv(b, Config{
		Decider:       p,
		Names:         fakeNames{"example.com": netip.MustParseAddr("127.0.0.1")},
		Audit:         al,
		UpstreamRoots: roots,
		// The upstreams are on loopback, which clawd refuses by default.
		Classify: func(netip.Addr) addrclass.Class { return addrclass.Public },
	})
	clawdPool := x509.NewCertPool()
	clawdPool.AppendCertsFromPEM(e.ca.CertPEM())

	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n")
	cases := []struct {
		name string
		dial func() net.Conn
	}{
		{"direct", func() net.Conn {
			c, err := net.Dial("tcp", upAddr.String())
			if err != nil {
				b.Fatal(err)
			}
			return c
		}},
		{"http", func() net.Conn { return e.dial(upAddr) }},
		{"https", func() net.Conn {
			tc := tls.Client(e.dial(upTLSAddr), &tls.Config{ServerName: "example.com", RootCAs: clawdPool, NextProtos: []string{"http/1.1"}})
			if err := tc.Handshake(); err != nil {
				b.Fatal(err)
			}
			return tc
		}},
	}
	for _, tc := range cases {
		if f := os.Getenv("BENCH_CASE"); f != "" && f != tc.name {
			continue
		}
		for _, conc := range []int{1, 64} {
			b.Run(tc.name+"/c="+itoa(conc), func(b *testing.B) {
				conns := make(chan *benchConn, conc)
				for range conc {
					c := &benchConn{c: tc.dial()}
					c.br = bufio.NewReader(c.c)
					c.get(b, req) // warm up: connections and upstream pools
					conns <- c
				}
				defer func() {
					for range conc {
						(<-conns).c.Close()
					}
				}()
				b.ReportAllocs()
				cpu0 := cpuTime()
				b.ResetTimer()
				// Process CPU time per request (client, proxy and upstream
				// together): far less noisy than wall time on a shared VM.
				defer func() { b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op") }()
				if conc == 1 {
					c := <-conns
					for range b.N {
						c.get(b, req)
					}
					conns <- c
					return
				}
				b.SetParallelism((conc + 1) / 2)
				b.RunParallel(func(pb *testing.PB) {
					c := <-conns
					defer func() { conns <- c }()
					for pb.Next() {
						c.get(b, req)
					}
				})
			})
		}
	}
}

func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

type benchConn struct {
	c  net.Conn
	br *bufio.Reader
}

func (c *benchConn) get(b *testing.B, req []byte) {
	if _, err := c.c.Write(req); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

type benchEnv struct {
	srv *Server
	ca  *ca.CA
	b   *testing.B
}

func newBenchEnv(b *testing.B, cfg Config) *benchEnv {
	authority, err := ca.LoadOrCreate(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cfg.CA = authority
	srv, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &benchEnv{srv: srv, ca: authority, b: b}
}

// dial is env.dial for benchmarks.
func (e *benchEnv) dial(dst netip.AddrPort) net.Conn { return serveLoopback(e.b, e.srv, dst) }
