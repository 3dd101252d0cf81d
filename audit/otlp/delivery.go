package otlp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
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
	mu        sync.Mutex
	cursor    int64             // every seq up to it is exported
	done      spans             // exported seqs past the cursor
	pending   map[int64]int     // seqs queued, in the SDK or waiting for a retry
	seen      int64             // the highest seq handed to export (or Resume's through)
	retry     [][]sdklog.Record // parts to send again
	saved     int64             // cursor read from the cursor file
	savedText string            // content last written to it
	file      string            // the cursor file ("" none)
	logPath   string            // the JSONL log, for gaps ("" none)
	// Where the last read of the log stopped: the offset of the line after
	// seq hintSeq, in the file with inode hintIno.
	hintSeq, hintOff int64
	hintIno          uint64
	inspected        map[string]logFile // fillGaps' view of rotated files
}

func newDelivery(cursorFile string) *delivery {
	d := &delivery{pending: map[int64]int{}, file: cursorFile}
	if cursorFile != "" {
		if b, err := os.ReadFile(cursorFile); err == nil {
			if c, done, ok := parseCursor(string(b)); ok {
				d.cursor, d.saved, d.seen, d.done = c, c, c, done
				if n := len(done); n > 0 {
					d.seen = done[n-1].b
				}
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
	d.newLine(seq)
	d.pending[seq]++
	d.mu.Unlock()
}

// dropped: a line with seq found no room (the file has it).
func (d *delivery) dropped(seq int64) {
	if seq <= 0 {
		return
	}
	d.mu.Lock()
	d.newLine(seq)
	d.mu.Unlock()
}

// newLine: a line the log wrote now. One at or before the cursor means
// the cursor is another chain's (the log started again, or the cursor file
// was altered): it is moved back, so that nothing is skipped (duplicates
// rather than gaps).
func (d *delivery) newLine(seq int64) {
	if seq <= d.cursor && d.pending[seq] == 0 {
		d.cursor, d.done, d.seen = seq-1, nil, seq
	}
	d.seen = max(d.seen, seq)
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

// keep queues a refused part for retryOnce.
func (d *delivery) keep(part []sdklog.Record) {
	d.mu.Lock()
	d.retry = append(d.retry, part)
	d.mu.Unlock()
}

// retrying reports whether refused parts wait.
func (d *delivery) retrying() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.retry) > 0
}

// maxDone bounds the spans of exported seqs kept past a cursor that a gap
// holds back (never a count of lines: a gap is never given up).
const maxDone = 1 << 12

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
	d.done = d.done.add(seq)
	if len(d.done) > maxDone {
		// Too scattered to keep: the oldest spans go, their seqs will be
		// sent again (duplicates, never gaps).
		d.done = append(spans(nil), d.done[len(d.done)-maxDone:]...)
	}
	for len(d.done) > 0 && d.done[0].a <= d.cursor+1 {
		d.cursor = max(d.cursor, d.done[0].b)
		d.done = d.done[1:]
	}
}

// span is the seqs a..b.
type span struct{ a, b int64 }

// spans are disjoint, sorted, non-adjacent spans.
type spans []span

func (ss spans) add(s int64) spans {
	i := sort.Search(len(ss), func(i int) bool { return ss[i].b >= s-1 })
	switch {
	case i < len(ss) && ss[i].a <= s && s <= ss[i].b:
		return ss
	case i < len(ss) && ss[i].b == s-1:
		ss[i].b = s
		if i+1 < len(ss) && ss[i+1].a == s+1 {
			ss[i].b = ss[i+1].b
			ss = append(ss[:i+1], ss[i+2:]...)
		}
		return ss
	case i < len(ss) && ss[i].a == s+1:
		ss[i].a = s
		return ss
	}
	ss = append(ss, span{})
	copy(ss[i+1:], ss[i:])
	ss[i] = span{s, s}
	return ss
}

// parseCursor reads the cursor file: "CURSOR [A-B ...]".
func parseCursor(s string) (int64, spans, bool) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, nil, false
	}
	c, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || c < 0 {
		return 0, nil, false
	}
	var out spans
	last := c
	for _, x := range f[1:] {
		as, bs, ok := strings.Cut(x, "-")
		a, err1 := strconv.ParseInt(as, 10, 64)
		b, err2 := strconv.ParseInt(bs, 10, 64)
		if !ok || err1 != nil || err2 != nil || a <= last+1 || b < a {
			return c, nil, true // the spans are a hint: without them, duplicates
		}
		out = append(out, span{a, b})
		last = b
	}
	return c, out, true
}

