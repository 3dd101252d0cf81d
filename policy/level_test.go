package policy

import (
	"net/netip"
	"testing"
)

const levelYAML = `
default:
  rules:
    - name: gh-delete
      hosts: api.github.com
      ports: 443
      methods: DELETE
      intercept: true
      action: deny
    - name: gh
      hosts: api.github.com
      action: allow
    - name: inject
      hosts: "*.anthropic.com"
      intercept: true
      action: allow
    - name: plain
      hosts: pypi.org
      action: allow
    - name: lan-read
      cidrs: 10.9.0.0/16
      ports: 80
      methods: GET
      action: allow
    - name: lan-db
      cidrs: 10.8.0.0/16
      ports: 5432
      action: allow
    - name: deny-net
      cidrs: 10.7.0.0/16
      action: deny
`

func TestHTTPLevel(t *testing.T) {
	p, err := Parse([]byte(levelYAML), "level.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := Container{Name: "a"}
	ip := netip.MustParseAddr("203.0.113.9")
	for _, tc := range []struct {
		host string
		ip   string
		port uint16
		want bool
	}{
		{"api.github.com", "203.0.113.9", 443, true},
		{"API.GitHub.com.", "203.0.113.9", 443, true},
		{"api.github.com", "203.0.113.9", 22, false}, // the HTTP rule names 443 only
		{"x.anthropic.com", "203.0.113.9", 8443, true},
		{"anthropic.com", "203.0.113.9", 443, false},
		{"pypi.org", "203.0.113.9", 443, false},
		{"", "10.9.1.1", 80, true},
		{"", "10.9.1.1", 81, false},
		{"", "10.8.1.1", 5432, false},
		{"", "203.0.113.9", 443, false},
	} {
		a := ip
		if tc.ip != "" {
			a = netip.MustParseAddr(tc.ip)
		}
		if got := p.HTTPLevel(c, tc.host, a, tc.port); got != tc.want {
			t.Errorf("HTTPLevel(%q, %s, %d) = %v, want %v", tc.host, a, tc.port, got, tc.want)
		}
	}
	// A rule with an HTTP condition and no destination makes every
	// destination HTTP-level.
	q, err := Parse([]byte("default:\n  rules:\n    - name: reads\n      ports: 80\n      methods: GET\n      action: allow\n"), "any.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !q.HTTPLevel(c, "", ip, 80) || q.HTTPLevel(c, "", ip, 22) {
		t.Error("an any-destination HTTP rule must make every destination HTTP-level")
	}
}

func TestCIDRCoversAndByCIDR(t *testing.T) {
	p, err := Parse([]byte(levelYAML), "level.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c := Container{Name: "a"}
	for ip, want := range map[string]bool{"10.9.0.1": true, "10.8.3.3": true, "10.7.0.1": false, "10.6.0.1": false, "::ffff:10.9.0.1": true} {
		if got := p.CIDRCovers(c, netip.MustParseAddr(ip), 0); got != want {
			t.Errorf("CIDRCovers(%s) = %v, want %v", ip, got, want)
		}
	}
	if !p.CIDRCovers(c, netip.MustParseAddr("10.8.0.5"), 5432) || p.CIDRCovers(c, netip.MustParseAddr("10.8.0.5"), 5433) {
		t.Error("CIDRCovers must respect the rule's ports")
	}
	d := p.Decide(Input{Container: c, DstIP: netip.MustParseAddr("10.8.0.5"), DstPort: 5432})
	if d.Action != Allow || !d.ByCIDR {
		t.Errorf("cidr rule: %+v", d)
	}
	d = p.Decide(Input{Container: c, DstIP: netip.MustParseAddr("10.8.0.5"), DstPort: 443, Host: "pypi.org"})
	if d.Action != Allow || d.ByCIDR {
		t.Errorf("host rule must not count as naming the address: %+v", d)
	}
}

func TestRecheckIsNotRateLimited(t *testing.T) {
	p, err := Parse([]byte("default:\n  rules:\n    - name: l\n      hosts: l.example.com\n      action: allow\n      rate_limit: 1/hour\n"), "rl.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Container: Container{Name: "a"}, Host: "l.example.com", DstPort: 443}
	if d := p.Decide(in); d.Action != Allow {
		t.Fatal(d)
	}
	in.Recheck = true
	if d := p.Decide(in); d.Action != Allow || d.RateLimited {
		t.Fatalf("a re-decision of an open stream was rate limited: %+v", d)
	}
	in.Recheck = false
	if d := p.Decide(in); !d.RateLimited {
		t.Fatalf("the limit no longer applies to new requests: %+v", d)
	}
}
