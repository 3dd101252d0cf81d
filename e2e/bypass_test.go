package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// bypassBin builds the static bypass program once.
func bypassBin(t testing.TB) string { return toolBin(t, "bypass") }

type vectorResult struct {
	Vector, Result, Detail string
}

func runBypass(t *testing.T, ct *harness.Container, args ...string) map[string]vectorResult {
	t.Helper()
	cmd := "/bypass -gw-mac " + ct.GatewayMAC + " " + strings.Join(args, " ")
	out, code := sh(t, ct, cmd)
	if code != 0 {
		t.Fatalf("bypass program failed (%d): %s", code, out)
	}
	return parseVectors(out)
}

// parseVectors reads the bypass program's JSON lines.
func parseVectors(out string) map[string]vectorResult {
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
	for _, r := range res {
		if r.Result == "escaped" {
			t.Errorf("ESCAPED (the program says so): %+v", r)
		}
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

// hostPort returns the port of a host:port listen address.
func hostPort(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// httpGet fetches url from the host and returns the body ("" on error).
func httpGetBody(url string) string {
	c := http.Client{Timeout: 5 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	return r.Status + "\n" + string(b)
}

// Every address that means "this host" or "the cloud" from inside the
// container, on clawd's own API and metrics ports: the proxy refuses them
// (even though the policy allows everything else), nothing reaches clawd.
// Also: io_uring connects, DNS to other resolvers over UDP and TCP, every
// address family, AF_VSOCK/AF_XDP, /dev/net/tun, cgroup moves and child
// processes.
func TestBypassHostAddressesAndOtherFamilies(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	// Link-local destinations are denied by policy so clawd never dials the
	// host's real metadata service; everything else is allowed, so only
	// clawd's own guard keeps its API and metrics out of reach.
	cl := StartClawd(t, ctd, ClawdOpts{Policy: `version: 1
default:
  default_action: allow
  rules:
    - name: no-link-local
      cidrs: [169.254.0.0/16, "fe80::/10"]
      action: deny
`})
	apiPort, metricsPort := hostPort(t, cl.API), hostPort(t, cl.Metrics)
	// Control: from the host, the API and metrics answer (so the markers
	// below would show if a container reached them).
	if b := httpGetBody("http://" + cl.API + "/healthz"); !strings.HasPrefix(b, "200") {
		t.Fatalf("API /healthz from the host: %q", b)
	}
	if b := httpGetBody("http://" + cl.Metrics + "/metrics"); !strings.Contains(b, "# HELP") {
		t.Fatalf("metrics from the host: %q", tail(b, 200))
	}

	// A resolver other than the configured one, listening on UDP and TCP
	// 53 in the upstream: clawd must answer instead, and it must see nothing.
	otherDNS := harness.UpstreamIPv4.String()
	pc, err := up.ListenPacket("udp4", otherDNS+":53")
	if err != nil {
		t.Fatal(err)
	}
	var udpHits, tcpHits atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			udpHits.Add(1)
		}
	}()
	pc6, err := up.ListenPacket("udp6", "["+harness.UpstreamIPv6.String()+"]:53")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc6.ReadFrom(buf); err != nil {
				return
			}
			udpHits.Add(1)
		}
	}()
	ln, err := up.Listen("tcp4", otherDNS+":53")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tcpHits.Add(1)
			c.Close()
		}
	}()

	ct := ctd.Run(t, "hostile-host", harness.RunOpts{
		Files: map[string]string{bypassBin(t): "/bypass"},
		Caps:  []string{"CAP_NET_RAW", "CAP_NET_ADMIN"},
	})
	// Control: before attach the other resolvers are reached directly.
	if r := runBypass(t, ct, "-only", "dns-other-udp,dns-other-udp6", "-dns-other", otherDNS); udpHits.Load() != 2 {
		t.Fatalf("control: the direct queries did not reach the other resolvers (%d): %+v", udpHits.Load(), r)
	}
	udpHits.Store(0)
	// Control: frames sent on a macvlan the container creates on eth0 get
	// out without clawd.
	up.Reset()
	eventually(t, "the control macvlan frames to escape", func() bool {
		runBypass(t, ct, "-only", "macvlan-packet")
		return strings.Contains(strings.Join(escaped(up), "\n"), "bypass-macvlan-packet")
	})

	cl.MustCLI("attach", ct.Name)
	up.Reset()
	before := cl.List()[0].Counters
	addrs := []string{ct.HostIPv4.String(), ct.HostIPv6.String(), "198.51.100.1", "2001:db8::1",
		"169.254.169.254", "0.0.0.0", "::", "::ffff:0.0.0.0", "::ffff:198.51.100.1", "::ffff:" + ct.HostIPv4.String(),
		"fe80::1%eth0", "127.0.0.1", "::1"}
	res := runBypass(t, ct, "-host-addrs", strings.Join(addrs, ","),
		"-ports", apiPort+"/healthz,"+metricsPort+"/metrics", "-dns-other", otherDNS)
	t.Logf("af-scan (families/types the container could create): %s", res["af-scan"].Detail)
	t.Logf("cgroup-move: %s", res["cgroup-move"].Detail)
	for _, a := range addrs {
		for _, p := range []string{apiPort, metricsPort} {
			ap := net.JoinHostPort(a, p)
			r, ok := res["host-"+ap]
			if !ok {
				t.Errorf("no result for host-%s", ap)
				continue
			}
			if strings.Contains(r.Detail, " 200 ") || strings.Contains(r.Detail, "CLAWD-") {
				t.Errorf("ESCAPED to clawd's own listener at %s: %+v", ap, r)
			}
		}
	}
	// The proxy's own guard decided the host addresses (not the policy).
	eventually(t, "audit lines denying clawd's own ports", func() bool {
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Rule == "clawd-internal" {
				n++
			}
		}
		return n >= 4
	})
	// Link-local and metadata destinations went to clawd too (its policy
	// denied them), not onto the container's link.
	for _, dst := range []string{"169.254.169.254:" + apiPort, "[fe80::1]:" + apiPort} {
		found := false
		for _, e := range cl.AuditEntries() {
			if e.Dst == dst && e.Rule == "no-link-local" && e.Action == "deny" {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit line denying %s by the link-local rule: the connect was not redirected", dst)
		}
	}

	if r := res["tcp-io-uring"]; !(r.Result == "connected" && strings.Contains(r.Detail, "200")) && !strings.HasPrefix(r.Detail, "unavailable") {
		t.Errorf("io_uring connect: %+v, want a 200 through clawd (or unavailable)", r)
	}
	if r := res["tcp-io-uring"]; r.Result == "connected" {
		if got := seenFrom(up, "/bypass-tcp-io-uring"); len(got) != 1 || !hostSide(got[0]) {
			t.Errorf("io_uring request seen from %v, want once from clawd", got)
		}
	}
	for _, v := range []string{"dns-other-udp", "dns-other-tcp", "dns-other-udp6"} {
		if r := res[v]; r.Result != "answered" || r.Detail != harness.UpstreamIPv4.String() {
			t.Errorf("%s: %+v, want clawd's answer %s", v, r, harness.UpstreamIPv4)
		}
	}
	// (udp53-not-dns is "sent": to clawd's DNS listener, which drops what
	// is not a query; the other resolver must not see it either.)
	if n, m := udpHits.Load(), tcpHits.Load(); n != 0 || m != 0 {
		t.Errorf("the other resolver was reached: %d UDP queries, %d TCP connections", n, m)
	}
	if len(up.DNSQueries()) == 0 {
		t.Errorf("the configured resolver saw no query: clawd did not answer through it")
	}
	for _, v := range []string{"macvlan-packet", "vlan-packet"} {
		if r := res[v]; r.Result == "" {
			t.Errorf("%s: no result", v)
		} else {
			t.Logf("%s after attach: %+v (nothing may reach the upstream)", v, r)
		}
	}
	for _, v := range []string{"af-vsock", "af-xdp", "dev-net-tun", "cgroup-move"} {
		if r := res[v]; r.Result != "blocked" {
			t.Errorf("%s: %+v, want blocked", v, r)
		}
	}
	for _, v := range []string{"child-exec-tcp4", "child-shell-tcp4"} {
		if r := res[v]; r.Result != "connected" || !strings.Contains(r.Detail, "200") {
			t.Errorf("%s: %+v, want a 200 through clawd", v, r)
		}
		if got := seenFrom(up, "/bypass-"+v); len(got) != 1 || !hostSide(got[0]) {
			t.Errorf("%s seen from %v, want once from clawd", v, got)
		}
	}
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED: %s", e)
	}
	after := cl.List()[0].Counters
	if after.IfDropped < before.IfDropped {
		t.Errorf("counters went backwards: %+v -> %+v", before, after)
	}
}

