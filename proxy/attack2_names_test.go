package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// atk2OtherNames: clawd's DNS gave this container nothing for the address;
// another container resolved blocked.example to it (NamesForAny).
type atk2OtherNames struct{ any map[netip.Addr][]string }

func (atk2OtherNames) Consistent(string, string, netip.Addr) bool { return false }
func (atk2OtherNames) NamesFor(string, netip.Addr) []string       { return nil }
func (n atk2OtherNames) NamesForAny(ip netip.Addr) []string       { return n.any[ip] }

const atk2ConnDenyPolicy = `
version: 1
default:
  default_action: allow
  rules:
    - name: no-blocked
      hosts: blocked.example
      action: deny
`

// blocked.example is denied outright (a connection-level rule). Another
// container resolved it to the address; this agent dials the address it
// learnt elsewhere (hard-coded). A plain HTTP request there with Host: the
// address is decided by every name living at the address (invariant 2) and
// refused, but the same destination as raw TCP, or TLS without a server
// name, is decided by the address alone (connDecision sees only this
// container's names) and spliced: the "most restrictive rule of any of the
// destination's names" (invariant 3) is applied at the request level and
// not at the connection level.
func TestAttack2ConnLevelIgnoresOtherContainersNames(t *testing.T) {
	dst, accepted := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	p, err := policy.Parse([]byte(atk2ConnDenyPolicy), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		c.Names = atk2OtherNames{any: map[netip.Addr][]string{dst.Addr(): {"blocked.example"}}}
	})
	// Control: HTTP with Host = the address is refused by blocked.example's rule.
	c := e.dial(dst)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", dst.Addr())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 403 {
		t.Fatalf("control: HTTP with Host=address: %v %v", resp, err)
	}
	select {
	case <-accepted:
		t.Fatal("control: upstream dialled")
	default:
	}
	// Raw TCP to the same address.
	c = e.dial(dst)
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "\x00raw bytes to blocked.example\n")
	l, err := bufio.NewReader(c).ReadString('\n')
	if err == nil {
		t.Errorf("raw TCP to blocked.example's address (denied by name, known to clawd's DNS) was spliced: echoed %q", l)
	}
}
