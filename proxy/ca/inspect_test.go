package ca

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"crypto/x509"
	"software.sslmate.com/src/go-pkcs12"
)

// byPath indexes Inspect's answer by path (runtime for pathless lines).
func byPath(rs []RuntimeTrust) map[string]RuntimeTrust {
	m := map[string]RuntimeTrust{}
	for _, r := range rs {
		k := r.Path
		if k == "" {
			k = r.Runtime
		}
		m[k] = r
	}
	return m
}

func TestInspect(t *testing.T) {
	c := testCA(t)
	root := t.TempDir()
	mustWrite(t, root, "/etc/ssl/certs/ca-certificates.crt", "ROOTS\n")
	// An official Node build: no libssl, its release URL inside.
	mustWrite(t, root, "/opt/node/bin/node", "\x7fELF-not-really ... https://nodejs.org/download/release/v24.22.3/node-v24.22.3-headers.tar.gz ...")
	os.MkdirAll(filepath.Join(root, "usr/local/bin"), 0o755)
	os.Symlink("/opt/node/bin/node", filepath.Join(root, "usr/local/bin/node"))
	// A distribution Node: linked against the system OpenSSL.
	openssl, err := os.ReadFile("/usr/bin/openssl")
	if err != nil {
		t.Fatalf("this test borrows /usr/bin/openssl as a dynamically linked binary (Debian package openssl): %v", err)
	}
	mustWrite(t, root, "/usr/bin/node", string(openssl))
	mustWrite(t, root, "/usr/bin/curl", "curl")
	mustWrite(t, root, "/usr/bin/python3.11", "py")
	mustWrite(t, root, "/usr/lib/python3/dist-packages/certifi/cacert.pem", "x\n")
	mustWrite(t, root, "/usr/lib/python3/dist-packages/certifi/core.py", "DEBIAN_CA_CERTS_PATH = '/etc/ssl/certs/ca-certificates.crt'\n")
	mustWrite(t, root, "/usr/local/lib/python3.12/site-packages/certifi/cacert.pem", "x\n")
	mustWrite(t, root, "/usr/local/bin/deno", "deno")
	mustWrite(t, root, "/root/.bun/bin/bun", "bun")
	mustWrite(t, root, "/usr/lib/jvm/java-8/jre/lib/security/cacerts", "\xfe\xed\xfe\xedjks")
	store, _ := pkcs12.Passwordless.EncodeTrustStore([]*x509.Certificate{otherRoot(t, "R")}, "")
	mustWrite(t, root, "/opt/java/openjdk/lib/security/cacerts", string(store))

	before, err := Inspect(root, c.CertPEM(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := byPath(before)
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", CAFile, BundleFile, "/usr/bin/curl", "/usr/bin/node", "/opt/node/bin/node",
		"/usr/bin/python3.11", "/usr/local/lib/python3.12/site-packages/certifi/cacert.pem", "/opt/java/openjdk/lib/security/cacerts"} {
		if r, ok := m[p]; !ok || r.Trusts || r.Fix == "" {
			t.Errorf("before --trust-ca, %s: %+v (found %v)", p, r, ok)
		}
	}
	if r := m["/opt/node/bin/node"]; !strings.Contains(r.Runtime, "24.22.3") || !strings.Contains(r.Runtime, "official") || !strings.Contains(r.Fix, "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/clawd-ca.pem") {
		t.Errorf("official node: %+v", r)
	}
	if r := m["/usr/bin/node"]; !strings.Contains(r.Runtime, "distribution") {
		t.Errorf("distribution node: %+v", r)
	}
	if _, dup := m["/usr/local/bin/node"]; dup {
		t.Error("a link to a runtime already listed is listed again")
	}

	if _, err := InstallTrust(root, c.CertPEM()); err != nil {
		t.Fatal(err)
	}
	after, _ := Inspect(root, c.CertPEM(), nil)
	m = byPath(after)
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", CAFile, BundleFile, "/usr/bin/curl", "/usr/bin/node", "/usr/bin/python3.11",
		"/usr/lib/python3/dist-packages/certifi/cacert.pem", "/usr/local/lib/python3.12/site-packages/certifi/cacert.pem", "/opt/java/openjdk/lib/security/cacerts"} {
		if r := m[p]; !r.Trusts || r.Fix != "" {
			t.Errorf("after --trust-ca, %s: %+v", p, r)
		}
	}
	// What --trust-ca alone cannot do, with the fix.
	for p, fix := range map[string]string{
		"/opt/node/bin/node":                           "NODE_EXTRA_CA_CERTS",
		"/usr/local/bin/deno":                          "DENO_CERT",
		"/root/.bun/bin/bun":                           "NODE_EXTRA_CA_CERTS",
		"/usr/lib/jvm/java-8/jre/lib/security/cacerts": "keytool -importcert",
	} {
		if r := m[p]; r.Trusts || !strings.Contains(r.Fix, fix) {
			t.Errorf("after --trust-ca, %s: %+v, want a fix with %s", p, r, fix)
		}
	}

	// With clawd env's variables.
	var env []string
	for _, v := range TrustEnv() {
		env = append(env, v.Name+"="+v.Value)
	}
	withEnv, _ := Inspect(root, c.CertPEM(), env)
	m = byPath(withEnv)
	for _, p := range []string{"/opt/node/bin/node", "/usr/local/bin/deno", "/root/.bun/bin/bun", "/usr/bin/curl", "/usr/bin/python3.11"} {
		if r := m[p]; !r.Trusts {
			t.Errorf("with clawd env, %s: %+v", p, r)
		}
	}
	// A variable naming a file without the CA says so.
	bad, _ := Inspect(root, c.CertPEM(), []string{"NODE_EXTRA_CA_CERTS=/etc/hostname"})
	if r := byPath(bad)["/opt/node/bin/node"]; r.Trusts || !strings.Contains(r.Info, "does not hold") {
		t.Errorf("NODE_EXTRA_CA_CERTS at a wrong file: %+v", r)
	}
}
