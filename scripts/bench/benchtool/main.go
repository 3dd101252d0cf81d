// Command benchtool is clawd's benchmark load generator and upstream
// (scripts/bench.sh). Static; the client side runs inside busybox
// containers, the server side in the benchmark's upstream netns. Every
// client mode prints one JSON object.
//
//	benchtool serve -cert C -key K          HTTP :8080, HTTPS :8443, bulk :9100, conn :9101, idle :9102, hello :9103
//	benchtool bulk -addr A -bytes N         one connection, N bytes downstream: MB/s
//	benchtool conns -addr A -d 3s -c 8      new connections per second (1 byte each way)
//	benchtool hello -addr A -sni S -d 3s -c 8  new connections per second, each a TLS ClientHello for S
//	                                        (one record) answered by a short fixed reply (:9103)
//	benchtool http -url U -c N -d 3s [-k]   keep-alive requests/s and latency percentiles
//	benchtool idle -addr A -n N             open N connections and hold them (prints when done)
//	benchtool hold -url U -n N              N concurrent requests that wait (approvals); prints when sent
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func out(v any) { json.NewEncoder(os.Stdout).Encode(v) }

func raiseNofile() {
	var r syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	r.Cur, r.Max = 1<<20, 1<<20
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
		r.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: benchtool serve|bulk|conns|hello|http|idle|hold ...")
	}
	raiseNofile()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "", "host:port")
	url := fs.String("url", "", "URL")
	n := fs.Int64("bytes", 1<<30, "bytes (bulk)")
	num := fs.Int("n", 1000, "connections (idle, hold)")
	conc := fs.Int("c", 1, "concurrent connections")
	dur := fs.Duration("d", 3*time.Second, "duration")
	cert := fs.String("cert", "", "TLS certificate (serve)")
	key := fs.String("key", "", "TLS key (serve)")
	proxy := fs.String("proxy", "", "explicit forward proxy URL (http)")
	connect := fs.String("connect", "", "dial this host:port instead of the URL's (http)")
	sni := fs.String("sni", "bench.test", "TLS server name of the ClientHello (hello)")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*cert, *key)
	case "bulk":
		bulk(*addr, *n)
	case "conns":
		connRate(*addr, *conc, *dur, []byte{'x'}, []byte{'x'})
	case "hello":
		connRate(*addr, *conc, *dur, clientHello(*sni), helloReply)
	case "http":
		httpLoad(*url, *conc, *dur, *proxy, *connect)
	case "idle":
		idle(*addr, *num)
	case "hold":
		hold(*url, *num)
	default:
		log.Fatalf("unknown mode %s", os.Args[1])
	}
}

var zeros = make([]byte, 256<<10)

func serve(cert, key string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("ok\n"))
	})
	go func() { log.Fatal(http.ListenAndServe(":8080", mux)) }()
	if cert != "" {
		go func() { log.Fatal(http.ListenAndServeTLS(":8443", cert, key, mux)) }()
	}
	tcp := func(port string, h func(net.Conn)) {
		ln, err := net.Listen("tcp", port)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					log.Fatal(err)
				}
				go h(c)
			}
		}()
	}
	// bulk: the client sends 8 bytes (big-endian length), gets that many.
	tcp(":9100", func(c net.Conn) {
		defer c.Close()
		var b [8]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		left := int64(binary.BigEndian.Uint64(b[:]))
		for left > 0 {
			k := min(left, int64(len(zeros)))
			if _, err := c.Write(zeros[:k]); err != nil {
				return
			}
			left -= k
		}
	})
	// conn: one byte each way, then close.
	tcp(":9101", func(c net.Conn) {
		defer c.Close()
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			c.Write(b[:])
		}
	})
	// hello: one TLS record (the client's ClientHello), then helloReply.
	tcp(":9103", helloServe)
	// idle: hold the connection until the client goes.
	tcp(":9102", func(c net.Conn) {
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	select {}
}

func bulk(addr string, n int64) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		out(map[string]any{"error": err.Error()})
		os.Exit(1)
	}
	defer c.Close()
	start := time.Now()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	c.Write(b[:])
	got, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	el := time.Since(start)
	res := map[string]any{"bytes": got, "seconds": el.Seconds(), "mbps": float64(got) / el.Seconds() / 1e6}
	if err != nil || got != n {
		res["error"] = fmt.Sprintf("got %d of %d bytes: %v", got, n, err)
	}
	out(res)
}

