package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// bannerVector connects to a server-speaks-first service (banner, then
// echo), reads the banner without sending anything, then (after lateBy)
// sends a line and reads its echo: what a connection-level protocol needs.
func bannerVector(addr string, lateBy time.Duration) func(string) (string, string) {
	return func(name string) (string, string) {
		c, err := net.DialTimeout("tcp", addr, *wait)
		if err != nil {
			return "error", err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(*wait + lateBy))
		br := bufio.NewReader(c)
		banner, err := br.ReadString('\n')
		if err != nil {
			return "closed", "no banner: " + err.Error()
		}
		time.Sleep(lateBy)
		fmt.Fprintf(c, "hostile-%s\n", name)
		echo, err := br.ReadString('\n')
		if err != nil {
			return "closed", "banner " + strings.TrimSpace(banner) + ", no echo: " + err.Error()
		}
		return "answered", "banner=" + strings.TrimSpace(banner) + " echo=" + strings.TrimSpace(echo)
	}
}

// echoVector sends a line to a TCP echo service and reads it back.
func echoVector(addr string) func(string) (string, string) {
	return func(name string) (string, string) {
		c, err := net.DialTimeout("tcp", addr, *wait)
		if err != nil {
			return "error", err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(*wait))
		fmt.Fprintf(c, "hostile-%s\n", name)
		echo, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "closed", "no echo: " + err.Error()
		}
		return "answered", "echo=" + strings.TrimSpace(echo)
	}
}

// hold keeps one connection alive and reports: "open" once it carried data
// both ways, then "closed" (with the reason) when it stops working, or
// "open" again with detail "gave up" after d. Modes: tcp (an echo
// service), ws (a WebSocket upgrade, then raw bytes echoed), http
// (keep-alive GETs of path).
func hold(mode, addr, tag, path string, d time.Duration) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		report(tag, "error", err.Error(), start)
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	host := hostAddr(*strict, mustPort(addr))
	// ping does one round trip.
	var ping func(i int) error
	switch mode {
	case "tcp", "ws":
		if mode == "ws" {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", path, host)
			c.SetReadDeadline(time.Now().Add(*wait + 60*time.Second))
			st, err := readStatus(br)
			if err != nil || !strings.Contains(st, " 101 ") {
				report(tag, "closed", fmt.Sprintf("no upgrade: %q %v", st, err), start)
				return
			}
		}
		ping = func(i int) error {
			msg := fmt.Sprintf("hostile-%s-%d\n", tag, i)
			if _, err := io.WriteString(c, msg); err != nil {
				return err
			}
			got, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if got != msg {
				return fmt.Errorf("echo %q, want %q", got, msg)
			}
			return nil
		}
	case "http":
		ping = func(i int) error {
			if _, err := fmt.Fprintf(c, "GET %s-%d HTTP/1.1\r\nHost: %s\r\n\r\n", path, i, host); err != nil {
				return err
			}
			resp, err := httpReadResponse(br)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(resp, "200") {
				return fmt.Errorf("answered %s", resp)
			}
			return nil
		}
	default:
		report(tag, "error", "unknown hold mode "+mode, start)
		return
	}
	// The first round trip may wait for an approval.
	c.SetDeadline(time.Now().Add(d))
	if err := ping(0); err != nil {
		report(tag, "closed", "first round trip: "+err.Error(), start)
		return
	}
	report(tag, "open", "", start)
	for i := 1; time.Since(start) < d; i++ {
		time.Sleep(500 * time.Millisecond)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := ping(i); err != nil {
			report(tag, "closed", fmt.Sprintf("after %d round trips: %v", i, err), start)
			return
		}
	}
	report(tag, "open", "gave up", start)
}

func mustPort(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// httpReadResponse reads one response with a Content-Length body and
// returns "STATUS REASON".
func httpReadResponse(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	n := 0
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if l == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		return "", err
	}
	_, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	return rest, nil
}

// runUploads starts n POSTs of size bytes at once, each on its own
// connection to addr (path may hold {i}), and prints one line per request
// when it ends: "answered" with "STATUS retry-after=V", or "closed".
func runUploads(addr, path string, n int, size int64) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			name := fmt.Sprintf("upload-%d", i)
			res, d := upload(addr, strings.ReplaceAll(path, "{i}", strconv.Itoa(i)), size)
			mu.Lock()
			report(name, res, d, start)
			mu.Unlock()
		}()
	}
	wg.Wait()
}

