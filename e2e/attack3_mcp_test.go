package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// Red team round 3 (docs/attacks/16-mcp-round3.md #1), end to end with the
// real SDK server: the mcp rule first, a cidr allow rule for the server's
// network after it. By address (TLS with no SNI, Host: the IP), before any
// container has looked the name up through clawd, the mcp rule did not
// apply and the SDK server ran delete_file. Now such a policy is refused
// (clawd policy check names the rule and line; a daemon will not start on
// it), and by address under the mcp rule alone nothing runs.
func TestAttackMCPByAddressRealSDK(t *testing.T) {
	root := harness.AgentRoot(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	caCert, caKey, caPEM, err := polNewCA()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := polLeaf(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "mcp-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := attackMCPPolicy + `    - name: lab-network
      cidrs: [198.51.100.0/24]
      action: allow
`
	badFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(badFile, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(clawdBin(t), "policy", "check", badFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `rule "lab-network" matches by cidrs`) || !strings.Contains(string(out), "policy.yaml:14") {
		t.Fatalf("a cidr allow rule after an mcp rule on its ports: policy check %v\n%s", err, out)
	}
	pol := attackMCPPolicy
	cl := StartClawd(t, ctd, ClawdOpts{Policy: pol, Extra: "upstream-ca-file: " + caFile + "\n"})
	ct := ctd.Run(t, "mcp-atk3", harness.RunOpts{Rootfs: root, Env: []string{"HOME=/root"}})
	cl.MustCLI("attach", ct.Name, "--trust-ca")
	port, log := startAttackMCPServer(t, root)
	const p = 8794
	for _, ip := range []string{harness.UpstreamIPv4.String(), harness.UpstreamIPv6.String()} {
		forwardTLS(t, up, net.JoinHostPort(ip, fmt.Sprint(p)), leaf, &port)
	}
	ran := func() string { b, _ := os.ReadFile(log); return string(b) }
	curl := `curl -sS -k -m 20 -H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' `
	body := `'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file","arguments":{"path":"/work/by-address"}}}' `

	// By address first: nobody has resolved the MCP host through clawd yet.
	got, _ := sh(t, ct, curl+`--data-binary `+body+fmt.Sprintf("https://%s:%d/mcp", harness.UpstreamIPv4, p))
	if strings.Contains(ran(), "RAN delete_file") {
		t.Errorf("by address: the SDK server ran a tool the mcp rule denies, through clawd (the agent got %q); server log:\n%s", got, ran())
	}
	t.Logf("by address: %s", got)
}
