package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The audit log is a hash chain. Every line ends with
//
//	,"seq":N,"prev":"<hex SHA-256 of the previous line>"}
//
// where the previous line is the exact bytes of the line before it in the
// chain, without its newline (the chain's first line has no prev). seq
// counts lines from 1 and goes on across daemon restarts (the Logger
// continues from the file's last complete line) and rotations (the new
// file's first line links to the old file's last). A checkpoint line
// (event "checkpoint", count = lines since the previous checkpoint) also
// carries sig, an Ed25519 signature of CheckpointMessage(seq, prev): it
// vouches for every line before it. Verify checks all of it.
//
// Lines lost to write errors are recorded by an EventLost line (count,
// reason) chained to the last line written, and a torn line left by a crash
// by an EventTorn line whose reason names the fragment's size and SHA-256:
// the chain goes around both, visibly.

// Events of the chain's own lines.
const (
	EventCheckpoint = "checkpoint"      // a signed checkpoint of the chain
	EventLost       = "audit_lost"      // count lines could not be written (reason)
	EventTorn       = "audit_torn"      // the line before is torn (a crash during its write); the chain skips it
	EventCut        = "audit_cut"       // on open, the log did not end where clawd left it (reason): verify fails here
	EventUnchecked  = "audit_unchecked" // on open, there was no head file to check the log's end against
)

// ReasonOpenCheckpoint is the reason of a checkpoint that signs the lines
// a previous run left unsigned (a crash): verify does not hold it to the
// checkpoint interval.
const ReasonOpenCheckpoint = "signs the lines a previous run left unsigned"

// Checkpoint defaults.
const (
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = time.Minute
)

// Options configure a Logger's chain. The zero value chains lines and signs
// nothing.
type Options struct {
	// Key signs checkpoint lines (LoadOrCreateKey); nil: no checkpoints.
	Key ed25519.PrivateKey
	// CheckpointEvery: a checkpoint after this many lines (0:
	// DefaultCheckpointEvery). Rotation and Close also write one.
	CheckpointEvery int
	// CheckpointInterval: a checkpoint this often while lines arrive (0:
	// DefaultCheckpointInterval, negative: none by time).
	CheckpointInterval time.Duration
	// HeadFile, if set, keeps the chain's head (seq and hash of the last
	// line) across a rotation the daemon did not see (logrotate while it
	// was stopped): written at checkpoints, on Reopen and Close, read when
	// the log file is empty at open (with the rotated path.1, if that is
	// further on), so the new file still links to the old one.
	HeadFile string
	// Tee receives every line written (without its newline) once it is in
	// the file, on the writing goroutine, in chain order: it must not block
	// and must copy the line to keep it (OTLP export).
	Tee func(line []byte)
}

func (o Options) withDefaults() Options {
	if o.CheckpointEvery <= 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	return o
}

// CheckpointMessage is what a checkpoint's signature signs: the
// checkpoint line as written but without its sig field (which is its last),
// so its time, count, seq and prev (the hash of the line before, which
// chains all earlier ones).
func CheckpointMessage(unsigned []byte) []byte {
	return append([]byte("clawd audit checkpoint v1\n"), unsigned...)
}

// sigField starts the signature, the last field of a checkpoint line.
const sigField = `,"sig":"`

// splitSig returns a checkpoint line without its sig field, and the
// signature; ok is false if the line does not end with one.
func splitSig(line []byte) (unsigned, sig []byte, ok bool) {
	i := bytes.LastIndex(line, []byte(sigField))
	if i < 0 || !bytes.HasSuffix(line, []byte(`"}`)) || len(line)-2 < i+len(sigField) {
		return nil, nil, false
	}
	sig, err := base64.StdEncoding.DecodeString(string(line[i+len(sigField) : len(line)-2]))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, nil, false
	}
	return append(line[:i:i], '}'), sig, true
}

