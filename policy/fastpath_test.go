package policy

import (
	"fmt"
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/internal/addrclass"
)

var fastCtr = Container{ID: "c1", Name: "agent-1", Runtime: "containerd", Namespace: "default"}

func mustFast(t *testing.T, y string, exclude []netip.Prefix, ports []uint16) (*Policy, FastTable) {
	t.Helper()
	p, err := Parse([]byte(y), "fast.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return p, p.FastPath(fastCtr, exclude, ports)
}

// Attack: a rule allowing everything by address must not fast-path any
// special address, in any spelling; the host's own addresses and clawd's
// ports neither.
func TestFastPathNeverPassesSpecialAddresses(t *testing.T) {
	y := `
default:
  rules:
    - name: all
      cidrs: ["0.0.0.0/0", "::/0", "127.0.0.0/8", "169.254.169.254", "10.0.0.0/8", "::1", "fe80::/10"]
      action: allow
`
	host := []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("2001:db8:c::1/128"), netip.MustParsePrefix("::ffff:203.0.113.77/128")}
	_, tab := mustFast(t, y, host, []uint16{8787})
	for _, s := range []string{
		"127.0.0.1", "127.1.2.3", "169.254.169.254", "169.254.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1",
		"100.64.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
		"192.0.0.1", "198.18.0.1",
		"::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1", "::ffff:0:7f00:1",
		"64:ff9b::7f00:1", "64:ff9b::cb00:7109", "64:ff9b:1::1", "2002:7f00:1::1", "2001::1", "fe80::1", "ff02::1", "fc00::1", "fd00::1", "100::1",
		"203.0.113.1", "::ffff:203.0.113.1", "2001:db8:c::1", "203.0.113.77",
	} {
		a := netip.MustParseAddr(s)
		for _, port := range []uint16{80, 443, 8787, 22} {
			if tab.Allows(a, port) {
				t.Errorf("fast path passes %s port %d", s, port)
			}
		}
	}
	for _, s := range []string{"203.0.113.9", "::ffff:203.0.113.9", "198.51.100.10", "2001:db8::10", "8.8.8.8"} {
		if !tab.Allows(netip.MustParseAddr(s), 443) {
			t.Errorf("fast path refuses public %s:443 allowed by cidr", s)
		}
	}
	if tab.Allows(netip.MustParseAddr("203.0.113.9"), 8787) {
		t.Error("fast path passes clawd's own port")
	}
}

// Attack: a more specific deny (or a rule needing the proxy) inside a
// broad allow shadows it; first match in file order decides ports.
func TestFastPathShadowsAndOrder(t *testing.T) {
	y := `
default:
  rules:
    - name: deny-one
      cidrs: [203.0.113.5]
      action: deny
    - name: ask-db
      cidrs: [203.0.113.0/24]
      ports: 5432
      action: approve
    - name: bin
      cidrs: [203.0.113.0/24]
      ports: 2222
      binaries: /usr/bin/ssh
      action: allow
    - name: web
      cidrs: [203.0.113.0/24]
      ports: [80, "8000-8100"]
      methods: GET
      action: allow
    - name: limited
      cidrs: [203.0.113.0/24]
      ports: 7000
      rate_limit: 1/hour
      action: allow
    - name: any
      cidrs: [203.0.113.0/24]
      action: allow
`
	_, tab := mustFast(t, y, nil, nil)
	cases := []struct {
		ip   string
		port uint16
		want bool
	}{
		{"203.0.113.5", 443, false},
		{"203.0.113.6", 443, true},
		{"203.0.113.6", 5432, false},
		{"203.0.113.6", 2222, false},
		{"203.0.113.6", 80, false},
		{"203.0.113.6", 8050, false},
		{"203.0.113.6", 7000, false},
		{"203.0.113.6", 7001, true},
		{"::ffff:203.0.113.6", 7001, true},
		{"::ffff:203.0.113.5", 7001, false},
	}
	for _, c := range cases {
		if got := tab.Allows(netip.MustParseAddr(c.ip), c.port); got != c.want {
			t.Errorf("%s:%d fast = %v, want %v", c.ip, c.port, got, c.want)
		}
	}
}

// Sets that name hosts, audit-mode sets, default allows and upstream
// proxies never fast-path.
func TestFastPathOffForSetsNeedingTheProxy(t *testing.T) {
	for name, y := range map[string]string{
		"hosts": `
default:
  rules:
    - name: by-name
      hosts: api.example.com
      action: deny
    - name: any
      cidrs: [203.0.113.0/24]
      action: allow
`,
		"audit": `
default:
  mode: audit
  rules:
    - name: any
      cidrs: [203.0.113.0/24]
      action: allow
`,
		"default-allow": `
default:
  default_action: allow
  rules: []
`,
		"upstream": `
default:
  upstream_proxy: http://198.51.100.7:3128
  rules:
    - name: any
      cidrs: [203.0.113.0/24]
      action: allow
`,
	} {
		_, tab := mustFast(t, y, nil, nil)
		if tab.Allows(netip.MustParseAddr("203.0.113.9"), 443) {
			t.Errorf("%s: fast path passes 203.0.113.9:443", name)
		}
	}
}

