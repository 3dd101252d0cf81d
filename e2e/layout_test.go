package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/daemon/enforce"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// Network layouts: what lies behind a container's interface, where a frame
// sent past tcx egress (a packet socket with PACKET_QDISC_BYPASS) arrives.
// Each test prepares such a socket before attach (after it, setsockopt
// refuses the option), shows its frames reach the upstream unattached, and
// checks that after attach none does.

// bypassLoop starts e2e/bypass in packet-loop mode in ct: a bypass packet
// socket opened now, sending a numbered frame every 20ms. The returned stop
// ends it and returns its report.
func bypassLoop(t *testing.T, ct *harness.Container) (stop func() string) {
	t.Helper()
	sh(t, ct, "rm -f /tmp/loop.*; (/bypass -gw-mac "+ct.GatewayMAC+" -packet-loop /tmp/loop.stop > /tmp/loop.out 2>/tmp/loop.err &)")
	eventually(t, "the packet loop to open its socket", func() bool {
		out, _ := sh(t, ct, "cat /tmp/loop.err /tmp/loop.out")
		if strings.Contains(out, `"blocked"`) {
			t.Fatalf("packet loop: %s", out)
		}
		return strings.Contains(out, "ready")
	})
	return func() string {
		sh(t, ct, "touch /tmp/loop.stop")
		var out string
		eventually(t, "the packet loop to stop", func() bool {
			out, _ = sh(t, ct, "cat /tmp/loop.out")
			return strings.Contains(out, "packet-loop")
		})
		return out
	}
}

func attachment(t *testing.T, cl *Clawd, name string) daemon.AttachmentInfo {
	t.Helper()
	for _, a := range cl.List() {
		if a.Container.Name == name {
			return a
		}
	}
	t.Fatalf("%s is not in clawd ls: %+v", name, cl.List())
	return daemon.AttachmentInfo{}
}

func ifaceOf(a daemon.AttachmentInfo, name string) (enforce.Iface, bool) {
	for _, i := range a.Layers.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return enforce.Iface{}, false
}

// fromContainer returns the upstream's records that came from ip directly.
func fromContainer(up *harness.Upstream, ip string) []string {
	var out []string
	for _, s := range up.Requests() {
		if strings.HasPrefix(s.Remote, ip+":") || strings.HasPrefix(s.Remote, "["+ip+"]:") {
			out = append(out, s.Path)
		}
	}
	return out
}

// layoutCheck is the common part: control, attach, coverage of eth0 as
// want, the bypass program's vectors, no frame out.
func layoutCheck(t *testing.T, cl *Clawd, up *harness.Upstream, ct *harness.Container, via string) daemon.AttachmentInfo {
	t.Helper()
	up.Reset()
	if out, code := wget(t, ct, upURL("/layout-before")); code != 0 {
		t.Fatalf("control: direct wget before attach failed: %s", out)
	}
	if got := fromContainer(up, ct.IPv4.String()); len(got) != 1 {
		t.Fatalf("control: the upstream saw %v from %s before attach", got, ct.IPv4)
	}
	stop := bypassLoop(t, ct)
	eventually(t, "control: bypass frames to reach the upstream before attach", func() bool {
		return strings.Contains(strings.Join(escaped(up), "\n"), "bypass-packet-loop")
	})
	cl.MustCLI("attach", ct.Name)
	time.Sleep(300 * time.Millisecond) // frames in flight at attach
	up.Reset()
	a := attachment(t, cl, ct.Name)
	if i, ok := ifaceOf(a, "eth0"); !ok || !i.Covered || i.Via != via {
		t.Fatalf("eth0 coverage = %+v, want covered via %s (all: %+v)", i, via, a.Layers.Interfaces)
	}
	if table := cl.MustCLI("ls"); !strings.Contains(table, "eth0:"+via) {
		t.Errorf("clawd ls does not show eth0's coverage:\n%s", table)
	}
	if out, _ := cl.CLI("doctor", "--config", cl.Config); !strings.Contains(out, "coverage "+ct.Name) || !strings.Contains(out, "eth0") {
		t.Errorf("clawd doctor does not show the coverage of %s:\n%s", ct.Name, out)
	}
	res := runBypass(t, ct, "-only", "tcp4,udp-sendto,packet-raw,packet-qdisc-bypass")
	if r := res["tcp4"]; r.Result != "connected" || !strings.Contains(r.Detail, "200") {
		t.Errorf("tcp4 after attach: %+v, want a 200 through clawd", r)
	}
	if r := res["packet-qdisc-bypass"]; r.Result != "blocked" {
		t.Errorf("PACKET_QDISC_BYPASS on a socket opened after attach: %+v, want refused", r)
	}
	time.Sleep(time.Second) // the loop keeps sending
	loop := stop()
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED: %s", e)
	}
	if got := fromContainer(up, ct.IPv4.String()); len(got) != 0 {
		t.Errorf("the upstream saw requests from the container's own address after attach: %v", got)
	}
	if c := attachment(t, cl, ct.Name).Counters; c.IfDropped == 0 {
		t.Errorf("no frame was dropped by the tcx layer (loop: %s): %+v", loop, c)
	}
	return a
}

