package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

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

// Attack (issue 18, audit): a fast flow carries 1234 bytes, then the
// container makes a few hundred thousand cheap fast connects (SYN, close)
// that push the held flow's record out of the LRU flow map (262144
// entries): when the held flow closes, sockops finds no record and nothing
// reaches the audit log. Every fast flow that carried bytes must have its
// "kernel" line.
func TestAttackFastPathFlowEvictedLosesAudit(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	startFastServer(t, up)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(fastPolicy, fastPort)})
	ct := ctd.Run(t, "fpevict", harness.RunOpts{Files: map[string]string{toolBin(t, "fpattack"): "/fpattack"}})
	cl.MustCLI("attach", ct.Name)
	out, code := sh(t, ct, fmt.Sprintf("/fpattack %s %d %d evict", up.IPv4, fastPort, fastPort+1))
	t.Logf("fpattack (%d):\n%s", code, out)
	if !strings.Contains(out, `read="world"`) {
		t.Fatalf("the held fast flow did not work: %s", out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, found := 0, false
		for _, e := range cl.AuditEntries() {
			if e.Path == "kernel" {
				n++
				if e.BytesOut >= 1234 {
					t.Logf("held flow line: %+v", e)
					found = true
				}
			}
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NO AUDIT LINE for the fast flow that carried 1234 bytes (%d kernel lines; fast-path counters %+v)", n, cl.List()[0].FastPath)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
