package policy

import (
	"net/netip"
	"testing"
)

// Servlet containers (Tomcat, Jetty; Spring's default UrlPathHelper) strip
// ";parameters" from each path segment before routing, so "/admin;x/users"
// is served as /admin/users. The policy matches the segment "admin;x"
// literally and lets it past a /admin/** deny, contrary to "paths are
// normalised before matching and ambiguous encodings are refused".
func TestAttackPathParametersEvadePathRule(t *testing.T) {
	p, err := Parse([]byte(`
version: 1
default:
  default_action: allow
  rules:
    - name: no-admin
      hosts: strict.example
      paths: /admin/**
      intercept: true
      action: deny
`), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/admin;x/users", "/admin;/users", "/.;/admin/users"} {
		d := p.Decide(Input{Container: Container{Name: "a"}, Host: "strict.example", DstIP: netip.MustParseAddr("203.0.113.5"), DstPort: 443, Method: "GET", Path: path})
		if d.Action != Deny {
			t.Errorf("%s: %s by rule %q; a servlet container serves it as /admin/users", path, d.Action, d.Rule)
		}
	}
}
