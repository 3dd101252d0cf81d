package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// clawd also serves connections that reach its listener through an iptables
// REDIRECT in the container's netns (the classic way, used by the benchmark
// comparison): the destination comes from conntrack, the container's policy
// applies, and a redirected loopback destination is refused.
func TestIptablesRedirectReachesTheSameProxy(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "natredir", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)

	out, err := exec.Command("nsenter", "--net="+ct.Netns, "ss", "-Hltn").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v %s", err, out)
	}
	var port string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && strings.HasPrefix(f[3], "127.0.0.1:") {
			port = strings.TrimPrefix(f[3], "127.0.0.1:")
		}
	}
	if port == "" {
		t.Fatalf("no clawd listener in the container netns:\n%s", out)
	}
	ipt := func(args ...string) {
		t.Helper()
		cmd := exec.Command("nsenter", append([]string{"--net=" + ct.Netns, "iptables", "-w", "-t", "nat"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v %s", args, err, out)
		}
	}
	ipt("-A", "OUTPUT", "-p", "tcp", "-d", harness.UpstreamIPv4.String(), "--dport", "8080", "-j", "REDIRECT", "--to-ports", port)
	ipt("-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.2", "--dport", "18080", "-j", "REDIRECT", "--to-ports", port)
	// A host service on loopback that must stay out of reach.
	hostSvc, err := net.Listen("tcp", "127.0.0.2:18080")
	if err != nil {
		t.Fatal(err)
	}
	defer hostSvc.Close()
	go http.Serve(hostSvc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("host secret")) }))

	// This test process is in the container's netns but not in its cgroup:
	// no eBPF redirect applies, only the REDIRECT rule.
	up.Reset()
	get := func(addr, path string) (*http.Response, error) {
		c, err := harness.DialIn(ct.Netns, "tcp", addr, 5*time.Second)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
		return http.ReadResponse(bufio.NewReader(c), nil)
	}
	resp, err := get(fmt.Sprintf("%s:8080", harness.UpstreamIPv4), "/nat")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("redirected GET: %v %+v", err, resp)
	}
	if got := seenFrom(up, "/nat"); len(got) != 1 || !hostSide(got[0]) {
		t.Fatalf("upstream saw /nat from %v, want once from clawd", got)
	}
	// The kernel recorded no connecting process for it: the program is
	// unknown (policy binaries: allow rules cannot match it).
	eventually(t, "the audit line of the redirected request, program unknown", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "/nat" && e.Container == ct.Name && e.Dst == "198.51.100.10:8080" && e.Program == "unknown" && e.PID == 0 {
				return true
			}
		}
		return false
	})
	// A loopback destination is never dialled from the host.
	if resp, err := get("127.0.0.2:18080", "/loop"); err == nil && resp.StatusCode == 200 {
		t.Fatalf("redirected loopback destination answered: %+v", resp)
	}
}
