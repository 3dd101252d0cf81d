package otlp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/internal/atomicfile"
)

// Delivery: every chain line is exported at least once.
//
//   - A part the collector refuses (down, overloaded, timing out) keeps its
//     records and their room in the queues and is sent again, with backoff,
//     until it goes through or Close: an outage delays lines, it loses none
//     (past QueueBytes, new lines are dropped instead, see below).
//   - The delivery cursor is the highest seq up to which every chain line
//     was exported; with Config.CursorFile it survives restarts. Lines
//     after the cursor that are in no queue (dropped for room, or queued
//     when clawd crashed) are read again from the JSONL file
//     (Resume's path) and sent, oldest first, whenever the collector
//     answers and the queues have room.
//
// Duplicates are possible (a line exported just before a crash, before the
// cursor was saved): each record's clawd.seq tells them apart.

// delivery tracks which seqs are where. Its own lock; never held while
// exporting.
type delivery struct {
	mu      sync.Mutex
	cursor  int64             // every seq up to it is exported
	done    map[int64]bool    // exported seqs past the cursor
	pending map[int64]int     // seqs queued, in the SDK or waiting for a retry
	seen    int64             // the highest seq handed to export (or Resume's through)
	retry   [][]sdklog.Record // parts to send again
	saved   int64             // cursor last written to the cursor file
	file    string            // the cursor file ("" none)
	logPath string            // the JSONL log, for gaps ("" none)
	// Where the last read of the log stopped: the offset of the line after
	// seq hintSeq, in the file with inode hintIno.
	hintSeq, hintOff int64
	hintIno          uint64
}

func newDelivery(cursorFile string) *delivery {
	d := &delivery{done: map[int64]bool{}, pending: map[int64]int{}, file: cursorFile}
	if cursorFile != "" {
		if b, err := os.ReadFile(cursorFile); err == nil {
			if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
				d.cursor, d.saved, d.seen = n, n, n
			}
		}
	}
	return d
}

// lineSeq reads a chain line's seq (its chain fields are last): 0 if none.
func lineSeq(line []byte) int64 {
	i := bytes.LastIndex(line, []byte(`,"seq":`))
	if i < 0 {
		return 0
	}
	rest := line[i+len(`,"seq":`):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseInt(string(rest[:j]), 10, 64)
	return n
}

// recordSeq reads clawd.seq from a record.
func recordSeq(r *sdklog.Record) int64 {
	var seq int64
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		if kv.Key == "clawd.seq" {
			seq = kv.Value.AsInt64()
			return false
		}
		return true
	})
	return seq
}

// queued: a line with seq entered the queues.
func (d *delivery) queued(seq int64) {
	if seq <= 0 {
		return
	}
	d.mu.Lock()
	d.pending[seq]++
	d.seen = max(d.seen, seq)
	d.mu.Unlock()
}

// dropped: a line with seq found no room (the file has it).
func (d *delivery) dropped(seq int64) {
	if seq <= 0 {
		return
	}
	d.mu.Lock()
	d.seen = max(d.seen, seq)
	d.mu.Unlock()
}

// unqueued: a line left the queues without export (not a record).
func (d *delivery) unqueued(seq int64) { d.exported(seq) }

// forget: a queued line lost its place (no room for its record): a gap,
// read back from the file.
func (d *delivery) forget(seq int64) {
	d.mu.Lock()
	if d.pending[seq]--; d.pending[seq] <= 0 {
		delete(d.pending, seq)
	}
	d.mu.Unlock()
}

// hasLog reports whether gaps can be read back (Resume was called).
func (d *delivery) hasLog() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logPath != ""
}

// cursorNow is the cursor.
func (d *delivery) cursorNow() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cursor
}

// retrying reports whether refused parts wait.
func (d *delivery) retrying() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.retry) > 0
}

// maxDone bounds the exported seqs kept past a cursor that a gap holds
// back (no log to read it from, or the line rotated away): past it the
// gap is given up.
const maxDone = 1 << 17

// exported: the line with seq reached the collector (or never will be a
// record): the cursor moves on over it.
func (d *delivery) exported(seq int64) {
	if seq <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending[seq]--; d.pending[seq] <= 0 {
		delete(d.pending, seq)
	}
	d.seen = max(d.seen, seq)
	if seq <= d.cursor {
		return
	}
	d.done[seq] = true
	if len(d.done) > maxDone {
		low := seq
		for s := range d.done {
			low = min(low, s)
		}
		for s := range d.pending {
			low = min(low, s)
		}
		d.cursor = max(d.cursor, low-1) // the gaps before it are lost to the collector
	}
	for d.done[d.cursor+1] {
		delete(d.done, d.cursor+1)
		d.cursor++
	}
}

