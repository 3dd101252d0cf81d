package secrets

import (
	"bytes"
	"errors"
	"io"
	"slices"
)

// pair is one rule of a matcher: occurrences of old become new, or, when
// err is set, finding old stops the stream with err (misuse detection).
type pair struct {
	old []byte
	new []byte
	err error
	hit func() // called on each replacement (to record which secrets were used)
}

// matcher replaces several byte patterns at once. Matching is
// leftmost-longest and non-overlapping, and the streaming form gives the
// same output as the one-shot form however the input is split: that is what
// lets a placeholder split across HTTP/2 DATA frames or 1-byte reads still
// be found.
type matcher struct {
	pairs  []pair
	maxLen int
}

func newMatcher(pairs []pair) *matcher {
	m := &matcher{}
	for _, p := range pairs {
		if len(p.old) == 0 {
			continue
		}
		m.pairs = append(m.pairs, p)
		m.maxLen = max(m.maxLen, len(p.old))
	}
	return m
}

func (m *matcher) empty() bool { return m == nil || len(m.pairs) == 0 }

// process appends to dst the output for as much of src as can be decided.
// Unless eof, only the tail that could still begin a pattern is left
// undecided for the next call: the first position from which the rest of
// src is a proper prefix of some pattern. Any other position is decided at
// once, so a stream is held back only while its last bytes could be the
// start of a secret (usually never: an SSE event ends in "\n\n"). It
// returns how many bytes of src were consumed. When a detection pair
// matches, dst holds the bytes before the match and err is that pair's
// error.
func (m *matcher) process(dst, src []byte, eof bool) (out []byte, consumed int, err error) {
	if m.empty() {
		return append(dst, src...), len(src), nil
	}
	limit := len(src) // positions below limit are decided
	if !eof {
		limit = m.undecided(src)
	}
	// next[i] caches where pairs[i].old next occurs at or after pos
	// (-1: nowhere in src), so a body with many matches stays linear.
	var nextBuf [8]int
	next := nextBuf[:0]
	for range m.pairs {
		next = append(next, -2)
	}
	pos := 0
	for {
		best, bi := -1, -1
		for i, p := range m.pairs {
			if next[i] == -2 || (next[i] >= 0 && next[i] < pos) {
				j := bytes.Index(src[pos:], p.old)
				if j >= 0 {
					j += pos
				}
				next[i] = j
			}
			j := next[i]
			if j < 0 {
				continue
			}
			if best < 0 || j < best || (j == best && len(p.old) > len(m.pairs[bi].old)) {
				best, bi = j, i
			}
		}
		if best >= 0 && best < limit {
			dst = append(dst, src[pos:best]...)
			p := m.pairs[bi]
			if p.err != nil {
				return dst, best, p.err
			}
			if p.hit != nil {
				p.hit()
			}
			dst = append(dst, p.new...)
			pos = best + len(p.old)
			continue
		}
		if limit > pos {
			dst = append(dst, src[pos:limit]...)
			pos = limit
		}
		return dst, pos, nil
	}
}

// undecided is where the tail of src that could begin a pattern starts
// (len(src) when none could). A position before it either starts no
// pattern or has every pattern that could start there fully visible, so
// leftmost-longest matching decides it the same as with more input.
func (m *matcher) undecided(src []byte) int {
	for i := max(0, len(src)-m.maxLen+1); i < len(src); i++ {
		tail := src[i:]
		for _, p := range m.pairs {
			if len(tail) < len(p.old) && bytes.HasPrefix(p.old, tail) {
				return i
			}
		}
	}
	return len(src)
}

// replace is the one-shot form: the whole input is known.
func (m *matcher) replace(b []byte) ([]byte, error) {
	out, _, err := m.process(make([]byte, 0, len(b)), b, true)
	return out, err
}

// replaceReader applies a matcher to a stream.
type replaceReader struct {
	src    io.Reader
	m      *matcher
	in     []byte // undecided input
	out    []byte // decided output not yet returned
	outPos int
	eof    bool
	err    error       // returned once out is drained
	onErr  func(error) // called once with a detection error
	zeros  int
}

func newReplaceReader(src io.Reader, m *matcher, onErr func(error)) *replaceReader {
	return &replaceReader{src: src, m: m, onErr: onErr}
}

const readChunk = 32 << 10

func (r *replaceReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.outPos < len(r.out) {
			n := copy(p, r.out[r.outPos:])
			r.outPos += n
			return n, nil
		}
		if r.err != nil {
			return 0, r.err
		}
		clear(r.out)
		r.out, r.outPos = r.out[:0], 0

		if !r.eof {
			start := len(r.in)
			r.in = slices.Grow(r.in, readChunk)
			n, err := r.src.Read(r.in[start : start+readChunk])
			r.in = r.in[:start+n]
			switch {
			case err == io.EOF:
				r.eof = true
			case err != nil:
				r.err = err
				continue
			case n == 0:
				if r.zeros++; r.zeros > 100 {
					r.err = io.ErrNoProgress
				}
				continue
			}
			r.zeros = 0
		}
		out, consumed, err := r.m.process(r.out, r.in, r.eof)
		r.out = out
		rest := copy(r.in, r.in[consumed:])
		clear(r.in[rest:])
		r.in = r.in[:rest]
		switch {
		case err != nil:
			r.err = err
			if r.onErr != nil {
				r.onErr(err)
			}
		case r.eof && len(r.in) == 0:
			r.err = io.EOF
		}
	}
}

// Close wipes the buffers (they may hold a secret) and closes the source.
func (r *replaceReader) Close() error {
	clear(r.in[:cap(r.in)])
	clear(r.out[:cap(r.out)])
	r.in, r.out, r.outPos = nil, nil, 0
	if r.err == nil {
		r.err = errors.New("secrets: read after close")
	}
	if c, ok := r.src.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
