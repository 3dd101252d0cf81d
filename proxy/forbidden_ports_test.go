package proxy

import (
	"bufio"
	"io"
	"net/netip"
	"sync"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// clawd's API/metrics on a wildcard address answer on every host address,
// including addresses that appear after the daemon started (the host side
// of each new container's veth). ForbiddenPorts must cover those: a
// snapshot of the host's addresses at start does not.
func TestForbiddenPortsCoverHostAddressesAddedLater(t *testing.T) {
	dst, accepted := tcpUpstream(t, echo) // 127.0.0.1:PORT stands in for the API
	var mu sync.Mutex
	host := map[netip.Addr]bool{}
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.ForbiddenPorts = []uint16{dst.Port()}
		c.HostAddr = func(a netip.Addr) bool { mu.Lock(); defer mu.Unlock(); return host[a] }
	})

	// Control: while 127.0.0.1 is not (yet) a host address, it is proxied.
	c := e.dial(dst)
	io.WriteString(c, "hi\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); line != "echo: hi\n" {
		t.Fatalf("control: answered %q", line)
	}
	<-accepted
	c.Close()
	e.audit.next(t)

	// The address appears after the server was built: now it is refused.
	mu.Lock()
	host[dst.Addr()] = true
	mu.Unlock()
	c = e.dial(dst)
	io.WriteString(c, "hi\n")
	if line, _ := bufio.NewReader(c).ReadString('\n'); line == "echo: hi\n" {
		t.Error("a host address added later reached the forbidden port")
	}
	c.Close()
	if ent := e.audit.next(t); ent.Rule != "clawd-internal" || ent.Action != "deny" {
		t.Errorf("audit = %+v", ent)
	}
	select {
	case <-accepted:
		t.Error("forbidden port reached")
	default:
	}
}

func TestIsHostAddr(t *testing.T) {
	if !isHostAddr(netip.MustParseAddr("127.0.0.1")) {
		t.Error("127.0.0.1 is not a host address")
	}
	if isHostAddr(netip.MustParseAddr("192.0.2.123")) {
		t.Error("TEST-NET address reported as a host address")
	}
}
