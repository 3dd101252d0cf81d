package daemon

import (
	"net/netip"
	"testing"
)

func TestCtrAddrs(t *testing.T) {
	c := newCtrAddrs()
	a, b := netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("2001:db8:c:1::2")
	c.set("pod-app", []netip.Addr{a, b})
	c.set("pod-sidecar", []netip.Addr{a, b}) // same namespace
	for _, q := range []string{"203.0.113.2", "::ffff:203.0.113.2", "2001:db8:c:1::2", "2001:db8:c:1::2%eth0"} {
		if !c.Has(netip.MustParseAddr(q)) {
			t.Errorf("Has(%s) = false", q)
		}
	}
	if c.Has(netip.MustParseAddr("203.0.113.6")) {
		t.Error("unknown address known")
	}
	c.remove("pod-app")
	if !c.Has(a) {
		t.Error("address of the remaining pod container forgotten")
	}
	c.set("pod-sidecar", []netip.Addr{b}) // its namespace lost an address
	if c.Has(a) || !c.Has(b) {
		t.Errorf("after set: Has(a)=%v Has(b)=%v", c.Has(a), c.Has(b))
	}
	c.remove("pod-sidecar")
	if c.Has(b) || len(c.count) != 0 || len(c.byID) != 0 {
		t.Errorf("left over: %v %v", c.count, c.byID)
	}
}
