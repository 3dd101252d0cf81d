package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/clawd-dev/clawd/internal/atomicfile"
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
	EventCheckpoint = "checkpoint" // a signed checkpoint of the chain
	EventLost       = "audit_lost" // count lines could not be written (reason)
	EventTorn       = "audit_torn" // the line before is torn (a crash during its write); the chain skips it
)

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
	// was stopped): written on Reopen and Close, read when the log file
	// is empty at open, so the new file still links to the old one.
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

	lost    int64  // lines lost to write errors, not yet recorded
	lostErr string // the last such error
	torn    string // the reason of a torn line found at open, not yet recorded

	// For a batch: its lines' ends and chain states, to roll back to the
	// last line written after a short write.
	out    []byte
	marks  []mark
	before mark
	// What the batch's first lines record (lost, torn), to clear once written.
	sealedLost int64
	sealedTorn bool
	records    int // of the batch's first lines, how many are such records
}

type mark struct {
	seq     int64
	last    [32]byte
	hasLast bool
	since   int
}

// seal turns the line bodies in bodies (each ended by '\n') into the
// batch's final lines, adding the lost/torn records first, checkpoints
// every o.CheckpointEvery lines, and one at the end if ckpt (and lines
// came since the last). It returns the lines and their number.
func (c *chain) seal(bodies []byte, ckpt bool, o *Options) ([]byte, int) {
	c.out, c.marks = c.out[:0], c.marks[:0]
	c.before = c.mark()
	c.sealedLost, c.sealedTorn = 0, false
	if c.torn != "" {
		c.sealEntry(Entry{Event: EventTorn, Reason: c.torn})
		c.sealedTorn = true
	}
	if c.lost > 0 {
		c.sealEntry(Entry{Event: EventLost, Count: c.lost, Reason: "lines could not be written: " + c.lostErr})
		c.sealedLost = c.lost
	}
	c.records = len(c.marks)
	for len(bodies) > 0 {
		i := bytes.IndexByte(bodies, '\n')
		c.sealLine(bodies[:i], nil)
		bodies = bodies[i+1:]
		if o.Key != nil && c.since >= o.CheckpointEvery {
			c.sealCheckpoint(o.Key)
		}
	}
	if ckpt && o.Key != nil && c.since > 0 {
		c.sealCheckpoint(o.Key)
	}
	if cap(c.out) > maxSpare {
		defer func() { c.out = nil }()
	}
	return c.out, len(c.marks)
}

func (c *chain) mark() mark { return mark{c.seq, c.last, c.hasLast, c.since} }

func (c *chain) sealEntry(e Entry) {
	e.Time = time.Now().UTC()
	var buf [256]byte
	b, ok := encodeBody(buf[:0], &e)
	if ok {
		c.sealLine(b, nil)
	}
}

func (c *chain) sealCheckpoint(key ed25519.PrivateKey) {
	e := Entry{Time: time.Now().UTC(), Event: EventCheckpoint, Count: int64(c.since)}
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
	c.marks = append(c.marks, c.mark())
}

// written records that the whole batch is in the file.
func (c *chain) written() {
	if c.sealedTorn {
		c.torn = ""
	}
	c.lost -= c.sealedLost
}

// lostAfter rolls the chain back to the last of the batch's lines that was
// written (ok of them) and remembers the lost ones for the next batch.
func (c *chain) lostAfter(ok, lost int, err error) {
	m := c.before
	if ok > 0 {
		m = c.marks[ok-1]
	}
	if c.sealedTorn && ok >= 1 { // the torn record comes first
		c.torn = ""
	}
	if ok >= c.records {
		c.lost -= c.sealedLost
	}
	c.seq, c.last, c.hasLast, c.since = m.seq, m.last, m.hasLast, m.since
	// The records themselves are written again with the next batch: not
	// audit lines lost.
	if ok < c.records {
		lost -= c.records - ok
	}
	c.lost += int64(lost)
	c.lostErr = err.Error()
}

// saveHead writes the chain's head to path.
func (c *chain) saveHead(path string) error {
	if path == "" || !c.hasLast {
		return nil
	}
	return atomicfile.WriteFile(path, fmt.Appendf(nil, "%d %x\n", c.seq, c.last[:]), 0o600)
}

// loadHead continues an empty log's chain from the head in path.
func (c *chain) loadHead(path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var seq int64
	var sum []byte
	if _, err := fmt.Sscanf(string(b), "%d %x\n", &seq, &sum); err != nil || seq < 0 || len(sum) != sha256.Size {
		return fmt.Errorf("chain head %s: not \"SEQ HEX-SHA256\" (remove it to start a new chain)", path)
	}
	c.seq, c.hasLast = seq, true
	copy(c.last[:], sum)
	return nil
}

// maxTail bounds how far back resume looks for the last complete line.
const maxTail = 64 << 20

// resume continues the chain from f's last complete line. A last line
// without a newline (torn by a crash) is ended with one and recorded by the
// next line written; the chain skips it.
func (c *chain) resume(f *os.File, headFile string) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return c.loadHead(headFile)
	}
	n := min(size, 64<<10)
	var tail []byte
	for {
		tail = make([]byte, n)
		if _, err := f.ReadAt(tail, size-n); err != nil && err != io.EOF {
			return fmt.Errorf("read its end: %w", err)
		}
		// Enough when two newlines (or the start of the file) bound the
		// last complete line.
		body := tail
		if i := bytes.LastIndexByte(body, '\n'); i >= 0 {
			body = body[:i]
		}
		if bytes.IndexByte(body, '\n') >= 0 || n == size {
			break
		}
		if n >= maxTail {
			return fmt.Errorf("its last line is longer than %d bytes", maxTail)
		}
		n = min(size, 4*n)
	}
	end := bytes.LastIndexByte(tail, '\n')
	if end != len(tail)-1 {
		frag := tail[end+1:]
		if int64(len(frag)) == n && n < size {
			return fmt.Errorf("its torn last line is longer than %d bytes", maxTail)
		}
		sum := sha256.Sum256(frag)
		c.torn = fmt.Sprintf(tornFormat, len(frag), sum[:])
		if _, err := f.Write([]byte{'\n'}); err != nil {
			return fmt.Errorf("end its torn last line: %w", err)
		}
	}
	if end < 0 {
		return nil // only a torn line: a new chain
	}
	line := tail[:end]
	if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	var head struct {
		Seq int64 `json:"seq"`
	}
	json.Unmarshal(line, &head) // a line that is no chain line (an older clawd's) starts the chain at 1
	c.seq, c.last, c.hasLast = max(head.Seq, 0), sha256.Sum256(line), true
	return nil
}

// tornFormat is the reason of an EventTorn line: the fragment's length and
// SHA-256.
const tornFormat = "torn line of %d bytes, sha256 %x, skipped by the chain"