// reach dials addr (from the host, or inside netns if set) and returns what
// the listener wrote ("" if the dial or read failed).
func reach(netns, addr string) string {
	var c net.Conn
	var err error
	if netns == "" {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
	} else {
		c, err = harness.DialIn(netns, "tcp", addr, 2*time.Second)
	}
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(io.LimitReader(c, 256))
	return string(b)
}

// A listener in the attached container is unreachable from the host and
// from the upstream (no reverse connections); clawd's own control socket,
// mounted into the container, refuses the container's root.
func TestBypassListenersAndMountedControlSocket(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "hostile-listen", harness.RunOpts{
		Files: map[string]string{bypassBin(t): "/bypass", cl.Socket: "/clawd.sock"},
		Caps:  []string{"CAP_NET_RAW", "CAP_NET_ADMIN"},
	})
	type target struct{ from, netns, addr string }
	// listen starts a listener on port in the container for a while and
	// returns where to dial it from.
	listen := func(port string) []target {
		sh(t, ct, "rm -f /tmp/listen.out; (/bypass -only listen-tcp -listen "+port+" -listen-for 10s > /tmp/listen.out 2>&1 &)")
		eventually(t, "the container's listener", func() bool {
			out, _ := sh(t, ct, "cat /tmp/listen.out")
			return strings.Contains(out, "listening")
		})
		return []target{
			{"host", "", net.JoinHostPort(ct.IPv4.String(), port)},
			{"host", "", net.JoinHostPort(ct.IPv6.String(), port)},
			{"upstream", up.Netns, net.JoinHostPort(ct.IPv4.String(), port)},
			{"upstream", up.Netns, net.JoinHostPort(ct.IPv6.String(), port)},
		}
	}
	// Control, before attach: the listener and the control socket answer.
	for _, tg := range listen("7777") {
		if got := reach(tg.netns, tg.addr); !strings.Contains(got, "bypass-listen-tcp") {
			t.Fatalf("control: %s could not reach the container's listener at %s: %q", tg.from, tg.addr, got)
		}
	}
	if r := runBypass(t, ct, "-only", "ctl-socket", "-ctl", "/clawd.sock")["ctl-socket"]; r.Result != "connected" {
		t.Fatalf("control: before attach the container's root should reach the mounted socket: %+v", r)
	}

	cl.MustCLI("attach", ct.Name)
	tgs := listen("7778")
	got := make([]string, len(tgs))
	var wg sync.WaitGroup
	for i, tg := range tgs { // in parallel: each blocked dial waits out its timeout
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = reach(tg.netns, tg.addr) }()
	}
	wg.Wait()
	for i, tg := range tgs {
		if got[i] != "" {
			t.Errorf("REVERSE CONNECTION: %s reached the attached container's listener at %s: %q", tg.from, tg.addr, got[i])
		}
	}
	if r := runBypass(t, ct, "-only", "ctl-socket", "-ctl", "/clawd.sock")["ctl-socket"]; r.Result != "blocked" || !strings.Contains(r.Detail, "403") {
		t.Errorf("the attached container's root used clawd's control socket: %+v", r)
	}
	// The daemon still serves the host, and the attachment is intact.
	if l := cl.List(); len(l) != 1 || l[0].Container.Name != ct.Name {
		t.Errorf("attachments after the attempts: %+v", l)
	}
}

