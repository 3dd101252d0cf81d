package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// rawUpstream is an HTTP/1.1 upstream that answers with raw bytes and
// records every byte it receives, per connection.
type rawUpstream struct {
	ln     net.Listener
	answer func(i int, req *http.Request, c net.Conn) (keep bool)
	mu     sync.Mutex
	conns  []*bytes.Buffer
	n      int
	closed chan int // connection index, when the proxy closed it
}

func newRawUpstream(t *testing.T, answer func(i int, req *http.Request, c net.Conn) (keep bool)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, answer: answer, closed: make(chan int, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go u.serve(c)
		}
	}()
	return u
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	buf := &bytes.Buffer{}
	u.mu.Lock()
	idx := len(u.conns)
	u.conns = append(u.conns, buf)
	u.mu.Unlock()
	br := bufio.NewReader(io.TeeReader(c, lockedBuf{&u.mu, buf}))
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if err == io.EOF {
				u.closed <- idx
			}
			return
		}
		io.Copy(io.Discard, req.Body)
		u.mu.Lock()
		i := u.n
		u.n++
		u.mu.Unlock()
		if !u.answer(i, req, c) {
			return
		}
	}
}

// waitClosed fails the test with msg unless the proxy closes one of the
// upstream's connections within waitLimit.
func (u *rawUpstream) waitClosed(t *testing.T, msg string) {
	t.Helper()
	select {
	case <-u.closed:
	case <-time.After(waitLimit):
		t.Fatal(msg)
	}
}

func (u *rawUpstream) addr() netip.AddrPort { return netip.MustParseAddrPort(u.ln.Addr().String()) }

func (u *rawUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, b := range u.conns {
		out = append(out, b.String())
	}
	return out
}

// withDirect runs f with the direct upstream path on and off.
func withDirect(t *testing.T, f func(t *testing.T)) {
	for _, on := range []bool{true, false} {
		t.Run(map[bool]string{true: "direct", false: "transport"}[on], func(t *testing.T) {
			old := directUpstream
			directUpstream = on
			defer func() { directUpstream = old }()
			f(t)
		})
	}
}

// exchange sends raw requests on one agent connection (each after the
// previous answer) and returns the answers, Date headers removed.
func exchangeRaw(t *testing.T, c net.Conn, reqs ...string) []string {
	t.Helper()
	br := bufio.NewReader(c)
	var out []string
	for _, r := range reqs {
		io.WriteString(c, r)
		c.SetReadDeadline(time.Now().Add(waitLimit))
		out = append(out, readAnswer(t, br, strings.HasPrefix(r, "HEAD ")))
	}
	return out
}

// readAnswer reads one response (and any 1xx before it) as normalized text.
func readAnswer(t *testing.T, br *bufio.Reader, head bool) string {
	t.Helper()
	var sb strings.Builder
	for {
		var req *http.Request
		if head {
			req = &http.Request{Method: "HEAD"}
		}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			fmt.Fprintf(&sb, "error: %v", err)
			return sb.String()
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Del("Date")
		var keys []string
		for k := range resp.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(&sb, "%s", resp.Status)
		for _, k := range keys {
			fmt.Fprintf(&sb, "|%s=%q", k, resp.Header[k])
		}
		fmt.Fprintf(&sb, "|body=%q|trailer=%v|err=%v", body, resp.Trailer, err)
		if resp.StatusCode >= 200 || resp.StatusCode == 101 {
			return sb.String()
		}
		sb.WriteString(" / ")
	}
}

func okAnswer(_ int, req *http.Request, c net.Conn) bool {
	if req.Method == "HEAD" {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\n")
		return true
	}
	io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok")
	return true
}

