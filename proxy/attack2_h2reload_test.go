package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// HELD (passes today): an HTTP/2 streaming upload inside intercepted TLS
// is re-decided on reload; the stream is cancelled and no more DATA reaches
// the upstream.
func TestAttack2HeldH2StreamingUploadReload(t *testing.T) {
	got := make(chan string, 100)
	up := newUpstream(t, true, true, func(w http.ResponseWriter, r *http.Request) {})
	up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})
	dec := newDecider(policy.Deny, rule{name: "upload", host: "example.com", pathPrefix: "/upload", action: policy.Allow})
	dec.intercept["example.com"] = true
	e := newEnv(t, dec, func(c *Config) { c.UpstreamRoots = upstreamPool(up) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	cl := e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "https://example.com/upload", pr)
	go func() {
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("first"))
	select {
	case s := <-got:
		if s != "first" {
			t.Fatalf("got %q", s)
		}
	case <-time.After(waitLimit):
		t.Fatal("first chunk not forwarded")
	}
	dec.set(policy.Deny, rule{name: "upload-closed", host: "example.com", pathPrefix: "/upload", action: policy.Deny})
	n := e.srv.Recheck("policy reloaded")
	go pw.Write([]byte("second"))
	select {
	case s := <-got:
		t.Errorf("after a reload denying POST /upload (Recheck closed %d), the h2 streaming upload still delivers %q upstream", n, s)
	case <-time.After(time.Second):
	}
	pw.Close()
}
