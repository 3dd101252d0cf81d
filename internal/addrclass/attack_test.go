package addrclass

import (
	"net/netip"
	"testing"
)

// NAT64/SIIT forms the classifier reads as public although a translator
// on the path turns them into special IPv4 destinations:
//   - RFC 6052 lets a network-specific prefix carved from the local-use
//     64:ff9b:1::/48 (RFC 8215) be a /96 (or /56, /64): the IPv4 address then
//     sits in the last 32 bits, not where a /48 puts it;
//   - SIIT's IPv4-translated addresses ::ffff:0:a.b.c.d (RFC 2765/6145).
func TestAttackTranslatedFormsOfSpecialAddresses(t *testing.T) {
	for _, s := range []string{
		"64:ff9b:1:abcd::a9fe:a9fe", // /96 NSP: 169.254.169.254
		"64:ff9b:1:abcd::7f00:1",    // /96 NSP: 127.0.0.1
		"64:ff9b:1:ab0a:a:0:100:0",  // /64 NSP: 10.0.0.1 (bytes 9..12)
		"::ffff:0:a9fe:a9fe",        // SIIT: 169.254.169.254
		"::ffff:0:a00:1",            // SIIT: 10.0.0.1
	} {
		if c := Of(netip.MustParseAddr(s)); c == Public {
			t.Errorf("%s is classified public; through a translator it is a special IPv4 address", s)
		}
	}
}
