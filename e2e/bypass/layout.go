package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Vectors for network layouts and interfaces added after attach.

var (
	waitRun   = flag.String("wait", "", "wait for this file to appear before running the vectors")
	hostIdx   = flag.Int("host-ifindex", 0, "macvlan-host vector: ifindex of a device in the host netns")
	hostMAC   = flag.String("host-dst-mac", "", "macvlan-host vector: destination MAC for frames on that device")
	sendFor   = flag.Duration("send-for", 400*time.Millisecond, "macvlan-host vector: how long to send frames")
	holdFor   = flag.Duration("hold", 0, "tun-packet vector: keep the device this long")
	loopStop  = flag.String("packet-loop", "", "packet-loop mode: open a packet socket with PACKET_QDISC_BYPASS now, send a frame every 20ms until this file appears")
	loopEvery = 20 * time.Millisecond
)

func waitFor(file string) {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(file); err == nil {
			return
		}
	}
	fmt.Fprintln(os.Stderr, "gave up waiting for", file)
	os.Exit(3)
}

// packetLoop prepares a bypass packet socket (before attach: after it,
// setsockopt refuses the option) and sends numbered frames until stop
// appears. Frames that reach the upstream say "bypass-packet-loop-N".
func packetLoop(up netip.Addr, stop string) {
	send, _, err := rawSender(*iface, *gwMAC, up, true)
	if err != nil {
		report("packet-loop", "blocked", err.Error())
		return
	}
	fmt.Fprintln(os.Stderr, "ready")
	n, fails := 0, 0
	for {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		n++
		if send(fmt.Sprintf("bypass-packet-loop-%d", n)) != nil {
			fails++
		}
		time.Sleep(loopEvery)
	}
	report("packet-loop", "sent", fmt.Sprintf("%d frames, %d send errors", n, fails))
}

// bpfAttach tries to load a cgroup program of its own and attach it to
// its cgroup, over clawd's: it needs CAP_BPF (or CAP_SYS_ADMIN) in the
// host's user namespace, which a container does not have.
func bpfAttach(name string) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSockAddr, AttachType: ebpf.AttachCGroupInet4Connect, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		report(name, "blocked", "load: "+err.Error())
		return
	}
	defer prog.Close()
	lk, err := link.AttachCgroup(link.CgroupOptions{Path: "/sys/fs/cgroup", Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		report(name, "blocked", "loaded, attach: "+err.Error())
		return
	}
	lk.Close()
	report(name, "escaped", "attached a connect4 program of its own")
}

// macvlanHost uses CAP_NET_ADMIN to create a macvlan, in the container's
// netns, on a device of the host's netns (IFLA_LINK_NETNSID: the host's
// nsid is what eth0 reports as its link netns), up at once, and sends
// numbered frames on it for a while. Until clawd covers the new interface
// they leave; the test checks that the window closes.
func macvlanHost(name string, up netip.Addr) {
	eth, err := netlink.LinkByName(*iface)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	nsid := eth.Attrs().NetNsID
	if nsid < 0 || *hostIdx == 0 {
		report(name, "blocked", fmt.Sprintf("no host netns id (%d) or -host-ifindex", nsid))
		return
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Flags, msg.Change = unix.IFF_UP, unix.IFF_UP
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("bpmh")))
	req.AddData(nl.NewRtAttr(unix.IFLA_LINK, nl.Uint32Attr(uint32(*hostIdx))))
	req.AddData(nl.NewRtAttr(unix.IFLA_LINK_NETNSID, nl.Uint32Attr(uint32(nsid))))
	li := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	li.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("macvlan"))
	req.AddData(li)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		report(name, "blocked", "create a macvlan on host ifindex "+fmt.Sprint(*hostIdx)+": "+err.Error())
		return
	}
	defer func() {
		if l, err := netlink.LinkByName("bpmh"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	// Frames on the plain path (the bypass option is refused after attach):
	// they cross the new interface's tcx egress once clawd attached it.
	send, closeFn, err := rawSender("bpmh", *hostMAC, up, false)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer closeFn()
	start := time.Now()
	n := 0
	for time.Since(start) < *sendFor {
		n++
		send(fmt.Sprintf("bypass-%s-%d-at-%dus", name, n, time.Since(start).Microseconds()))
		time.Sleep(time.Millisecond)
	}
	report(name, "sent", fmt.Sprintf("%d frames in %v on a macvlan of host ifindex %d", n, *sendFor, *hostIdx))
}

// vethPair creates a veth pair inside the container's netns and sends
// frames on one end: they arrive at the other end, in the same netns.
func vethPair(name string, up netip.Addr) {
	la := netlink.NewLinkAttrs()
	la.Name = "bpv0"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "bpv1"}); err != nil {
		report(name, "blocked", "create veth: "+err.Error())
		return
	}
	defer func() {
		if l, err := netlink.LinkByName("bpv0"); err == nil {
			netlink.LinkDel(l)
		}
	}()
	for _, n := range []string{"bpv0", "bpv1"} {
		if l, err := netlink.LinkByName(n); err == nil {
			netlink.LinkSetUp(l)
		}
	}
	time.Sleep(*holdFor)
	old := *iface
	*iface = "bpv0"
	packet(name, up, false)
	*iface = old
}

// tunPacket opens /dev/net/tun, creates a tun device, writes an IP packet
// for the upstream into it (the kernel receives it on the tun and would
// have to route it out), sends packet-socket frames on it (they come back
// to this process) and keeps it for -hold.
func tunPacket(name string, up netip.Addr) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	defer f.Close()
	ifr, _ := unix.NewIfreq("bptun")
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNSETIFF, ifr); err != nil {
		report(name, "blocked", "TUNSETIFF: "+err.Error())
		return
	}
	l, err := netlink.LinkByName("bptun")
	if err != nil {
		report(name, "blocked", err.Error())
		return
	}
	netlink.LinkSetUp(l)
	pkt := ethUDP(nil, nil, netip.MustParseAddr("203.0.113.251"), up, 40000, uint16(*udpP), []byte("bypass-"+name))[14:]
	_, werr := f.Write(pkt)
	var sent []string
	if fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_IP))); err == nil {
		sa := &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Protocol: htons(unix.ETH_P_IP)}
		if err := unix.Sendto(fd, pkt, 0, sa); err == nil {
			sent = append(sent, "packet socket frame sent")
		}
		unix.Close(fd)
	}
	time.Sleep(*holdFor)
	report(name, "sent", fmt.Sprintf("wrote into the tun (%v); %s", werr, strings.Join(sent, ", ")))
}
