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

// The files --trust-ca writes into every container, at fixed paths so that
// the environment `clawd env` prints (and the Kubernetes webhook injects)
// is the same for every container and can be given before one exists.
const (
	// CAFile holds clawd's CA alone: for variables that add to a
	// runtime's own roots (NODE_EXTRA_CA_CERTS, DENO_CERT).
	CAFile = "/etc/ssl/certs/clawd-ca.pem"
	// BundleFile holds the container's own roots plus clawd's CA: for
	// variables that replace a runtime's roots (SSL_CERT_FILE,
	// REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, AWS_CA_BUNDLE, GIT_SSL_CAINFO).
	// Pointing those at CAFile would make the agent distrust every host
	// clawd does not intercept.
	BundleFile = "/etc/ssl/certs/clawd-bundle.pem"
)

// maxBundle bounds how much of a (container-controlled) bundle we read.
const maxBundle = 64 << 20

// Installed says what InstallTrust did in one container root. Paths are as
// the container sees them.
type Installed struct {
	Bundles []string  `json:"bundles,omitempty"` // system bundles the CA was appended to
	Files   []string  `json:"files,omitempty"`   // CAFile and BundleFile, when written or changed
	Certifi []string  `json:"certifi,omitempty"` // certifi cacert.pem files the CA was appended to
	Java    []string  `json:"java,omitempty"`    // Java PKCS#12 trust stores the CA was imported into
	Skipped []Skipped `json:"skipped,omitempty"` // stores found but left alone, and why
}

// Skipped is a trust store InstallTrust found and could not change.
type Skipped struct {
	Path string `json:"path"`
	Why  string `json:"why"`
}

// Changed lists every path InstallTrust changed.
func (in Installed) Changed() []string {
	var out []string
	for _, l := range [][]string{in.Bundles, in.Files, in.Certifi, in.Java} {
		out = append(out, l...)
	}
	return out
}

// caEntry is the CA's certificate with its marker comment.
type caEntry struct {
	der    []byte
	marker string
	entry  string // marker line + PEM
}

func parseCA(caPEM []byte) (caEntry, error) {
	block, _ := pem.Decode(caPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return caEntry{}, errors.New("install trust: CA is not a PEM certificate")
	}
	sum := sha256.Sum256(block.Bytes)
	marker := "# clawd CA sha256:" + hex.EncodeToString(sum[:])
	return caEntry{der: block.Bytes, marker: marker, entry: marker + "\n" + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: block.Bytes}))}, nil
}

