package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// seenFrom returns the remote IPs from which the upstream saw requests for path.
func seenFrom(up *harness.Upstream, path string) []string {
	var out []string
	for _, s := range up.Requests() {
		if s.Path == path {
			ap, err := netip.ParseAddrPort(s.Remote)
			if err == nil {
				out = append(out, ap.Addr().Unmap().String())
			}
		}
	}
	return out
}

func upURL(path string) string {
	return fmt.Sprintf("http://%s:%d%s", harness.UpstreamIPv4, harness.UpstreamHTTPPort, path)
}
func upURL6(path string) string {
	return fmt.Sprintf("http://[%s]:%d%s", harness.UpstreamIPv6, harness.UpstreamHTTPPort, path)
}

// hostSide reports whether ip is one of the host's addresses on the
// upstream link: what the upstream sees when clawd dials for the agent.
func hostSide(ip string) bool { return ip == "198.51.100.1" || ip == "2001:db8::1" }

func TestAttachRedirectsEveryTCPConnect(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "agent", harness.RunOpts{})
	other := ctd.Run(t, "bystander", harness.RunOpts{})

	// Without clawd the container reaches the upstream directly.
	up.Reset()
	if out, code := wget(t, ct, upURL("/before")); code != 0 {
		t.Fatalf("direct wget before attach failed: %s", out)
	}
	if got := seenFrom(up, "/before"); len(got) != 1 || got[0] != ct.IPv4.String() {
		t.Fatalf("before attach the upstream saw %v, want the container's own %s", got, ct.IPv4)
	}

	out := cl.MustCLI("attach", ct.Name)
	if !strings.Contains(out, "attached "+ct.Name) {
		t.Fatalf("attach output: %s", out)
	}
	// The audit log records the attach and how long it took.
	attached := false
	for _, e := range cl.AuditEntries() {
		if e.Event == "attach" && e.Container == ct.Name {
			attached = e.DurationMS > 0
		}
	}
	if !attached {
		t.Errorf("no audit line for the attach of %s with its duration: %+v", ct.Name, cl.AuditEntries())
	}
	for _, tc := range []struct{ name, url, path string }{
		{"ipv4", upURL("/v4"), "/v4"},
		{"ipv6", upURL6("/v6"), "/v6"},
		{"v4-mapped", fmt.Sprintf("http://[::ffff:%s]:%d/mapped", harness.UpstreamIPv4, harness.UpstreamHTTPPort), "/mapped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := wget(t, ct, tc.url)
			if code != 0 {
				t.Fatalf("wget %s through clawd failed (%d): %s", tc.url, code, out)
			}
			got := seenFrom(up, tc.path)
			if len(got) != 1 || !hostSide(got[0]) {
				t.Fatalf("upstream saw %s from %v; want one request from the host side (clawd)", tc.path, got)
			}
		})
	}

	// The daemon's log names the container and the original destination.
	eventually(t, "a log line naming the container and destination", func() bool {
		for _, l := range cl.LogLines() {
			b, _ := json.Marshal(l)
			s := string(b)
			if strings.Contains(s, ct.Name) && strings.Contains(s, "198.51.100.10:8080") {
				return true
			}
		}
		return false
	})

	// A container that is not attached is unaffected.
	if out, code := wget(t, other, upURL("/bystander")); code != 0 {
		t.Fatalf("bystander wget failed: %s", out)
	}
	if got := seenFrom(up, "/bystander"); len(got) != 1 || got[0] != other.IPv4.String() {
		t.Fatalf("bystander's request came from %v, want its own address %s", got, other.IPv4)
	}

	// clawd ls shows the attachment with counters.
	list := cl.List()
	if len(list) != 1 || list[0].Container.Name != ct.Name || list[0].Counters.Redirected < 3 {
		t.Fatalf("ls = %+v", list)
	}
	table := cl.MustCLI("ls")
	if !strings.Contains(table, ct.Name) || !strings.Contains(table, "containerd") {
		t.Fatalf("ls table:\n%s", table)
	}

	// After detach, direct paths work again.
	cl.MustCLI("detach", ct.Name)
	if out, code := wget(t, ct, upURL("/after")); code != 0 {
		t.Fatalf("wget after detach failed: %s", out)
	}
	if got := seenFrom(up, "/after"); len(got) != 1 || got[0] != ct.IPv4.String() {
		t.Fatalf("after detach the upstream saw %v, want the container's own address", got)
	}
	if ents, _ := os.ReadDir(cl.PinRoot + "/att"); len(ents) != 0 {
		t.Fatalf("pins left after detach: %v", ents)
	}
}

