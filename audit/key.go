package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/clawd-dev/clawd/internal/atomicfile"
)

// LoadOrCreateKey returns the checkpoint signing key in path (PEM PKCS #8,
// mode 0600), generating it on first use, and writes its public key beside
// it as path+".pub" (PEM, 0644) when that is missing: give that file to
// `clawd audit verify --key` (it is safe to copy off the host). A key file
// that others can read is refused.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	var key ed25519.PrivateKey
	switch {
	case errors.Is(err, os.ErrNotExist):
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("audit key: %w", err)
	default:
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("audit key: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("audit key %s: mode %04o lets others read it: chmod 600 it (or remove it to get a new key)", path, fi.Mode().Perm())
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("audit key %s: not a PEM PRIVATE KEY", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("audit key %s: %w", path, err)
		}
		var ok bool
		if key, ok = k.(ed25519.PrivateKey); !ok {
			return nil, fmt.Errorf("audit key %s: not an Ed25519 key", path)
		}
	}
	if _, err := os.Stat(path + ".pub"); errors.Is(err, os.ErrNotExist) {
		der, err := x509.MarshalPKIXPublicKey(key.Public())
		if err != nil {
			return nil, err
		}
		if err := atomicfile.WriteFile(path+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			return nil, fmt.Errorf("audit public key: %w", err)
		}
	}
	return key, nil
}

// LoadPublicKey reads an Ed25519 public key: PEM PUBLIC KEY (the .pub file
// LoadOrCreateKey writes).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: not a PEM PUBLIC KEY", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 public key", path)
	}
	return pub, nil
}
