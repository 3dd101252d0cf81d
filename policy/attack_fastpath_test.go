package policy

import (
	"net/netip"
	"testing"
)

// Attack (issue 18): the fast-path table must never pass a destination the
// proxy would not allow. Differential check with tricky cidr spellings: a
// deny written as IPv4-mapped IPv6 inside a v4 allow, a deny with a
// non-canonical (unmasked) prefix, zero-length ports, overlapping port
// ranges with a deny first.
func TestAttackFastPathAgreesWithDecideOnOddSpellings(t *testing.T) {
	for _, y := range []string{`
default:
  default_action: deny
  rules:
    - name: nope
      cidrs: ["::ffff:198.51.100.10/128"]
      action: deny
    - name: wide
      cidrs: [198.51.100.0/24]
      action: allow
`, `
default:
  default_action: deny
  rules:
    - name: nope
      cidrs: ["198.51.100.10/24"]
      ports: [443]
      action: deny
    - name: wide
      cidrs: [198.51.100.0/24]
      action: allow
`, `
default:
  default_action: deny
  rules:
    - name: nope
      cidrs: ["::ffff:c633:640a/128"]
      action: deny
    - name: wide6
      cidrs: ["::ffff:198.51.100.0/120"]
      action: allow
    - name: wide
      cidrs: [198.51.100.0/24]
      action: allow
`, `
default:
  default_action: deny
  rules:
    - name: nope
      cidrs: [198.51.100.10]
      ports: ["440-450"]
      action: approve
    - name: wide
      cidrs: [198.51.100.0/24]
      ports: ["1-65535"]
      action: allow
`} {
		p, err := Parse([]byte(y), "fast.yaml")
		if err != nil {
			t.Logf("refused at parse (fine): %v", err)
			continue
		}
		tab := p.FastPath(fastCtr, nil, nil)
		for _, s := range []string{"198.51.100.10", "::ffff:198.51.100.10", "198.51.100.11", "::ffff:198.51.100.11"} {
			a := netip.MustParseAddr(s)
			for _, port := range []uint16{1, 80, 443, 445, 65535} {
				if !tab.Allows(a, port) {
					continue
				}
				for _, dst := range []netip.Addr{a, a.Unmap()} {
					d := p.Decide(Input{Container: fastCtr, DstIP: dst, DstPort: port})
					if d.Action != Allow {
						t.Errorf("policy %q: fast path passes %s:%d but the proxy decides %v (rule %s)", y, dst, port, d.Action, d.Rule)
					}
				}
			}
		}
	}
}
