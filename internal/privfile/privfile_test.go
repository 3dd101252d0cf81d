package privfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	os.WriteFile(p, []byte("secret"), 0o600)
	if b, err := Read(p, Private, 64); err != nil || string(b) != "secret" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := Read(p, Private, 3); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Fatalf("size bound: %v", err)
	}
	os.Chmod(p, 0o640)
	if _, err := Read(p, Private, 64); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable: %v", err)
	}
	if _, err := Read(p, Public, 64); err != nil {
		t.Fatalf("public 0640: %v", err)
	}
	os.Chmod(p, 0o666)
	if _, err := Read(p, Public, 64); err == nil || !strings.Contains(err.Error(), "chmod 644") {
		t.Fatalf("world-writable: %v", err)
	}
	os.Chmod(p, 0o600)
	l := filepath.Join(dir, "l")
	os.Symlink(p, l)
	if _, err := Read(l, Private, 64); !errors.Is(err, ErrSymlink) {
		t.Fatalf("symlink: %v", err)
	}
	fifo := filepath.Join(dir, "f")
	syscall.Mkfifo(fifo, 0o600)
	if _, err := Read(fifo, Private, 64); err == nil || !strings.Contains(err.Error(), "regular") {
		t.Fatalf("fifo: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "none"), Private, 64); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if os.Geteuid() == 0 {
		os.Chown(p, 65534, 65534)
		if _, err := Read(p, Private, 64); err == nil || !strings.Contains(err.Error(), "uid 65534") {
			t.Fatalf("foreign owner: %v", err)
		}
	}
}