// chain is a Logger's chain state; see Logger for who owns it.
type chain struct {
	seq     int64
	last    [32]byte // hash of line seq
	hasLast bool
	since   int // lines since the last checkpoint

	lost    int64    // lines lost to write errors, not yet recorded
	lostErr string   // the last such error
	torn    []string // the reasons of torn lines found at open, in file order, not yet recorded
	cut     string   // what was done to the file while clawd was not writing it, not yet recorded

	// fileStart: the next line is the first in a new file (FileStart).
	fileStart bool
	// openCkpt: the log ends with lines no checkpoint signed (a crash):
	// the first batch signs them.
	openCkpt bool
	// unchecked: the log's end could not be checked (no head file yet).
	unchecked bool
	// cutSeq: the seq of the last audit_cut line (the head file keeps it).
	cutSeq int64
	kind   uint8 // of the line being sealed (mark.kind)

	// For a batch: its lines' ends and chain states, to roll back to the
	// last line written after a short write.
	out    []byte
	marks  []mark
	before mark
	// The lost count the batch's audit_lost line records, to clear once
	// written.
	sealedLost int64
}

type mark struct {
	seq     int64
	last    [32]byte
	hasLast bool
	since   int
	cutSeq  int64
	kind    uint8
	start   bool // the file's first line (FileStart)
}

// seal turns the line bodies in bodies (each ended by '\n') into the
// batch's final lines: first the records (a checkpoint for lines a
// previous run left unsigned, audit_cut, audit_torn, audit_lost), then the
// lines, a checkpoint whenever CheckpointEvery lines (records included)
// went unsigned, and one at the end if ckpt (and lines came since the
// last). It returns the lines and their number.
func (c *chain) seal(bodies []byte, ckpt bool, o *Options) ([]byte, int) {
	c.out, c.marks = c.out[:0], c.marks[:0]
	c.before = c.mark()
	every := func() {
		if o.Key != nil && c.since >= o.CheckpointEvery {
			c.sealCheckpoint(o.Key, o)
		}
	}
	// Lines a previous run left unsigned (a crash): vouched for at once,
	// so that no more than CheckpointEvery lines ever go unsigned.
	for _, reason := range c.torn {
		c.kind = kindTorn
		c.sealEntry(Entry{Event: EventTorn, Reason: reason})
		every()
	}
	if c.openCkpt && o.Key != nil {
		c.kind = kindOpen
		c.sealCheckpoint(o.Key, o)
	}
	if c.cut != "" {
		c.kind = kindCut
		c.sealEntry(Entry{Event: EventCut, Reason: c.cut})
		c.cutSeq = c.seq
		c.marks[len(c.marks)-1].cutSeq = c.seq
		every()
	}
	if c.unchecked {
		c.kind = kindUnchecked
		c.sealEntry(Entry{Event: EventUnchecked, Reason: "the head file was missing or empty: the log's end could not be checked against what clawd last wrote"})
		every()
	}
	if c.lost > 0 {
		c.kind = kindLost
		c.sealEntry(Entry{Event: EventLost, Count: c.lost, Reason: "lines could not be written: " + c.lostErr})
		c.sealedLost = c.lost
		// The lost lines count against the checkpoint bound as if written
		// (verify adds them): an audit_lost line cannot stand for lines
		// removed from between two checkpoints.
		c.since += int(min(c.lost, int64(o.CheckpointEvery)))
		c.marks[len(c.marks)-1].since = c.since
		every()
	}
	for len(bodies) > 0 {
		i := bytes.IndexByte(bodies, '\n')
		c.sealLine(bodies[:i], nil)
		bodies = bodies[i+1:]
		every()
	}
	if ckpt && o.Key != nil && c.since > 0 {
		c.sealCheckpoint(o.Key, o)
	}
	if cap(c.out) > maxSpare {
		defer func() { c.out = nil }()
	}
	return c.out, len(c.marks)
}

// Kinds of the lines of a batch (mark.kind).
const (
	kindLine = iota
	kindCkpt
	kindOpen // the checkpoint of lines a previous run left unsigned
	kindCut
	kindUnchecked
	kindTorn
	kindLost
)

func (c *chain) mark() mark {
	return mark{seq: c.seq, last: c.last, hasLast: c.hasLast, since: c.since, cutSeq: c.cutSeq}
}

func (c *chain) sealEntry(e Entry) {
	e.Time = time.Now().UTC()
	var buf [256]byte
	b, ok := encodeBody(buf[:0], &e)
	if ok {
		c.sealLine(b, nil)
	}
}