// The upstream receives the same bytes, and the agent the same answers,
// on the direct path as through http.Transport.
func TestDirectUpstreamSameBytes(t *testing.T) {
	const H = "Host: api.example.com\r\n"
	reqs := []string{
		"GET /a?x=1&y=%20 HTTP/1.1\r\n" + H + "User-Agent: ua/1\r\nAccept: */*\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n",
		"GET /no-ua HTTP/1.1\r\n" + H + "\r\n",
		"HEAD /head HTTP/1.1\r\n" + H + "\r\n",
		"DELETE /del HTTP/1.1\r\n" + H + "Authorization: Bearer PLACEHOLDER\r\n\r\n",
		"GET http://api.example.com/absolute?q HTTP/1.1\r\n" + H + "\r\n",
		"OPTIONS /opt HTTP/1.1\r\n" + H + "\r\n",
		"GET /hop HTTP/1.1\r\n" + H + "Connection: keep-alive, X-Custom-Hop\r\nX-Custom-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nTE: trailers\r\nUpgrade: foo/1\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\n\r\n",
		"GET /expect HTTP/1.1\r\n" + H + "Expect: 100-continue\r\n\r\n",
		"POST /empty HTTP/1.1\r\n" + H + "Content-Length: 0\r\n\r\n",
		"GET /encoded/%2e%2e/x HTTP/1.1\r\nHost: API.example.com:80\r\n\r\n",
		"GET /close HTTP/1.1\r\n" + H + "Connection: close\r\n\r\n",
	}
	var results [2][]string
	var answers [2][]string
	i := 0
	withDirect(t, func(t *testing.T) {
		up := newRawUpstream(t, okAnswer)
		e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
			c.Injector = fakeInjector{bound: "api.example.com"}
		})
		for _, r := range reqs {
			answers[i] = append(answers[i], exchangeRaw(t, e.dial(up.addr()), r)...)
		}
		// HTTP/1.0 without keep-alive.
		answers[i] = append(answers[i], exchangeRaw(t, e.dial(up.addr()), "GET /old HTTP/1.0\r\n"+H+"\r\n")...)
		results[i] = up.received()
		i++
	})
	if strings.Join(results[0], "\n--\n") != strings.Join(results[1], "\n--\n") {
		t.Errorf("upstream received different bytes:\ndirect:\n%s\ntransport:\n%s", strings.Join(results[0], "\n--\n"), strings.Join(results[1], "\n--\n"))
	}
	for j := range answers[0] {
		if answers[0][j] != answers[1][j] {
			t.Errorf("answer %d differs:\ndirect:    %s\ntransport: %s", j, answers[0][j], answers[1][j])
		}
	}
	if !strings.Contains(strings.Join(results[0], ""), "Authorization: Bearer real-secret") {
		t.Error("secret not injected on the direct path")
	}
}

// Upstream answers of every kind reach the agent the same on both paths.
func TestDirectUpstreamAnswers(t *testing.T) {
	const H = "Host: api.example.com\r\n"
	answers := []string{
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/x\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: done\r\n\r\n",
		// No Content-Type, unknown length: none is sniffed for the agent
		// (whichever of the header flush and the first body write wins).
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<html\r\n0\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nc",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
		"HTTP/1.1 500 Boom\r\nContent-Length: 4\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\n\r\nboom",
		"HTTP/1.0 200 OK\r\nContent-Type: text/x\r\n\r\nuntil close",
		"HTTP/1.0 200 OK\r\n\r\n<html>until close",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"garbage\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 11<<20) + "\r\n\r\n",
		"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
	}
	var got [2][]string
	i := 0
	withDirect(t, func(t *testing.T) {
		for k, a := range answers {
			up := newRawUpstream(t, func(_ int, _ *http.Request, c net.Conn) bool {
				io.WriteString(c, a)
				return k < 6 // the rest close after answering
			})
			e := newEnv(t, newDecider(policy.Allow), nil)
			c := e.dial(up.addr())
			// Each answer twice on one agent connection: the second tells
			// whether the upstream connection was reused or replaced right.
			got[i] = append(got[i], strings.Join(exchangeRaw(t, c, "GET /x HTTP/1.1\r\n"+H+"\r\n", "GET /y HTTP/1.1\r\n"+H+"\r\n"), " // "))
		}
		i++
	})
	for j := range got[0] {
		if got[0][j] != got[1][j] {
			t.Errorf("answer %d differs:\ndirect:    %.600s\ntransport: %.600s", j, got[0][j], got[1][j])
		}
		// (clawd's own 502 answers carry theirs.)
		if !strings.Contains(answers[j], "Content-Type") && strings.HasPrefix(got[0][j], "200 OK") && strings.Contains(got[0][j], "Content-Type") {
			t.Errorf("answer %d: the agent got a Content-Type the upstream did not send: %.600s", j, got[0][j])
		}
	}
	t.Logf("%q", got[0])
}

