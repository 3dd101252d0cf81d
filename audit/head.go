package audit

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// The head file (Options.HeadFile) says how far the Logger got: before
// each chunk of at most headChunk lines goes into the log it is
// overwritten in place (one pwrite) with the chain's head before the chunk
// (seq0, hash0) and after it (seq, hash), the hash of each of its lines,
// the lost lines not yet recorded and the seq of the last audit_cut line.
// On open the log's end must agree: it ends at the head, or at one of the
// chunk's lines (a crash during its write: its unwritten lines are
// recorded as lost). Anything else — the end is earlier, a line at the
// head or inside the chunk has another hash, lines follow the head, the
// log is empty with no rotated predecessor that agrees, the audit_cut line
// clawd wrote is gone — was done to the file while clawd was not writing
// it, and the chain's next line (EventCut) says so, signed by the next
// checkpoint; verify fails there. A new empty file (a rotation while clawd
// was down) continues from the predecessor's true end, found beside it.

// head is the content of the head file.
type head struct {
	seq0, seq   int64
	hash0, hash [32]byte
	lost        int64
	// cutSeq is the seq of the last audit_cut line clawd wrote (sticky):
	// a log that ends before it lost that record too.
	cutSeq int64
	// lines are the hashes of the chunk's lines (seq0+1..seq): a log that
	// ends inside the chunk must end with one of them (a crash), not with
	// lines of the same seqs that clawd did not write.
	lines [][32]byte
}

const (
	headMagic = "clawd-audit-head v3"
	// headChunk bounds the lines written after one head record.
	headChunk = 64
)

func (h head) record() []byte {
	b := fmt.Appendf(nil, "%s %d %x %d %x %d %d %d", headMagic, h.seq0, h.hash0[:], h.seq, h.hash[:], h.lost, h.cutSeq, len(h.lines))
	for _, l := range h.lines {
		b = fmt.Appendf(b, " %x", l[:])
	}
	return append(b, '\n')
}

// parseHead reads a head file: its first line, this record or the older
// "SEQ HEX".
func parseHead(b []byte) (head, error) {
	var h head
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimSpace(string(b))
	if rest, ok := strings.CutPrefix(s, headMagic+" "); ok {
		f := strings.Fields(rest)
		var n int
		var err error
		bad := len(f) < 7
		if !bad {
			h.seq0, err = strconv.ParseInt(f[0], 10, 64)
			bad = bad || err != nil || !hex32(f[1], &h.hash0)
			h.seq, err = strconv.ParseInt(f[2], 10, 64)
			bad = bad || err != nil || !hex32(f[3], &h.hash)
			h.lost, err = strconv.ParseInt(f[4], 10, 64)
			bad = bad || err != nil
			h.cutSeq, err = strconv.ParseInt(f[5], 10, 64)
			bad = bad || err != nil
			n, err = strconv.Atoi(f[6])
			bad = bad || err != nil || n < 0 || n > headChunk || len(f) != 7+n
		}
		if !bad {
			h.lines = make([][32]byte, n)
			for i := range n {
				bad = bad || !hex32(f[7+i], &h.lines[i])
			}
		}
		if bad || h.seq0 < 0 || h.seq < h.seq0 || h.lost < 0 || h.cutSeq < 0 || int64(len(h.lines)) != h.seq-h.seq0 && len(h.lines) != 0 {
			return head{}, errors.New("not a clawd audit head record")
		}
		return h, nil
	}
	var sum []byte
	if _, err := fmt.Sscanf(s, "%d %x", &h.seq, &sum); err != nil || h.seq < 0 || len(sum) != sha256.Size {
		return head{}, errors.New(`not a clawd audit head record`)
	}
	copy(h.hash[:], sum)
	h.seq0, h.hash0 = h.seq, h.hash
	return h, nil
}

func hex32(s string, out *[32]byte) bool {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return false
	}
	copy(out[:], b)
	return true
}