func TestLayoutVethPeerInAnotherNetns(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	// The veth's far end sits in the upstream's netns, not the host's:
	// the container reaches the upstream without the host routing.
	ct := ctd.Run(t, "farpeer", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}, PeerNetns: up.Netns})
	a := layoutCheck(t, cl, up, ct, enforce.ViaPeer)
	if i, _ := ifaceOf(a, "eth0"); strings.Contains(i.How, "host netns") || !strings.Contains(i.How, "netns id") {
		t.Errorf("eth0's peer is not in the host netns: %+v", i)
	}
	if len(a.Layers.TCXPeers) != 1 {
		t.Errorf("layers = %+v", a.Layers)
	}
}

func testDockerLowerDevice(t *testing.T, driver string) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	dk := harness.SharedDocker(t)
	cl := StartClawd(t, ctd, ClawdOpts{DockerHost: dk.Host})
	net := dk.Network(t, up, driver)
	ct := dk.Run(t, "d"+driver, harness.RunOpts{DockerNetwork: net, Files: map[string]string{bypassBin(t): "/bypass"}})
	a := layoutCheck(t, cl, up, ct, enforce.ViaLower)
	if i, _ := ifaceOf(a, "eth0"); i.Kind != driver || !strings.Contains(i.How, "host netns") {
		t.Errorf("eth0 = %+v, want a %s on a lower device in the host netns", i, driver)
	}
	if len(a.Layers.TCXLower) != 2 {
		t.Errorf("layers = %+v, want egress and ingress on the lower device", a.Layers)
	}
	// The lower device is shared: a container on the same network that
	// is not attached still gets out (only the attached cgroup's frames
	// are dropped there).
	other := dk.Run(t, "d"+driver+"-bystander", harness.RunOpts{DockerNetwork: net})
	up.Reset()
	if out, code := wget(t, other, upURL("/bystander")); code != 0 {
		t.Fatalf("bystander on the same %s network: %s", driver, out)
	}
	if got := fromContainer(up, other.IPv4.String()); len(got) != 1 {
		t.Errorf("bystander's request seen from %v", got)
	}
}

func TestLayoutDockerMacvlan(t *testing.T) { testDockerLowerDevice(t, "macvlan") }

func TestLayoutDockerIpvlan(t *testing.T) {
	has, err := harness.KernelHasLinkKind("ipvlan")
	if err != nil {
		t.Fatal(err)
	}
	if !has {
		t.Skip("this kernel cannot create ipvlan links (CONFIG_IPVLAN is not set): the Docker ipvlan driver cannot run here")
	}
	testDockerLowerDevice(t, "ipvlan")
}

