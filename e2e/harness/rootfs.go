package harness

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

var busyboxApplets = []string{
	"sh", "ash", "nc", "nslookup", "sleep", "cat", "ip", "ping", "ping6",
	"echo", "ls", "id", "env", "true", "false", "test", "[", "printf", "grep", "sed",
	"awk", "head", "tail", "wc", "tr", "cut", "kill", "ps", "touch", "rm", "mkdir",
	"cp", "mv", "hostname", "ifconfig", "route", "telnet", "timeout", "date", "uname",
	"stat", "chmod", "ln", "readlink", "mount", "umount", "dd", "od", "hexdump", "xargs",
	"expr", "seq", "sort", "uniq", "base64", "md5sum", "sha256sum", "traceroute", "netstat",
	"which", "pwd", "basename", "dirname", "tee", "yes", "usleep", "find", "vi", "less",
}

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// BusyboxRootfs returns a rootfs directory built once per test binary from
// the static busybox (Debian package busybox-static). Treat it as read-only:
// containers get their own copy.
func BusyboxRootfs(t testing.TB) string {
	t.Helper()
	dir, err := ensureRootfs()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func ensureRootfs() (string, error) {
	rootfsOnce.Do(func() {
		dir, err := ownedDir()
		if err != nil {
			rootfsErr = err
			return
		}
		addSharedCleanup(func() { removeOwnedDir(dir) })
		rootfsDir, rootfsErr = dir, buildRootfs(dir)
	})
	if rootfsErr != nil {
		return "", fmt.Errorf("build busybox rootfs: %w", rootfsErr)
	}
	return rootfsDir, nil
}

func findBusybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox found (install the Debian package busybox-static)")
}

func buildRootfs(dir string) error {
	bb, err := findBusybox()
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "etc/ssl/certs", "root", "var", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(dir, "tmp"), 0o1777)
	if err := copyFile(bb, filepath.Join(dir, "bin", "busybox"), 0o755); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	// busybox-static 1.35 (Debian 12) wget segfaults whenever -T is given;
	// this wrapper implements -T N with the timeout applet instead.
	if err := os.WriteFile(filepath.Join(dir, "bin", "wget"), []byte(wgetWrapper), 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"etc/passwd":      "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":       "root:x:0:\nnogroup:x:65534:\n",
		"etc/hosts":       "127.0.0.1 localhost\n::1 localhost\n",
		"etc/resolv.conf": "nameserver " + UpstreamDNS.String() + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// containerRootfs makes a private copy of the busybox rootfs at dst (the
// binary is hard-linked when possible, so this is cheap).
func containerRootfs(dst string) (string, error) {
	src, err := ensureRootfs()
	if err != nil {
		return "", err
	}
	err = filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			if err := os.MkdirAll(to, fi.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(to, fi.Mode()&(os.ModePerm|os.ModeSticky))
		case fi.Mode()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, to)
		case rel == filepath.Join("bin", "busybox"):
			if os.Link(p, to) == nil {
				return nil
			}
			fallthrough
		default:
			return copyFile(p, to, fi.Mode().Perm())
		}
	})
	if err != nil {
		return "", fmt.Errorf("copy rootfs: %w", err)
	}
	return dst, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

const wgetWrapper = `#!/bin/busybox sh
t=
n=$#
i=0
while [ $i -lt $n ]; do
	a=$1
	shift
	i=$((i+1))
	case $a in
	-T) t=$1; shift; i=$((i+1)) ;;
	-T*) t=${a#-T} ;;
	--timeout=*) t=${a#--timeout=} ;;
	*) set -- "$@" "$a" ;;
	esac
done
if [ -n "$t" ]; then
	exec /bin/busybox timeout "$t" /bin/busybox wget "$@"
fi
exec /bin/busybox wget "$@"
`
