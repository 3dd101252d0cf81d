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
	"syscall"

	"github.com/clawd-dev/clawd/internal/atomicfile"
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

// readOwnFile reads a key file that must be a regular file (not a symbolic
// link) owned by this process's user, and with private, unreadable by
// group and others.
func readOwnFile(path string, private bool) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, errors.New("is a symbolic link: refused (replace it with the file itself)")
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("owned by uid %d, not by clawd's uid %d: whoever owns it could have replaced it (chown it, or remove it to get a new key)", st.Uid, os.Geteuid())
	}
	if private && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("mode %04o lets others read it: chmod 600 it (or remove it to get a new key)", fi.Mode().Perm())
	}
	if !private && fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("mode %04o lets others write it: chmod 644 it", fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("larger than %d bytes: not a key", maxKeyFile)
	}
	return b, nil
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