// headFile is the open head file.
type headFile struct {
	f    *os.File
	path string
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
	b := make([]byte, 8<<10)
	n, _ := f.ReadAt(b, 0)
	b = b[:n]
	if len(bytes.TrimSpace(b)) == 0 {
		return &headFile{f, path}, head{}, false, nil
	}
	h, err := parseHead(b)
	if err != nil {
		f.Close()
		return nil, head{}, false, fmt.Errorf("chain head %s: %v (remove it to start without one)", path, err)
	}
	return &headFile{f, path}, h, true, nil
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

// judge compares a log's end (the chain line last, seq l) with the head:
// "" if they agree, else what was done to the file. lost is the number of
// lines to record as lost (the unwritten rest of a chunk a crash cut).
func (h head) judge(last []byte, l int64) (cut string, lost int64) {
	sum := sha256.Sum256(last)
	if h.cutSeq > 0 && l < h.cutSeq {
		return fmt.Sprintf("the log ends at seq %d, before the audit_cut line clawd wrote at seq %d: that record was removed too", l, h.cutSeq), 0
	}
	switch {
	case l == h.seq && sum == h.hash:
		if h.seq0 == h.seq {
			return "", h.lost // a clean stop: the lost lines it could not record
		}
		return "", 0 // the last chunk written whole (its own record of the lost ones too)
	case l == h.seq0 && sum == h.hash0:
		return "", h.seq - h.seq0 + h.lost // a crash before any of the chunk
	case h.seq0 < l && l < h.seq && int(l-h.seq0) <= len(h.lines) && sum == h.lines[l-h.seq0-1]:
		return "", h.seq - l // a crash inside the chunk: its lines up to l are clawd's
	}
	var what string
	switch {
	case l < h.seq0:
		what = fmt.Sprintf("the log ends at seq %d but clawd had written up to seq %d (sha256 %x): %d line(s) were removed from its end", l, h.seq, h.hash[:], h.seq-l)
	case l > h.seq:
		what = fmt.Sprintf("the log ends at seq %d but clawd wrote only up to seq %d (sha256 %x): %d line(s) after it were not written by clawd", l, h.seq, h.hash[:], l-h.seq)
	default:
		what = fmt.Sprintf("the log's line at seq %d is not the one clawd wrote (clawd wrote up to seq %d, sha256 %x): the log was replaced or rewritten", l, h.seq, h.hash[:])
	}
	return what + " while clawd was not writing it", 0
}

// compressed names logrotate gives compressed files: not read.
var compressed = []string{".xz", ".bz2", ".zst", ".lz4", ".Z"} // .gz is read

// Predecessors lists the files a rotation may have moved the log at path
// to while clawd was down (path.1, path-20261203, path.1.gz, ...): the
// siblings whose name starts with path's and a dot or dash, most recently
// modified first. The one that agrees with the head file is the
// predecessor (a planted file cannot: it would need the hashes of clawd's
// lines).
func Predecessors(path string) []string {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
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
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// maxGzip bounds what is read of a compressed predecessor.
const maxGzip = 1 << 30

// gzipLastLine is the last JSON line of the gzip-compressed log at path.
func gzipLastLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(io.LimitReader(zr, maxGzip), 64<<10)
	var last []byte
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if _, ok := parseChainHead(line[:len(line)-1]); ok {
				last = line[:len(line)-1]
			}
		}
		if err == io.EOF {
			return last, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// unsigned counts, from the end of f back to its last checkpoint, the
// chain lines (and lost lines recorded) no checkpoint signed, as the
// Logger's chain.since counts them; -1 if no checkpoint is in the last
// maxTail bytes.
func unsigned(f io.ReaderAt, size int64) int {
	n := min(size, maxTail)
	buf := make([]byte, n)
	if k, _ := f.ReadAt(buf, size-n); int64(k) != n {
		return -1
	}
	lines := bytes.Split(buf, []byte{'\n'})
	if n < size {
		lines = lines[1:]
	}
	count := 0
	for i := len(lines) - 1; i >= 0; i-- {
		h, ok := parseChainHead(lines[i])
		if !ok || h.Seq == 0 {
			continue
		}
		if h.Event == EventCheckpoint {
			return count
		}
		count++
		if h.Event == EventLost && h.Count > 0 {
			count += int(min(h.Count, 1<<20))
		}
	}
	if n == size {
		return count // the whole file, no checkpoint in it
	}
	return -1
}
