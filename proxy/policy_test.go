package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

// TestRealPolicy runs the proxy with the real YAML policy engine.
func TestRealPolicy(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
default:
  default_action: deny
  rules:
    - name: no-admin
      hosts: [api.example.com, example.com]
      paths: ["/admin/**"]
      intercept: true
      action: deny
      reason: admin is off limits
    - name: off
      enabled: false
      hosts: api.example.com
      paths: ["/off"]
      intercept: true
      action: allow
    - name: no-secrets-in-body
      hosts: api.example.com
      methods: [POST]
      body_contains: [TOPSECRET]
      intercept: true
      action: deny
    - name: api
      hosts: [api.example.com]
      action: allow
    - name: tls-api
      hosts: [example.com]
      intercept: true
      action: allow
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, nil, func(c *Config) { c.Decider = p })
	cl := e.client(up.addr(), nil, false)
	tests := []struct {
		method, url, body string
		want              int
		rule              string
	}{
		{"GET", "http://api.example.com/v1/models", "", 200, ""},
		{"GET", "http://api.example.com/admin/users", "", 403, "no-admin"},
		{"POST", "http://api.example.com/v1/chat", `{"x":"TOPSECRET"}`, 403, "no-secrets-in-body"},
		{"POST", "http://api.example.com/v1/chat", `{"x":"fine"}`, 200, ""},
		{"GET", "http://127.0.0.1/", "", 403, "default"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.url, resp.StatusCode, tt.want)
		}
		if tt.rule != "" {
			if m := jsonBody(t, resp); m["rule"] != tt.rule {
				t.Errorf("%s %s: rule %v, want %s", tt.method, tt.url, m["rule"], tt.rule)
			}
		} else {
			resp.Body.Close()
		}
	}
	if up.hits.Load() != 2 {
		t.Errorf("upstream saw %d requests, want 2", up.hits.Load())
	}

	// Intercepted HTTPS: path rules apply inside TLS.
	tup := newUpstream(t, true, true, nil)
	e2 := newEnv(t, nil, func(c *Config) { c.Decider = p; c.UpstreamRoots = upstreamPool(tup) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e2.ca.CertPEM())
	tcl := e2.client(tup.addr(), &tls.Config{RootCAs: pool}, true)
	resp := mustGet(t, tcl, "https://example.com/v1/ok")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello from upstream /v1/ok" {
		t.Errorf("intercepted allow: %d %q", resp.StatusCode, b)
	}
	resp = mustGet(t, tcl, "https://example.com/admin/x")
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["rule"] != "no-admin" {
		t.Errorf("intercepted deny: %d %v", resp.StatusCode, m)
	}
}
