package proxy

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

// The operator lets agents reach the internal range only with a human's
// approval (cidrs + approve), and any name under the agent's own domain.
// The agent points a name of its domain at an internal address: the DNS
// filter keeps the record (a rule names the range), the connection is
// decided by the name rule (allow), and guardAddr lets the special address
// through because *some* allow-or-approve rule names it in cidrs. The
// approval the range demands never happens: the DNS answer rebinds the
// name rule onto the address after all.
func TestAttackRebindOntoApproveCIDR(t *testing.T) {
	dst, accepted := tcpUpstream(t, func(c net.Conn) { io.Copy(c, c) })
	p, err := policy.Parse([]byte(`
version: 1
default:
  default_action: deny
  rules:
    - name: agent-domain
      hosts: "*.agent.example"
      action: allow
    - name: internal-needs-a-human
      cidrs: [127.0.0.0/8]
      action: approve
`), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(names fakeNames) *env {
		return newEnv(t, nil, func(c *Config) {
			c.Decider = p
			c.Names = names
			c.Classify = addrclass.Of // loopback is special, as a private range would be
		})
	}
	// Control: the address alone asks a human (none configured: denied).
	c0 := mk(fakeNames{}).dial(dst)
	io.WriteString(c0, "\x00raw\n")
	c0.SetReadDeadline(time.Now().Add(time.Second))
	if l, err := bufio.NewReader(c0).ReadString('\n'); err == nil {
		t.Fatalf("control: an address of the approve range was spliced without approval: %q", l)
	}
	_ = netip.Addr{}
	// Drain the control's dial, if any.
	select {
	case <-accepted:
		t.Fatal("control dialled")
	default:
	}
	// Attack: the same address, reached as x.agent.example. Raw TCP with
	// the names clawd's DNS gave the container for the address.
	c := mk(fakeNames{"x.agent.example": dst.Addr()}).dial(dst)
	io.WriteString(c, "\x00raw\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Errorf("an internal address that needs approval was spliced on the agent's own name rule: %q", l)
	}
}
