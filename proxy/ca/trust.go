package ca

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// bundlePaths are the trust bundles distributions read, inside a container root.
var bundlePaths = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Arch, Gentoo, Alpine
	"/etc/ssl/cert.pem",                                 // Alpine, macOS-style, LibreSSL
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // RHEL 7+, CentOS
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
}

// defaultBundle is created when a container root has no bundle at all.
const defaultBundle = "/etc/ssl/certs/ca-certificates.crt"

// maxBundle bounds how much of a (container-controlled) bundle we read.
const maxBundle = 64 << 20

// InstallTrust appends caPEM to every trust bundle that exists under rootfs,
// creating /etc/ssl/certs/ca-certificates.crt when none does. It is
// idempotent: a bundle already holding the certificate (found by its marker
// comment) is left alone. It returns the in-container paths it changed.
//
// The container root is hostile: symlinks are resolved inside rootfs (an
// absolute link target means rootfs + target, never the host's file) and only
// regular files are touched, so a link or FIFO cannot make clawd write or block
// outside the container.
func InstallTrust(rootfs string, caPEM []byte) ([]string, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("install trust: CA is not a PEM certificate")
	}
	sum := sha256.Sum256(block.Bytes)
	marker := "# clawd CA sha256:" + hex.EncodeToString(sum[:])
	entry := marker + "\n" + string(pem.EncodeToMemory(block))

	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("install trust: %w", err)
	}
	defer root.Close()

	var changed []string
	seen := map[string]bool{}
	found := false
	for _, p := range bundlePaths {
		budget := 256
		real, err := resolve(root, p, &budget)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return changed, fmt.Errorf("install trust: %s: %w", p, err)
		}
		found = true
		if seen[real] {
			continue
		}
		seen[real] = true
		did, err := appendOnce(root, real, marker, entry)
		if err != nil {
			return changed, fmt.Errorf("install trust: %s: %w", p, err)
		}
		if did {
			changed = append(changed, "/"+real)
		}
	}
	if !found {
		if err := root.MkdirAll(path.Dir(defaultBundle[1:]), 0o755); err != nil {
			return changed, fmt.Errorf("install trust: %w", err)
		}
		f, err := root.OpenFile(defaultBundle[1:], os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			return changed, fmt.Errorf("install trust: %w", err)
		}
		_, werr := f.WriteString(entry)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return changed, fmt.Errorf("install trust: %s: %w", defaultBundle, werr)
		}
		changed = append(changed, defaultBundle)
	}
	return changed, nil
}

// resolve follows symlinks of p inside root and returns the root-relative
// path of the final file. Absolute link targets are taken relative to root,
// which is how the container itself sees them.
// budget bounds the total work, so crafted link chains cannot stall us.
func resolve(root *os.Root, p string, budget *int) (string, error) {
	rel := strings.TrimPrefix(path.Clean(p), "/")
	for hops := 0; hops < 40; hops++ {
		if *budget--; *budget < 0 {
			return "", errors.New("too many levels of symbolic links")
		}
		// Resolve parents first, so a link in a directory component is also
		// interpreted inside the container.
		dir, base := path.Split(rel)
		if dir != "" {
			rdir, err := resolve(root, "/"+strings.TrimSuffix(dir, "/"), budget)
			if err != nil {
				return "", err
			}
			rel = path.Join(rdir, base)
		}
		fi, err := root.Lstat(rel)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return rel, nil
		}
		target, err := root.Readlink(rel)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			rel = strings.TrimPrefix(path.Clean(target), "/")
		} else {
			rel = strings.TrimPrefix(path.Clean(path.Join("/", path.Dir(rel), target)), "/")
		}
		if rel == "" {
			rel = "."
		}
	}
	return "", errors.New("too many levels of symbolic links")
}

// appendOnce appends entry to the regular file rel unless it holds marker.
func appendOnce(root *os.Root, rel, marker, entry string) (bool, error) {
	// O_NOFOLLOW: rel is already resolved, a link appearing now is a race
	// we refuse. O_NONBLOCK: opening a FIFO must not hang the daemon.
	f, err := root.OpenFile(rel, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBundle))
	if err != nil {
		return false, err
	}
	if bytes.Contains(data, []byte(marker)) {
		return false, nil
	}
	var buf strings.Builder
	if len(data) > 0 && data[len(data)-1] != '\n' {
		buf.WriteByte('\n')
	}
	buf.WriteString(entry)
	if _, err := f.WriteString(buf.String()); err != nil {
		return false, err
	}
	return true, nil
}
