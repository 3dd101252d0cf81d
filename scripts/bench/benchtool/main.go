// Command benchtool is clawd's benchmark load generator and upstream
// (scripts/bench.sh). Static; the client side runs inside busybox
// containers, the server side in the benchmark's upstream netns. Every
// client mode prints one JSON object.
//
//	benchtool serve -cert C -key K          HTTP :8080, HTTPS :8443, bulk :9100, conn :9101, idle :9102
//	benchtool bulk -addr A -bytes N         one connection, N bytes downstream: MB/s
//	benchtool conns -addr A -d 3s -c 8      new connections per second (1 byte each way)
//	benchtool http -url U -c N -d 3s [-k]   keep-alive requests/s and latency percentiles
//	benchtool idle -addr A -n N             open N connections and hold them (prints when done)
//	benchtool hold -url U -n N              N concurrent requests that wait (approvals); prints when sent
package main

import (
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
		log.Fatal("usage: benchtool serve|bulk|conns|http|idle|hold ...")
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
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "serve":
		serve(*cert, *key)
	case "bulk":
		bulk(*addr, *n)
	case "conns":
		conns(*addr, *conc, *dur)
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

func conns(addr string, c int, d time.Duration) {
	var done, fails atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < c; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b [1]byte
			for time.Now().Before(deadline) {
				cn, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fails.Add(1)
					continue
				}
				cn.SetDeadline(time.Now().Add(5 * time.Second))
				cn.Write([]byte{'x'})
				if _, err := io.ReadFull(cn, b[:]); err != nil {
					fails.Add(1)
				} else {
					done.Add(1)
				}
				cn.Close()
			}
		}()
	}
	wg.Wait()
	out(map[string]any{"conns": done.Load(), "failures": fails.Load(), "per_sec": float64(done.Load()) / d.Seconds()})
}

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