// One upstream connection serves every request of a keep-alive agent
// connection; HEAD and empty answers keep it too.
func TestDirectUpstreamReuse(t *testing.T) {
	up := newRawUpstream(t, func(i int, req *http.Request, c net.Conn) bool {
		switch req.URL.Path {
		case "/head":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
		case "/empty":
			io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
		default:
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		return true
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	const H = " HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
	got := exchangeRaw(t, c, "GET /a"+H, "HEAD /head"+H, "GET /empty"+H, "GET /b"+H)
	for i, want := range []string{"200 OK", "200 OK", "204 No Content", "200 OK"} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("answer %d = %s, want %s", i, got[i], want)
		}
	}
	if n := len(up.received()); n != 1 {
		t.Errorf("upstream saw %d connections, want 1", n)
	}
}

// An upstream that closed the idle connection, or sent something unasked
// on it, costs the agent nothing: the next request goes on a new one.
func TestDirectUpstreamStaleConnection(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after string // sent after each answer, before closing
	}{
		{"closed", ""},
		{"unsolicited 408", "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newRawUpstream(t, func(i int, req *http.Request, c net.Conn) bool {
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d", i)
				if tc.after != "" {
					time.Sleep(10 * time.Millisecond)
					io.WriteString(c, tc.after)
				}
				return false // close, without saying so
			})
			e := newEnv(t, newDecider(policy.Allow), nil)
			c := e.dial(up.addr())
			for i := range 3 {
				// Let the close (and the unasked bytes) arrive.
				time.Sleep(50 * time.Millisecond)
				got := exchangeRaw(t, c, "POST /p HTTP/1.1\r\nHost: api.example.com\r\n\r\n")[0]
				if !strings.HasPrefix(got, "200 OK") || !strings.Contains(got, fmt.Sprintf("body=%q", fmt.Sprint(i))) {
					t.Fatalf("request %d: %s", i, got)
				}
			}
		})
	}
}

// dropsSecond answers the first request on each upstream connection; the
// second finds the connection dropped without an answer.
func dropsSecond() func(int, *http.Request, net.Conn) bool {
	var mu sync.Mutex
	served := map[net.Conn]int{}
	return func(_ int, _ *http.Request, c net.Conn) bool {
		mu.Lock()
		served[c]++
		n := served[c]
		mu.Unlock()
		if n == 2 {
			return false
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	}
}

// A reused connection that fails before the answer is retried for
// replayable requests only, as http.Transport does.
func TestDirectUpstreamRetry(t *testing.T) {
	var got [2][]string
	i := 0
	withDirect(t, func(t *testing.T) {
		up := newRawUpstream(t, dropsSecond())
		e := newEnv(t, newDecider(policy.Allow), nil)
		for _, m := range []string{"GET", "POST", "DELETE"} {
			c := e.dial(up.addr())
			a := exchangeRaw(t, c, "GET /first HTTP/1.1\r\nHost: api.example.com\r\n\r\n", m+" /second HTTP/1.1\r\nHost: api.example.com\r\n"+map[bool]string{true: "Idempotency-Key: k\r\n"}[m == "DELETE"]+"\r\n")
			got[i] = append(got[i], m+": "+strings.SplitN(a[1], "|", 2)[0])
		}
		i++
	})
	if strings.Join(got[0], ", ") != strings.Join(got[1], ", ") {
		t.Errorf("direct %v, transport %v", got[0], got[1])
	}
	t.Log(got[0])
}

// When the agent goes away in the middle of an answer, the upstream
// connection is closed, not drained or reused.
func TestDirectUpstreamAgentLeaves(t *testing.T) {
	sent := make(chan struct{})
	up := newRawUpstream(t, func(i int, req *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\npartial")
		close(sent)
		return true // and wait for more that never comes
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	<-sent
	time.Sleep(50 * time.Millisecond)
	c.Close()
	up.waitClosed(t, "the upstream connection stayed open after the agent left")
}
