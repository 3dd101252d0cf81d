// Package audit writes one JSON line per decision clawd makes. The file is
// opened in append mode and can be reopened (after logrotate moved it) with
// Reopen, which the daemon calls on SIGHUP.
package audit

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Entry is one audit line. Secrets never belong in any field: callers pass
// headers and bodies through the secrets redactor first, or not at all.
type Entry struct {
	Time        time.Time         `json:"time"`
	Event       string            `json:"event"` // "decision", "approval", "grant", "attach", "detach", "exfiltration", ...
	Container   string            `json:"container,omitempty"`
	ContainerID string            `json:"container_id,omitempty"`
	Runtime     string            `json:"runtime,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Dst         string            `json:"dst,omitempty"` // original destination ip:port
	Src         string            `json:"src,omitempty"` // kernel fast path: the connection's source ip:port in the container
	SNI         string            `json:"sni,omitempty"`
	Host        string            `json:"host,omitempty"`
	Proto       string            `json:"proto,omitempty"` // "http", "https", "tls", "tcp", "dns"
	Method      string            `json:"method,omitempty"`
	Path        string            `json:"path,omitempty"`
	Rule        string            `json:"rule,omitempty"`
	Action      string            `json:"action,omitempty"` // allow, deny, approve, approved, denied, ...
	Status      int               `json:"status,omitempty"`
	Reason      string            `json:"reason,omitempty"`
	By          string            `json:"by,omitempty"` // who decided an approval
	ApprovalID  string            `json:"approval_id,omitempty"`
	QType       string            `json:"qtype,omitempty"` // DNS query type ("A", "AAAA", ...)
	Count       int64             `json:"count,omitempty"` // events an aggregated line stands for (0: one)
	// Which program made the connection (issue 16, policy binaries:):
	// the executable's path as the container sees it, or "unknown" when
	// clawd could not tell (its digest is then empty too).
	Program       string  `json:"program,omitempty"`
	ProgramSHA256 string  `json:"program_sha256,omitempty"`
	Cmdline       string  `json:"cmdline,omitempty"` // sanitised, bounded, credentials redacted
	PID           uint32  `json:"pid,omitempty"`     // host PID
	BytesIn       int64   `json:"bytes_in"`          // from upstream to agent
	BytesOut      int64   `json:"bytes_out"`         // from agent to upstream
	DurationMS    float64 `json:"duration_ms"`

	// Learn, then enforce (issue 16 C): Mode is "audit" on every decision
	// of a rule set in mode audit, Would the action enforcement would have
	// taken (allow, deny, approve) while Action says what clawd did.
	Mode  string `json:"mode,omitempty"`
	Would string `json:"would,omitempty"`

	// LLM budgets (issue 16, budget): tokens a request was charged.
	Tokens int64 `json:"tokens,omitempty"`
	// Usage is "unmetered" when clawd could not read what the request cost
	// (it was charged its estimate); UsageReason says why.
	Usage       string `json:"usage,omitempty"`
	UsageReason string `json:"usage_reason,omitempty"`

	// MCP tool calls (issue 16, "mcp"): the tools/call's tool name.
	Tool string `json:"tool,omitempty"`

	// Every, on a checkpoint line: the most lines the Logger writes between
	// two checkpoints (Options.CheckpointEvery), so that verify can tell
	// checkpoints were removed.
	Every int64 `json:"every,omitempty"`
	// IntervalMS, on a checkpoint line: Options.CheckpointInterval, so
	// that verify can tell timed checkpoints were removed.
	IntervalMS int64 `json:"interval_ms,omitempty"`

	// Tamper-evident chain (auditx). The Logger sets these; whatever a
	// caller puts in them is dropped. They stay the LAST fields of Entry
	// (TestChainFieldsAreLast): the Logger appends them to the encoded line.
	// FileStart marks the first line the Logger wrote into a new (empty)
	// file: a file whose first line lacks it lost its beginning.
	FileStart bool   `json:"file_start,omitempty"`
	Seq       int64  `json:"seq,omitempty"`  // position in the chain, from 1, across restarts and rotations
	Prev      string `json:"prev,omitempty"` // hex SHA-256 of the previous line's bytes (without its newline)
	Sig       string `json:"sig,omitempty"`  // checkpoint lines: base64 Ed25519 signature of CheckpointMessage(Seq, Prev)
}

// Sink receives audit entries; *Logger implements it and tests can too.
type Sink interface {
	Log(Entry)
}

// Logger appends entries to a file. It is safe for concurrent use.
//
// Concurrent callers' lines are written together (group commit): while one
// caller's write(2) is in progress, the lines of others collect in a buffer,
// and the next write takes them all at once. Every Log still returns only
// after its own line was handed to the kernel (or found unwritable), as
// with one write per line, and a write only ever carries whole lines.
//
// The lines form a hash chain (see chain.go): the caller that writes a
// batch seals it, giving each line its seq and the SHA-256 of the line
// before it, and, with Options.Key, adds signed checkpoint lines.
type Logger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	hf   *headFile // Options.HeadFile, open; nil without one
	opt  Options
	// OnError is called when a line cannot be written (disk full, ...),
	// once per line lost. The entry is lost but the caller is never
	// blocked or failed by auditing.
	OnError func(error)

	cond     sync.Cond // signals the end of a write
	pending  []byte    // line bodies (entries without their closing brace), each ended by '\n'
	npend    int       // lines in pending
	spare    []byte    // the buffer of the previous write, for reuse
	writing  bool      // a write is in progress outside mu
	filling  uint64    // number of the batch that pending becomes
	written  uint64    // batches up to this number are done
	wantCkpt bool      // the next batch ends with a checkpoint (timer)

	// The chain, owned by the writer (the caller with writing set) and by
	// holders of mu while no write is in progress.
	chain chain

	stop chan struct{} // ends the checkpoint timer
	done chan struct{}
}

// maxSpare bounds the write buffer kept between writes, maxPooledLine the
// line buffers kept for reuse.
const (
	maxSpare      = 256 << 10
	maxPooledLine = 64 << 10
)

// Open opens (creating with mode 0600) the audit log at path for appending,
// with a chain but no signed checkpoints.
func Open(path string) (*Logger, error) { return OpenWith(path, Options{}) }

// OpenWith opens the audit log at path with the chain options o. The chain
// continues from the file's last complete line; a torn last line (a crash
// during its write) is ended and recorded by the next line written.
func OpenWith(path string, o Options) (*Logger, error) {
	l := &Logger{path: path, filling: 1, opt: o.withDefaults()}
	l.cond.L = &l.mu
	f, err := openLog(path)
	if err != nil {
		return nil, err
	}
	var hd head
	var have bool
	if l.opt.HeadFile != "" {
		if l.hf, hd, have, err = openHead(l.opt.HeadFile); err != nil {
			f.Close()
			return nil, fmt.Errorf("audit log %s: %w", path, err)
		}
	}
	if err := l.chain.resume(f, path, hd, have, l.opt.HeadFile != ""); err != nil {
		f.Close()
		l.hf.close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	l.f = f
	if l.opt.Key != nil && l.opt.CheckpointInterval > 0 {
		l.stop, l.done = make(chan struct{}), make(chan struct{})
		go l.checkpointTimer(l.opt.CheckpointInterval)
	}
	return l, nil
}

func openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return f, nil
}

// Reopen closes and reopens the file, for log rotation. With a key, the old
// file first gets a checkpoint, so that it ends signed; the new file's
// first line links to that checkpoint.
func (l *Logger) Reopen() error {
	f, err := openLog(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.idle()
	if l.f == nil {
		l.mu.Unlock()
		f.Close()
		return nil
	}
	l.flushLocked(true)
	l.saveHead()
	// A file that ends torn (someone else's line cut short, or a crash's
	// left-overs) must not glue it to ours: it is ended, and its torn lines
	// are recorded like those resume finds.
	fi, err := f.Stat()
	if oi, oerr := l.f.Stat(); err == nil && oerr == nil && !os.SameFile(fi, oi) {
		l.chain.fileStart = true // a new file (a rotation), whatever is in it already
	}
	if err == nil && fi.Size() > 0 {
		c := &l.chain
		t, err := scanTail(f, fi.Size(), func() (int64, [32]byte, bool) { return c.seq, c.last, c.hasLast })
		var last [1]byte
		if _, rerr := f.ReadAt(last[:], fi.Size()-1); rerr == nil && last[0] != '\n' {
			f.Write([]byte{'\n'})
		}
		if err == nil {
			c.torn = append(c.torn, t.torn...)
		} else if l.OnError != nil {
			l.OnError(fmt.Errorf("reopen audit log: %w", err))
		}
	}
	old := l.f
	l.f = f
	l.mu.Unlock()
	old.Close()
	return nil
}

// idle waits, with mu held, until no write is in progress.
func (l *Logger) idle() {
	for l.writing {
		l.cond.Wait()
	}
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log writes e as one JSON line. A zero Time is set to now; Seq, Prev and
// Sig are the Logger's.
func (l *Logger) Log(e Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	e.Seq, e.Prev, e.Sig, e.FileStart, e.Every, e.IntervalMS = 0, "", "", false, 0, 0
	bp := lineBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledLine {
			lineBufs.Put(bp)
		}
	}()
	b, ok := encodeBody((*bp)[:0], &e)
	if !ok {
		return
	}
	*bp = b

	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return
	}
	l.pending = append(l.pending, b...)
	l.pending = append(l.pending, '\n')
	l.npend++
	l.commit()
}

// LogBatch writes es as consecutive lines, in order, handed to the kernel
// together (one write where Log would make one each): for a caller that
// has many entries at once, such as the kernel fast path's event reader.
// Like Log, it returns only after every line was written (or found
// unwritable); a zero Time is set to now, and the chain's fields are the
// Logger's.
func (l *Logger) LogBatch(es []Entry) {
	if len(es) == 0 {
		return
	}
	now := time.Now().UTC()
	bp := lineBufs.Get().(*[]byte)
	lp := lineBufs.Get().(*[]byte)
	defer func() {
		for _, p := range []*[]byte{bp, lp} {
			if cap(*p) <= maxPooledLine {
				lineBufs.Put(p)
			}
		}
	}()
	all, n := (*bp)[:0], 0
	for i := range es {
		e := &es[i]
		t := e.Time
		if t.IsZero() {
			t = now
		}
		// A copy, so the caller's entries stay as they were.
		c := *e
		c.Time = t
		c.Seq, c.Prev, c.Sig, c.FileStart, c.Every, c.IntervalMS = 0, "", "", false, 0, 0
		line, ok := encodeBody((*lp)[:0], &c)
		*lp = line
		if !ok {
			continue
		}
		all = append(all, line...)
		all = append(all, '\n')
		n++
	}
	*bp = all
	if n == 0 {
		return
	}
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return
	}
	l.pending = append(l.pending, all...)
	l.npend += n
	l.commit()
}

// encodeBody appends e without its closing brace: the chain's fields follow.
func encodeBody(b []byte, e *Entry) ([]byte, bool) {
	b, ok := appendEntry(b, e)
	if !ok {
		var err error
		if b, err = marshalEntry(b[:0], *e); err != nil {
			return b, false
		}
	}
	return b[:len(b)-1], true
}

// commit, called with mu held after adding to pending (or asking for a
// checkpoint), returns with mu released once the current batch is written.
func (l *Logger) commit() {
	mine := l.filling
	for l.writing && l.written < mine {
		l.cond.Wait()
	}
	if l.written >= mine {
		// Another caller wrote this line along with its own.
		l.mu.Unlock()
		return
	}
	// No write in progress and this line not written: write every line
	// pending, this one among them, as batch number mine.
	buf, n, f, ckpt := l.pending, l.npend, l.f, l.wantCkpt
	l.pending, l.npend, l.wantCkpt = l.spare[:0], 0, false
	l.spare = nil
	l.filling++
	if f == nil {
		// Closed meanwhile: dropped, as a Log after Close is.
		l.written = mine
		l.spare = buf[:0]
		l.cond.Broadcast()
		l.mu.Unlock()
		return
	}
	l.writing = true
	l.mu.Unlock()

	lost, err := l.writeBatch(f, buf, n, ckpt)

	l.mu.Lock()
	l.writing = false
	l.written = mine
	if cap(buf) <= maxSpare {
		l.spare = buf[:0]
	}
	onErr := l.OnError
	l.cond.Broadcast()
	l.mu.Unlock()
	if err != nil && onErr != nil {
		for range lost {
			onErr(err)
		}
	}
}

// writeBatch seals the n line bodies in buf into chained lines (plus
// checkpoints), writes them with one write and hands them to the tee. It
// returns how many lines were lost.
func (l *Logger) writeBatch(f *os.File, buf []byte, n int, ckpt bool) (int, error) {
	c := &l.chain
	out, total := c.seal(buf, ckpt, &l.opt)
	if total == 0 {
		return 0, nil
	}
	// In chunks of headChunk lines, each after its head record: a crash
	// during a chunk's write leaves the log at one of its lines, which the
	// next open accepts (head.go).
	done, off := 0, 0
	for done < total {
		k := min(headChunk, total-done)
		end := off
		for range k {
			end += bytes.IndexByte(out[end:], '\n') + 1
		}
		h := c.chunkHead(done, k)
		l.writeHead(h)
		if duringChunkWrite != nil {
			duringChunkWrite()
		}
		lost, err := writeLines(f, out[off:end], k)
		if err != nil {
			lostLines := c.lostAfter(done+k-lost, err)
			return min(lostLines, n), err
		}
		// And after it: only a crash during the write lets the log end
		// inside the chunk; lines cut after it are a cut, not a crash.
		l.writeHead(head{seq0: h.seq, hash0: h.hash, seq: h.seq, hash: h.hash, lost: h.lost - c.sealedLostIn(done, k), cutSeq: h.cutSeq})
		done, off = done+k, end
	}
	c.written()
	if tee := l.opt.Tee; tee != nil {
		for len(out) > 0 {
			i := bytes.IndexByte(out, '\n')
			tee(out[:i])
			out = out[i+1:]
		}
	}
	return 0, nil
}

// duringChunkWrite, for tests, runs between a chunk's head record and its
// lines: the state a crash during the write leaves.
var duringChunkWrite func()

// writeHead writes the head record. If that fails, the head file is
// emptied (possible even on a full disk), so that the next open does not
// take the log's end for tampering but says it could not check it.
func (l *Logger) writeHead(h head) {
	if l.hf == nil {
		return
	}
	err := l.hf.write(h)
	if err != nil {
		// Once more on a fresh descriptor (the file may have been replaced).
		if f, oerr := os.OpenFile(l.hf.path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600); oerr == nil {
			l.hf.f.Close()
			l.hf.f = f
			if err2 := l.hf.write(h); err2 == nil {
				if l.OnError != nil {
					l.OnError(fmt.Errorf("audit chain head: %w (written again on a new descriptor)", err))
				}
				return
			}
		}
	}
	if err != nil {
		if l.hf.f.Truncate(0) != nil {
			os.Remove(l.hf.path)
		}
		l.hf.close()
		l.hf = nil
		if l.OnError != nil {
			l.OnError(fmt.Errorf("audit chain head: %w (the head file is emptied: the next start cannot check the log's end)", err))
		}
	}
}

// flushLocked writes, with mu held and no write in progress, every pending
// line and (with ckpt and a key) a checkpoint, for Reopen and Close.
func (l *Logger) flushLocked(ckpt bool) {
	buf, n := l.pending, l.npend
	l.pending, l.npend = buf[len(buf):], 0
	lost, err := l.writeBatch(l.f, buf, n, ckpt)
	l.written = l.filling
	l.filling++
	l.cond.Broadcast()
	if err != nil && l.OnError != nil {
		for range lost {
			l.OnError(err)
		}
	}
}

// saveHead, with mu held and no write in progress, records the chain's
// head in Options.HeadFile.
func (l *Logger) saveHead() {
	c := &l.chain
	m := c.mark()
	l.writeHead(head{seq0: m.seq, hash0: m.last, seq: m.seq, hash: m.last, lost: c.lost, cutSeq: c.cutSeq})
}

// Head returns the seq and hex SHA-256 of the chain's last line written
// (0, "" before the first): what a verifier of a copy compares its end
// with, to see lines cut off.
func (l *Logger) Head() (seq int64, hash string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idle()
	if !l.chain.hasLast {
		return 0, ""
	}
	return l.chain.seq, hex.EncodeToString(l.chain.last[:])
}

// Checkpoint writes a signed checkpoint now if lines were written since the
// last one (and the Logger has a key).
func (l *Logger) Checkpoint() {
	l.mu.Lock()
	if l.f == nil || l.opt.Key == nil {
		l.mu.Unlock()
		return
	}
	l.wantCkpt = true
	l.commit()
}

func (l *Logger) checkpointTimer(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.Checkpoint()
		}
	}
}

// writeLines writes n whole lines with one write call (which also keeps
// lines whole for O_APPEND readers) and returns how many were lost.
func writeLines(f *os.File, buf []byte, n int) (lost int, err error) {
	w, err := f.Write(buf)
	if err == nil {
		return 0, nil
	}
	// A short write (disk full) leaves part of a line; cut it off so the
	// next line does not get glued to it and the log stays parseable.
	whole := bytes.LastIndexByte(buf[:w], '\n') + 1
	if cut := w - whole; cut > 0 {
		if fi, serr := f.Stat(); serr == nil && fi.Size() >= int64(cut) {
			f.Truncate(fi.Size() - int64(cut))
		}
	}
	return n - bytes.Count(buf[:whole], []byte{'\n'}), err
}

// Close writes what is pending and, with a key, a last checkpoint, then
// closes the file.
func (l *Logger) Close() error {
	l.mu.Lock()
	l.idle()
	if l.f == nil {
		l.mu.Unlock()
		return nil
	}
	l.flushLocked(true)
	l.saveHead()
	l.hf.close()
	err := l.f.Close()
	l.f = nil
	l.mu.Unlock()
	if l.stop != nil {
		close(l.stop)
		<-l.done
	}
	return err
}

// Discard drops every entry.
type Discard struct{}

func (Discard) Log(Entry) {}