// gaps returns up to n seqs past the cursor, up to seen, that are in no
// queue and were not exported: what must be read again from the file.
func (d *delivery) gaps(n int) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int64
	for s := d.cursor + 1; s <= d.seen && len(out) < n; s++ {
		if !d.done[s] && d.pending[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

// save writes the cursor file if the cursor moved.
func (d *delivery) save() error {
	d.mu.Lock()
	c, file := d.cursor, d.file
	if file == "" || c == d.saved {
		d.mu.Unlock()
		return nil
	}
	d.saved = c
	d.mu.Unlock()
	return atomicfile.WriteFile(file, []byte(strconv.FormatInt(c, 10)+"\n"), 0o600)
}

// Resume sends again the lines of the JSONL log at path past the delivery
// cursor (an earlier run's, from Config.CursorFile) up to seq through (the
// log's head when it was opened, before any line this run exports), and
// later any line dropped for room. Call it once, after opening the log.
func (e *Exporter) Resume(path string, through int64) {
	d := e.dv
	d.mu.Lock()
	d.logPath = path
	d.seen = max(d.seen, through) // no cursor yet: the whole file is unexported
	d.mu.Unlock()
	e.kick()
}

// kick wakes the delivery loop.
func (e *Exporter) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// maxRetryWait bounds the backoff between retries of refused parts.
const maxRetryWait = 30 * time.Second

// deliver is the delivery loop: it sends refused parts again and reads
// gaps from the log file, and saves the cursor.
func (e *Exporter) deliver() {
	defer close(e.delivered)
	wait := time.Second
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-e.stopDeliver:
			e.dv.save()
			return
		case <-e.wake:
		case <-t.C:
		}
		ok := e.retryOnce()
		if ok {
			e.fillGaps()
			wait = time.Second
		} else {
			wait = min(2*wait, maxRetryWait)
		}
		if err := e.dv.save(); err != nil && e.limit.Allow() {
			e.log.Warn("audit export: cannot save the delivery cursor", zap.Error(err))
		}
		t.Reset(wait)
	}
}

// retryOnce sends the refused parts again; false if one was refused again.
func (e *Exporter) retryOnce() bool {
	d := e.dv
	d.mu.Lock()
	parts := d.retry
	d.retry = nil
	d.mu.Unlock()
	for i, p := range parts {
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		err := e.exp.export(ctx, p, false)
		if err != nil && tooLarge(err) {
			err = nil // given up: not the collector's state
		}
		cancel()
		if err != nil {
			d.mu.Lock()
			d.retry = append(parts[i:], d.retry...)
			d.mu.Unlock()
			return false
		}
	}
	return true
}

// maxGapLines bounds the lines one fillGaps reads back.
const maxGapLines = 4096

// fillGaps reads lines the queues lost track of from the log file and
// hands them to export, within the queues' room.
func (e *Exporter) fillGaps() {
	d := e.dv
	d.mu.Lock()
	path := d.logPath
	d.mu.Unlock()
	if path == "" {
		return
	}
	want := e.dv.gaps(maxGapLines)
	if len(want) == 0 {
		return
	}
	d.mu.Lock()
	hs, ho, hi := d.hintSeq, d.hintOff, d.hintIno
	d.mu.Unlock()
	off := int64(0)
	if want[0] > hs {
		off = ho
	}
	ino, nextOff, lastSeq, err := scanLog(path, off, hi, want[0], want[len(want)-1], func(seq int64, line []byte) bool {
		if _, found := slices.BinarySearch(want, seq); !found {
			return true
		}
		var r log.Record
		if !Record(line, &r) {
			d.exported(seq) // never a record
			return true
		}
		if !e.reserve(recordBytes(&r)) {
			return false // no room now: the rest next time
		}
		d.queued(seq)
		e.logger.Emit(context.Background(), r)
		return true
	})
	if err == nil && lastSeq > 0 {
		d.mu.Lock()
		d.hintSeq, d.hintOff, d.hintIno = lastSeq, nextOff, ino
		d.mu.Unlock()
	}
	if err != nil && e.limit.Allow() {
		e.log.Warn("audit export: cannot read back lines the export missed", zap.String("log", path), zap.Error(err))
	}
}

// scanLog calls f with each chain line of the log at path whose seq is in
// [from, to], in order, until f returns false. It starts at offset off if
// the file is still the one with inode ino (a hint from an earlier call),
// and returns the file's inode, the offset after the last line it gave f
// (or skipped below from) and that line's seq.
func scanLog(path string, off int64, ino uint64, from, to int64, f func(int64, []byte) bool) (uint64, int64, int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	var cur uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		cur = st.Ino
	}
	if cur != ino || off > fi.Size() {
		off = 0
	}
	if _, err := fh.Seek(off, io.SeekStart); err != nil {
		return 0, 0, 0, err
	}
	br := bufio.NewReaderSize(fh, 64<<10)
	pos, lastOff, lastSeq := off, off, int64(0)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: read it whole (bounded).
			buf := bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) && len(buf) <= 64<<20 {
				line, err = br.ReadSlice('\n')
				buf = append(buf, line...)
			}
			line = buf
		}
		pos += int64(len(line))
		if len(line) > 0 && line[len(line)-1] == '\n' {
			seq := lineSeq(line[:len(line)-1])
			if seq > to {
				return cur, lastOff, lastSeq, nil
			}
			if seq >= from && !f(seq, line[:len(line)-1]) {
				return cur, lastOff, lastSeq, nil
			}
			if seq > 0 {
				lastOff, lastSeq = pos, seq
			}
		}
		if err == io.EOF {
			return cur, lastOff, lastSeq, nil
		}
		if err != nil {
			return 0, 0, 0, fmt.Errorf("read %s: %w", path, err)
		}
	}
}
