package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// bypassBin builds the static bypass program once.
func bypassBin(t testing.TB) string { return toolBin(t, "bypass") }

type vectorResult struct {
	Vector, Result, Detail string
}

func runBypass(t *testing.T, ct *harness.Container, args ...string) map[string]vectorResult {
	t.Helper()
	mac, err := os.ReadFile("/sys/class/net/" + ct.HostVeth + "/address")
	if err != nil {
		t.Fatal(err)
	}
	cmd := "/bypass -gw-mac " + strings.TrimSpace(string(mac)) + " " + strings.Join(args, " ")
	out, code := sh(t, ct, cmd)
	if code != 0 {
		t.Fatalf("bypass program failed (%d): %s", code, out)
	}
	res := map[string]vectorResult{}
	for _, l := range strings.Split(out, "\n") {
		var r vectorResult
		if json.Unmarshal([]byte(l), &r) == nil && r.Vector != "" {
			res[r.Vector] = r
		}
	}
	return res
}

// escaped reports every vector whose marker reached the upstream from
// anywhere but clawd (the host side of the upstream link).
func escaped(up *harness.Upstream) []string {
	var out []string
	for _, s := range up.Requests() {
		if strings.HasPrefix(s.Path, "/bypass-") {
			if ip := strings.Trim(s.Remote[:strings.LastIndex(s.Remote, ":")], "[]"); !hostSide(ip) {
				out = append(out, s.Path+" from "+s.Remote)
			}
		}
	}
	for _, p := range up.UDPPackets() {
		if strings.Contains(p, "bypass-") {
			out = append(out, "udp: "+p)
		}
	}
	return out
}

func TestBypassProgramFindsNoWayOut(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "hostile", harness.RunOpts{
		Files: map[string]string{bypassBin(t): "/bypass"},
		Caps:  []string{"CAP_NET_RAW", "CAP_NET_ADMIN"},
	})

	// Control: without clawd the program does get out, so the test can fail.
	up.Reset()
	runBypass(t, ct, "-only", "tcp4,udp-sendto,packet-raw")
	eventually(t, "the control run to escape by TCP, UDP and a packet socket", func() bool {
		e := strings.Join(escaped(up), "\n")
		return strings.Contains(e, "/bypass-tcp4") && strings.Contains(e, "bypass-udp-sendto") && strings.Contains(e, "bypass-packet-raw")
	})

	cl.MustCLI("attach", ct.Name)
	up.Reset()
	res := runBypass(t, ct)
	if len(res) < 20 {
		t.Fatalf("bypass program reported only %d vectors: %v", len(res), res)
	}
	mustBlock := []string{"so-mark", "so-bindtodevice", "ip-transparent", "udp-sendto", "udp-sendmsg",
		"udp-sendmmsg", "udp-connected", "udp6-sendto", "quic-443", "raw-udp", "raw-icmp", "ping-socket",
		"ping6-socket", "sctp", "mptcp", "udplite"}
	for _, v := range mustBlock {
		r, ok := res[v]
		if !ok || r.Result != "blocked" {
			t.Errorf("vector %s: %+v, want blocked by the kernel", v, r)
		}
	}
	for _, v := range []string{"tcp4", "tcp6", "tcp-v4mapped", "tcp-bind-port", "tcp-fastopen", "tcp-nonblocking"} {
		r := res[v]
		if r.Result != "connected" || !strings.Contains(r.Detail, "200") {
			t.Errorf("vector %s: %+v, want a 200 through clawd", v, r)
		}
	}
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED: %s", e)
	}
	// Every TCP vector reached the upstream exactly once, through clawd.
	for _, v := range []string{"tcp4", "tcp6", "tcp-v4mapped", "tcp-bind-port", "tcp-fastopen", "tcp-nonblocking"} {
		if got := seenFrom(up, "/bypass-"+v); len(got) != 1 || !hostSide(got[0]) {
			t.Errorf("%s seen from %v, want once from clawd", v, got)
		}
	}
	if c := cl.List()[0].Counters; c.IfDropped == 0 {
		t.Errorf("packet-socket frames were not dropped on the interfaces: %+v", c)
	}
}
