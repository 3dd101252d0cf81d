package proxy

import (
	"bufio"
	"io"
	"net/netip"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// An agent that dials 0.0.0.0, :: or ::ffff:0.0.0.0 asks the host-side
// proxy for the host's own loopback (Linux connects INADDR_ANY to itself):
// clawd's API and metrics and every loopback-only host service. Such
// destinations are refused before the policy, even one that allows all.
func TestUnspecifiedDestinationIsRefused(t *testing.T) {
	dst, accepted := tcpUpstream(t, echo) // listens on 127.0.0.1
	e := newEnv(t, newDecider(policy.Allow), nil)

	// Control: the loopback address itself is proxied (the test can fail).
	c := e.dial(dst)
	io.WriteString(c, "hi\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "echo: hi\n" {
		t.Fatalf("control: direct destination answered %q", line)
	}
	<-accepted
	c.Close()
	e.audit.next(t)

	for _, a := range []string{"0.0.0.0", "::", "::ffff:0.0.0.0"} {
		ap := netip.AddrPortFrom(netip.MustParseAddr(a), dst.Port())
		for _, first := range []string{"hi\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"} {
			c := e.dial(ap)
			io.WriteString(c, first)
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if line == "echo: hi\n" || line == "echo: GET / HTTP/1.1\r\n" {
				t.Errorf("%s answered %q", ap, line)
			}
			if ent := e.audit.next(t); ent.Rule != "clawd-internal" || ent.Action != "deny" {
				t.Errorf("%s: audit = %+v", ap, ent)
			}
		}
	}
	select {
	case <-accepted:
		t.Error("an unspecified destination reached the host's loopback")
	default:
	}
}
