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

// An upstream that grants every Upgrade with 101 and then records the raw
// bytes of the tunnel.
func upgradingUpstream(t *testing.T) (addr string, got func() string) {
	var mu sync.Mutex
	var rec strings.Builder
	dst, _ := tcpUpstream(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(waitLimit))
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			mu.Lock()
			fmt.Fprintf(&rec, "%s %s upgrade=%q settings=%q\n", req.Method, req.URL.Path, req.Header.Get("Upgrade"), req.Header.Get("HTTP2-Settings"))
			mu.Unlock()
			if up := req.Header.Get("Upgrade"); up != "" {
				fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", up)
				b, _ := io.ReadAll(br)
				mu.Lock()
				rec.WriteString("TUNNEL:" + string(b))
				mu.Unlock()
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return dst.String(), func() string { mu.Lock(); defer mu.Unlock(); return rec.String() }
}

// Upgrade: h2c must not open a tunnel around per-request decisions: the
// offer is dropped, the request is answered as HTTP/1.1, and the next
// request on the connection is decided (and here denied) on its own.
func TestH2CUpgradeIsNotTunnelled(t *testing.T) {
	addr, got := upgradingUpstream(t)
	dec := newDecider(policy.Deny, rule{name: "public", action: policy.Allow, pathPrefix: "/public"})
	e := newEnv(t, dec, nil)
	dst := netip.MustParseAddrPort(addr)
	for _, upgrade := range []string{"h2c", "H2C", "websocket, h2c", "HTTP/2.0"} {
		c := e.dial(dst)
		fmt.Fprintf(c, "GET /public HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: %s\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", upgrade)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", upgrade, err)
		}
		io.Copy(io.Discard, resp.Body)
		if upgrade == "websocket, h2c" {
			// WebSocket stays (it was decided as this request), h2c goes.
			if resp.StatusCode != 101 {
				t.Errorf("%s: status %d, want the WebSocket 101", upgrade, resp.StatusCode)
			}
			c.Close()
			continue
		}
		if resp.StatusCode != 200 {
			t.Errorf("Upgrade %s: status %d, want 200 without a protocol switch", upgrade, resp.StatusCode)
		}
		io.WriteString(c, "GET /private HTTP/1.1\r\nHost: example.com\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: second request: %v", upgrade, err)
		}
		if resp.StatusCode != 403 {
			t.Errorf("Upgrade %s: second request status %d, want 403", upgrade, resp.StatusCode)
		}
		c.Close()
	}
	rec := got()
	if strings.Contains(rec, "/private") || strings.Contains(strings.ToLower(rec), "h2c") ||
		strings.Contains(rec, "HTTP/2.0") || strings.Contains(rec, "AAMAAABk") {
		t.Errorf("upstream saw an h2c offer or the denied request:\n%s", rec)
	}
	if !strings.Contains(rec, `upgrade="websocket"`) {
		t.Errorf("control: the WebSocket upgrade did not reach the upstream:\n%s", rec)
	}
}