// connRate opens connections for d from c goroutines; each sends send,
// reads len(want) bytes, checks them and closes: new connections per second.
func connRate(addr string, c int, d time.Duration, send, want []byte) {
	var done, fails atomic.Int64
	var firstErr atomic.Value
	failed := func(err error) {
		fails.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, len(want))
			for time.Now().Before(deadline) {
				cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					failed(err)
					continue
				}
				cn.SetDeadline(time.Now().Add(5 * time.Second))
				cn.Write(send)
				if _, err := io.ReadFull(cn, b); err != nil {
					failed(err)
				} else if !bytes.Equal(b, want) {
					failed(fmt.Errorf("reply %q, want %q", b, want))
				} else {
					done.Add(1)
				}
				cn.Close()
			}
		}()
	}
	wg.Wait()
	res := map[string]any{"conns": done.Load(), "failures": fails.Load(), "per_sec": float64(done.Load()) / d.Seconds()}
	if e := firstErr.Load(); e != nil {
		res["error"] = e
	}
	out(res)
}

// The hello mode's TLS: the client sends one ClientHello record, built once
// by crypto/tls (what a Go client sends for sni, ALPN h2 and http/1.1) and
// replayed byte for byte on every connection, so the generator does no
// cryptography per connection and a proxy that routes by SNI sees a real
// one. The upstream answers with a TLS alert record (fatal
// handshake_failure): short, fixed, and still TLS on the wire.
const (
	recordHandshake = 22
	maxRecord       = 16384 + 2048 // TLSCiphertext's bound (RFC 8446 5.2)
)

var helloReply = []byte{21, 3, 3, 0, 2, 2, 40}

// helloServe is the upstream of hello: it reads one handshake record whole
// and answers helloReply; anything else is closed unanswered.
func helloServe(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var h [5]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || h[0] != recordHandshake {
		return
	}
	n := int(binary.BigEndian.Uint16(h[3:]))
	if n > maxRecord {
		return
	}
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		return
	}
	c.Write(helloReply)
}

// clientHello returns the first record a crypto/tls client writes for sni.
func clientHello(sni string) []byte {
	w := &captureConn{}
	tls.Client(w, &tls.Config{ServerName: sni, NextProtos: []string{"h2", "http/1.1"}}).Handshake() // fails at the first read
	b := w.buf.Bytes()
	if len(b) < 5 || b[0] != recordHandshake || 5+int(binary.BigEndian.Uint16(b[3:])) != len(b) {
		log.Fatalf("hello: crypto/tls did not write one handshake record (%d bytes)", len(b))
	}
	return b
}

// captureConn records what is written to it; reads fail.
type captureConn struct{ buf bytes.Buffer }

func (c *captureConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (c *captureConn) Write(b []byte) (int, error)      { return c.buf.Write(b) }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

func client(c int, proxy, connect string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		MaxIdleConns: c, MaxIdleConnsPerHost: c, MaxConnsPerHost: c,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // benchmark: the chain is not what is measured
		ForceAttemptHTTP2: false,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if connect != "" {
				addr = connect
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	if proxy != "" {
		pu, err := neturl.Parse(proxy)
		if err != nil {
			log.Fatal(err)
		}
		tr.Proxy = http.ProxyURL(pu)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func httpLoad(url string, c int, d time.Duration, proxy, connect string) {
	cl := client(c, proxy, connect)
	// Warm up: open the connections first so the figures are keep-alive.
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := cl.Get(url); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		}()
	}
	wg.Wait()
	var mu sync.Mutex
	var lat []time.Duration
	var fails atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				r, err := cl.Get(url)
				if err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					if r.StatusCode != 200 {
						err = fmt.Errorf("status %d", r.StatusCode)
					}
				}
				if err != nil {
					fails.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds())
	}
	res := map[string]any{"requests": len(lat), "failures": fails.Load(), "rps": float64(len(lat)) / el.Seconds(), "p50_us": pct(0.50), "p99_us": pct(0.99)}
	if e := firstErr.Load(); e != nil {
		res["error"] = e
	}
	out(res)
}

func idle(addr string, n int) {
	var cs []net.Conn
	fails := 0
	var firstErr string
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			fails++
			if firstErr == "" {
				firstErr = err.Error()
			}
			continue
		}
		c.Write([]byte{'x'}) // past clawd's peek: a raw TCP stream
		cs = append(cs, c)
	}
	out(map[string]any{"open": len(cs), "failures": fails, "error": firstErr})
	os.Stdout.Sync()
	time.Sleep(time.Hour) // killed by the script
}

func hold(url string, n int) {
	cl := client(n, "", "")
	ctx := context.Background()
	for i := 0; i < n; i++ {
		go func(i int) {
			req, _ := http.NewRequestWithContext(ctx, "POST", fmt.Sprintf("%s?i=%d", url, i), nil)
			if r, err := cl.Do(req); err == nil {
				r.Body.Close()
			}
		}(i)
	}
	out(map[string]any{"sent": n})
	time.Sleep(time.Hour)
}