func (c *chain) sealCheckpoint(key ed25519.PrivateKey, o *Options) {
	e := Entry{Time: time.Now().UTC(), Event: EventCheckpoint, Count: int64(min(c.since, o.CheckpointEvery)), Every: int64(o.CheckpointEvery)}
	if o.CheckpointInterval > 0 {
		e.IntervalMS = o.CheckpointInterval.Milliseconds()
	}
	if c.kind == kindOpen {
		e.Reason = ReasonOpenCheckpoint
	} else {
		c.kind = kindCkpt
	}
	var buf [256]byte
	b, _ := encodeBody(buf[:0], &e)
	c.sealLine(b, key)
	c.since = 0
	c.marks[len(c.marks)-1].since = 0
}

// sealLine appends body plus the chain's fields as the next line; with
// key, signed.
func (c *chain) sealLine(body []byte, key ed25519.PrivateKey) {
	start := len(c.out)
	c.out = append(c.out, body...)
	first := false
	if c.fileStart && len(c.marks) == 0 {
		c.out = append(c.out, `,"file_start":true`...)
		first = true
	}
	c.seq++
	c.out = append(c.out, `,"seq":`...)
	c.out = strconv.AppendInt(c.out, c.seq, 10)
	if c.hasLast {
		c.out = append(c.out, `,"prev":"`...)
		c.out = hex.AppendEncode(c.out, c.last[:])
		c.out = append(c.out, '"')
	}
	if key != nil {
		sig := ed25519.Sign(key, CheckpointMessage(append(c.out[start:len(c.out):len(c.out)], '}')))
		c.out = append(c.out, sigField...)
		c.out = base64.StdEncoding.AppendEncode(c.out, sig)
		c.out = append(c.out, '"')
	}
	c.out = append(c.out, '}')
	c.last, c.hasLast = sha256.Sum256(c.out[start:]), true
	c.out = append(c.out, '\n')
	c.since++
	m := c.mark()
	m.kind, m.start = c.kind, first
	c.kind = kindLine
	c.marks = append(c.marks, m)
}

// written records that the whole batch is in the file.
func (c *chain) written() { c.forget(len(c.marks)) }

// forget clears what the first ok lines of the batch recorded (the
// records and the file's start), so that the rest is written again.
func (c *chain) forget(ok int) {
	torn := 0
	for _, m := range c.marks[:ok] {
		switch m.kind {
		case kindOpen:
			c.openCkpt = false
		case kindCut:
			c.cut = ""
		case kindUnchecked:
			c.unchecked = false
		case kindTorn:
			torn++
		case kindLost:
			c.lost -= c.sealedLost
			c.sealedLost = 0
		}
		if m.start {
			c.fileStart = false
		}
	}
	c.torn = c.torn[torn:]
}

// lostAfter rolls the chain back to the last of the batch's lines that was
// written (ok of them) and remembers the lost ones for the next batch
// (records and checkpoints are written again, not lost).
func (c *chain) lostAfter(ok int, err error) (lost int) {
	c.forget(ok)
	for _, m := range c.marks[ok:] {
		if m.kind == kindLine {
			lost++
		}
	}
	m := c.before
	if ok > 0 {
		m = c.marks[ok-1]
	}
	c.seq, c.last, c.hasLast, c.since, c.cutSeq = m.seq, m.last, m.hasLast, m.since, m.cutSeq
	c.lost += int64(lost)
	c.lostErr = err.Error()
	return lost
}

// sealedLostIn is the lost count recorded by the audit_lost line among
// the k lines of the batch from line i (0 if it is not among them).
func (c *chain) sealedLostIn(i, k int) int64 {
	for _, m := range c.marks[i : i+k] {
		if m.kind == kindLost {
			return c.sealedLost
		}
	}
	return 0
}

