package hostname

import (
	"strings"
	"testing"
)

const (
	name, ip4, ip6, none, bad = "name", "ip4", "ip6", "none", "invalid"
)

// TestNormalize is the one table of what a host name is: every caller
// (policy, secrets, DNS, CA, proxy) compares names in this form.
func TestNormalize(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	long253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 253 bytes
	tests := []struct {
		in, want string
		kind     string // name, ip4, ip6, none ("") or invalid
	}{
		// canonical names stay as they are
		{"api.example.com", "api.example.com", name},
		{"localhost", "localhost", name},
		{"a_b.example-1.com", "a_b.example-1.com", name},
		{"-lead.example.com", "-lead.example.com", name}, // DNS allows it; Pattern does not
		{"xn--bcher-kva.example", "xn--bcher-kva.example", name},
		{long253, long253, name},
		{label63 + ".com", label63 + ".com", name},

		// case
		{"API.GitHub.COM", "api.github.com", name},
		{"Api.Example.Com.:443", "api.example.com", name},

		// white space around
		{"  api.example.com\t", "api.example.com", name},
		{"\r\napi.example.com\n", "api.example.com", name},
		{"   ", "", none},
		{"", "", none},

		// ports
		{"api.example.com:443", "api.example.com", name},
		{"api.example.com:", "api.example.com", name},
		{"api.example.com:0", "api.example.com", name},
		{"api.example.com:65535", "api.example.com", name},
		{"api.example.com:65536", Invalid, bad},
		{"api.example.com:443443", Invalid, bad},
		{"api.example.com:https", Invalid, bad},
		{"api.example.com:-1", Invalid, bad},
		{"api.example.com: 443", Invalid, bad},
		{"api.example.com:443:443", Invalid, bad}, // two colons: an IPv6 literal, which it is not
		{":443", Invalid, bad},
		{"192.0.2.1:8080", "192.0.2.1", ip4},

		// trailing dots: exactly one is dropped
		{"api.example.com.", "api.example.com", name},
		{"api.example.com.:443", "api.example.com", name},
		{"api.example.com..", Invalid, bad},
		{".", Invalid, bad},
		{"..", Invalid, bad},
		{".api.example.com", Invalid, bad},
		{"api..example.com", Invalid, bad},
		{"192.0.2.1.", "192.0.2.1", ip4},

		// IPv4
		{"192.0.2.1", "192.0.2.1", ip4},
		{"0.0.0.0", "0.0.0.0", ip4},
		{"010.0.0.1", Invalid, bad}, // octal to inet_aton
		{"127.1", Invalid, bad},
		{"2130706433", Invalid, bad},
		{"0x7f.0.0.1", Invalid, bad},
		{"0X7F000001", Invalid, bad},
		{"1.2.3.4.5", Invalid, bad},
		{"256.1.1.1", Invalid, bad},
		{"example.123", Invalid, bad}, // numeric top-level label
		{"example.0x1f", Invalid, bad},
		{"example.0x", Invalid, bad},
		{"1example.com", "1example.com", name},
		{"123.example", "123.example", name},
		{"example.0xg", "example.0xg", name},

		// IPv6 and brackets
		{"2001:db8::1", "2001:db8::1", ip6},
		{"2001:DB8::1", "2001:db8::1", ip6},
		{"2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", ip6},
		{"[2001:db8::1]", "2001:db8::1", ip6},
		{"[2001:db8::1]:443", "2001:db8::1", ip6},
		{"[2001:db8::1]:", "2001:db8::1", ip6},
		{"::1", "::1", ip6},
		{"[::1]", "::1", ip6},
		{"::1:80", "::1:80", ip6}, // unbracketed: no port
		{"[::1]:99999", Invalid, bad},
		{"[::1]x", Invalid, bad},
		{"[::1]:80:80", Invalid, bad},
		{"[::1", Invalid, bad},
		{"::1]", Invalid, bad},
		{"[]", Invalid, bad},
		{"[]:80", Invalid, bad},
		{"[192.0.2.1]", Invalid, bad}, // brackets hold IPv6 only
		{"[api.example.com]:443", Invalid, bad},
		{"[[::1]]", Invalid, bad},
		{"2001:db8::1.", Invalid, bad},
		{"2001:db8:::1", Invalid, bad},

		// v4-mapped IPv6 is the IPv4 address; other embeddings stay IPv6
		{"::ffff:192.0.2.1", "192.0.2.1", ip4},
		{"::FFFF:192.0.2.1", "192.0.2.1", ip4},
		{"[::ffff:c000:201]:443", "192.0.2.1", ip4},
		{"::192.0.2.1", "::c000:201", ip6},
		{"64:ff9b::192.0.2.1", "64:ff9b::c000:201", ip6},

		// zones are refused
		{"fe80::1%eth0", Invalid, bad},
		{"[fe80::1%25eth0]:443", Invalid, bad},
		{"[fe80::1%eth0]", Invalid, bad},
		{"192.0.2.1%eth0", Invalid, bad},

		// garbage a hostile agent sends
		{"api.example.com\x00", Invalid, bad},
		{"api.example.com\x00.evil.com", Invalid, bad},
		{"api example.com", Invalid, bad},
		{"api.example.com evil.com", Invalid, bad},
		{"api%2eexample.com", Invalid, bad},
		{"api\\.example.com", Invalid, bad},
		{"api.example.com/path", Invalid, bad},
		{"user@api.example.com", Invalid, bad},
		{"*.example.com", Invalid, bad},
		{"api.exämple.com", Invalid, bad},
		{"API.EXAMPLE.COM\u00a0", Invalid, bad}, // non-ASCII space is not trimmed
		{"\u0430pi.example.com", Invalid, bad},  // Cyrillic a
		{"api.example.com\r\nX-Evil: 1", Invalid, bad},
		{strings.Repeat("a", 64) + ".com", Invalid, bad},
		{long253 + "c", Invalid, bad},
		{long253 + "c.", Invalid, bad},
		{strings.Repeat("a.", 100000) + "com", Invalid, bad},
		{Invalid, Invalid, bad},
		{strings.ToUpper(Invalid), Invalid, bad},
	}
	for _, tt := range tests {
		got := Normalize(tt.in)
		if got != tt.want {
			t.Errorf("Normalize(%q) = %q, want %q", tt.in, got, tt.want)
			continue
		}
		a, isIP := IP(got)
		var kind string
		switch {
		case got == "":
			kind = none
		case got == Invalid:
			kind = bad
		case isIP && a.Is4():
			kind = ip4
		case isIP:
			kind = ip6
		case Valid(got):
			kind = name
		default:
			kind = "neither name nor IP"
		}
		if kind != tt.kind {
			t.Errorf("Normalize(%q) = %q is %s, want %s", tt.in, got, kind, tt.kind)
		}
		if isIP && a.String() != got {
			t.Errorf("Normalize(%q) = %q, not the canonical %q", tt.in, got, a)
		}
		if Valid(got) && isIP {
			t.Errorf("%q is both a name and an IP", got)
		}
		if again := Normalize(got); again != got {
			t.Errorf("Normalize(Normalize(%q)) = %q, not %q", tt.in, again, got)
		}
	}
}

