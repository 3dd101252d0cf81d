package mcp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxEvent bounds one server-sent event the filter holds while it is
// incomplete; a longer one ends the stream with ErrEventTooLarge.
const MaxEvent = 16 << 20

// ErrEventTooLarge ends a filtered event stream whose event passed MaxEvent.
var ErrEventTooLarge = errors.New("mcp: server-sent event larger than the filter's limit")

// SSEFilter passes a text/event-stream through event by event, rewriting
// the data of each event that is a tools/list result (FilterTools). Every
// event goes out as soon as its closing blank line has arrived: the stream
// is never held back longer than one event.
type SSEFilter struct {
	src     io.ReadCloser
	br      *bufio.Reader
	visible func(string) bool
	out     []byte // ready to be read
	ev      []byte // the current event's lines, as received
	err     error
}

// NewSSEFilter filters src.
func NewSSEFilter(src io.ReadCloser, visible func(string) bool) *SSEFilter {
	return &SSEFilter{src: src, br: bufio.NewReaderSize(src, 32<<10), visible: visible}
}

func (f *SSEFilter) Close() error { return f.src.Close() }

func (f *SSEFilter) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.step()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// step reads one line; at the end of an event it moves the (filtered)
// event to out.
func (f *SSEFilter) step() {
	line, err := f.br.ReadSlice('\n')
	if len(line) > 0 {
		if len(f.ev)+len(line) > MaxEvent {
			f.err = ErrEventTooLarge
			return
		}
		f.ev = append(f.ev, line...)
		if isBlank(line) && err == nil {
			f.out = filterEvent(f.ev, f.visible)
			f.ev = nil
		}
	}
	switch {
	case err == bufio.ErrBufferFull:
		// A long line: keep collecting it.
	case err != nil:
		if len(f.ev) > 0 {
			f.out = append(f.out, f.ev...) // an unfinished event goes out as it came
			f.ev = nil
		}
		f.err = err
	}
}

func isBlank(line []byte) bool {
	return len(bytes.TrimRight(line, "\r\n")) == 0
}

// filterEvent rewrites an event's data when it is a tools/list result.
// Events use "\n" line ends here (a lone "\r" ending is passed as it is).
func filterEvent(ev []byte, visible func(string) bool) []byte {
	if !bytes.Contains(ev, []byte(`"tools"`)) {
		return ev
	}
	var data [][]byte
	var other [][]byte
	for _, l := range bytes.SplitAfter(ev, []byte("\n")) {
		t := bytes.TrimRight(l, "\r\n")
		if len(t) == 0 {
			continue
		}
		if v, ok := bytes.CutPrefix(t, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(v, []byte(" ")))
			continue
		}
		other = append(other, t)
	}
	if len(data) == 0 {
		return ev
	}
	nb, changed := FilterTools(bytes.Join(data, []byte("\n")), visible)
	if !changed {
		return ev
	}
	var out bytes.Buffer
	for _, o := range other {
		out.Write(o)
		out.WriteByte('\n')
	}
	out.WriteString("data: ")
	out.Write(nb)
	out.WriteString("\n\n")
	return out.Bytes()
}