// A thread started, a socket created and a connection established before
// attach: the thread's and the socket's new connects are redirected (the
// cgroup's programs apply to every socket of the cgroup), and the old
// connection carries nothing more.
func TestBypassPreparedBeforeAttach(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "hostile-pre", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})
	sh(t, ct, "(/bypass -pre-attach /tmp/go > /tmp/pre.out 2>/tmp/pre.err &)")
	eventually(t, "the program to prepare", func() bool {
		out, _ := sh(t, ct, "cat /tmp/pre.err")
		return strings.Contains(out, "ready")
	})
	cl.MustCLI("attach", ct.Name)
	up.Reset()
	sh(t, ct, "touch /tmp/go")
	res := map[string]vectorResult{}
	eventually(t, "three results", func() bool {
		out, _ := sh(t, ct, "cat /tmp/pre.out")
		res = parseVectors(out)
		return len(res) == 3
	})
	for _, v := range []string{"pre-thread", "pre-socket"} {
		if r := res[v]; r.Result != "connected" || !strings.Contains(r.Detail, "200") {
			t.Errorf("%s: %+v, want a 200 through clawd", v, r)
		}
		if got := seenFrom(up, "/bypass-"+v); len(got) != 1 || !hostSide(got[0]) {
			t.Errorf("%s seen from %v, want once from clawd", v, got)
		}
	}
	if r := res["pre-connection"]; strings.Contains(r.Detail, "dial before attach") {
		t.Fatalf("control: the connection before attach could not be opened: %+v", r)
	}
	if r := res["pre-connection"]; strings.Contains(r.Detail, "200") {
		t.Errorf("the connection opened before attach still works: %+v", r)
	}
	if got := seenFrom(up, "/bypass-pre-connection"); len(got) != 0 {
		t.Errorf("the request over the pre-attach connection reached the upstream from %v", got)
	}
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED: %s", e)
	}
}