// gaps returns up to n seqs past the cursor, up to seen, that are in no
// queue and were not exported: what must be read again from the file.
func (d *delivery) gaps(n int) []int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int64
	i := 0
	for s := d.cursor + 1; s <= d.seen && len(out) < n; s++ {
		for i < len(d.done) && d.done[i].b < s {
			i++
		}
		if i < len(d.done) && d.done[i].a <= s {
			s = d.done[i].b // skip the span
			continue
		}
		if d.pending[s] == 0 {
			out = append(out, s)
		}
	}
	return out
}

// maxSavedSpans bounds the exported spans past the cursor the cursor file
// keeps (past them, a restart sends those lines again).
const maxSavedSpans = 256

// save writes the cursor file (the cursor, and the exported spans past
// it) if it changed.
func (d *delivery) save() error {
	d.mu.Lock()
	b := strconv.AppendInt(nil, d.cursor, 10)
	for _, sp := range d.done[:min(len(d.done), maxSavedSpans)] {
		b = fmt.Appendf(b, " %d-%d", sp.a, sp.b)
	}
	b = append(b, '\n')
	file := d.file
	if file == "" || string(b) == d.savedText {
		d.mu.Unlock()
		return nil
	}
	d.savedText = string(b)
	d.mu.Unlock()
	return atomicfile.WriteFile(file, b, 0o600)
}

