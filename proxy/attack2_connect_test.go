package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// A raw upstream that answers whatever head it gets with 200 (a CONNECT
// "connection established") and records every byte it receives.
func atk2RawUpstream(t *testing.T, status string) (addr string, got func() string) {
	var mu sync.Mutex
	var all strings.Builder
	dst, _ := tcpUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		first := true
		for {
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			fmt.Fprintf(&all, "%s %s|", req.Method, req.RequestURI)
			mu.Unlock()
			if first && req.Method == "CONNECT" {
				first = false
				io.WriteString(c, status)
				continue
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return dst.String(), func() string { mu.Lock(); defer mu.Unlock(); return all.String() }
}

// HELD (passes today): after an allowed CONNECT answered 200, a pipelined
// DELETE /admin/x is not tunnelled undecided to the upstream.
func TestAttack2HeldHTTP1ConnectCarriesNoUndecidedRequest(t *testing.T) {
	addr, got := atk2RawUpstream(t, "HTTP/1.1 200 Connection established\r\n\r\n")
	dst := mustAddrPort(addr)
	p, err := policy.Parse([]byte(atkPolicy), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.Names = fakeNames{"strict.example": dst.Addr()} })
	c := e.dial(dst)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "CONNECT strict.example:%d HTTP/1.1\r\nHost: strict.example:%d\r\n\r\n", dst.Port(), dst.Port())
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Logf("CONNECT answered %d", resp.StatusCode)
	io.WriteString(c, "DELETE /admin/x HTTP/1.1\r\nHost: strict.example\r\n\r\n")
	resp2, err := http.ReadResponse(br, nil)
	code := 0
	if err == nil {
		code = resp2.StatusCode
	}
	time.Sleep(200 * time.Millisecond)
	if strings.Contains(got(), "DELETE") {
		t.Errorf("DELETE /admin/x reached strict.example's server through a CONNECT (upstream saw %q, agent got %d)", got(), code)
	}
	t.Logf("upstream saw %q; second answer %d %v", got(), code, err)
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
