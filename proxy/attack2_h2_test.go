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

const atk2HeaderPolicy = `
version: 1
default:
  default_action: allow
  rules:
    - name: no-sudo
      hosts: example.com
      headers:
        X-Sudo: "*"
      action: deny
    - name: strict
      hosts: example.com
      intercept: true
      action: allow
`

// HELD (passes today). Over HTTP/1 the framer refuses request trailers, "because no rule sees
// them". Over HTTP/2 inside intercepted TLS, a request may carry trailers
// (HEADERS after the DATA frames): net/http exposes them as r.Trailer, the
// policy decides on r.Header only, and ReverseProxy forwards the trailers
// to the upstream. A header rule (here: deny any request with X-Sudo) is
// bypassed by sending the header as a trailer; servers and frameworks that
// merge trailers into the header map (or read them as metadata, as gRPC
// does) act on a field clawd never decided.
func TestAttack2HeldH2RequestTrailersNotForwarded(t *testing.T) {
	up := newUpstream(t, true, true, nil)
	p, err := policy.Parse([]byte(atk2HeaderPolicy), "attack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, nil, func(c *Config) { c.Decider = p; c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)

	// Control: the header as a header is denied.
	req, _ := http.NewRequest("POST", "https://example.com/ok", strings.NewReader("x"))
	req.Header.Set("X-Sudo", "1")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.ProtoMajor != 2 {
		t.Fatalf("control: %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
	}
	// The same field as a trailer.
	req, _ = http.NewRequest("POST", "https://example.com/ok", io.NopCloser(strings.NewReader("x")))
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sudo": {"1"}}
	resp, err = cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if got, _ := up.last(); got != nil && got.Trailer.Get("X-Sudo") != "" {
		t.Errorf("upstream received trailer X-Sudo=%q that the policy never decided (status %d); a header rule denies it as a header", got.Trailer.Get("X-Sudo"), resp.StatusCode)
	} else if got != nil {
		t.Logf("upstream trailer: %v header: %v", got.Trailer, got.Header)
	}
}