// Property: for random policies and destinations, a fast-path pass implies
// the policy allows the connection by address and port alone, by a cidrs
// rule needing nothing else, for any program, and that the address is no
// special one.
func TestFastPathImpliesAllow(t *testing.T) {
	r := rand.New(rand.NewSource(18))
	cidrs := []string{"0.0.0.0/0", "203.0.113.0/24", "203.0.113.0/25", "203.0.113.5", "203.0.113.128/26", "198.51.100.0/24",
		"127.0.0.0/8", "169.254.169.254", "10.0.0.0/8", "::/0", "2001:db8::/32", "2001:db8::10", "2001:db8:c::/48", "fe80::/10", "::1", "64:ff9b::/96", "2002::/16"}
	ports := []string{"22", "80", "443", "5432", "\"8000-8100\"", "9000", "1-1024"}
	extras := []string{"", "", "", "      methods: GET\n", "      binaries: /usr/bin/curl\n", "      rate_limit: 5/minute\n",
		"      upstream_proxy: http://198.51.100.7:3128\n", "      readonly: true\n", "      hosts: api.example.com\n", "      intercept: true\n      hosts: api.example.com\n"}
	actions := []string{"allow", "allow", "allow", "deny", "approve"}
	addrs := []string{"203.0.113.5", "203.0.113.6", "203.0.113.130", "203.0.113.200", "198.51.100.10", "8.8.8.8", "127.0.0.1",
		"169.254.169.254", "10.1.1.1", "::ffff:203.0.113.6", "::ffff:127.0.0.1", "2001:db8::10", "2001:db8::11", "2001:db8:c::2",
		"::1", "fe80::1", "64:ff9b::cb00:7106", "2002:cb00:7106::1", "203.0.113.1", "2001:db8:c::1"}
	exclude := []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("2001:db8:c::1/128")}
	excludePorts := []uint16{8787}
	testPorts := []uint16{22, 80, 443, 5432, 8000, 8050, 8100, 8101, 9000, 1024, 1025, 8787, 65535}
	parsed, passes := 0, 0
	for i := 0; i < 3000; i++ {
		var b strings.Builder
		b.WriteString("default:\n")
		if r.Intn(8) == 0 {
			b.WriteString("  mode: audit\n")
		}
		if r.Intn(6) == 0 {
			b.WriteString("  default_action: allow\n")
		}
		b.WriteString("  rules:\n")
		for j, n := 0, 1+r.Intn(5); j < n; j++ {
			fmt.Fprintf(&b, "    - name: r%d\n", j)
			var cs []string
			for k, m := 0, 1+r.Intn(2); k < m; k++ {
				cs = append(cs, fmt.Sprintf("%q", cidrs[r.Intn(len(cidrs))]))
			}
			if r.Intn(8) != 0 {
				fmt.Fprintf(&b, "      cidrs: [%s]\n", strings.Join(cs, ", "))
			}
			if r.Intn(3) != 0 {
				fmt.Fprintf(&b, "      ports: [%s]\n", ports[r.Intn(len(ports))])
			}
			ex := ""
			if r.Intn(3) == 0 {
				ex = extras[r.Intn(len(extras))]
			}
			b.WriteString(ex)
			if !strings.Contains(ex, "readonly") {
				fmt.Fprintf(&b, "      action: %s\n", actions[r.Intn(len(actions))])
			}
		}
		p, err := Parse([]byte(b.String()), "rand.yaml")
		if err != nil {
			continue
		}
		parsed++
		tab := p.FastPath(fastCtr, exclude, excludePorts)
		for _, s := range addrs {
			a := netip.MustParseAddr(s)
			for _, port := range testPorts {
				if !tab.Allows(a, port) {
					continue
				}
				passes++
				fail := func(why string, args ...any) {
					t.Fatalf("policy:\n%s\nfast path passes %s:%d but %s", b.String(), a, port, fmt.Sprintf(why, args...))
				}
				if c := addrclass.Of(a); c != addrclass.Public {
					fail("it is %s", c)
				}
				for _, x := range exclude {
					if x.Contains(a.Unmap()) {
						fail("it is excluded")
					}
				}
				if port == 8787 {
					fail("the port is excluded")
				}
				if p.HTTPLevel(fastCtr, "", a, port) {
					fail("it is HTTP-level")
				}
				for _, prog := range []Program{{}, {Known: true, Path: "/usr/bin/curl"}, {Known: true, Path: "/bin/sh"}} {
					d := p.Decide(Input{Container: fastCtr, DstIP: a, DstPort: port, Program: prog})
					if d.Action != Allow || !d.ByCIDR || d.Rule == "default" || d.Audit || d.Intercept ||
						!d.UpstreamProxy.IsZero() || d.Budget != nil || d.MCP != nil || d.NeedBody || d.RateLimited {
						fail("Decide(program %q) = %+v", prog.Path, d)
					}
				}
				if a.Is4() {
					if !tab.Allows(netip.AddrFrom16(a.As16()), port) {
						fail("its v4-mapped form is judged differently")
					}
				}
			}
		}
	}
	if parsed < 1000 || passes < 1000 {
		t.Fatalf("generator too weak: %d policies parsed, %d fast passes", parsed, passes)
	}
	t.Logf("%d policies, %d fast passes checked", parsed, passes)
}
