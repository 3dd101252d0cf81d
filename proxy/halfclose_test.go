package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// An agent that sends its request and then closes its write side (nc, some
// HTTP/1.0-style clients) makes net/http cancel the request. clawd must not
// answer such a request with an empty "200 OK" it never got from the
// upstream (regression: the handler returned without writing and net/http
// sent an implicit 200).
func TestHalfClosedAgentGetsNoFakeAnswer(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		// Answer only once clawd gave up on the request (bounded).
		select {
		case <-r.Context().Done():
		case <-time.After(waitLimit):
		}
		io.WriteString(w, "real answer")
	})
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return // the connection was closed without an answer: fine
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK && string(body) != "real answer" {
		t.Fatalf("the agent got a 200 with body %q the upstream never sent", body)
	}
}
