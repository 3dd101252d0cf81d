package addrclass

import (
	"math/rand"
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	cases := []struct {
		addr string
		want Class
	}{
		{"203.0.113.7", Public},
		{"198.51.100.10", Public},
		{"2001:db8::10", Public},
		{"0.0.0.0", Unspecified},
		{"::", Unspecified},
		{"127.0.0.1", Loopback},
		{"127.255.0.9", Loopback},
		{"::1", Loopback},
		{"::ffff:127.0.0.1", Loopback},
		{"169.254.169.254", LinkLocal},
		{"::ffff:169.254.169.254", LinkLocal},
		{"fe80::1", LinkLocal},
		{"fe80::1%eth0", LinkLocal},
		{"10.1.2.3", Private},
		{"172.16.0.1", Private},
		{"172.31.255.255", Private},
		{"192.168.1.1", Private},
		{"fd00::1", Private},
		{"fc00::1", Private},
		{"100.64.0.1", Shared},
		{"224.0.0.1", LinkLocal},
		{"239.1.2.3", Multicast},
		{"ff02::1", LinkLocal},
		{"ff05::1", Multicast},
		{"0.1.2.3", Reserved},
		{"255.255.255.255", Reserved},
		// IPv6 forms carrying a special IPv4 address.
		{"64:ff9b::a9fe:a9fe", LinkLocal},       // NAT64 169.254.169.254
		{"64:ff9b::7f00:1", Loopback},           // NAT64 127.0.0.1
		{"64:ff9b::cb00:7107", Public},          // NAT64 of a public address
		{"64:ff9b:1:a9fe:a9:fe00::", LinkLocal}, // local-use NAT64 169.254.169.254
		{"2002:a9fe:a9fe::1", LinkLocal},        // 6to4
		{"2002:0a00:0001::", Private},           // 6to4 10.0.0.1
		{"2002:cb00:7107::1", Public},           // 6to4 of a public address
		{"::a9fe:a9fe", LinkLocal},              // v4-compatible
		{"::7f00:1", Loopback},
		{"2001:0:1:2:3:4:f5ff:fefe", Private}, // Teredo, client 10.0.1.1 obfuscated
		{"100::1", Reserved},
	}
	for _, c := range cases {
		if got := Of(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Of(%s) = %q, want %q", c.addr, got, c.want)
		}
	}
	if Of(netip.Addr{}) != Reserved {
		t.Error("the zero address must fail closed")
	}
}

func TestExtra(t *testing.T) {
	host := netip.MustParseAddr("198.51.100.1")
	ctr := netip.MustParseAddr("203.0.113.6")
	x := Extra{
		Host:      func(a netip.Addr) bool { return a == host },
		Container: func(a netip.Addr) bool { return a == ctr },
	}
	for addr, want := range map[string]Class{
		"198.51.100.1":        Host,
		"::ffff:198.51.100.1": Host,
		"64:ff9b::c633:6401":  Host, // NAT64 form of the host's address
		"2002:c633:6401::":    Host, // 6to4 form
		"203.0.113.6":         Container,
		"198.51.100.10":       Public,
		"10.0.0.1":            Private,
	} {
		if got := x.Classify(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Classify(%s) = %q, want %q", addr, got, want)
		}
	}
	if got := (Extra{}).Classify(host); got != Public {
		t.Errorf("no extras: %q", got)
	}
}

// Every address outside SpecialPrefixes is Public: the list is a superset,
// so excluding it whole leaves no special address behind.
func TestSpecialPrefixesCoverEveryClass(t *testing.T) {
	in := func(a netip.Addr) bool {
		for _, p := range SpecialPrefixes() {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewSource(1))
	check := func(a netip.Addr) {
		if !in(a) && Of(a) != Public {
			t.Fatalf("%s is %s but outside SpecialPrefixes", a, Of(a))
		}
	}
	for i := 0; i < 200000; i++ {
		var b4 [4]byte
		r.Read(b4[:])
		check(netip.AddrFrom4(b4))
		var b16 [16]byte
		r.Read(b16[:])
		// Bias towards the interesting low and translated ranges.
		switch i % 6 {
		case 0:
			copy(b16[:12], make([]byte, 12))
		case 1:
			b16[0], b16[1] = 0x20, 0x02
		case 2:
			copy(b16[:4], []byte{0x20, 0x01, 0, 0})
		case 3:
			copy(b16[:6], []byte{0, 0x64, 0xff, 0x9b, 0, 1})
		case 4:
			b16[0] = 0xfe
		}
		check(netip.AddrFrom16(b16))
	}
	for _, s := range []string{"127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fe80::1", "ff02::1", "0.0.0.0", "255.255.255.255", "100.64.0.1", "10.1.2.3", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "2002:7f00:1::"} {
		if !in(netip.MustParseAddr(s)) {
			t.Errorf("%s not in SpecialPrefixes", s)
		}
	}
}