func TestManyContainersNeverMixDestinations(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	const n, conc = 3, 6
	var cts []*harness.Container
	for i := 0; i < n; i++ {
		ct := ctd.Run(t, fmt.Sprintf("many%d", i), harness.RunOpts{})
		cl.MustCLI("attach", ct.Name)
		cts = append(cts, ct)
	}
	up.Reset()
	var wg sync.WaitGroup
	errs := make(chan string, n*conc)
	for i, ct := range cts {
		wg.Add(1)
		go func(i int, ct *harness.Container) {
			defer wg.Done()
			// conc concurrent requests inside the container, to the v4 and v6
			// upstream in turn, each with a path naming container and request.
			var script strings.Builder
			for j := 0; j < conc; j++ {
				u := upURL(fmt.Sprintf("/c%d/r%d", i, j))
				if j%2 == 1 {
					u = upURL6(fmt.Sprintf("/c%d/r%d", i, j))
				}
				fmt.Fprintf(&script, "(timeout 20 wget -q -O- '%s' > /tmp/r%d 2>&1 || echo FAIL >> /tmp/r%d) & ", u, j, j)
			}
			script.WriteString("wait; cat /tmp/r*")
			out, _ := sh(t, ct, script.String())
			for j := 0; j < conc; j++ {
				if !strings.Contains(out, fmt.Sprintf(`"/c%d/r%d"`, i, j)) {
					errs <- fmt.Sprintf("container %d did not get the answer for its request %d: %s", i, j, out)
				}
			}
			if strings.Contains(out, "FAIL") {
				errs <- fmt.Sprintf("container %d: a request failed: %s", i, out)
			}
		}(i, ct)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Every request reached the upstream once, from clawd, and the audit log
	// attributes each path to the container that asked for it.
	for i := 0; i < n; i++ {
		for j := 0; j < conc; j++ {
			p := fmt.Sprintf("/c%d/r%d", i, j)
			if got := seenFrom(up, p); len(got) != 1 || !hostSide(got[0]) {
				t.Errorf("%s seen from %v", p, got)
			}
		}
	}
	eventually(t, "audit lines for every request", func() bool {
		count := 0
		for _, e := range cl.AuditEntries() {
			if e.Event != "decision" || !strings.HasPrefix(e.Path, "/c") {
				continue
			}
			var i, j int
			if _, err := fmt.Sscanf(e.Path, "/c%d/r%d", &i, &j); err != nil || i >= n {
				continue
			}
			if e.Container != cts[i].Name {
				t.Fatalf("audit attributes %s to %s, want %s", e.Path, e.Container, cts[i].Name)
			}
			count++
		}
		return count >= n*conc
	})
}

func TestBypassesFail(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "bypass", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})

	// A TCP connection opened before attach, kept busy by a writer loop.
	sh(t, ct, fmt.Sprintf("(i=0; while true; do i=$((i+1)); echo line$i; sleep 0.1; done | nc %s %d > /tmp/echo 2>&1 &) ; sleep 0.5", harness.UpstreamIPv4, harness.UpstreamEchoPort))
	eventually(t, "the pre-attach connection to echo data", func() bool {
		out, _ := sh(t, ct, "wc -l < /tmp/echo")
		return strings.TrimSpace(out) != "0"
	})

	cl.MustCLI("attach", ct.Name)
	// Once the attach took effect, the old connection stops delivering.
	time.Sleep(500 * time.Millisecond) // let in-flight echoes land
	before, _ := sh(t, ct, "wc -l < /tmp/echo")
	time.Sleep(1500 * time.Millisecond)
	after, _ := sh(t, ct, "wc -l < /tmp/echo")
	if strings.TrimSpace(before) != strings.TrimSpace(after) {
		t.Errorf("connection opened before attach still delivers data: %s -> %s lines", strings.TrimSpace(before), strings.TrimSpace(after))
	}

	up.Reset()
	// UDP to a non-DNS port fails; nothing reaches the upstream. (Busybox
	// nc has no UDP mode here: the bypass program sends the datagram.)
	if r := runBypass(t, ct, "-only", "udp-sendto")["udp-sendto"]; r.Result != "blocked" {
		t.Errorf("UDP sendto after attach: %+v", r)
	}
	if len(up.UDPPackets()) != 0 {
		t.Errorf("UDP datagram escaped: upstream got %v", up.UDPPackets())
	}
	// ICMP (raw and ping sockets) fails.
	if out, code := sh(t, ct, "timeout 5 ping -c1 -W1 "+harness.UpstreamIPv4.String()); code == 0 {
		t.Errorf("ping got through: %s", out)
	}
	cnt := cl.List()[0].Counters
	if cnt.SockRefused == 0 {
		t.Errorf("ping's socket was not refused: %+v", cnt)
	}

	// DNS to any resolver address is answered by clawd, which forwards to
	// the configured resolver (the upstream's).
	for _, resolver := range []string{"203.0.113.250", harness.UpstreamDNS.String(), "2001:db8::53"} {
		out, code := sh(t, ct, "timeout 10 nslookup upstream.test "+resolver)
		if code != 0 || !strings.Contains(out, harness.UpstreamIPv4.String()) {
			t.Errorf("nslookup via %s: code %d: %s", resolver, code, out)
		}
	}
	if len(up.DNSQueries()) == 0 {
		t.Errorf("the upstream resolver saw no query: clawd did not forward")
	}

	// Detach: direct UDP works again.
	cl.MustCLI("detach", ct.Name)
	// (Retry: the neighbour entry may need resolving again after the drops.)
	eventually(t, "direct UDP after detach", func() bool {
		runBypass(t, ct, "-only", "udp-sendto")
		return len(up.UDPPackets()) > 0
	})
}

