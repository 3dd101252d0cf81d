package policy

import (
	"net/netip"
	"strings"
	"testing"
)

const upstreamYAML = `
default:
  upstream_proxy: http://proxy.corp.example:3128
  rules:
    - name: github
      hosts: api.github.com
      action: allow
    - name: internal
      hosts: git.corp.example
      action: allow
      upstream_proxy: none
    - name: models
      hosts: api.anthropic.com
      action: allow
      upstream_proxy:
        url: https://[2001:db8::1]:8443
        credential: corp-proxy
sets:
  - name: direct
    match: {name: "direct-*"}
    default_action: allow
`

func TestUpstreamProxyDecision(t *testing.T) {
	p := mustParse(t, upstreamYAML)
	in := func(c Container, host string) Input {
		return Input{Container: c, Host: host, DstIP: netip.MustParseAddr("203.0.113.5"), DstPort: 443}
	}
	corp := UpstreamProxy{Scheme: "http", Addr: "proxy.corp.example:3128"}
	tests := []struct {
		c    Container
		host string
		want UpstreamProxy
	}{
		{agent, "api.github.com", corp},              // the set's
		{agent, "git.corp.example", UpstreamProxy{}}, // none on the rule
		{agent, "api.anthropic.com", UpstreamProxy{Scheme: "https", Addr: "[2001:db8::1]:8443", Credential: "corp-proxy"}}, // the rule's own
		{agent, "example.com", corp}, // the set's default decision carries it too
		{Container{ID: "d", Name: "direct-1"}, "api.github.com", UpstreamProxy{}}, // another set: none
	}
	for _, tt := range tests {
		d := p.Decide(in(tt.c, tt.host))
		if d.UpstreamProxy != tt.want {
			t.Errorf("%s %s: UpstreamProxy = %+v, want %+v", tt.c.Name, tt.host, d.UpstreamProxy, tt.want)
		}
	}
	d := p.Decide(in(agent, "api.anthropic.com"))
	if got := FormatDecision(d); !strings.Contains(got, "via upstream proxy https://[2001:db8::1]:8443 (credential corp-proxy)") {
		t.Errorf("FormatDecision = %q, want the upstream proxy named", got)
	}
}

func TestUpstreamProxyParseErrors(t *testing.T) {
	tests := []struct {
		val  string // the YAML value of upstream_proxy on a rule (line 6)
		want string
		set  bool // on the set instead (line 3)
	}{
		{"ftp://p:21", "test.yaml:6: default: rule \"r\": upstream_proxy: \"ftp://p:21\": the scheme must be http or https", false},
		{"http://user:hunter2@p:3128", "test.yaml:6: default: rule \"r\": upstream_proxy: the URL holds a user name or password", false},
		{"http://p:3128/path", "no path allowed", false},
		{"http://p:3128?x=1", "no query or fragment", false},
		{"http://p:3128#f", "no query or fragment", false},
		{"http://p", "the port is required", false},
		{"http://p:0", "is not 1-65535", false},
		{"http://p:70000", "is not 1-65535", false},
		{"http://bad_host!:3128", "is not a host name or IP address", false},
		{"p:3128", "the scheme must be http or https", false},
		{"{url: http://p:3128, credential: \"user:pw\"}", "is not a secret name", false},
		{"{credential: x}", "url is required", false},
		{"{url: http://p:3128, user: x}", "unknown key \"user\"", false},
		{"[http://p:3128]", "must be a URL", false},
		{"none", "test.yaml:3: default: upstream_proxy: none only applies to a rule", true},
	}
	if _, err := Parse([]byte("default:\n  rules:\n    - name: r\n      action: deny\n      upstream_proxy: none\n"), "test.yaml"); err == nil ||
		!strings.Contains(err.Error(), "test.yaml:5: default: rule \"r\": upstream_proxy on a deny rule has no effect") {
		t.Errorf("upstream_proxy on a deny rule: %v", err)
	}
	for _, tt := range tests {
		y := "default:\n  default_action: deny\n  upstream_proxy: http://ok:1\n  rules:\n    - name: r\n      upstream_proxy: " + tt.val + "\n      action: allow\n"
		if tt.set {
			y = "default:\n  default_action: deny\n  upstream_proxy: " + tt.val + "\n  rules:\n    - name: r\n      action: allow\n"
		}
		_, err := Parse([]byte(y), "test.yaml")
		if err == nil {
			t.Errorf("%s: parsed, want error %q", tt.val, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q, want %q", tt.val, err, tt.want)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error echoes the password: %q", tt.val, err)
		}
	}
}

func TestParseUpstreamProxyURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://Proxy.Corp.Example:3128": "http://proxy.corp.example:3128",
		"https://192.0.2.1:443":          "https://192.0.2.1:443",
		"http://[2001:DB8::1]:8080":      "http://[2001:db8::1]:8080",
	} {
		u, err := ParseUpstreamProxyURL(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseUpstreamProxyURL(%q) = %v, %v; want %s", in, u, err, want)
		}
	}
}
