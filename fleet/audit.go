package fleet

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// Audit shipping: the host's audit file is the spool. Lines are copied to
// clawd_audit in file order, keyed by (host, seq, sha256 of the line), so a
// copy interrupted by an outage or a crash is simply done again: nothing
// is lost (the file was written first) and nothing doubled (the key).

// shipBatch bounds the lines of one transaction.
const shipBatch = 500

// auditCursor is how far the file has been shipped: the file (device and
// inode, to notice rotation) and the byte offset after the last line
// shipped.
type auditCursor struct {
	dev, ino uint64
	off      int64
}

// ShipAudit copies the audit file's new complete lines to the database
// every heartbeat until ctx ends.
func (f *Fleet) ShipAudit(ctx context.Context, path string) {
	var cur auditCursor
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	var lastErr string
	for {
		n, err := f.shipOnce(ctx, path, &cur)
		if err != nil && ctx.Err() == nil {
			if err.Error() != lastErr {
				f.log.Warn("fleet: audit lines wait in the local file", zap.Error(err))
			}
			lastErr = err.Error()
		} else if err == nil {
			if lastErr != "" && n > 0 {
				f.log.Info("fleet: audit lines shipped after a failure", zap.Int("lines", n))
			}
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shipOnce ships what the file has past cur and advances cur; it returns
// the lines shipped (new or already there).
func (f *Fleet) shipOnce(ctx context.Context, path string, cur *auditCursor) (int, error) {
	if !f.up.Load() {
		return 0, ErrDown
	}
	file, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return 0, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil && (uint64(st.Dev) != cur.dev || st.Ino != cur.ino) || fi.Size() < cur.off {
		// Another file (rotated, or first run): from its start. Lines
		// shipped before are no-ops by their key.
		*cur = auditCursor{off: 0}
		if st != nil {
			cur.dev, cur.ino = uint64(st.Dev), st.Ino
		}
	}
	if _, err := file.Seek(cur.off, io.SeekStart); err != nil {
		return 0, err
	}
	r := bufio.NewReaderSize(file, 64<<10)
	total := 0
	for {
		lines, size, err := readLines(r, shipBatch)
		if err != nil {
			return total, err
		}
		if len(lines) == 0 {
			cur.off += size // skipped lines (no seq) only
			return total, nil
		}
		if err := f.insertAudit(ctx, lines); err != nil {
			return total, f.failed(err)
		}
		cur.off += size
		total += len(lines)
	}
}

type auditLine struct {
	seq   int64
	sum   [32]byte
	time  *time.Time
	event string
	line  string
}

// readLines reads up to n complete lines (a torn last line waits for its
// end) and returns those with a chain seq, and the bytes consumed.
func readLines(r *bufio.Reader, n int) ([]auditLine, int64, error) {
	var out []auditLine
	var size int64
	for len(out) < n {
		b, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out, size, nil // an incomplete line is read again next time
		}
		if err != nil {
			return out, size, err
		}
		size += int64(len(b))
		b = b[:len(b)-1]
		var h struct {
			Seq   int64      `json:"seq"`
			Time  *time.Time `json:"time"`
			Event string     `json:"event"`
		}
		if json.Unmarshal(b, &h) != nil || h.Seq <= 0 {
			continue // not a chain line (a torn line's remains): the file keeps it
		}
		out = append(out, auditLine{seq: h.Seq, sum: sha256.Sum256(b), time: h.Time, event: h.Event, line: string(b)})
	}
	return out, size, nil
}

// insertAudit inserts one batch in one transaction. If PostgreSQL refuses
// a line as jsonb (a data exception), the batch is sent again with entry
// NULL: an agent's odd bytes must not stop the trail.
func (f *Fleet) insertAudit(ctx context.Context, lines []auditLine) error {
	err := f.insertAuditBatch(ctx, lines, true)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22") {
		err = f.insertAuditBatch(ctx, lines, false)
	}
	return err
}

func (f *Fleet) insertAuditBatch(ctx context.Context, lines []auditLine, asJSON bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		var b pgx.Batch
		for _, l := range lines {
			var entry *string
			if asJSON && !strings.Contains(l.line, `\u0000`) {
				entry = &l.line
			}
			b.Queue(`INSERT INTO clawd_audit (host, seq, sha256, time, event, line, entry) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
				ON CONFLICT DO NOTHING`, f.cfg.Host, l.seq, l.sum[:], l.time, l.event, l.line, entry)
		}
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("ship audit lines: %w", err)
		}
		return nil
	})
}