// Resume sends again the lines of the JSONL log at path past the delivery
// cursor (an earlier run's, from Config.CursorFile) up to seq through (the
// log's head when it was opened, before any line this run exports), and
// later any line dropped for room. Call it once, after opening the log.
func (e *Exporter) Resume(path string, through int64) {
	d := e.dv
	d.mu.Lock()
	d.logPath = path
	if d.cursor > through {
		d.cursor, d.done = 0, nil // another chain's cursor: send the whole log again
	}
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
		ok := e.retryOnce(e.loopCtx)
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
func (e *Exporter) retryOnce(parent context.Context) bool {
	d := e.dv
	d.mu.Lock()
	parts := d.retry
	d.retry = nil
	d.mu.Unlock()
	for i, p := range parts {
		ctx, cancel := context.WithTimeout(parent, e.timeout)
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
	// The log and, when a gap is older than its first line, the rotated
	// files before it that its chain links to (a file beside it with the
	// same name pattern but another chain, or planted, is not read): the
	// oldest first.
	cur, err := inspect(path)
	if err != nil {
		if e.limit.Allow() {
			e.log.Warn("audit export: cannot read back lines the export missed", zap.String("log", path), zap.Error(err))
		}
		return
	}
	files := []string{path}
	if want[0] < cur.firstSeq {
		next := cur
		for _, p := range audit.Predecessors(path) {
			if strings.HasSuffix(p, ".gz") || len(files) > 2 {
				continue
			}
			pf, err := d.inspectCached(p)
			if err != nil || pf.lastHash == "" || pf.lastHash != next.firstPrev {
				continue
			}
			if pf.lastSeq >= want[0] {
				files = append([]string{p}, files...)
			}
			next = pf
			if want[0] >= pf.firstSeq {
				break
			}
		}
	}
	found := map[int64]bool{}
	stopped := false
	var firstErr error
	for _, fp := range files {
		off, ino := int64(0), uint64(0)
		d.mu.Lock()
		if fp == path && want[0] > d.hintSeq {
			off, ino = d.hintOff, d.hintIno
		}
		hs := d.hintSeq
		d.mu.Unlock()
		if off > 0 && !lineEndsAt(fp, off, hs) {
			off, ino = 0, 0 // the file was truncated and written again (copytruncate)
		}
		gotIno, nextOff, lastSeq, err := scanLog(fp, off, ino, want[0], want[len(want)-1], func(seq int64, line []byte) bool {
			if _, ok := slices.BinarySearch(want, seq); !ok || found[seq] {
				return true
			}
			var r log.Record
			if !Record(line, &r) {
				found[seq] = true
				d.exported(seq) // never a record
				return true
			}
			if !e.reserve(recordBytes(&r)) {
				stopped = true
				return false // no room now: the rest next time
			}
			found[seq] = true
			d.queued(seq)
			e.logger.Emit(context.Background(), r)
			return true
		})
		if err != nil && !errors.Is(err, os.ErrNotExist) && firstErr == nil {
			firstErr = err
		}
		if fp == path && err == nil && lastSeq > 0 {
			d.mu.Lock()
			d.hintSeq, d.hintOff, d.hintIno = lastSeq, nextOff, gotIno
			d.mu.Unlock()
		}
		if stopped {
			break
		}
	}
	if !stopped && firstErr == nil {
		// In none of the files: rotated away or compressed. Given up (the
		// cursor moves on), and said.
		n := 0
		for _, s := range want {
			if !found[s] {
				d.exported(s)
				n++
			}
		}
		if n > 0 {
			e.failed.Add(uint64(n))
			if e.limit.Allow() {
				e.log.Warn("audit export: lines the export missed are no longer in the log or its uncompressed rotations: given up", zap.Int("lines", n), zap.String("log", path))
			}
		}
	}
	if firstErr != nil && e.limit.Allow() {
		e.log.Warn("audit export: cannot read back lines the export missed", zap.String("log", path), zap.Error(firstErr))
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

// logFile is what fillGaps needs of a log file: its first chain line's
// seq and prev, its last's seq and hash.
type logFile struct {
	ino, size           int64
	firstSeq, lastSeq   int64
	firstPrev, lastHash string
}

// maxEdge bounds what inspect reads at either end of a file.
const maxEdge = 256 << 10

// inspect reads the first and last chain lines of the log at path.
func inspect(path string) (logFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return logFile{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return logFile{}, err
	}
	lf := logFile{size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		lf.ino = int64(st.Ino)
	}
	n := min(fi.Size(), maxEdge)
	head := make([]byte, n)
	if _, err := f.ReadAt(head, 0); err != nil && err != io.EOF {
		return logFile{}, err
	}
	for _, l := range bytes.Split(head, []byte{'\n'}) {
		var h struct {
			Seq  int64  `json:"seq"`
			Prev string `json:"prev"`
		}
		if json.Unmarshal(l, &h) == nil && h.Seq > 0 {
			lf.firstSeq, lf.firstPrev = h.Seq, h.Prev
			break
		}
	}
	tail := make([]byte, n)
	if _, err := f.ReadAt(tail, fi.Size()-n); err != nil && err != io.EOF {
		return logFile{}, err
	}
	lines := bytes.Split(tail, []byte{'\n'})
	for i := len(lines) - 2; i >= 0; i-- { // the last piece has no newline: torn or empty
		if s := lineSeq(lines[i]); s > 0 && json.Valid(lines[i]) {
			lf.lastSeq = s
			sum := sha256.Sum256(lines[i])
			lf.lastHash = hex.EncodeToString(sum[:])
			break
		}
	}
	return lf, nil
}

// inspectCached is inspect, remembered by file identity and size (a
// rotated file does not change).
func (d *delivery) inspectCached(path string) (logFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return logFile{}, err
	}
	var ino int64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = int64(st.Ino)
	}
	d.mu.Lock()
	lf, ok := d.inspected[path]
	d.mu.Unlock()
	if ok && lf.ino == ino && lf.size == fi.Size() {
		return lf, nil
	}
	lf, err = inspect(path)
	if err == nil {
		d.mu.Lock()
		if d.inspected == nil || len(d.inspected) > 16 {
			d.inspected = map[string]logFile{}
		}
		d.inspected[path] = lf
		d.mu.Unlock()
	}
	return lf, err
}

// lineEndsAt reports whether the chain line with seq ends just before
// offset off of the file at path (so the offset is still a line start).
func lineEndsAt(path string, off, seq int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	n := min(off, maxEdge)
	buf := make([]byte, n)
	if k, _ := f.ReadAt(buf, off-n); int64(k) != n || n == 0 || buf[n-1] != '\n' {
		return false
	}
	buf = buf[:n-1]
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return lineSeq(buf) == seq
}