// An agent with CAP_NET_ADMIN adds interfaces after attach. Those whose far
// side is the container netns itself (a macvlan on eth0, a veth pair, a
// tun it holds) need nothing; one whose far side is outside (a macvlan on a
// host device, reached by the host's netns id) is covered when the link
// event arrives: the window until then is measured and must be far shorter
// than a sweep. A veth a CNI plugin adds later is covered too.
func TestInterfacesAddedAfterAttach(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{})
	ct := ctd.Run(t, "netadmin", harness.RunOpts{
		Files:   map[string]string{bypassBin(t): "/bypass"},
		Caps:    []string{"CAP_NET_ADMIN", "CAP_NET_RAW"},
		Devices: []string{"/dev/net/tun"},
	})
	host, err := netlink.LinkByName(up.HostVeth)
	if err != nil {
		t.Fatal(err)
	}
	upMAC, err := up.MAC()
	if err != nil {
		t.Fatal(err)
	}
	hostArgs := []string{"-host-ifindex", strconv.Itoa(host.Attrs().Index), "-host-dst-mac", upMAC}

	// Control: without clawd, a macvlan on the host's upstream link gets
	// frames out.
	up.Reset()
	r := runBypass(t, ct, append([]string{"-only", "macvlan-host", "-send-for", "100ms"}, hostArgs...)...)["macvlan-host"]
	if r.Result != "sent" {
		t.Fatalf("control: macvlan-host: %+v", r)
	}
	eventually(t, "control: frames on a macvlan of a host device to escape", func() bool {
		return strings.Contains(strings.Join(escaped(up), "\n"), "bypass-macvlan-host")
	})

	cl.MustCLI("attach", ct.Name)
	up.Reset()
	res := runBypass(t, ct, "-only", "macvlan-packet,veth-pair-packet,tun-packet")
	for _, v := range []string{"macvlan-packet", "veth-pair-packet", "tun-packet"} {
		if res[v].Result == "" {
			t.Errorf("%s: no result", v)
		}
	}
	for _, e := range escaped(up) {
		t.Errorf("ESCAPED through an interface inside the container netns: %s", e)
	}
	// While the agent holds its tun, clawd reports it covered by holder.
	sh(t, ct, "rm -f /tmp/tun.out; (/bypass -only tun-packet -hold 4s > /tmp/tun.out 2>&1 &)")
	eventually(t, "the agent's tun in clawd ls, covered by its holder", func() bool {
		i, ok := ifaceOf(attachment(t, cl, ct.Name), "bptun")
		return ok && i.Covered && i.Via == enforce.ViaTun
	})

	// A macvlan on a host device: covered on the link event.
	up.Reset()
	res = runBypass(t, ct, append([]string{"-only", "macvlan-host", "-send-for", "600ms"}, hostArgs...)...)
	if r := res["macvlan-host"]; r.Result != "sent" {
		t.Fatalf("macvlan-host: %+v", r)
	}
	time.Sleep(300 * time.Millisecond)
	re := regexp.MustCompile(`bypass-macvlan-host-(\d+)-at-(\d+)us`)
	var window time.Duration
	n := 0
	for _, e := range escaped(up) {
		if m := re.FindStringSubmatch(e); m != nil {
			n++
			us, _ := strconv.Atoi(m[2])
			window = max(window, time.Duration(us)*time.Microsecond)
		} else {
			t.Errorf("ESCAPED: %s", e)
		}
	}
	t.Logf("macvlan on a host device, created by the agent after attach: %d frames got out before clawd covered it, the last %v after creation (%s)", n, window, res["macvlan-host"].Detail)
	if window > 200*time.Millisecond {
		t.Errorf("the window before a new interface is covered was %v: far longer than a link event and an attach", window)
	}
	found := false
	for _, l := range cl.LogLines() {
		if l["msg"] == "new interfaces covered" && fmt.Sprint(l["on"]) == "link event" {
			found = true
		}
	}
	if !found {
		t.Errorf("no 'new interfaces covered' log line from a link event: the sweep did it, not the watcher")
	}

	// A second network added by the host (a CNI plugin), peer in the
	// host netns.
	hostName := "cl2" + ct.Name[len(ct.Name)-8:]
	ct.AddHostVeth(t, hostName, "eth1")
	eventually(t, "eth1 covered through its host-side peer", func() bool {
		i, ok := ifaceOf(attachment(t, cl, ct.Name), "eth1")
		return ok && i.Covered && i.Via == enforce.ViaPeer && strings.Contains(i.How, "host netns")
	})
	if a := attachment(t, cl, ct.Name); a.State != daemon.StateEnforced {
		t.Errorf("state %s (%s), want enforced", a.State, a.Reason)
	}
}