// fastUpPolicy allows the upstream's HTTP port by address alone: with the
// kernel fast path, TCP to it leaves the container directly.
const fastUpPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: up
      cidrs: [198.51.100.10/32, "2001:db8::10/128"]
      ports: [8080]
      action: allow
`

// The bypass program against the kernel fast path (issue 18): the TCP
// vectors the policy allows by address reach the upstream from the
// container itself (no proxy), each once; every other vector stays
// blocked, and nothing else the program sends gets out, packet sockets
// included, although the container's frames to the upstream now pass its
// interfaces.
func TestBypassProgramFindsNoWayOutWithFastPath(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fastUpPolicy})
	ct := ctd.Run(t, "hostilefast", harness.RunOpts{
		Files: map[string]string{bypassBin(t): "/bypass"},
		Caps:  []string{"CAP_NET_RAW", "CAP_NET_ADMIN"},
	})
	cl.MustCLI("attach", ct.Name)
	up.Reset()
	res := runBypass(t, ct)
	if len(res) < 20 {
		t.Fatalf("bypass program reported only %d vectors: %v", len(res), res)
	}
	for _, v := range []string{"so-mark", "so-bindtodevice", "ip-transparent", "udp-sendto", "udp-sendmsg",
		"udp-sendmmsg", "udp-connected", "udp6-sendto", "quic-443", "raw-udp", "raw-icmp", "ping-socket",
		"ping6-socket", "sctp", "mptcp", "udplite"} {
		if r, ok := res[v]; !ok || r.Result != "blocked" {
			t.Errorf("vector %s: %+v, want blocked by the kernel", v, r)
		}
	}
	tcp := map[string]bool{}
	for _, v := range []string{"tcp4", "tcp6", "tcp-v4mapped", "tcp-bind-port", "tcp-fastopen", "tcp-nonblocking"} {
		tcp["/bypass-"+v] = true
		if r := res[v]; r.Result != "connected" || !strings.Contains(r.Detail, "200") {
			t.Errorf("vector %s: %+v, want a 200 over the fast path", v, r)
		}
		got := seenFrom(up, "/bypass-"+v)
		if len(got) != 1 || (got[0] != ct.IPv4.String() && got[0] != ct.IPv6.String()) {
			t.Errorf("%s seen from %v, want once from the container itself (fast path)", v, got)
		}
	}
	// Other vectors that connect a TCP socket (io_uring, child
	// processes) take the fast path too: each must say it connected.
	for _, s := range up.Requests() {
		v := strings.TrimPrefix(s.Path, "/bypass-")
		if strings.HasPrefix(s.Path, "/bypass-") && !tcp[s.Path] && !(strings.Contains(v, "tcp") && res[v].Result == "connected") {
			t.Errorf("ESCAPED past the fast path: %s from %s (%+v)", s.Path, s.Remote, res[v])
		}
	}
	for _, p := range up.UDPPackets() {
		if strings.Contains(p, "bypass-") {
			t.Errorf("ESCAPED (udp): %s", p)
		}
	}
	for _, r := range res {
		if r.Result == "escaped" {
			t.Errorf("ESCAPED (the program says so): %+v", r)
		}
	}
	if c := cl.List()[0].Counters; c.IfDropped == 0 {
		t.Errorf("packet-socket frames were not dropped on the interfaces: %+v", c)
	}
}