// chunkHead is the head record for the k lines of the batch from its
// line i on.
func (c *chain) chunkHead(i, k int) head {
	before := c.before
	if i > 0 {
		before = c.marks[i-1]
	}
	after := c.marks[i+k-1]
	h := head{seq0: before.seq, hash0: before.last, seq: after.seq, hash: after.last, lost: c.lost, cutSeq: after.cutSeq}
	for _, m := range c.marks[:i] {
		if m.kind == kindLost {
			h.lost -= c.sealedLost // recorded by an earlier chunk
		}
	}
	if !before.hasLast {
		h.hash0 = [32]byte{}
	}
	h.lines = make([][32]byte, k)
	for j := range k {
		h.lines[j] = c.marks[i+j].last
	}
	return h
}

// maxTail bounds how far back resume looks for the last chain line,
// maxTorn how many torn lines it records at the end of a file.
const (
	maxTail = 64 << 20
	maxTorn = 64
)

// resume continues the chain from f's last chain line, checked against
// the head file's record hd (when have; see head.go). A crash can leave
// the file's end torn: a last line without a newline (a write cut short),
// and lines such a line became when an earlier open ended it but crashed
// again before recording it. resume ends the file with a newline and
// queues one EventTorn record per torn line, in file order, for the next
// batch: the chain skips them, visibly. A last line cut just before its
// newline is whole (it links to the line before it): it is ended and kept.
//
// An empty file is a new one: its first line is marked FileStart and the
// chain continues from the head, from the rotated predecessor's true end
// if that is found beside path.
func (c *chain) resume(f *os.File, path string, hd head, have, headFile bool) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		c.fileStart = true
		if !have {
			return nil
		}
		c.seq, c.last, c.hasLast = hd.seq, hd.hash, hd.seq > 0
		c.cutSeq = hd.cutSeq
		if hd.seq == 0 {
			return nil
		}
		for i, p := range Predecessors(path) {
			if i < 16 && c.continueFrom(p, hd) {
				return nil
			}
		}
		c.cut = fmt.Sprintf("the log was empty, and no rotated log beside it ends where clawd had written up to (seq %d, sha256 %x): it was deleted or emptied, or rotated away where clawd cannot read it (moved, or compressed other than with gzip)", hd.seq, hd.hash[:])
		c.openCkpt = true
		return nil
	}
	c.cutSeq = hd.cutSeq
	t, err := scanTail(f, fi.Size(), func() (int64, [32]byte, bool) { return hd.seq, hd.hash, have && hd.seq > 0 })
	if err != nil {
		return err
	}
	if t.open {
		if _, err := f.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("end its torn last line: %w", err)
		}
	}
	c.torn = append(c.torn, t.torn...)
	if t.last == nil {
		if have && hd.seq > 0 {
			c.cut = fmt.Sprintf("the log holds no chain line but clawd had written up to seq %d: it was emptied or replaced while clawd was not writing it", hd.seq)
		}
		return nil // only torn lines: a new chain
	}
	h, _ := parseChainHead(t.last) // a line that is no chain line (an older clawd's) starts the chain at 1
	c.seq, c.last, c.hasLast = max(h.Seq, 0), sha256.Sum256(t.last), true
	c.openCkpt = h.Seq > 0 && h.Event != EventCheckpoint
	c.setSince(unsigned(f, fi.Size()))
	if have {
		cut, lost := hd.judge(t.last, h.Seq)
		c.cut = cut
		c.addLost(lost, "the write a crash cut short")
	} else if headFile {
		c.unchecked = true
	}
	return nil
}

// setSince continues the count of unsigned lines from a log's end (n < 0:
// unknown, taken as many).
func (c *chain) setSince(n int) {
	if n < 0 {
		n = 1 << 30
	}
	c.since = n
}

func (c *chain) addLost(n int64, why string) {
	if n > 0 {
		c.lost += n
		c.lostErr = why
	}
}

