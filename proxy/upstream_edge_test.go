package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

const edgeHost = "Host: api.example.com\r\n"

// An upstream that drops the connection without answering gives the agent
// the same 502 (reason included) on both paths: on a fresh connection, and
// on a reused one for a request that is not retried.
func TestUpstreamDroppedAnswerSameError(t *testing.T) {
	var got [2][]string
	i := 0
	withDirect(t, func(t *testing.T) {
		// Fresh connection: closed right after reading the request.
		up := newRawUpstream(t, func(int, *http.Request, net.Conn) bool { return false })
		e := newEnv(t, newDecider(policy.Allow), nil)
		got[i] = append(got[i], exchangeRaw(t, e.dial(up.addr()), "GET /fresh HTTP/1.1\r\n"+edgeHost+"\r\n")...)

		// Reused connection: the second request (a POST, not replayable)
		// finds it dropped without an answer.
		up2 := newRawUpstream(t, dropsSecond())
		got[i] = append(got[i], exchangeRaw(t, e.dial(up2.addr()),
			"GET /first HTTP/1.1\r\n"+edgeHost+"\r\n",
			"POST /second HTTP/1.1\r\n"+edgeHost+"\r\n")...)

		// Nobody listening.
		got[i] = append(got[i], exchangeRaw(t, e.dial(freeAddr(t)), "GET /refused HTTP/1.1\r\n"+edgeHost+"\r\n")...)

		// Reset after reading the request.
		up3 := newRawUpstream(t, func(_ int, _ *http.Request, c net.Conn) bool {
			c.(*net.TCPConn).SetLinger(0)
			return false
		})
		got[i] = append(got[i], exchangeRaw(t, e.dial(up3.addr()), "GET /reset HTTP/1.1\r\n"+edgeHost+"\r\n")...)

		// Part of a header, then close.
		up4 := newRawUpstream(t, func(_ int, _ *http.Request, c net.Conn) bool {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le")
			return false
		})
		got[i] = append(got[i], exchangeRaw(t, e.dial(up4.addr()), "GET /partial HTTP/1.1\r\n"+edgeHost+"\r\n")...)
		i++
	})
	addr := regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	for j := range got[0] {
		got[0][j] = addr.ReplaceAllString(got[0][j], "ADDR")
		got[1][j] = addr.ReplaceAllString(got[1][j], "ADDR")
		if got[0][j] != got[1][j] {
			t.Errorf("answer %d differs:\ndirect:    %s\ntransport: %s", j, got[0][j], got[1][j])
		}
	}
}

