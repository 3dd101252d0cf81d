package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

func testCA(t *testing.T) *CA {
	t.Helper()
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func otherRoot(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestInstallTrustCertifi(t *testing.T) {
	c := testCA(t)
	root := t.TempDir()
	pip := "/usr/local/lib/python3.12/site-packages/certifi/cacert.pem"
	venv := "/app/.venv/lib/python3.11/site-packages/certifi/cacert.pem"
	vendored := "/usr/local/lib/python3.12/site-packages/pip/_vendor/certifi/cacert.pem"
	for _, p := range []string{pip, venv, vendored} {
		mustWrite(t, root, p, "# mozilla roots\n")
	}
	// Debian links its certifi bundle to the system one: appended once.
	mustWrite(t, root, "/etc/ssl/certs/ca-certificates.crt", "ROOTS\n")
	deb := filepath.Join(root, "usr/lib/python3/dist-packages/certifi")
	os.MkdirAll(deb, 0o755)
	os.Symlink("/etc/ssl/certs/ca-certificates.crt", filepath.Join(deb, "cacert.pem"))
	// A certifi in a pruned tree is not looked for.
	mustWrite(t, root, "/proc/1/root/certifi/cacert.pem", "x\n")

	in, err := InstallTrust(root, c.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(in.Certifi)
	want := []string{venv, vendored, pip}
	slices.Sort(want)
	if !slices.Equal(in.Certifi, want) {
		t.Errorf("certifi = %v, want %v", in.Certifi, want)
	}
	for _, p := range want {
		if got := mustRead(t, root, p); !strings.HasPrefix(got, "# mozilla roots\n# clawd CA") {
			t.Errorf("%s = %q", p, got)
		}
	}
	if n := strings.Count(mustRead(t, root, "/etc/ssl/certs/ca-certificates.crt"), "BEGIN CERTIFICATE"); n != 1 {
		t.Errorf("system bundle holds the CA %d times", n)
	}
	if mustRead(t, root, "/proc/1/root/certifi/cacert.pem") != "x\n" {
		t.Error("a pruned directory was searched")
	}
	if again, _ := InstallTrust(root, c.CertPEM()); len(again.Changed()) != 0 {
		t.Errorf("second install changed %v", again.Changed())
	}
}

func TestInstallTrustJava(t *testing.T) {
	c := testCA(t)
	other := otherRoot(t, "Some Root CA")
	for _, tc := range []struct {
		name string
		enc  *pkcs12.Encoder
		pass string
	}{
		{"password-less (JDK 18+)", pkcs12.Passwordless, ""},
		{"changeit", pkcs12.LegacyDES, "changeit"},
		{"changeit modern", pkcs12.Modern2023, "changeit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			store, err := tc.enc.EncodeTrustStore([]*x509.Certificate{other}, tc.pass)
			if err != nil {
				t.Fatal(err)
			}
			// Debian: the JDK's cacerts links to the shared store.
			shared := "/etc/ssl/certs/java/cacerts"
			mustWrite(t, root, shared, string(store))
			os.Chmod(filepath.Join(root, shared), 0o640)
			sec := filepath.Join(root, "usr/lib/jvm/java-17-openjdk-amd64/lib/security")
			os.MkdirAll(sec, 0o755)
			os.Symlink(shared, filepath.Join(sec, "cacerts"))
			// A temurin-style JDK with its own store.
			own := "/opt/java/openjdk/lib/security/cacerts"
			mustWrite(t, root, own, string(store))

			in, err := InstallTrust(root, c.CertPEM())
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(in.Java)
			if !slices.Equal(in.Java, []string{shared, own}) {
				t.Fatalf("java = %v (skipped %v)", in.Java, in.Skipped)
			}
			for _, p := range []string{shared, own} {
				certs, err := pkcs12.DecodeTrustStore([]byte(mustRead(t, root, p)), tc.pass)
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				var names []string
				for _, x := range certs {
					names = append(names, x.Subject.CommonName)
				}
				slices.Sort(names)
				if !slices.Equal(names, []string{"Some Root CA", "clawd interception CA"}) {
					t.Errorf("%s holds %v", p, names)
				}
				if ok, err := javaHas([]byte(mustRead(t, root, p)), c.Certificate().Raw); !ok || err != nil {
					t.Errorf("javaHas = %v, %v", ok, err)
				}
			}
			if fi, _ := os.Stat(filepath.Join(root, shared)); fi.Mode().Perm() != 0o640 {
				t.Errorf("mode changed to %v", fi.Mode().Perm())
			}
			if fi, _ := os.Lstat(filepath.Join(sec, "cacerts")); fi.Mode()&os.ModeSymlink == 0 {
				t.Error("the JDK's link to the shared store was replaced")
			}
			if again, _ := InstallTrust(root, c.CertPEM()); len(again.Changed()) != 0 {
				t.Errorf("second install changed %v", again.Changed())
			}
		})
	}

	t.Run("JKS is reported, not touched", func(t *testing.T) {
		root := t.TempDir()
		jks := "\xfe\xed\xfe\xed\x00\x00\x00\x02rest"
		mustWrite(t, root, "/usr/lib/jvm/java-8/jre/lib/security/cacerts", jks)
		in, err := InstallTrust(root, c.CertPEM())
		if err != nil {
			t.Fatal(err)
		}
		if len(in.Java) != 0 || len(in.Skipped) != 1 || in.Skipped[0].Path != "/usr/lib/jvm/java-8/jre/lib/security/cacerts" ||
			in.Skipped[0].Why != ErrJKS.Error() {
			t.Errorf("installed %+v", in)
		}
		if mustRead(t, root, "/usr/lib/jvm/java-8/jre/lib/security/cacerts") != jks {
			t.Error("JKS store modified")
		}
	})
}

func TestInstallTrustHostileRoot(t *testing.T) {
	c := testCA(t)
	host := t.TempDir()
	victim := filepath.Join(host, "victim")
	os.WriteFile(victim, []byte("host file\n"), 0o644)
	root := t.TempDir()
	d := filepath.Join(root, "usr/lib/python3.11/site-packages/certifi")
	os.MkdirAll(d, 0o755)
	os.Symlink(victim, filepath.Join(d, "cacert.pem"))
	// A FIFO must not block the daemon.
	f := filepath.Join(root, "opt/venv/lib/python3.11/site-packages/certifi")
	os.MkdirAll(f, 0o755)
	if err := syscall.Mkfifo(filepath.Join(f, "cacert.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	// clawd's own file as a link to the host must be replaced, not followed.
	os.MkdirAll(filepath.Join(root, "etc/ssl/certs"), 0o755)
	os.Symlink(victim, filepath.Join(root, "etc/ssl/certs/clawd-ca.pem"))
	// A directory linked out of the root is not walked.
	os.Symlink(host, filepath.Join(root, "opt/hostlink"))
	mustWrite(t, host, "/lib/python3.11/site-packages/certifi/cacert.pem", "host certifi\n")

	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := InstallTrust(root, c.CertPEM()); err != nil {
			t.Logf("InstallTrust: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("InstallTrust blocked")
	}
	if b, _ := os.ReadFile(victim); string(b) != "host file\n" {
		t.Fatalf("host file outside rootfs was modified: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(host, "lib/python3.11/site-packages/certifi/cacert.pem")); string(b) != "host certifi\n" {
		t.Fatal("a store outside the root was modified")
	}
	if got := mustRead(t, root, CAFile); !strings.Contains(got, "BEGIN CERTIFICATE") {
		t.Errorf("clawd-ca.pem = %q", got)
	}
}

func TestScanBudget(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		mustWrite(t, dir, filepath.Join("/many", strings.Repeat("d", i+1)), "")
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if f := scan(r, 10); !f.truncated {
		t.Error("a walk past its budget is not reported")
	}
	if f := scan(r, 1000); f.truncated {
		t.Error("a walk within its budget is reported truncated")
	}
}
