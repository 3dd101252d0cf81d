package ca

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/internal/hostname"
)

func TestLoadOrCreateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	c1, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v, want 0600", fi.Mode().Perm())
	}
	c2, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c1.CertPEM(), c2.CertPEM()) {
		t.Error("second start generated a new CA instead of loading the first")
	}
	if !c2.Certificate().IsCA {
		t.Error("loaded certificate is not a CA")
	}
}

func TestLoadOrCreateRefusesBadState(t *testing.T) {
	tests := []struct {
		name  string
		setup func(dir string)
		want  string
	}{
		{"only key", func(dir string) { os.Remove(filepath.Join(dir, certFile)) }, "only one of"},
		{"only cert", func(dir string) { os.Remove(filepath.Join(dir, keyFile)) }, "only one of"},
		{"world-readable key", func(dir string) { os.Chmod(filepath.Join(dir, keyFile), 0o644) }, "want 0600"},
		{"garbage cert", func(dir string) { os.WriteFile(filepath.Join(dir, certFile), []byte("nope"), 0o644) }, "load CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreate(dir); err != nil {
				t.Fatal(err)
			}
			tt.setup(dir)
			_, err := LoadOrCreate(dir)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestLeaf(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := c.Certificate().NotBefore.Add(48 * time.Hour)
	c.now = func() time.Time { return now }
	pool := x509.NewCertPool()
	pool.AddCert(c.Certificate())

	l1, err := c.Leaf("API.Example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l1.Leaf.Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: pool, CurrentTime: now}); err != nil {
		t.Errorf("leaf does not verify against the CA: %v", err)
	}
	if got := l1.Leaf.NotAfter.Sub(now); got != leafValidity {
		t.Errorf("leaf validity = %v, want %v", got, leafValidity)
	}
	l2, _ := c.Leaf("api.example.com")
	if l1 != l2 {
		t.Error("second Leaf call did not hit the cache")
	}
	now = now.Add(leafValidity - leafRenewBefore/2)
	l3, _ := c.Leaf("api.example.com")
	if l3 == l1 {
		t.Error("leaf near expiry was not regenerated")
	}
	ipLeaf, err := c.Leaf("10.1.2.3")
	if err != nil || len(ipLeaf.Leaf.IPAddresses) != 1 {
		t.Errorf("IP leaf: %v %v", err, ipLeaf)
	}
	for _, host := range []string{"API.Example.com.", "api.example.com:443"} {
		if l, err := c.Leaf(host); err != nil || l != l3 {
			t.Errorf("Leaf(%q) is not the api.example.com leaf: %v", host, err)
		}
	}
	v6, err := c.Leaf("[2001:DB8::1]")
	if err != nil || len(v6.Leaf.IPAddresses) != 1 || v6.Leaf.IPAddresses[0].String() != "2001:db8::1" {
		t.Errorf("IPv6 leaf: %v %v", err, v6)
	}
	if mapped, err := c.Leaf("::ffff:10.1.2.3"); err != nil || mapped != ipLeaf {
		t.Errorf("v4-mapped leaf is not the 10.1.2.3 leaf: %v", err)
	}
	for _, bad := range []string{"", "a b", "x/y", "..", "a.com..", strings.Repeat("a", 300), "evil\x00.com", "fe80::1%eth0", "127.1", hostname.Invalid} {
		if _, err := c.Leaf(bad); err == nil {
			t.Errorf("Leaf(%q) succeeded, want error", bad)
		}
	}
}

func TestLeafCacheBounded(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxLeaves+10; i++ {
		if _, err := c.Leaf("h" + strconv.Itoa(i) + ".test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.leaves); n != maxLeaves || c.lru.Len() != maxLeaves {
		t.Errorf("cache holds %d leaves, want %d", n, maxLeaves)
	}
}

func TestInstallTrust(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	caPEM := c.CertPEM()

	t.Run("debian and alpine link", func(t *testing.T) {
		root := t.TempDir()
		mustWrite(t, root, "/etc/ssl/certs/ca-certificates.crt", "EXISTING") // no trailing newline
		// Alpine-style relative link and RHEL-style absolute link to the same file.
		if err := os.Symlink("certs/ca-certificates.crt", filepath.Join(root, "etc/ssl/cert.pem")); err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(root, "etc/pki/tls/certs"), 0o755)
		if err := os.Symlink("/etc/ssl/certs/ca-certificates.crt", filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")); err != nil {
			t.Fatal(err)
		}
		in, err := InstallTrust(root, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(in.Bundles, []string{"/etc/ssl/certs/ca-certificates.crt"}) {
			t.Errorf("bundles = %v", in.Bundles)
		}
		if !slices.Equal(in.Files, []string{CAFile, BundleFile}) {
			t.Errorf("files = %v", in.Files)
		}
		got := mustRead(t, root, "/etc/ssl/certs/ca-certificates.crt")
		if !strings.HasPrefix(got, "EXISTING\n# clawd CA sha256:") || !strings.HasSuffix(got, string(caPEM)) {
			t.Errorf("bundle = %q", got)
		}
		if mustRead(t, root, CAFile) != mustRead(t, root, "/etc/ssl/certs/ca-certificates.crt")[len("EXISTING\n"):] {
			t.Errorf("%s = %q", CAFile, mustRead(t, root, CAFile))
		}
		if mustRead(t, root, BundleFile) != got {
			t.Errorf("%s is not the system bundle with the CA", BundleFile)
		}
		again, err := InstallTrust(root, caPEM)
		if err != nil || len(again.Changed()) != 0 || len(again.Skipped) != 0 {
			t.Errorf("second install changed %+v (err %v), want nothing", again, err)
		}
		if mustRead(t, root, "/etc/ssl/certs/ca-certificates.crt") != got {
			t.Error("second install modified the bundle")
		}
	})

	t.Run("none exists creates debian bundle", func(t *testing.T) {
		root := t.TempDir()
		in, err := InstallTrust(root, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(in.Bundles, []string{"/etc/ssl/certs/ca-certificates.crt"}) {
			t.Errorf("bundles = %v", in.Bundles)
		}
		if !strings.Contains(mustRead(t, root, BundleFile), string(caPEM)) {
			t.Error("clawd-bundle.pem lacks the CA")
		}
		if !strings.Contains(mustRead(t, root, "/etc/ssl/certs/ca-certificates.crt"), string(caPEM)) {
			t.Error("created bundle lacks the CA")
		}
	})

	t.Run("absolute link stays inside rootfs", func(t *testing.T) {
		host := t.TempDir()
		victim := filepath.Join(host, "victim")
		os.WriteFile(victim, []byte("host file\n"), 0o644)
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "etc/ssl"), 0o755)
		os.Symlink(victim, filepath.Join(root, "etc/ssl/cert.pem"))
		if _, err := InstallTrust(root, caPEM); err != nil {
			// Refusing is fine too; writing the host file is not.
			t.Logf("InstallTrust: %v", err)
		}
		if b, _ := os.ReadFile(victim); string(b) != "host file\n" {
			t.Fatalf("host file outside rootfs was modified: %q", b)
		}
	})

	t.Run("rejects non-PEM", func(t *testing.T) {
		if _, err := InstallTrust(t.TempDir(), []byte("junk")); err == nil {
			t.Error("want error")
		}
	})
}

func mustWrite(t *testing.T, root, p, s string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