// InstallTrust makes the runtimes in the container root rootfs trust caPEM,
// with no change to the agent's environment wherever the runtime allows it:
//
//   - appends it to every system trust bundle that exists (OpenSSL, curl,
//     git, Debian's Python and Node), creating
//     /etc/ssl/certs/ca-certificates.crt when none does;
//   - writes CAFile (the CA alone) and BundleFile (the container's roots
//     plus the CA), for the variables of `clawd env`;
//   - appends it to every certifi cacert.pem (pip-installed requests,
//     httpx, botocore);
//   - imports it into every Java PKCS#12 cacerts store (JKS stores are
//     reported in Skipped: clawd does not write that format).
//
// It is idempotent: stores already holding the certificate are left alone.
// Only an unusable CA or root is an error; a store that cannot be changed
// is reported in Skipped and the others are still done.
//
// The container root is hostile: symlinks are resolved inside rootfs (an
// absolute link target means rootfs + target, never the host's file) and only
// regular files are touched, so a link or FIFO cannot make clawd write or block
// outside the container. The search for certifi and Java stores is bounded.
func InstallTrust(rootfs string, caPEM []byte) (Installed, error) {
	var in Installed
	ca, err := parseCA(caPEM)
	if err != nil {
		return in, err
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return in, fmt.Errorf("install trust: %w", err)
	}
	defer root.Close()

	skip := func(p string, err error) { in.Skipped = append(in.Skipped, Skipped{Path: p, Why: err.Error()}) }

	// 1. System bundles.
	seen := map[string]bool{}
	first := ""
	for _, p := range bundlePaths {
		budget := 256
		real, err := resolve(root, p, &budget)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			skip(p, err)
			continue
		}
		if seen[real] {
			continue
		}
		seen[real] = true
		did, err := appendOnce(root, real, ca.marker, ca.entry)
		if err != nil {
			skip(p, err)
			continue
		}
		if first == "" {
			first = real
		}
		if did {
			in.Bundles = append(in.Bundles, "/"+real)
		}
	}
	if first == "" && len(seen) == 0 {
		if err := writeIn(root, defaultBundle, []byte(ca.entry), 0o644); err != nil {
			skip(defaultBundle, err)
		} else {
			first = strings.TrimPrefix(defaultBundle, "/")
			in.Bundles = append(in.Bundles, defaultBundle)
		}
	}

	// 2. clawd's own files at fixed paths.
	bundle := []byte(ca.entry)
	if first != "" {
		if b, err := readRegular(root, first, maxBundle); err == nil && bytes.Contains(b, []byte(ca.marker)) {
			bundle = b
		}
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{CAFile, []byte(ca.entry)}, {BundleFile, bundle}} {
		did, err := writeIfChanged(root, f.path, f.data)
		if err != nil {
			skip(f.path, err)
		} else if did {
			in.Files = append(in.Files, f.path)
		}
	}

	// 3. certifi and Java stores, found by a bounded walk.
	found := scan(root, scanBudget)
	for _, p := range found.certifi {
		budget := 256
		real, err := resolve(root, p, &budget)
		if err != nil {
			skip("/"+p, err)
			continue
		}
		if seen[real] {
			continue
		}
		seen[real] = true
		did, err := appendOnce(root, real, ca.marker, ca.entry)
		if err != nil {
			skip("/"+p, err)
		} else if did {
			in.Certifi = append(in.Certifi, "/"+real)
		}
	}
	for _, p := range found.java {
		budget := 256
		real, err := resolve(root, p, &budget)
		if err != nil {
			skip("/"+p, err)
			continue
		}
		if seen[real] {
			continue
		}
		seen[real] = true
		did, err := importJava(root, real, ca.der)
		if err != nil {
			skip("/"+real, err)
		} else if did {
			in.Java = append(in.Java, "/"+real)
		}
	}
	if found.truncated {
		in.Skipped = append(in.Skipped, Skipped{Path: "/", Why: fmt.Sprintf("search for certifi and Java stores stopped after %d entries", scanBudget)})
	}
	return in, nil
}

// writeIfChanged writes data to the in-container path p (replacing it
// atomically) unless it already holds exactly data.
func writeIfChanged(root *os.Root, p string, data []byte) (bool, error) {
	budget := 256
	if real, err := resolve(root, p, &budget); err == nil {
		if b, err := readRegular(root, real, int64(len(data))+1); err == nil && bytes.Equal(b, data) {
			return false, nil
		}
	}
	if err := writeIn(root, p, data, 0o644); err != nil {
		return false, err
	}
	return true, nil
}

// writeIn writes data to the in-container path p through a temporary file
// renamed over it. The parent directory is resolved inside root and created
// if missing; p itself is replaced, never followed.
func writeIn(root *os.Root, p string, data []byte, mode os.FileMode) error {
	dir, base := path.Split(strings.TrimPrefix(path.Clean(p), "/"))
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	budget := 256
	rdir, err := resolve(root, "/"+dir, &budget)
	if errors.Is(err, fs.ErrNotExist) {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		budget = 256
		rdir, err = resolve(root, "/"+dir, &budget)
	}
	if err != nil {
		return err
	}
	if fi, err := root.Lstat(rdir); err != nil {
		return err
	} else if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	tmp := path.Join(rdir, "."+base+".clawd-tmp")
	root.Remove(tmp)
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode) // on the descriptor: a name swapped meanwhile is not followed
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = root.Rename(tmp, path.Join(rdir, base))
	}
	if werr != nil {
		root.Remove(tmp)
	}
	return werr
}

// readRegular reads at most limit bytes of the regular file rel.
func readRegular(root *os.Root, rel string, limit int64) ([]byte, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, limit))
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