// The agent leaving while the upstream has not answered yet closes the
// upstream connection.
func TestUpstreamAgentLeavesBeforeAnswer(t *testing.T) {
	got := make(chan struct{})
	up := newRawUpstream(t, func(int, *http.Request, net.Conn) bool {
		close(got)
		return true // never answers
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	io.WriteString(c, "GET /hang HTTP/1.1\r\n"+edgeHost+"\r\n")
	<-got
	c.Close()
	up.waitClosed(t, "the upstream connection stayed open after the agent left")
}

// The idle upstream connection is closed when the agent connection ends.
func TestUpstreamIdleClosedWithAgent(t *testing.T) {
	up := newRawUpstream(t, okAnswer)
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	if a := exchangeRaw(t, c, "GET /a HTTP/1.1\r\n"+edgeHost+"\r\n")[0]; !strings.HasPrefix(a, "200 OK") {
		t.Fatal(a)
	}
	c.Close()
	up.waitClosed(t, "the idle upstream connection stayed open after the agent left")
}

// Bytes an upstream sends after a bodyless answer (HEAD, 204, 304, or
// past Content-Length), at once or a little later, never become the
// answer to the agent's next request.
func TestUpstreamNoDesyncAfterBodylessAnswer(t *testing.T) {
	const evil = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Evil: 1\r\n\r\nEVIL"
	for _, tc := range []struct {
		name, method, answer string
		delay                bool
	}{
		{"HEAD body now", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + evil, false},
		{"HEAD body later", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true},
		{"204 body now", "GET", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n" + evil, false},
		{"204 body later", "GET", "HTTP/1.1 204 No Content\r\n\r\n", true},
		{"304 body later", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", true},
		{"past length now", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + evil, false},
		{"past length later", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
		{"chunked extra", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" + evil, false},
		{"chunked later", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withDirect(t, func(t *testing.T) {
				wrote := make(chan struct{})
				up := newRawUpstream(t, func(_ int, req *http.Request, c net.Conn) bool {
					if req.URL.Path == "/next" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
						return true
					}
					io.WriteString(c, tc.answer)
					if tc.delay {
						time.Sleep(20 * time.Millisecond)
						io.WriteString(c, evil)
					}
					close(wrote)
					return true
				})
				e := newEnv(t, newDecider(policy.Allow), nil)
				c := e.dial(up.addr())
				exchangeRaw(t, c, tc.method+" /first HTTP/1.1\r\n"+edgeHost+"\r\n")
				// The next request goes out once the stray bytes are sent
				// (and, on loopback, a moment later surely delivered).
				select {
				case <-wrote:
				case <-time.After(waitLimit):
					t.Fatal("upstream did not answer")
				}
				time.Sleep(50 * time.Millisecond)
				a := exchangeRaw(t, c, "GET /next HTTP/1.1\r\n"+edgeHost+"\r\n")[0]
				if strings.Contains(a, "EVIL") || !strings.Contains(a, `body="good"`) {
					t.Errorf("next answer: %s", a)
				}
			})
		})
	}
}

// An unexpected 101 (no upgrade was asked for) never leaves the upstream
// connection open or reused on the direct path.
func TestUpstreamUnexpected101Closed(t *testing.T) {
	up := newRawUpstream(t, func(_ int, _ *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
		return true
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	a := exchangeRaw(t, c, "GET /x HTTP/1.1\r\n"+edgeHost+"\r\n")[0]
	if !strings.HasPrefix(a, "502") {
		t.Errorf("answer: %s", a)
	}
	up.waitClosed(t, "upstream connection left open after an unexpected 101")
}

// The same on the fallback (http.Transport) path, taken by any request
// with a body (and every HTTPS request): ReverseProxy refuses the 101
// but never closes the writable response body the
// Transport handed it, so the upstream connection stays open even after
// the agent connection is gone.
func TestUpstreamUnexpected101ClosedFallback(t *testing.T) {
	up := newRawUpstream(t, func(_ int, _ *http.Request, c net.Conn) bool {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
		return true
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	a := exchangeRaw(t, c, "POST /x HTTP/1.1\r\n"+edgeHost+"Content-Length: 1\r\n\r\nx")[0]
	if !strings.HasPrefix(a, "502") {
		t.Errorf("answer: %s", a)
	}
	c.Close()
	up.waitClosed(t, "upstream connection left open after an unexpected 101 and the agent left")
}

// "OPTIONS *" is decided, audited and forwarded as it came (on both paths),
// or refused, like any other request; net/http does not answer it itself.
func TestOptionsStar(t *testing.T) {
	withDirect(t, func(t *testing.T) {
		up := newRawUpstream(t, okAnswer)
		e := newEnv(t, newDecider(policy.Deny, rule{name: "host", host: "api.example.com", action: policy.Allow}), nil)
		if a := exchangeRaw(t, e.dial(up.addr()), "OPTIONS * HTTP/1.1\r\n"+edgeHost+"\r\n")[0]; !strings.HasPrefix(a, "200 OK") || !strings.Contains(a, "X-Up") {
			t.Fatalf("allowed OPTIONS *: %s", a)
		}
		if got := up.received(); len(got) != 1 || !strings.HasPrefix(got[0], "OPTIONS * HTTP/1.1\r\n") {
			t.Fatalf("upstream received %q", got)
		}
		if en := e.audit.next(t); en.Method != "OPTIONS" || en.Path != "*" || en.Action != "allow" || en.Status != 200 {
			t.Errorf("audit: %+v", en)
		}
		e.dec.set(policy.Deny, rule{name: "paths", host: "api.example.com", pathPrefix: "/", action: policy.Allow})
		if a := exchangeRaw(t, e.dial(up.addr()), "OPTIONS * HTTP/1.1\r\n"+edgeHost+"\r\n")[0]; !strings.HasPrefix(a, "403") {
			t.Errorf("OPTIONS * with no rule for it: %s", a)
		}
		if en := e.audit.next(t); en.Method != "OPTIONS" || en.Action != "deny" || en.Status != 403 {
			t.Errorf("audit: %+v", en)
		}
	})
}

// An upstream connection whose socket the direct path cannot peek at (a
// Dial returning a wrapped conn) is never reused: stray bytes on it could
// not be told from the next answer.
func TestUpstreamUnpeekableNotReused(t *testing.T) {
	old := directUpstream
	directUpstream = true
	defer func() { directUpstream = old }()
	up := newRawUpstream(t, okAnswer)
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			cn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return struct{ net.Conn }{cn}, err
		}
	})
	c := e.dial(up.addr())
	for _, a := range exchangeRaw(t, c, "GET /a HTTP/1.1\r\n"+edgeHost+"\r\n", "GET /b HTTP/1.1\r\n"+edgeHost+"\r\n") {
		if !strings.HasPrefix(a, "200 OK") {
			t.Fatalf("answer: %s", a)
		}
	}
	if n := len(up.received()); n != 2 {
		t.Errorf("upstream saw %d connections for 2 requests, want 2 (no reuse)", n)
	}
}
