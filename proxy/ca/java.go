package ca

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"path"

	"os"

	"software.sslmate.com/src/go-pkcs12"
)

// maxJavaStore bounds how much of a cacerts file clawd reads (the JDK's is
// about 150 KiB).
const maxJavaStore = 16 << 20

// javaStorePassword is the password every JDK and distribution uses for
// cacerts; JDK 18+ ships it password-less.
const javaStorePassword = "changeit"

// ErrJKS is returned for Java stores in the JKS (or JCEKS) format: there
// is no well-kept Go library that writes them, so clawd leaves them alone
// and `clawd doctor --container` gives the keytool command instead.
var ErrJKS = errors.New("JKS trust store: clawd writes only PKCS#12 stores")

// javaFormat names the format of a Java key store by its first bytes.
func javaFormat(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0xfe, 0xed, 0xfe, 0xed}):
		return "jks"
	case bytes.HasPrefix(b, []byte{0xce, 0xce, 0xce, 0xce}):
		return "jceks"
	case len(b) > 0 && b[0] == 0x30:
		return "pkcs12"
	}
	return "unknown"
}

// decodeJava decodes a PKCS#12 trust store, password-less first, then with
// the usual password. It returns the certificates and the encoder that
// writes the store back the way it was protected.
func decodeJava(b []byte) ([]*x509.Certificate, *pkcs12.Encoder, string, error) {
	if f := javaFormat(b); f != "pkcs12" {
		if f == "jks" || f == "jceks" {
			return nil, nil, "", ErrJKS
		}
		return nil, nil, "", errors.New("not a Java trust store")
	}
	if certs, err := pkcs12.DecodeTrustStore(b, ""); err == nil {
		return certs, pkcs12.Passwordless, "", nil
	}
	certs, err := pkcs12.DecodeTrustStore(b, javaStorePassword)
	if err != nil {
		return nil, nil, "", fmt.Errorf("PKCS#12 trust store: %w", err)
	}
	// Legacy (3DES, SHA-1 MAC) is what every Java since 8 reads.
	return certs, pkcs12.LegacyDES, javaStorePassword, nil
}

// javaHas reports whether the store b trusts the certificate der.
func javaHas(b, der []byte) (bool, error) {
	certs, _, _, err := decodeJava(b)
	if err != nil {
		return false, err
	}
	for _, c := range certs {
		if bytes.Equal(c.Raw, der) {
			return true, nil
		}
	}
	return false, nil
}

// importJava adds the certificate der to the PKCS#12 trust store at the
// resolved root-relative path rel, written back atomically with the same
// protection and file mode. Aliases are rebuilt from each certificate's
// subject and fingerprint (the decoder does not return them); clawd's is
// "clawd-ca".
func importJava(root *os.Root, rel string, der []byte) (bool, error) {
	b, err := readRegular(root, rel, maxJavaStore)
	if err != nil {
		return false, err
	}
	certs, enc, pass, err := decodeJava(b)
	if err != nil {
		return false, err
	}
	for _, c := range certs {
		if bytes.Equal(c.Raw, der) {
			return false, nil
		}
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return false, err
	}
	entries := make([]pkcs12.TrustStoreEntry, 0, len(certs)+1)
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		entries = append(entries, pkcs12.TrustStoreEntry{Cert: c, FriendlyName: aliasOf(c) + " " + hex.EncodeToString(sum[:4])})
	}
	entries = append(entries, pkcs12.TrustStoreEntry{Cert: ca, FriendlyName: "clawd-ca"})
	out, err := enc.EncodeTrustStoreEntries(entries, pass)
	if err != nil {
		return false, err
	}
	fi, err := root.Lstat(rel)
	if err != nil {
		return false, err
	}
	if err := writeIn(root, "/"+path.Clean(rel), out, fi.Mode().Perm()); err != nil {
		return false, err
	}
	return true, nil
}

func aliasOf(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	if len(c.Subject.Organization) > 0 {
		return c.Subject.Organization[0]
	}
	return "ca"
}