// An interface clawd cannot cover (a tap whose queue a host process holds,
// as with slirp4netns or pasta): a container that cannot hold CAP_NET_RAW is
// attached anyway (no packet socket can use it), one that can is refused
// with the interface named and the fixes. A process with CAP_NET_RAW that
// joins later (docker exec --privileged) gets the container cut off at the
// next sweep, and thawed once it is gone.
func TestUncoveredLayoutNeedsNoNetRaw(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	dk := harness.SharedDocker(t)
	cl := StartClawd(t, ctd, ClawdOpts{DockerHost: dk.Host})
	risky := dk.Run(t, "tapnetraw", harness.RunOpts{})
	safe := dk.Run(t, "tapnonetraw", harness.RunOpts{CapDrop: []string{"CAP_NET_RAW"}})
	risky.HostHeldTap(t, "tap0")
	safe.HostHeldTap(t, "tap0")

	out, err := cl.CLI("attach", risky.Name)
	if err == nil {
		t.Fatalf("a container that can hold CAP_NET_RAW on an uncovered tap was attached:\n%s", out)
	}
	for _, want := range []string{"refusing to attach " + risky.Name, "tap0", "held by processes outside the container", "CAP_NET_RAW", "--cap-drop NET_RAW", "BPF LSM"} {
		if !strings.Contains(out, want) {
			t.Errorf("refusal does not say %q:\n%s", want, out)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(cl.PinRoot, "att")); len(ents) != 0 {
		t.Errorf("a refused attach left pins: %v", ents)
	}

	cl.MustCLI("attach", safe.Name)
	a := attachment(t, cl, safe.Name)
	if i, ok := ifaceOf(a, "tap0"); !ok || i.Covered {
		t.Errorf("tap0 = %+v, want reported as not covered", i)
	}
	if table := cl.MustCLI("ls"); !strings.Contains(table, "tap0:NOT-COVERED") {
		t.Errorf("clawd ls:\n%s", table)
	}
	if out, _ := cl.CLI("doctor", "--config", cl.Config); !strings.Contains(out, "tap0 (tuntap) NOT covered") {
		t.Errorf("clawd doctor:\n%s", out)
	}

	// A process that holds CAP_NET_RAW joins the cgroup later (as
	// `docker exec --privileged` would; this host's runc cannot apply
	// every capability, so a root process is started straight into it).
	cg := attachment(t, cl, safe.Name).Cgroup
	fd, err := unix.Open(cg, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	joiner := exec.Command("sleep", "31.5")
	joiner.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	err = joiner.Start()
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { joiner.Process.Kill(); joiner.Wait() })
	eventually(t, "the container to be cut off", func() bool { return attachment(t, cl, safe.Name).State == daemon.StateCutOff })
	if b, _ := os.ReadFile(cg + "/cgroup.freeze"); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("cut off, but cgroup.freeze = %q", b)
	}
	if a := attachment(t, cl, safe.Name); !strings.Contains(a.Reason, "tap0") || !strings.Contains(a.Reason, fmt.Sprint(joiner.Process.Pid)) {
		t.Errorf("cut-off reason does not name the interface and the process: %q", a.Reason)
	}
	joiner.Process.Kill() // (SIGKILL reaches a frozen process)
	joiner.Wait()
	eventually(t, "the container to be thawed once the privileged process is gone", func() bool {
		return attachment(t, cl, safe.Name).State == daemon.StateEnforced
	})
	if b, _ := os.ReadFile(cg + "/cgroup.freeze"); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("thawed, but cgroup.freeze = %q", b)
	}
	found := 0
	for _, e := range cl.AuditEntries() {
		if e.Event == "cut_off" && e.Container == safe.Name {
			found++
		}
	}
	if found != 2 {
		t.Errorf("want a cut_off audit line for the freeze and one for the thaw, got %d", found)
	}
}