func TestDaemonDownFailsClosedAndRestartReadopts(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "crash", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	if out, code := wget(t, ct, upURL("/up")); code != 0 {
		t.Fatalf("wget with clawd up: %s", out)
	}
	before := cl.List()

	cl.Kill()
	up.Reset()
	if out, code := wget(t, ct, upURL("/down")); code == 0 {
		t.Fatalf("wget succeeded while clawd was down: %s", out)
	}
	if out, code := wget(t, ct, upURL6("/down6")); code == 0 {
		t.Fatalf("wget over IPv6 succeeded while clawd was down: %s", out)
	}
	if got := seenFrom(up, "/down"); len(got) != 0 {
		t.Fatalf("upstream saw a request while clawd was down: %v", got)
	}
	// Attach while the daemon is down: a clear error.
	out, err := cl.CLI("attach", ct.Name)
	if err == nil || !strings.Contains(out, "is it running") {
		t.Fatalf("attach with daemon down: err=%v out=%s", err, out)
	}

	cl.Start()
	if out, code := wget(t, ct, upURL("/again")); code != 0 {
		t.Fatalf("wget after restart: %s", out)
	}
	if got := seenFrom(up, "/again"); len(got) != 1 || !hostSide(got[0]) {
		t.Fatalf("after restart upstream saw %v", got)
	}
	after := cl.List()
	if len(after) != 1 || after[0].ID != before[0].ID || !after[0].AttachedAt.Equal(before[0].AttachedAt) {
		t.Fatalf("attachments changed across restart: before %+v after %+v", before, after)
	}
	// No program was attached twice: one pinned link per hook.
	ents, err := os.ReadDir(cl.PinRoot + "/att/" + after[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(before[0].Layers.Cgroup)+len(before[0].Layers.TCX)+len(before[0].Layers.TCXPeers)+len(before[0].Layers.TCXLower) {
		t.Fatalf("pins after restart: %d, layers before %+v", len(ents), before[0].Layers)
	}
	// Graceful stop leaves the container cut off too.
	cl.Stop()
	if out, code := wget(t, ct, upURL("/stopped")); code == 0 {
		t.Fatalf("wget succeeded after SIGTERM: %s", out)
	}
	cl.Start()
}

func TestStoppedContainerIsDetached(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "stopme", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	id := cl.List()[0].ID
	ct.Stop(t)
	eventually(t, "the attachment of a stopped container to go", func() bool { return len(cl.List()) == 0 })
	if _, err := os.Stat(cl.PinRoot + "/att/" + id); !os.IsNotExist(err) {
		t.Fatalf("pins of stopped container remain: %v", err)
	}
	if _, err := os.Stat(cl.StateDir + "/attachments/" + id + ".json"); !os.IsNotExist(err) {
		t.Fatalf("state of stopped container remains: %v", err)
	}
}

func TestLabelledContainerIsAttachedAtCreate(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	// The container's very first process fetches: it must already go
	// through clawd.
	ct := ctd.Run(t, "auto", harness.RunOpts{
		Labels: map[string]string{"clawd.attach": "true"},
		Args:   []string{"sh", "-c", "wget -q -O /tmp/first " + upURL("/first") + "; sleep 3600"},
	})
	eventually(t, "the first request", func() bool { return len(seenFrom(up, "/first")) > 0 })
	if got := seenFrom(up, "/first"); !hostSide(got[0]) {
		t.Fatalf("first request of a labelled container came from %v, not through clawd", got)
	}
	if l := cl.List(); len(l) != 1 || l[0].Container.Name != ct.Name || !l[0].Auto {
		t.Fatalf("ls = %+v", l)
	}
}

func TestBadInput(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "badinput", harness.RunOpts{})

	out, err := cl.CLI("attach", "no-such-container")
	if err == nil || !strings.Contains(out, "no-such-container") {
		t.Errorf("unknown container: err=%v out=%s", err, out)
	}
	cl.MustCLI("attach", ct.Name)
	out, err = cl.CLI("attach", ct.Name)
	if err == nil || !strings.Contains(out, "already attached") {
		t.Errorf("double attach: err=%v out=%s", err, out)
	}
	out, err = cl.CLI("detach", "nothing-here")
	if err == nil || !strings.Contains(out, "not attached") {
		t.Errorf("detach unknown: err=%v out=%s", err, out)
	}
	out, err = cl.CLIAs(&syscall.Credential{Uid: 65534, Gid: 65534}, "ls")
	if err == nil || !(strings.Contains(out, "root") || strings.Contains(out, "permission")) {
		t.Errorf("non-root caller: err=%v out=%s", err, out)
	}
	// Even with the socket opened up, the daemon itself refuses non-root.
	os.Chmod(cl.Socket, 0o666)
	os.Chmod(cl.Dir, 0o755)
	out, err = cl.CLIAs(&syscall.Credential{Uid: 65534, Gid: 65534}, "detach", ct.Name)
	if err == nil || !strings.Contains(out, "only root") {
		t.Errorf("non-root caller with open socket: err=%v out=%s", err, out)
	}
	// Nothing changed: still exactly one attachment.
	if l := cl.List(); len(l) != 1 {
		t.Errorf("attachments after bad input: %+v", l)
	}
	var st daemon.Status
	if st, err = cl.Client().Status(context.Background()); err != nil || st.Attachments != 1 {
		t.Errorf("status = %+v, %v", st, err)
	}
}

func TestDockerContainerAttachesByName(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	dk := harness.SharedDocker(t)
	cl := StartClawd(t, ctd, ClawdOpts{DockerHost: dk.Host})
	ct := dk.Run(t, "dagent", harness.RunOpts{})

	out := cl.MustCLI("attach", ct.Name)
	if !strings.Contains(out, "(docker") {
		t.Fatalf("attach output: %s", out)
	}
	up.Reset()
	if out, code := wget(t, ct, upURL("/docker")); code != 0 {
		t.Fatalf("wget from docker container: %s", out)
	}
	if got := seenFrom(up, "/docker"); len(got) != 1 || !hostSide(got[0]) {
		t.Fatalf("docker container's request seen from %v, want clawd", got)
	}
	l := cl.List()
	if len(l) != 1 || l[0].Container.Runtime != "docker" || l[0].Container.Name != ct.Name {
		t.Fatalf("ls = %+v", l)
	}
	// A labelled Docker container is attached when its task is created.
	auto := dk.Run(t, "dauto", harness.RunOpts{
		Labels: map[string]string{"clawd.attach": "true"},
		Args:   []string{"sh", "-c", "wget -q -O /tmp/first " + upURL("/docker-first") + "; sleep 3600"},
	})
	eventually(t, "the labelled docker container's first request", func() bool { return len(seenFrom(up, "/docker-first")) > 0 })
	if got := seenFrom(up, "/docker-first"); !hostSide(got[0]) {
		t.Fatalf("first request of labelled docker container %s came from %v", auto.Name, got)
	}
}