// continueFrom continues the chain from the end of the rotated log at
// path, if it agrees with the head; its torn end is ended and recorded.
func (c *chain) continueFrom(path string, hd head) bool {
	if strings.HasSuffix(path, ".gz") {
		last, err := gzipLastLine(path)
		if err != nil || last == nil {
			return false
		}
		h, ok := parseChainHead(last)
		if !ok || h.Seq == 0 {
			return false
		}
		cut, lost := hd.judge(last, h.Seq)
		if cut != "" {
			return false
		}
		c.seq, c.last, c.hasLast = h.Seq, sha256.Sum256(last), true
		c.openCkpt = h.Event != EventCheckpoint
		c.addLost(lost, "the write a crash cut short")
		return true
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return false
	}
	t, err := scanTail(f, fi.Size(), func() (int64, [32]byte, bool) { return hd.seq0, hd.hash0, hd.seq0 > 0 })
	if err != nil || t.last == nil {
		return false
	}
	h, ok := parseChainHead(t.last)
	if !ok || h.Seq == 0 {
		return false
	}
	cut, lost := hd.judge(t.last, h.Seq)
	if cut != "" {
		return false // not the file the head is from (or altered): the head decides
	}
	if t.open {
		f.Write([]byte{'\n'})
	}
	c.torn = append(c.torn, t.torn...)
	c.seq, c.last, c.hasLast = h.Seq, sha256.Sum256(t.last), true
	c.openCkpt = h.Event != EventCheckpoint
	c.setSince(unsigned(f, fi.Size()))
	c.addLost(lost, "the write a crash cut short")
	return true
}

// tail is what scanTail found at the end of a file.
type tail struct {
	last []byte   // the last JSON line (nil: none)
	torn []string // EventTorn reasons of the torn lines after it, in file order
	open bool     // the file does not end with a newline
}

// scanTail reads back from the end of f (size bytes) to its last JSON
// line. head gives the chain's head before the file (for a file whose only
// line is unterminated).
func scanTail(f io.ReaderAt, size int64, head func() (int64, [32]byte, bool)) (tail, error) {
	for n := min(size, 64<<10); ; n = min(size, 4*n) {
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, size-n); err != nil && err != io.EOF {
			return tail{}, fmt.Errorf("read its end: %w", err)
		}
		t, found, err := splitTail(buf, n == size, head)
		if err != nil || found || n == size {
			return t, err
		}
		if n >= maxTail {
			return tail{}, fmt.Errorf("no complete JSON line in its last %d bytes", maxTail)
		}
	}
}

// splitTail is scanTail on the last bytes of the file (all of it if
// whole); found is false if it needs more of the file.
func splitTail(buf []byte, whole bool, head func() (int64, [32]byte, bool)) (t tail, found bool, err error) {
	lines := bytes.Split(buf, []byte{'\n'})
	if !whole {
		lines = lines[1:] // the first is cut by the read
	}
	frag := lines[len(lines)-1]
	lines = lines[:len(lines)-1]
	var torn [][]byte
	if len(frag) > 0 {
		t.open = true
		// Whole if it links to the line before it (or to the head).
		if h, ok := parseChainHead(frag); ok && h.Seq > 0 {
			var seq int64
			var prev [32]byte
			var linked bool
			if len(lines) > 0 {
				if ph, ok := parseChainHead(lines[len(lines)-1]); ok {
					seq, prev, linked = ph.Seq, sha256.Sum256(lines[len(lines)-1]), true
				}
			} else if whole {
				seq, prev, linked = head()
				if !linked && h.Seq == 1 && h.Prev == "" {
					linked = true
				}
			}
			if linked && h.Seq == seq+1 && (h.Prev == hex.EncodeToString(prev[:]) || seq == 0 && h.Prev == "") {
				t.last = frag
				return t, true, nil
			}
		}
		torn = append(torn, frag)
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if _, ok := parseChainHead(lines[i]); ok {
			t.last = lines[i]
			found = true
			break
		}
		torn = append(torn, lines[i])
		if len(torn) > maxTorn {
			return tail{}, false, fmt.Errorf("more than %d lines at its end are no JSON: not an audit log? (move it away to start a new one)", maxTorn)
		}
	}
	if !found && !whole {
		return tail{}, false, nil
	}
	for i := len(torn) - 1; i >= 0; i-- {
		sum := sha256.Sum256(torn[i])
		t.torn = append(t.torn, fmt.Sprintf(tornFormat, len(torn[i]), sum[:]))
	}
	return t, true, nil
}

// tornFormat is the reason of an EventTorn line: the fragment's length and
// SHA-256.
const tornFormat = "torn line of %d bytes, sha256 %x, skipped by the chain"
