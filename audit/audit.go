// Package audit writes one JSON line per decision clawd makes. The file is
// opened in append mode and can be reopened (after logrotate moved it) with
// Reopen, which the daemon calls on SIGHUP.
package audit

import (
	"bytes"
	"fmt"
	"os"
	"sync"
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
	BytesIn     int64             `json:"bytes_in"`        // from upstream to agent
	BytesOut    int64             `json:"bytes_out"`       // from agent to upstream
	DurationMS  float64           `json:"duration_ms"`

	// MCP tool calls (issue 16, "mcp"): the tools/call's tool name.
	Tool string `json:"tool,omitempty"`
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
type Logger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	// OnError is called when a line cannot be written (disk full, ...),
	// once per line lost. The entry is lost but the caller is never
	// blocked or failed by auditing.
	OnError func(error)

	cond    sync.Cond // signals the end of a write
	pending []byte    // whole lines waiting for the next write
	npend   int       // lines in pending
	spare   []byte    // the buffer of the previous write, for reuse
	writing bool      // a write is in progress outside mu
	filling uint64    // number of the batch that pending becomes
	written uint64    // batches up to this number are done
}

// maxSpare bounds the write buffer kept between writes, maxPooledLine the
// line buffers kept for reuse.
const (
	maxSpare      = 256 << 10
	maxPooledLine = 64 << 10
)

// Open opens (creating with mode 0600) the audit log at path for appending.
func Open(path string) (*Logger, error) {
	l := &Logger{path: path, filling: 1}
	l.cond.L = &l.mu
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// Reopen closes and reopens the file, for log rotation.
func (l *Logger) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	l.mu.Lock()
	l.idle()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// idle waits, with mu held, until no write is in progress.
func (l *Logger) idle() {
	for l.writing {
		l.cond.Wait()
	}
}

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Log writes e as one JSON line. A zero Time is set to now.
func (l *Logger) Log(e Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	bp := lineBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledLine {
			lineBufs.Put(bp)
		}
	}()
	b, ok := appendEntry((*bp)[:0], &e)
	if !ok {
		var err error
		if b, err = marshalEntry(b[:0], e); err != nil {
			return
		}
	}
	b = append(b, '\n')
	*bp = b

	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return
	}
	l.pending = append(l.pending, b...)
	l.npend++
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
	buf, n, f := l.pending, l.npend, l.f
	l.pending, l.npend = l.spare[:0], 0
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

	lost, err := writeLines(f, buf, n)

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

// Close closes the file.
func (l *Logger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idle()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Discard drops every entry.
type Discard struct{}

func (Discard) Log(Entry) {}
