package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// Attack (issue 18): a socket let through by the fast path to an allowed
// address and port tries to reach a port the policy does not allow on the
// same address: sendto with another address on the connected socket,
// connect(AF_UNSPEC) then connect or MSG_FASTOPEN elsewhere (established
// and in SYN_SENT), TCP_FASTOPEN_CONNECT. The server on the denied port must
// see nothing, and every allowed flow must get its "kernel" audit line.
func TestAttackFastPathRetargetSocket(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	srv := startFastServer(t, up)
	denied := startFastServerIn(t, up.Netns, net.JoinHostPort(up.IPv4.String(), fmt.Sprint(fastPort+1)))
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort)})
	ct := ctd.Run(t, "fpattack", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	cl.MustCLI("attach", ct.Name)
	out, code := sh(t, ct, fmt.Sprintf("/fpattack %s %d %d", up.IPv4, fastPort, fastPort+1))
	t.Logf("fpattack (%d):\n%s", code, out)
	if remote, _ := denied.seen(); len(remote) > 0 {
		t.Errorf("ESCAPED: the server on the denied port %d saw %v", fastPort+1, remote)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "read=\"world\"") && (strings.HasPrefix(l, "unspec") || strings.HasPrefix(l, "synsent")) {
			t.Errorf("ESCAPED: %s", l)
		}
	}
	remote, _ := srv.seen()
	eventually(t, "a kernel audit line for each allowed flow", func() bool {
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" && e.Dst == fmt.Sprintf("%s:%d", up.IPv4, fastPort) {
				n++
			}
		}
		return n >= len(remote)
	})
}
