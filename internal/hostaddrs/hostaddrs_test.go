package hostaddrs

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// waitLimit only guards against a hung test; no assertion depends on it.
const waitLimit = 10 * time.Second

// A watched set sees an address the moment its notification is read, and
// forgets it when it goes; the zero set answers from a fresh dump. The
// address lives on a veth pair of the test's own, left down: no packet
// is sent.
func TestWatchFollowsAddressChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (netlink: add an interface)")
	}
	name := "clawdha0"
	if old, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(old)
	}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netlink.LinkDel(link) })

	var s Set
	changed := make(chan struct{}, 64)
	s.OnChange(func() { changed <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx, func(err error) { t.Log("watch:", err) })
	wait := func() {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(waitLimit):
			t.Fatal("no change notification")
		}
	}
	wait() // the first dump

	for _, cidr := range []string{"203.0.113.250/32", "2001:db8::250/128"} {
		a := netip.MustParsePrefix(cidr).Addr()
		var zero Set
		if s.Has(a) || zero.Has(a) {
			t.Fatalf("%s is the host's before it was added", a)
		}
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatal(err)
		}
		for !s.Has(a) {
			wait()
		}
		if !zero.Has(a) {
			t.Errorf("the unwatched set does not see %s", a)
		}
		if !s.Has(netip.AddrFrom16(a.As16())) && a.Is4() {
			t.Errorf("the IPv4-mapped form of %s is not the host's", a)
		}
		if err := netlink.AddrDel(link, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatal(err)
		}
		for s.Has(a) {
			wait()
		}
	}
}
