package mcp

import (
	"bytes"
	"errors"
	"io"
)

// MaxEvent bounds one server-sent event the filter holds while it is
// incomplete; a longer one ends the stream with ErrEventTooLarge.
const MaxEvent = 16 << 20

// ErrEventTooLarge ends a filtered event stream whose event passed MaxEvent.
var ErrEventTooLarge = errors.New("mcp: server-sent event larger than the filter's limit")

// SSEFilter passes a text/event-stream through event by event, parsed as
// the HTML standard's event stream parser (and eventsource-parser) reads
// it: lines end at CRLF, LF or a lone CR; one leading BOM is skipped; a
// field is the text before the first colon, its value the rest less one
// leading space; data lines join with "\n"; a blank line ends an event.
// Every event goes out re-written in one normal form ("name: value\n"
// lines, "\n" after the event; comments kept, fields other than data,
// event, id and retry dropped), so the client reads exactly what clawd
// read; the data of every event that holds JSON is filtered as FilterTools
// does. An event whose data clawd cannot read as JSON, when it is a
// message event (no event field, or "message": what MCP clients parse as
// JSON-RPC), is replaced by a JSON-RPC error. Events at the end of the
// stream without their blank line are filtered the same way and sent
// without one. Every event goes out as soon as its blank line has
// arrived: the stream is never held back longer than one event.
type SSEFilter struct {
	src     io.ReadCloser
	visible func(string) bool
	refuse  func(string) []byte
	chunk   []byte // read buffer
	buf     []byte // read from src, not yet split into lines
	started bool   // the BOM check is done
	skipLF  bool   // the last line ended with CR: a first LF is its end too
	out     []byte // ready to be read
	ev      event
	err     error
}

type field struct{ name, value []byte }

type event struct {
	fields []field
	size   int
}

// NewSSEFilter filters src; refuse gives the data (one line of JSON) of
// the event that replaces one clawd cannot read.
func NewSSEFilter(src io.ReadCloser, visible func(string) bool, refuse func(reason string) []byte) *SSEFilter {
	return &SSEFilter{src: src, visible: visible, refuse: refuse}
}

func known(name []byte) bool {
	switch string(name) {
	case "data", "event", "id", "retry":
		return true
	}
	return false
}

func (f *SSEFilter) Close() error { return f.src.Close() }

func (f *SSEFilter) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.fill()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// fill reads from src and handles every complete line read.
func (f *SSEFilter) fill() {
	if f.chunk == nil {
		f.chunk = make([]byte, 32<<10)
	}
	n, err := f.src.Read(f.chunk)
	f.buf = append(f.buf, f.chunk[:n]...)
	if !f.started {
		if len(f.buf) < len(utf8BOM) && bytes.HasPrefix(utf8BOM, f.buf) && err == nil {
			return // maybe a BOM still arriving
		}
		f.buf = bytes.TrimPrefix(f.buf, utf8BOM)
		f.started = true
	}
	for {
		if f.skipLF && len(f.buf) > 0 {
			if f.buf[0] == '\n' {
				f.buf = f.buf[1:]
			}
			f.skipLF = false
		}
		i := bytes.IndexAny(f.buf, "\r\n")
		if i < 0 {
			break
		}
		line := f.buf[:i]
		f.skipLF = f.buf[i] == '\r'
		f.buf = f.buf[i+1:]
		if !f.line(line) {
			return
		}
	}
	if f.ev.size+len(f.buf) > MaxEvent {
		f.err = ErrEventTooLarge
		return
	}
	if err != nil {
		if len(f.buf) > 0 {
			// A last line without its end: read as a line.
			if !f.line(f.buf) {
				return
			}
			f.buf = nil
		}
		if len(f.ev.fields) > 0 {
			f.out = append(f.out, f.dispatch(false)...)
		}
		f.err = err
	}
}

// line handles one line; false when the stream ended for it.
func (f *SSEFilter) line(l []byte) bool {
	if len(l) == 0 {
		if len(f.ev.fields) > 0 {
			f.out = append(f.out, f.dispatch(true)...)
		}
		return true
	}
	if f.ev.size += len(l) + 1; f.ev.size > MaxEvent {
		f.err = ErrEventTooLarge
		return false
	}
	var fl field
	if l[0] == ':' {
		fl = field{value: append([]byte(nil), l...)} // a comment: name nil
	} else if name, value, ok := bytes.Cut(l, []byte(":")); ok {
		fl = field{name: append([]byte(nil), name...), value: append([]byte(nil), bytes.TrimPrefix(value, []byte(" "))...)}
	} else {
		fl = field{name: append([]byte(nil), l...), value: []byte{}}
	}
	f.ev.fields = append(f.ev.fields, fl)
	return true
}

// dispatch writes the current event in normal form, filtered; end adds the
// blank line that ends it.
func (f *SSEFilter) dispatch(end bool) []byte {
	ev := f.ev
	f.ev = event{}
	var data [][]byte
	hasData := false
	message := true
	for _, fl := range ev.fields {
		switch {
		case fl.name == nil:
		case string(fl.name) == "data":
			data = append(data, fl.value)
			hasData = true
		case string(fl.name) == "event":
			message = len(fl.value) == 0 || string(fl.value) == "message"
		}
	}
	var out bytes.Buffer
	write := func(newData []byte) {
		wroteData := false
		for _, fl := range ev.fields {
			switch {
			case fl.name == nil:
				out.Write(fl.value)
			case string(fl.name) == "data" && newData != nil:
				if wroteData {
					continue
				}
				wroteData = true
				out.WriteString("data: ")
				out.Write(newData)
			case known(fl.name):
				out.Write(fl.name)
				out.WriteString(": ")
				out.Write(fl.value)
			default:
				continue // clients ignore other fields; a lenient one might not
			}
			out.WriteByte('\n')
		}
		if end {
			out.WriteByte('\n')
		}
	}
	joined := bytes.Join(data, []byte("\n"))
	if !hasData || len(bytes.TrimSpace(joined)) == 0 {
		write(nil)
		return out.Bytes()
	}
	nb, changed, err := FilterTools(joined, f.visible)
	switch {
	case err != nil && message:
		write(f.refuse("could not read a server-sent event exactly, so it could not filter a tools/list in it: " + err.Error()))
	case err != nil:
		// Not JSON, in an event MCP clients do not read as JSON-RPC
		// (the legacy transport's "endpoint" event holds a URL).
		write(nil)
	case changed:
		write(nb) // one line: the encoder writes no newline
	default:
		write(nil)
	}
	return out.Bytes()
}
