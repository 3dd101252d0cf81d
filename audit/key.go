package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/clawd-dev/clawd/internal/atomicfile"
	"github.com/clawd-dev/clawd/internal/privfile"
)

// maxKeyFile bounds what is read of a key file (a PEM Ed25519 key is a few
// hundred bytes).
const maxKeyFile = 64 << 10

// LoadOrCreateKey returns the checkpoint signing key in path (PEM PKCS #8,
// mode 0600, owned by this process's user), generating it on first use,
// and keeps its public key beside it as path+".pub" (PEM, 0644): give that
// file to `clawd audit verify --key` (it is safe to copy off the host).
//
// The private key is the truth: a .pub that is missing, or holds another
// key (a stale or planted file an operator would copy off the host and
// then trust), is rewritten from it, and fixed says so. A key file that
// others can read, that is a symbolic link or not a regular file, or that
// another user owns (who could then have replaced it) is refused; so is
// such a .pub.
func LoadOrCreateKey(path string) (key ed25519.PrivateKey, fixed string, err error) {
	b, err := readOwnFile(path, true)
	switch {
	case errors.Is(err, os.ErrNotExist):
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, "", err
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, "", err
		}
		if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, "", fmt.Errorf("audit key: %w", err)
		}
	case err != nil:
		return nil, "", fmt.Errorf("audit key %s: %w", path, err)
	default:
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, "", fmt.Errorf("audit key %s: not a PEM PRIVATE KEY", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("audit key %s: %w", path, err)
		}
		var ok bool
		if key, ok = k.(ed25519.PrivateKey); !ok {
			return nil, "", fmt.Errorf("audit key %s: not an Ed25519 key", path)
		}
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, "", err
	}
	want := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pub := path + ".pub"
	have, err := readOwnFile(pub, false)
	switch {
	case err == nil && bytes.Equal(have, want):
		return key, "", nil
	case err == nil:
		fixed = fmt.Sprintf("%s did not hold the public key of %s (stale or replaced): rewritten; copies of the old file verify nothing", pub, path)
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, "", fmt.Errorf("audit public key %s: %w", pub, err)
	}
	if err := atomicfile.WriteFile(pub, want, 0o644); err != nil {
		return nil, "", fmt.Errorf("audit public key: %w", err)
	}
	return key, fixed, nil
}

// readOwnFile reads a key file (see privfile); private: the signing key.
func readOwnFile(path string, private bool) ([]byte, error) {
	mode := privfile.Public
	if private {
		mode = privfile.Private
	}
	b, err := privfile.Read(path, mode, maxKeyFile)
	if err != nil && private && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (or remove it to get a new key)", err)
	}
	return b, err
}

// LoadPublicKey reads an Ed25519 public key: PEM PUBLIC KEY (the .pub file
// LoadOrCreateKey writes).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if len(b) > maxKeyFile || blk == nil || blk.Type != "PUBLIC KEY" {
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
