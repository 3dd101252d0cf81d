// Package ca is clawd's private certificate authority. It signs the short-lived
// leaf certificates the proxy presents when it terminates TLS for hosts marked
// for interception, and installs its own certificate into container trust
// bundles so agents accept those leaves.
package ca

import (
	"container/list"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"
	"github.com/clawd-dev/clawd/internal/hostname"
)

const (
	certFile = "ca.crt"
	keyFile  = "ca.key"

	// leafValidity is short: a leaked leaf is only useful for a day, and
	// agents never pin these certificates.
	leafValidity = 24 * time.Hour
	// leafRenewBefore regenerates a cached leaf this long before it expires,
	// so a long-lived connection never gets a certificate about to lapse.
	leafRenewBefore = time.Hour
	// leafBackdate tolerates containers whose clock runs a little behind.
	leafBackdate = time.Hour
	// maxLeaves bounds the cache: an agent can make us mint a leaf for any
	// name it likes, so memory must not grow with the number of names.
	maxLeaves = 1024
)

// CA is a loaded certificate authority. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	leafKey *ecdsa.PrivateKey // shared by all leaves: minting stays cheap

	now func() time.Time // injectable clock for tests

	mu     sync.Mutex
	lru    *list.List // of *leafEntry, most recent first
	leaves map[string]*list.Element
}

type leafEntry struct {
	host string
	cert *tls.Certificate
}

// LoadOrCreate loads the CA from dir (ca.crt and ca.key), generating an EC
// P-256 CA on first start. The key file is written with mode 0600, and an
// existing key readable by group or others is refused.
func LoadOrCreate(dir string) (*CA, error) {
	certPath := filepath.Join(dir, certFile)
	keyPath := filepath.Join(dir, keyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return load(certPath, keyPath)
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		return create(dir, certPath, keyPath)
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, fmt.Errorf("load CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("load CA: %w", keyErr)
	default:
		// Regenerating here would silently invalidate the certificate
		// already installed in containers; make the operator decide.
		return nil, fmt.Errorf("load CA: only one of %s and %s exists in %s", certFile, keyFile, dir)
	}
}

func load(certPath, keyPath string) (*CA, error) {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("load CA: key %s has mode %v; want 0600", keyPath, fi.Mode().Perm())
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load CA: parse certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("load CA: %s is not a CA certificate", certPath)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA: unsupported key type %T", pair.PrivateKey)
	}
	switch signer.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
	default:
		return nil, fmt.Errorf("load CA: unsupported key type %T (want EC or RSA)", signer)
	}
	return newCA(cert, certPEM, signer)
}

func create(dir, certPath, keyPath string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA: generate key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{CommonName: "clawd interception CA", Organization: []string{"clawd"}},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA: sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("create CA: marshal key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key goes first: a crash in between leaves only a key, which
	// LoadOrCreate reports instead of overwriting.
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	return newCA(cert, certPEM, key)
}

func newCA(cert *x509.Certificate, certPEM []byte, key crypto.Signer) (*CA, error) {
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("load CA: generate leaf key: %w", err)
	}
	return &CA{
		cert:    cert,
		certPEM: certPEM,
		key:     key,
		leafKey: leafKey,
		now:     time.Now,
		lru:     list.New(),
		leaves:  make(map[string]*list.Element),
	}, nil
}

// CertPEM returns the CA certificate in PEM form, for trust bundles.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// Certificate returns the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Leaf returns a certificate for host signed by the CA, from a bounded cache.
// Cached leaves are regenerated when they come within an hour of expiry.
func (c *CA) Leaf(host string) (*tls.Certificate, error) {
	host, err := normalizeHost(host)
	if err != nil {
		return nil, fmt.Errorf("mint leaf: %w", err)
	}
	now := c.now()
	c.mu.Lock()
	if el, ok := c.leaves[host]; ok {
		e := el.Value.(*leafEntry)
		if now.Before(e.cert.Leaf.NotAfter.Add(-leafRenewBefore)) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.cert, nil
		}
	}
	c.mu.Unlock()

	// Signing happens outside the lock; two concurrent misses for the same
	// host both sign and the later one wins the cache slot, which is harmless.
	cert, err := c.mint(host, now)
	if err != nil {
		return nil, fmt.Errorf("mint leaf for %q: %w", host, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.leaves[host]; ok {
		el.Value.(*leafEntry).cert = cert
		c.lru.MoveToFront(el)
		return cert, nil
	}
	c.leaves[host] = c.lru.PushFront(&leafEntry{host: host, cert: cert})
	for c.lru.Len() > maxLeaves {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.leaves, old.Value.(*leafEntry).host)
	}
	return cert, nil
}

func (c *CA) mint(host string, now time.Time) (*tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(c.cert.NotAfter) {
		tmpl.NotAfter = c.cert.NotAfter
	}
	if ip, ok := hostname.IP(host); ok {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, c.leafKey.Public(), c.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, c.cert.Raw},
		PrivateKey:  c.leafKey,
		Leaf:        leaf,
	}, nil
}

// normalizeHost is hostname.Normalize, refusing anything that is not a
// name or an IP literal: the name comes from an agent's SNI.
func normalizeHost(host string) (string, error) {
	h := hostname.Normalize(host)
	if h == "" {
		return "", errors.New("empty host name")
	}
	if !hostname.Valid(h) && !hostname.IsIP(h) {
		return "", fmt.Errorf("invalid host name %q", host)
	}
	return h, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on Linux; a fixed serial would still
		// produce a valid (if less unique) certificate.
		return big.NewInt(1)
	}
	return n.Add(n, big.NewInt(1))
}
