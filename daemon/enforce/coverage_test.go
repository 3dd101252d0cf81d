package enforce

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clawd-dev/clawd/daemon/nsenter"
)

func TestMain(m *testing.M) {
	if os.Getenv("CLAWD_TEST_SENDER") != "" {
		sender()
		return
	}
	if a := os.Getenv("CLAWD_TEST_CHURN"); a != "" {
		churn(a)
		return
	}
	os.Exit(m.Run())
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		f    linkFacts
		far  far
		note bool
	}{
		{linkFacts{Kind: "veth", NsID: 0}, farPeer, false},
		{linkFacts{Kind: "veth", NsID: -1}, farInside, false},
		{linkFacts{Kind: "macvlan", NsID: 0, Local: true}, farLower, true},
		{linkFacts{Kind: "macvlan", NsID: 0}, farLower, false},
		{linkFacts{Kind: "macvlan", NsID: -1, Local: true}, farInside, false},
		{linkFacts{Kind: "ipvlan", NsID: 2, Local: true}, farLower, true},
		{linkFacts{Kind: "vlan", NsID: 0}, farLower, false},
		{linkFacts{Kind: "vxlan", NsID: -1}, farInside, false},
		{linkFacts{Kind: "vxlan", NsID: 0}, farNone, false},
		{linkFacts{Kind: "bridge", NsID: -1}, farInside, false},
		{linkFacts{Kind: "dummy", NsID: -1}, farInside, false},
		{linkFacts{Kind: "tun", NsID: -1}, farTun, false},
		{linkFacts{Kind: "tuntap", NsID: -1}, farTun, false},
		{linkFacts{Kind: "device", NsID: -1}, farNone, false},
		{linkFacts{Kind: "netkit", NsID: 0}, farNone, false},
		{linkFacts{Kind: "wireguard", NsID: -1}, farNone, false},
		{linkFacts{Kind: "openvswitch", NsID: -1}, farNone, false},
	} {
		p := classify(tc.f)
		if p.far != tc.far || (p.note != "") != tc.note {
			t.Errorf("classify(%+v) = %+v, want far %d, note %v", tc.f, p, tc.far, tc.note)
		}
		if p.far == farNone && p.text == "" {
			t.Errorf("classify(%+v): an uncovered interface must say why", tc.f)
		}
	}
}

// sender is the test binary re-executed in the testbed's cgroup: it opens a
// packet socket in CLAWD_TEST_NETNS with PACKET_QDISC_BYPASS (which skips
// tcx egress), says "ready", and on each line "send IFACE DSTMAC DSTIP"
// on stdin sends UDP frames to DSTIP:9999 on IFACE. It prepares the socket
// before attach, as a hostile agent would.
func sender() {
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(os.Getenv("CLAWD_TEST_NETNS"))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	if err := netns.Set(ns); err != nil {
		fmt.Println("error", err)
		return
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		fmt.Println("error", err)
		return
	}
	bypass := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	fmt.Println("ready", bypass)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "send" {
			continue
		}
		ifc, err1 := net.InterfaceByName(f[1])
		dst, err2 := net.ParseMAC(f[2])
		if err1 != nil || err2 != nil {
			fmt.Println("error", err1, err2)
			continue
		}
		frame := ethUDP(ifc.HardwareAddr, dst, netip.MustParseAddr("203.0.113.200"), netip.MustParseAddr(f[3]), 9999, []byte("clawd-test-marker"))
		sa := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Protocol: htons(unix.ETH_P_IP), Halen: 6}
		copy(sa.Addr[:], dst)
		var serr error
		for i := 0; i < 3; i++ {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				serr = err
			}
		}
		fmt.Println("sent", serr)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func ethUDP(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	b := make([]byte, 14+20+8+len(payload))
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_IP)
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(payload)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:12], ^uint16(sum))
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:2], 40000)
	binary.BigEndian.PutUint16(u[2:4], port)
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	copy(u[8:], payload)
	return b
}

func sh(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", c, err, out)
		}
	}
}

func mac(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show %s: %v: %s", dev, err, out)
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC for %s: %s", dev, out)
	return ""
}