func upload(addr, path string, size int64) (string, string) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "error", err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*holdFor))
	go func() {
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, hostAddr(*strict, mustPort(addr)), size)
		chunk := []byte(strings.Repeat("hostile-upload-bytes-", 3200)) // 67 KB
		for left := size; left > 0; {
			b := chunk[:min(int64(len(chunk)), left)]
			if _, err := c.Write(b); err != nil {
				return // refused early: the answer is read below
			}
			left -= int64(len(b))
		}
	}()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "closed", err.Error()
	}
	retry := ""
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "retry-after") {
			retry = strings.TrimSpace(v)
		}
	}
	st := strings.Fields(line)
	if len(st) < 2 {
		return "closed", strconv.Quote(line)
	}
	return "answered", st[1] + " retry-after=" + retry
}

// scanDNS asks every DNS listener on the loopback of this network
// namespace (clawd's per-container listeners live there; in a pod, other
// containers' too) for name, over UDP and TCP, straight at its port.
func scanDNS(name string) {
	type sock struct {
		proto string
		addr  netip.AddrPort
	}
	var socks []sock
	for _, f := range []struct{ file, proto string }{
		{"/proc/net/udp", "udp"}, {"/proc/net/udp6", "udp"}, {"/proc/net/tcp", "tcp"}, {"/proc/net/tcp6", "tcp"},
	} {
		b, err := os.ReadFile(f.file)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(l)
			if len(fs) < 4 {
				continue
			}
			// TCP: only listeners (state 0A); UDP: unconnected (07).
			if (f.proto == "tcp" && fs[3] != "0A") || (f.proto == "udp" && fs[3] != "07") {
				continue
			}
			ap, ok := parseProcAddr(fs[1])
			if !ok || !ap.Addr().IsLoopback() && !ap.Addr().Unmap().IsLoopback() || ap.Port() == 53 {
				continue
			}
			socks = append(socks, sock{f.proto, ap})
		}
	}
	if len(socks) == 0 {
		report("dns-scan", "error", "no loopback listeners found", time.Now())
		return
	}
	for _, s := range socks {
		start := time.Now()
		vec := fmt.Sprintf("dns-%s-%s", s.proto, s.addr)
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		cl := &dns.Client{Net: s.proto, Timeout: 2 * time.Second}
		r, _, err := cl.Exchange(m, s.addr.String())
		if err != nil {
			report(vec, "dns", "no answer: "+err.Error(), start)
			continue
		}
		var ans []string
		for _, rr := range r.Answer {
			if a, ok := rr.(*dns.A); ok {
				ans = append(ans, a.A.String())
			}
		}
		report(vec, "dns", dns.RcodeToString[r.Rcode]+" "+strings.Join(ans, ","), start)
	}
}

// parseProcAddr parses /proc/net/{tcp,udp}[6] "0100007F:1F90".
func parseProcAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	// The kernel prints each 32-bit word in host (little-endian) order.
	for i := 0; i+4 <= len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(port)), true
}

// runRebind runs each rebinding vector TAG/NAME/IP/PORT/PROTO: resolve
// NAME through the container's resolver (clawd) and report the answers,
// then dial IP:PORT as if the answer had been IP (an agent that resolved
// it once, or elsewhere), speaking PROTO with NAME as Host or SNI.
func runRebind(specs []string) {
	for i, spec := range specs {
		if i > 0 {
			time.Sleep(*gap)
		}
		f := strings.Split(spec, "/")
		if len(f) != 5 {
			fmt.Fprintf(os.Stderr, "bad -rb %q\n", spec)
			os.Exit(2)
		}
		tag, name, ip, port, proto := f[0], f[1], f[2], f[3], f[4]
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, name)
		cancel()
		var got []string
		for _, a := range ips {
			got = append(got, a.IP.String())
		}
		dnsDetail := strings.Join(got, ",")
		if err != nil {
			dnsDetail = "error: " + err.Error()
		}
		report("rb-"+tag+"-dns", "dns", dnsDetail, start)
		time.Sleep(*gap)
		start = time.Now()
		addr := net.JoinHostPort(ip, port)
		hostHdr := net.JoinHostPort(name, port)
		var res, d string
		switch proto {
		case "http":
			res, d = rawVector(addr, now("GET /hostile-rb-"+tag+" HTTP/1.1\r\nHost: "+hostHdr+"\r\nConnection: close\r\n\r\n"))("rb-" + tag)
		case "tls":
			res, d = tlsVector(tlsOpts{addr: addr, sni: name, reqs: []string{"GET /hostile-rb-" + tag + " HTTP/1.1\r\nHost: " + hostHdr + "\r\nConnection: close\r\n\r\n"}})("rb-" + tag)
		case "raw":
			res, d = rawVector(addr, now("\x00hostile-rb-"+tag+"\r\n"))("rb-" + tag)
		default:
			fmt.Fprintf(os.Stderr, "bad proto in -rb %q\n", spec)
			os.Exit(2)
		}
		report("rb-"+tag, res, d, start)
	}
}
