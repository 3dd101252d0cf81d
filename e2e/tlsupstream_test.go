package e2e

// Helpers shared by the secrets and approval tests: a TLS echo server in the
// upstream netns signed by a test CA, and running the CLI with stdin.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// secTLSEcho is an HTTPS server in the upstream netns that records every
// request and echoes its Authorization header back in the body and in the
// X-Echo-Authorization response header.
type secTLSEcho struct {
	CAFile string // PEM of the test CA that signed the server certificate
	Port   int

	mu   sync.Mutex
	seen []harness.Seen
}

func secStartTLSEcho(t testing.TB, up *harness.Upstream, port int) *secTLSEcho {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clawd e2e upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: harness.UpstreamDomain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames:    []string{harness.UpstreamDomain, "*." + harness.UpstreamDomain},
		IPAddresses: []net.IP{harness.UpstreamIPv4.AsSlice(), harness.UpstreamIPv6.AsSlice()},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &secTLSEcho{CAFile: filepath.Join(dir, "upstream-ca.pem"), Port: port}
	if err := os.WriteFile(e.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := up.Listen("tcp", net.JoinHostPort(harness.UpstreamIPv4.String(), secItoa(port)))
	if err != nil {
		t.Fatalf("TLS listener in the upstream: %v", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	srv := &http.Server{
		Handler:           http.HandlerFunc(e.serve),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 30 * time.Second,
	}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return e
}

func (e *secTLSEcho) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s := harness.Seen{Method: r.Method, Path: r.RequestURI, Host: r.Host, Remote: r.RemoteAddr, Headers: r.Header.Clone(), Body: string(body)}
	e.mu.Lock()
	e.seen = append(e.seen, s)
	e.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Echo-Authorization", r.Header.Get("Authorization"))
	json.NewEncoder(w).Encode(s)
}

// Requests returns what the server received since the last Reset.
func (e *secTLSEcho) Requests() []harness.Seen {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]harness.Seen(nil), e.seen...)
}

func (e *secTLSEcho) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seen = nil
}

// seenPath returns the requests for path (ignoring the query).
func (e *secTLSEcho) seenPath(path string) []harness.Seen {
	var out []harness.Seen
	for _, s := range e.Requests() {
		if p, _, _ := strings.Cut(s.Path, "?"); p == path {
			out = append(out, s)
		}
	}
	return out
}

func secItoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

// secCLIStdin runs the clawd CLI against c with stdin (secret values are only
// read from stdin).
func secCLIStdin(c *Clawd, stdin string, args ...string) (string, error) {
	full := append([]string{"--socket", c.Socket}, args...)
	cmd := exec.Command(c.Bin, full...)
	cmd.Env = append(os.Environ(),
		"CLAWD_SECRETS_FILE="+filepath.Join(c.StateDir, "secrets.json"),
		"CLAWD_SECRETS_KEY="+filepath.Join(c.StateDir, "secrets.key"))
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// secWriteCA stores the daemon's interception CA in a file for containers.
func secWriteCA(t testing.TB, c *Clawd) string {
	t.Helper()
	pemOut := c.MustCLI("ca")
	if !strings.Contains(pemOut, "BEGIN CERTIFICATE") {
		t.Fatalf("clawd ca printed %q", pemOut)
	}
	p := filepath.Join(t.TempDir(), "clawd-ca.pem")
	if err := os.WriteFile(p, []byte(pemOut), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(p), 0o755)
	return p
}

// secScrapeMetrics fetches the daemon's Prometheus metrics.
func secScrapeMetrics(t testing.TB, c *Clawd) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + c.Metrics + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "clawd_") {
		t.Fatalf("GET /metrics: %d %.300s", resp.StatusCode, b)
	}
	return string(b)
}

// secNoLeak fails when any of values occurs in any of the named texts.
func secNoLeak(t testing.TB, values []string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		for _, v := range values {
			if v != "" && strings.Contains(text, v) {
				t.Errorf("a real secret value appears in %s", name)
			}
		}
	}
}