// A veth whose peer lives in another (non-host) netns, and a macvlan whose
// lower device does: a packet socket that set PACKET_QDISC_BYPASS before
// attach sends frames past the container-side tcx egress program, and the
// programs clawd puts behind those interfaces must stop them. The same
// frames reach the far side before attach (so the test can fail).
func TestCoverageBehindVethPeerAndLowerDevice(t *testing.T) {
	tb := newTestbed(t)
	e := newEnforcer(t, tb)
	id := filepath.Base(tb.cgroup)[len("clawd-test-"):]
	far, wire := "clawd-tf-"+id, "clawd-tw-"+id
	for _, n := range []string{far, wire} {
		sh(t, "ip netns add "+n, "ip -n "+n+" link set lo up")
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	// c0 (container) <-> p0 (wire netns, 203.0.113.201): the veth case.
	// mv0 (container), macvlan on low (far netns) <-> w0 (wire netns,
	// 203.0.113.202): the lower-device case.
	sh(t,
		"ip -n "+tb.ns+" link add c0 type veth peer name p0 netns "+wire,
		"ip -n "+wire+" addr add 203.0.113.201/24 dev p0", "ip -n "+wire+" link set p0 up", "ip -n "+tb.ns+" link set c0 up",
		"ip -n "+far+" link add low type veth peer name w0 netns "+wire,
		"ip -n "+wire+" addr add 203.0.113.202/24 dev w0", "ip -n "+wire+" link set w0 up", "ip -n "+far+" link set low up",
		"ip -n "+far+" link add mv0 link low type macvlan mode bridge", "ip -n "+far+" link set mv0 netns "+tb.ns,
		"ip -n "+tb.ns+" link set mv0 up",
	)
	var got atomic.Int32
	pc := func() net.PacketConn {
		var pc net.PacketConn
		if err := nsenter.Do("/run/netns/"+wire, func() (err error) { pc, err = net.ListenPacket("udp4", ":9999"); return }); err != nil {
			t.Fatal(err)
		}
		return pc
	}()
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "clawd-test-marker") {
				got.Add(1)
			}
		}
	}()
	p0, w0 := mac(t, wire, "p0"), mac(t, wire, "w0")

	start := func() (*exec.Cmd, *bufio.Scanner, func(string)) {
		fd, err := unix.Open(tb.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), "CLAWD_TEST_SENDER=1", "CLAWD_TEST_NETNS="+tb.nsPath)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(); cmd.Wait() })
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != "ready <nil>" {
			t.Fatalf("sender: %q", sc.Text())
		}
		send := func(line string) {
			fmt.Fprintln(in, line)
			// A drop behind the driver may come back as ENOBUFS.
			if !sc.Scan() || (sc.Text() != "sent <nil>" && sc.Text() != "sent no buffer space available") {
				t.Fatalf("sender after %q: %q", line, sc.Text())
			}
		}
		return cmd, sc, send
	}
	waitGot := func(want int32) {
		deadline := time.Now().Add(5 * time.Second)
		for got.Load() < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Control: unattached, both ways out work.
	_, _, send := start()
	send("send c0 " + p0 + " 203.0.113.201")
	send("send mv0 " + w0 + " 203.0.113.202")
	waitGot(6)
	if n := got.Load(); n != 6 {
		t.Fatalf("control: %d of 6 frames arrived without clawd", n)
	}
	got.Store(0)

	// A second sender prepares its bypass socket now, before attach.
	_, _, send = start()
	l, err := e.Attach(Params{ID: "cov", Cgroup: tb.cgroup, Netns: tb.nsPath, ProxyPort: 1, DNSPort: 2})
	if err != nil {
		t.Fatal(err)
	}
	cov := map[string]Iface{}
	for _, i := range l.Interfaces {
		cov[i.Name] = i
	}
	if i := cov["c0"]; !i.Covered || i.Via != ViaPeer || strings.Contains(i.How, "host netns") {
		t.Errorf("c0: %+v, want covered through its peer in the other netns", i)
	}
	if i := cov["mv0"]; !i.Covered || i.Via != ViaLower || i.Note == "" {
		t.Errorf("mv0: %+v, want covered on its lower device, with the bridge-mode note", i)
	}
	if len(l.TCXPeers) != 1 || len(l.TCXLower) != 2 {
		t.Errorf("layers = %+v", l)
	}
	before, _ := e.Counters(mustCgroupID(t, tb.cgroup))
	send("send c0 " + p0 + " 203.0.113.201")
	send("send mv0 " + w0 + " 203.0.113.202")
	time.Sleep(500 * time.Millisecond)
	if n := got.Load(); n != 0 {
		t.Errorf("ESCAPED: %d bypass frames reached the far side after attach", n)
	}
	after, _ := e.Counters(mustCgroupID(t, tb.cgroup))
	if after.IfDropped < before.IfDropped+6 {
		t.Errorf("if_dropped %d -> %d: the far-side programs did not drop the 6 frames", before.IfDropped, after.IfDropped)
	}
	// A socket opened after attach cannot even ask for the bypass.
	cmd := exec.Command("/proc/self/exe")
	fd, _ := unix.Open(tb.cgroup, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	cmd.Env = append(os.Environ(), "CLAWD_TEST_SENDER=1", "CLAWD_TEST_NETNS="+tb.nsPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	out, _ := cmd.Output()
	unix.Close(fd)
	if !strings.Contains(string(out), "ready operation not permitted") {
		t.Errorf("PACKET_QDISC_BYPASS after attach: %q, want EPERM", out)
	}
	// Frames of other cgroups pass the lower device: only the
	// container's are dropped there.
	sh(t, "ip -n "+far+" link add mvx link low type macvlan mode bridge", "ip -n "+far+" link set mvx up",
		"ip -n "+far+" addr add 203.0.113.203/24 dev mvx")
	if err := nsenter.Do("/run/netns/"+far, func() error {
		c, err := net.Dial("udp4", "203.0.113.202:9999")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("clawd-test-marker from a bystander"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitGot(1)
	if n := got.Load(); n != 1 {
		t.Errorf("a bystander's datagram through the same lower device: %d arrived, want 1", n)
	}
	// Removing the macvlan removes its programs from the lower device.
	sh(t, "ip -n "+tb.ns+" link del mv0")
	ifs, _, err := e.RefreshTCX(Params{ID: "cov", Cgroup: tb.cgroup, Netns: tb.nsPath, ProxyPort: 1, DNSPort: 2})
	if err != nil || len(ifs) != 1 || ifs[0].Name != "c0" {
		t.Fatalf("refresh after deleting mv0: %+v, %v", ifs, err)
	}
	if l := e.Layers("cov"); len(l.TCXLower) != 0 {
		t.Errorf("lower-device pins left after mv0 went: %+v", l)
	}
	if err := e.Detach("cov", mustCgroupID(t, tb.cgroup)); err != nil {
		t.Fatal(err)
	}
}