func TestSplit(t *testing.T) {
	tests := []struct {
		in, host, port string
		ok             bool
	}{
		{"a.example.com", "a.example.com", "", true},
		{"a.example.com:8080", "a.example.com", "8080", true},
		{"a.example.com:", "a.example.com", "", true},
		{"[::1]:443", "::1", "443", true},
		{"[::1]", "::1", "", true},
		{"::1", "::1", "", true},
		{"A.Example.COM.", "A.Example.COM.", "", true},
		{"a:b", "", "", false},
		{"a:123456", "", "", false},
		{"[a]:1", "", "", false},
		{"[::1", "", "", false},
		{"[::1]1", "", "", false},
	}
	for _, tt := range tests {
		host, port, ok := Split(tt.in)
		if host != tt.host || port != tt.port || ok != tt.ok {
			t.Errorf("Split(%q) = %q, %q, %v; want %q, %q, %v", tt.in, host, port, ok, tt.host, tt.port, tt.ok)
		}
	}
}

func TestPatternAndMatch(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"api.example.com", "api.example.com", ""},
		{" API.Example.com. ", "api.example.com", ""},
		{"*.Example.com", "*.example.com", ""},
		{"a_b.example.com", "a_b.example.com", ""},
		{"192.0.2.1", "192.0.2.1", ""},
		{"[2001:DB8::1]", "2001:db8::1", ""},
		{"::ffff:192.0.2.1", "192.0.2.1", ""},
		{"", "", "empty host"},
		{"  ", "", "empty host"},
		{"a.example.com:443", "", "write the host name only"},
		{"https://a.example.com", "", "write the host name only"},
		{"a.example.com/x", "", "write the host name only"},
		{"fe80::1%eth0", "", "write the host name only"},
		{"*", "", "only wildcard"},
		{"**", "", "only wildcard"},
		{"a.*.example.com", "", "only wildcard"},
		{"*.*.example.com", "", "only wildcard"},
		{"*.com", "", "top-level domain"},
		{"*.com.", "", "top-level domain"},
		{"exa mple.com", "", "not a valid host name"},
		{"-a.example.com", "", "not a valid host name"},
		{"a-.example.com", "", "not a valid host name"},
		{"a.example.com..", "", "not a valid host name"},
		{"127.1", "", "not a valid host name"},
		{"*.192.0.2.1", "", "not a valid host name"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", ""},
	}
	for _, tt := range tests {
		got, err := Pattern(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) {
			t.Errorf("Pattern(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Pattern(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
		}
		if err == nil {
			if again, err := Pattern(got); err != nil || again != got {
				t.Errorf("Pattern(Pattern(%q)) = %q, %v", tt.in, again, err)
			}
		}
	}

	for _, tt := range []struct {
		pattern, host string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "x.api.example.com", false},
		{"*.example.com", "api.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "", false},
		{"*.example.com", Invalid, false},
	} {
		if got := Match(tt.pattern, tt.host); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
		}
	}
}

