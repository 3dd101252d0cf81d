// Package privfile reads files that hold or vouch for credentials (signing
// keys, header files, public keys operators copy off the host): only a
// regular file, not reached through a symbolic link, owned by this
// process's user, and with Private unreadable by group and others (with
// Public at least unwritable by them), up to a size bound. Whoever else
// could write such a file could have replaced it.
package privfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Modes a file must keep to.
const (
	Private = iota // no access for group and others (0600 or less)
	Public         // not writable by group and others (0644 or less)
)

// ErrSymlink is the error for a file that is a symbolic link.
var ErrSymlink = errors.New("is a symbolic link: refused (replace it with the file itself)")

// Read reads path under the rules above; max bounds its size. A missing
// file's error satisfies errors.Is(err, os.ErrNotExist).
func Read(path string, mode int, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, ErrSymlink
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
		return nil, fmt.Errorf("owned by uid %d, not by clawd's uid %d: whoever owns it could have replaced it (chown it)", st.Uid, os.Geteuid())
	}
	perm := fi.Mode().Perm()
	switch {
	case mode == Private && perm&0o077 != 0:
		return nil, fmt.Errorf("mode %04o lets others read it: chmod 600 it", perm)
	case mode == Public && perm&0o022 != 0:
		return nil, fmt.Errorf("mode %04o lets others write it: chmod 644 it", perm)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}
