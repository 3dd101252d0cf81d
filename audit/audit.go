// Package audit writes one JSON line per decision clawd makes. The file is
// opened in append mode and can be reopened (after logrotate moved it) with
// Reopen, which the daemon calls on SIGHUP.
package audit

import (
	"encoding/json"
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
	BytesIn     int64             `json:"bytes_in"`  // from upstream to agent
	BytesOut    int64             `json:"bytes_out"` // from agent to upstream
	DurationMS  float64           `json:"duration_ms"`
}

// Sink receives audit entries; *Logger implements it and tests can too.
type Sink interface {
	Log(Entry)
}

// Logger appends entries to a file. It is safe for concurrent use.
type Logger struct {
	mu   sync.Mutex
	path string
	f    *os.File
	// OnError is called when a line cannot be written (disk full, ...). The
	// entry is lost but the caller is never blocked or failed by auditing.
	OnError func(error)
}

// Open opens (creating with mode 0600) the audit log at path for appending.
func Open(path string) (*Logger, error) {
	l := &Logger{path: path}
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
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Log writes e as one JSON line. A zero Time is set to now.
func (l *Logger) Log(e Entry) {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	// One write call per line keeps lines whole even with O_APPEND readers.
	if n, err := l.f.Write(b); err != nil {
		// A short write (disk full) leaves part of a line; cut it off so the
		// next line does not get glued to it and the log stays parseable.
		if n > 0 {
			if fi, serr := l.f.Stat(); serr == nil && fi.Size() >= int64(n) {
				l.f.Truncate(fi.Size() - int64(n))
			}
		}
		if l.OnError != nil {
			l.OnError(err)
		}
	}
}

// Close closes the file.
func (l *Logger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
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