// The proxy normalises every request's Host: canonical input, and input
// with only a port, brackets, spaces or a trailing dot to drop, must not
// allocate.
func TestNormalizeDoesNotAllocate(t *testing.T) {
	for _, in := range []string{
		"api.example.com", "api.example.com:443", "api.example.com.", " api.example.com ",
		"192.0.2.1", "192.0.2.1:80", "2001:db8::1", "[2001:db8::1]:443", "[::1]", "",
		"1password.com",
	} {
		if n := testing.AllocsPerRun(100, func() { Normalize(in) }); n != 0 {
			t.Errorf("Normalize(%q) allocates %v times", in, n)
		}
		if n := testing.AllocsPerRun(100, func() { IP(Normalize(in)) }); n != 0 {
			t.Errorf("IP(Normalize(%q)) allocates %v times", in, n)
		}
	}
}

// FuzzNormalize checks the invariants every caller relies on. Seeds are in
// testdata/fuzz/FuzzNormalize and run with go test.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"api.example.com", "[::1]:443", "::ffff:1.2.3.4", "A.B.", "fe80::1%eth0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Normalize(in)
		if again := Normalize(got); again != got {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q", in, got, got, again)
		}
		if got == "" || got == Invalid {
			return
		}
		a, isIP := IP(got)
		if isIP == Valid(got) {
			t.Fatalf("Normalize(%q) = %q: IP %v, name %v; want exactly one", in, got, isIP, Valid(got))
		}
		if isIP && a.String() != got {
			t.Fatalf("Normalize(%q) = %q, not the canonical %q", in, got, a)
		}
		if strings.IndexByte(got, ':') >= 0 && !(isIP && a.Is6()) {
			t.Fatalf("Normalize(%q) = %q has a colon but is no IPv6 literal", in, got)
		}
		if isIP && a.Is4In6() {
			t.Fatalf("Normalize(%q) = %q is v4-mapped", in, got)
		}
		if strings.ToLower(got) != got {
			t.Fatalf("Normalize(%q) = %q has upper case", in, got)
		}
		if strings.HasSuffix(got, ".") {
			t.Fatalf("Normalize(%q) = %q has a trailing dot", in, got)
		}
		if p, err := Pattern(got); err == nil && p != got {
			t.Fatalf("Pattern(%q) = %q, want it unchanged", got, p)
		}
	})
}
