package proxy

import (
	"bufio"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// A client whose first bytes come after the peek timeout (a loaded host) is
// still decided on what it sends when its destination alone would be denied;
// one that never sends anything is refused once the extra wait is over.
func TestSlowClientIsDecidedOnItsRequest(t *testing.T) {
	up := newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	dst := up.addr()
	e := newEnv(t, newDecider(policy.Deny, rule{name: "get", method: "GET", action: policy.Allow}), func(c *Config) {
		c.PeekTimeout = 10 * time.Millisecond
		c.SlowClientWait = 2 * time.Second
	})

	c := e.dial(dst)
	// Let the peek timeout pass before the request starts (ordering, not a
	// timing assertion: the outcome must be the same however late it is).
	time.Sleep(100 * time.Millisecond)
	io.WriteString(c, "GET /late HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("late request got no answer: %v", err)
	}
	if resp.StatusCode != 200 || up.hits.Load() != 1 {
		t.Fatalf("late request: status %d, upstream hits %d", resp.StatusCode, up.hits.Load())
	}

	// Silent client to the same (raw-denied) destination: refused, the
	// upstream sees nothing more.
	silent := e.dial(dst)
	silent.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatal("a silent client to a denied destination got data")
	}
	if up.hits.Load() != 1 {
		t.Fatalf("upstream hits %d after the silent client", up.hits.Load())
	}
}
