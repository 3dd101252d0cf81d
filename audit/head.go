package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// The head file (Options.HeadFile) says how far the Logger got: before
// each batch goes into the log it is overwritten in place (one pwrite of a
// fixed-size record) with the chain's head before the batch (seq0, hash0)
// and after it (seq, hash), and the lost lines not yet recorded. On open
// the log's end must agree: it ends at the head, or inside the last batch
// (a crash during its write: its unwritten lines are recorded as lost).
// Anything else — the end is earlier, a line at the head has another hash,
// or lines follow the head — was done to the file while clawd was not
// writing it, and the chain's next line (EventCut) says so, signed by the
// next checkpoint; verify fails there. A new empty file (a rotation while
// clawd was down) continues from the head, from the predecessor's true end
// if it can be found beside it.

// head is the content of the head file.
type head struct {
	seq0, seq   int64
	hash0, hash [32]byte
	lost        int64
}

const (
	headMagic   = "clawd-audit-head v2"
	headRecSize = 256
)

func (h head) record() []byte {
	b := fmt.Appendf(nil, "%s %d %x %d %x %d", headMagic, h.seq0, h.hash0[:], h.seq, h.hash[:], h.lost)
	pad := bytes.Repeat([]byte{' '}, headRecSize-1-len(b))
	return append(append(b, pad...), '\n')
}

// parseHead reads a head file: this record, or the older "SEQ HEX".
func parseHead(b []byte) (head, error) {
	var h head
	s := strings.TrimSpace(string(b))
	var sum0, sum []byte
	if rest, ok := strings.CutPrefix(s, headMagic+" "); ok {
		if _, err := fmt.Sscanf(rest, "%d %x %d %x %d", &h.seq0, &sum0, &h.seq, &sum, &h.lost); err != nil || h.seq0 < 0 || h.seq < h.seq0 || h.lost < 0 || len(sum0) != sha256.Size || len(sum) != sha256.Size {
			return head{}, errors.New("not a clawd audit head record")
		}
		copy(h.hash0[:], sum0)
		copy(h.hash[:], sum)
		return h, nil
	}
	if _, err := fmt.Sscanf(s, "%d %x", &h.seq, &sum); err != nil || h.seq < 0 || len(sum) != sha256.Size {
		return head{}, errors.New(`not "SEQ HEX-SHA256"`)
	}
	copy(h.hash[:], sum)
	h.seq0, h.hash0 = h.seq, h.hash
	return h, nil
}

// headFile is the open head file.
type headFile struct {
	f *os.File
}

// openHead opens (creating) the head file at path and reads its record
// (ok false if it was new or empty).
func openHead(path string) (*headFile, head, bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, head{}, false, fmt.Errorf("chain head %s: %w", path, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, head{}, false, fmt.Errorf("chain head %s: not a regular file", path)
	}
	b := make([]byte, headRecSize+64)
	n, _ := f.ReadAt(b, 0)
	b = b[:n]
	if len(bytes.TrimSpace(b)) == 0 {
		return &headFile{f}, head{}, false, nil
	}
	h, err := parseHead(b)
	if err != nil {
		f.Close()
		return nil, head{}, false, fmt.Errorf("chain head %s: %v (remove it to start without one)", path, err)
	}
	return &headFile{f}, h, true, nil
}

func (hf *headFile) write(h head) error {
	if hf == nil {
		return nil
	}
	_, err := hf.f.WriteAt(h.record(), 0)
	return err
}

func (hf *headFile) close() error {
	if hf == nil {
		return nil
	}
	hf.f.Sync()
	return hf.f.Close()
}

// lineWithSeq finds, in the last maxTail bytes of f, the chain line with
// seq (nil if none).
func lineWithSeq(f *os.File, size, seq int64) []byte {
	n := min(size, maxTail)
	buf := make([]byte, n)
	if k, err := f.ReadAt(buf, size-n); int64(k) != n {
		_ = err
		return nil
	}
	lines := bytes.Split(buf, []byte{'\n'})
	if n < size {
		lines = lines[1:]
	}
	for i := len(lines) - 1; i >= 0; i-- {
		h, ok := parseChainHead(lines[i])
		if !ok || h.Seq == 0 {
			continue
		}
		if h.Seq == seq {
			return lines[i]
		}
		if h.Seq < seq {
			return nil
		}
	}
	return nil
}

// judge compares a log's end (the chain line last, seq l) with the head:
// "" if they agree, else what was done to the file. lost is the number of
// lines to record as lost (the unwritten rest of a batch a crash cut).
func (h head) judge(f *os.File, size int64, last []byte, l int64) (cut string, lost int64) {
	sum := sha256.Sum256(last)
	switch {
	case l == h.seq && sum == h.hash:
		if h.seq0 == h.seq {
			return "", h.lost // a clean stop: the lost lines it could not record
		}
		return "", 0 // the last batch written whole (its own record of the lost ones too)
	case h.seq0 <= l && l < h.seq:
		// A crash during the last batch: its lines up to l are in the
		// file, after the head before it.
		if at := lineWithSeq(f, size, h.seq0); h.seq0 == 0 || at != nil && sha256.Sum256(at) == h.hash0 {
			lost = h.seq - l
			if l == h.seq0 {
				lost += h.lost
			}
			return "", lost
		}
	}
	var what string
	switch {
	case l < h.seq0:
		what = fmt.Sprintf("the log ends at seq %d but clawd had written up to seq %d (sha256 %x): %d line(s) were removed from its end", l, h.seq, h.hash[:], h.seq-l)
	case l > h.seq:
		what = fmt.Sprintf("the log ends at seq %d but clawd wrote only up to seq %d (sha256 %x): %d line(s) after it were not written by clawd", l, h.seq, h.hash[:], l-h.seq)
	default:
		what = fmt.Sprintf("the log's lines up to seq %d are not the ones clawd wrote (it wrote seq %d with sha256 %x): the log was replaced or rewritten", l, h.seq, h.hash[:])
	}
	return what + " while clawd was not writing it", 0
}

// compressed names logrotate gives compressed files: not read.
var compressed = []string{".gz", ".xz", ".bz2", ".zst", ".lz4", ".Z"}

// predecessor finds the file a rotation moved path to while clawd was
// down (path.1, path-20261203, ...): among the uncompressed siblings whose
// name starts with path's and a dot or dash, the most recently modified.
func predecessor(path string) string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	type cand struct {
		name string
		mod  int64
	}
	var cs []cand
	for _, e := range ents {
		n := e.Name()
		if n == base || !(strings.HasPrefix(n, base+".") || strings.HasPrefix(n, base+"-")) {
			continue
		}
		if strings.HasSuffix(n, ".tmp") || func() bool {
			for _, c := range compressed {
				if strings.HasSuffix(n, c) {
					return true
				}
			}
			return false
		}() {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			continue
		}
		cs = append(cs, cand{filepath.Join(dir, n), fi.ModTime().UnixNano()})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].mod > cs[j].mod })
	if len(cs) == 0 {
		return ""
	}
	return cs[0].name
}
