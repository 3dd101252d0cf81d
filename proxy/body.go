package proxy

// Request bodies clawd holds in memory: the byte budget they are admitted
// under, reading them into memory, and decoding their Content-Encoding so
// that body rules, secret injection, misuse detection and approval cards see
// what the upstream will see.

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

const (
	defaultMaxBufferedBytes             = 256 << 20
	defaultMaxBufferedBytesPerContainer = 64 << 20

	// budgetRetryAfter is the Retry-After (seconds) of a 503 for an
	// exhausted budget: held bodies leave it when their holds end.
	budgetRetryAfter = 10

	// maxCodings bounds stacked Content-Encoding layers ("gzip, br").
	maxCodings = 3
	// maxZstdWindow is the largest zstd window decoded: the limit RFC 9659
	// sets for the "zstd" content coding (8 MiB).
	maxZstdWindow = 8 << 20

	// Growth of a buffer of unknown final size: by half of what it holds,
	// at least the first step, never more than maxGrowStep at once, so a
	// reservation is never far ahead of the bytes that arrived.
	minGrowStep = 4 << 10
	maxGrowStep = 1 << 20
)

// bodyError is an answer clawd gives instead of forwarding a body.
type bodyError struct {
	status int
	code   string // JSON "error"
	reason string
	retry  int // Retry-After seconds; 0 = none
}

func (e *bodyError) Error() string { return e.code + ": " + e.reason }

func (e *bodyError) write(w http.ResponseWriter, info errInfo) {
	if rw, ok := w.(*respWriter); ok {
		rw.reason = e.reason
	}
	info.Error, info.Reason = e.code, e.reason
	if e.retry > 0 {
		info.RetryAfter = e.retry
		w.Header().Set("Retry-After", itoa(e.retry))
	}
	writeJSON(w, e.status, info)
}

func errTooLarge(reason string) *bodyError {
	return &bodyError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", reason: reason}
}

var (
	errBodyOverLimit    = errTooLarge("request body exceeds the limit for inspected requests")
	errDecodedOverLimit = errTooLarge("decoded request body exceeds the limit for inspected requests (decompression bomb?)")
)

func errUndecodable(coding, why string) *bodyError {
	return &bodyError{status: http.StatusBadRequest, code: "body_undecodable",
		reason: "request body is not valid " + coding + " (" + why + "); clawd must read it to decide"}
}

// bodyBudget bounds the request-body bytes held in memory at once, in
// total and per container. A reservation is taken before the bytes are
// kept and given back when the request ends.
type bodyBudget struct {
	max, perMax int64 // <= 0: no bound
	gauge       prometheus.Gauge
	refused     *prometheus.CounterVec
	slots       decodeSlots

	mu    sync.Mutex
	total int64
	peak  int64 // high-water mark of total (tests)
	per   map[string]int64
}

func newBodyBudget(max, perMax int64, m *metrics) *bodyBudget {
	return &bodyBudget{max: max, perMax: perMax, gauge: m.buffered, refused: m.bufferRefused, slots: newDecodeSlots(), per: make(map[string]int64)}
}

// inUse returns the bytes reserved in total and by the container key.
func (b *bodyBudget) inUse(key string) (total, container int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total, b.per[key]
}

// lease starts the reservations of one request of the container key.
func (b *bodyBudget) lease(key string) *bodyLease { return &bodyLease{b: b, key: key} }

// bodyLease is what one request holds of the budget. Safe for concurrent
// use: release may run from the request context's AfterFunc.
type bodyLease struct {
	b   *bodyBudget
	key string

	mu   sync.Mutex
	n    int64
	done bool
}

// grow reserves n more bytes. Past a bound it reserves nothing and returns
// a 503 (Retry-After) error, or a 413 when this request alone would pass
// the bound (waiting cannot help).
func (l *bodyLease) grow(n int64) error {
	if n <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return context.Canceled // the request is over
	}
	b := l.b
	b.mu.Lock()
	defer b.mu.Unlock()
	own := l.n + n
	switch {
	case b.perMax > 0 && own > b.perMax, b.max > 0 && own > b.max:
		b.refused.WithLabelValues("request").Inc()
		return errTooLarge("request body exceeds the memory budget for buffered bodies")
	case b.perMax > 0 && b.per[l.key]+n > b.perMax:
		b.refused.WithLabelValues("container").Inc()
		return &bodyError{status: http.StatusServiceUnavailable, code: "buffer_budget_exhausted", retry: budgetRetryAfter,
			reason: "this container's buffered request bodies (held for approval or inspection) fill its memory budget; retry later"}
	case b.max > 0 && b.total+n > b.max:
		b.refused.WithLabelValues("global").Inc()
		return &bodyError{status: http.StatusServiceUnavailable, code: "buffer_budget_exhausted", retry: budgetRetryAfter,
			reason: "clawd's memory budget for buffered request bodies is full; retry later"}
	}
	l.n = own
	b.total += n
	b.per[l.key] += n
	b.peak = max(b.peak, b.total)
	b.gauge.Add(float64(n))
	return nil
}

// shrink gives back n of the reserved bytes (a buffer that was dropped).
func (l *bodyLease) shrink(n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n = min(n, l.n)
	if n <= 0 {
		return
	}
	l.n -= n
	l.b.put(l.key, n)
}

// release gives back everything; later grows fail. Idempotent.
func (l *bodyLease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
	if l.n > 0 {
		l.b.put(l.key, l.n)
		l.n = 0
	}
}

func (b *bodyBudget) put(key string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total -= n
	if b.per[key] -= n; b.per[key] <= 0 {
		delete(b.per, key)
	}
	b.gauge.Sub(float64(n))
}

// bufferedBody is a request body read into memory: the bytes as the agent
// sent them (what goes upstream unless an injected secret changed the
// content) and their decoding (what rules, the injector and the approval
// card see). It stands in for r.Body until the request is forwarded.
type bufferedBody struct {
	raw     []byte
	decoded []byte   // == raw when not encoded
	codings []string // Content-Encoding layers in the order applied; nil = identity
	sep     bool     // decoded is its own buffer (reserved apart from raw)
	lease   *bodyLease
	r       *bytes.Reader
}

func (b *bufferedBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *bufferedBody) Close() error               { return nil }

func (b *bufferedBody) encoded() bool { return b != nil && len(b.codings) > 0 }

// readAll reads r into memory, reserving every byte in lease before it is
// kept: the whole Content-Length up front when known (cl >= 0), else in
// steps as bytes arrive (the first one of at least first bytes, the size
// expected; later ones at most maxGrowStep). More than limit
// bytes is errBig. On error the reservation it took is given back.
func readAll(r io.Reader, cl, first, limit int64, lease *bodyLease, errBig *bodyError) (buf []byte, err error) {
	if cl > limit {
		return nil, errBig
	}
	var reserved int64
	defer func() {
		if err != nil {
			lease.shrink(reserved)
			buf = nil
		}
	}()
	if cl >= 0 {
		if err := lease.grow(cl); err != nil {
			return nil, err
		}
		reserved = cl
		buf = make([]byte, cl)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		var one [1]byte
		if n, err := r.Read(one[:]); n > 0 {
			return nil, errBig // more than Content-Length said
		} else if err != nil && err != io.EOF {
			return nil, err
		}
		return buf, nil
	}
	for {
		if len(buf) == cap(buf) {
			step := min(max(int64(cap(buf))/2, minGrowStep), maxGrowStep)
			if cap(buf) == 0 {
				step = max(step, first)
			}
			step = min(step, limit+1-int64(cap(buf)))
			if step <= 0 {
				return nil, errBig
			}
			if err := lease.grow(step); err != nil {
				return nil, err
			}
			reserved += step
			nb := make([]byte, len(buf), int64(cap(buf))+step)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, errBig
		}
		if err == io.EOF {
			if slack := cap(buf) - len(buf); slack > minGrowStep {
				// Keep (and count) the bytes, not the room grown for them.
				nb := make([]byte, len(buf)) // cap == len: what shrinks later
				copy(nb, buf)
				buf = nb
				lease.shrink(int64(slack))
				reserved -= int64(slack)
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// contentCodings returns the Content-Encoding of h as the list of codings
// in the order they were applied ("identity" dropped, names lower-cased,
// "x-gzip" as "gzip"), or a 415 error for a coding clawd cannot decode.
func contentCodings(h http.Header) ([]string, error) {
	var out []string
	for _, v := range h["Content-Encoding"] {
		for _, c := range strings.Split(v, ",") {
			c = strings.ToLower(strings.TrimSpace(c))
			switch c {
			case "", "identity":
				continue
			case "x-gzip":
				c = "gzip"
			case "gzip", "deflate", "br", "zstd":
			default:
				return nil, &bodyError{status: http.StatusUnsupportedMediaType, code: "unsupported_content_encoding",
					reason: fmt.Sprintf("Content-Encoding %q cannot be decoded by clawd (gzip, deflate, br, zstd can); send the body uncompressed", truncateReason(c))}
			}
			out = append(out, c)
		}
	}
	if len(out) > maxCodings {
		return nil, &bodyError{status: http.StatusUnsupportedMediaType, code: "unsupported_content_encoding",
			reason: fmt.Sprintf("more than %d stacked content codings", maxCodings)}
	}
	return out, nil
}

func truncateReason(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// hasEncodedBody reports whether r carries a body with a Content-Encoding
// other than identity.
func hasEncodedBody(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return false
	}
	for _, v := range r.Header["Content-Encoding"] {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// decodeSlots bounds how many bodies are decoded at once: a decoder's
// window (up to 16 MiB for brotli, 8 MiB for zstd) is memory the budget
// does not count, so only a few may exist at a time.
type decodeSlots chan struct{}

func newDecodeSlots() decodeSlots { return make(decodeSlots, max(2, runtime.GOMAXPROCS(0))) }

// decodeBody undoes codings (in the order they were applied) on raw. Every
// layer's output is bounded by limit (a decompression bomb is errDecodedOverLimit)
// and reserved in lease; intermediate layers are given back.
func decodeBody(ctx context.Context, slots decodeSlots, raw []byte, codings []string, limit int64, lease *bodyLease) ([]byte, error) {
	if len(codings) == 0 || len(raw) == 0 {
		return raw, nil
	}
	if slots != nil {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cur := raw
	for i := len(codings) - 1; i >= 0; i-- {
		out, err := decodeLayer(cur, codings[i], limit, lease)
		if len(codings) > 1 && i != len(codings)-1 {
			lease.shrink(int64(cap(cur))) // an intermediate layer
		}
		if err != nil {
			return nil, err
		}
		cur = out
	}
	return cur, nil
}

func decodeLayer(in []byte, coding string, limit int64, lease *bodyLease) ([]byte, error) {
	src := bytes.NewReader(in)
	var dec io.Reader
	var closeDec func()
	switch coding {
	case "gzip":
		z, err := gzip.NewReader(src)
		if err != nil {
			return nil, decodeErr(coding, err)
		}
		// One member only: decoders disagree on what follows the first
		// (more members, or ignored trailing bytes), and the upstream must
		// read the same content clawd decided on.
		z.Multistream(false)
		dec = z
	case "deflate":
		if looksZlib(in) {
			z, err := zlib.NewReader(src)
			if err != nil {
				return nil, decodeErr(coding, err)
			}
			dec = z
		} else {
			dec = flate.NewReader(src)
		}
	case "br":
		dec = brotli.NewReader(src)
	case "zstd":
		z, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow), zstd.WithDecoderMaxMemory(uint64(max(limit, maxZstdWindow))))
		if err != nil {
			return nil, errUndecodable(coding, shortErr(err))
		}
		dec, closeDec = z, z.Close
	default:
		return nil, &bodyError{status: http.StatusUnsupportedMediaType, code: "unsupported_content_encoding", reason: "unknown content coding " + coding}
	}
	if closeDec != nil {
		defer closeDec()
	}
	// Compressed text is mostly 3-10 times smaller than its content.
	out, err := readAll(dec, -1, min(4*int64(len(in)), maxGrowStep), limit, lease, errDecodedOverLimit)
	if err != nil {
		return nil, decodeErr(coding, err)
	}
	if src.Len() != 0 {
		lease.shrink(int64(cap(out)))
		return nil, errUndecodable(coding, "data after the end of the stream")
	}
	if coding == "deflate" && looksZlib(in) {
		if err := rawDeflateAgrees(in, out, limit); err != nil {
			lease.shrink(int64(cap(out)))
			return nil, err
		}
	}
	return out, nil
}

// decodeErr maps a decoder's error: budget and size errors stay, anything
// else means the stream is corrupt or truncated.
func decodeErr(coding string, err error) error {
	var be *bodyError
	switch {
	case errors.As(err, &be):
		return err
	case errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return errDecodedOverLimit
	case errors.Is(err, zstd.ErrWindowSizeExceeded):
		return errTooLarge("zstd body needs a decoding window over 8 MiB (RFC 9659 limit)")
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errUndecodable(coding, "truncated")
	}
	return errUndecodable(coding, shortErr(err))
}

func shortErr(err error) string {
	s := err.Error()
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// looksZlib reports whether a "deflate" body starts with a zlib header
// (RFC 1950: CM 8, window <= 32 KiB, header check); servers accept both
// zlib, which the RFC means, and the raw deflate some clients send.
func looksZlib(b []byte) bool {
	return len(b) >= 2 && b[0]&0x0f == 8 && b[0]>>4 <= 7 && (uint16(b[0])<<8|uint16(b[1]))%31 == 0
}

// rawDeflateAgrees refuses a "deflate" body that is also a complete raw
// deflate stream with other content: a server reading it the other way
// would see a different request than the one decided.
func rawDeflateAgrees(in, zlibOut []byte, limit int64) error {
	src := bytes.NewReader(in)
	cmp := &compareWriter{want: zlibOut}
	n, err := io.Copy(cmp, io.LimitReader(flate.NewReader(src), limit+1))
	if err != nil || src.Len() != 0 || n > limit {
		return nil // not a valid raw stream: nobody reads it as one
	}
	if cmp.differs || n != int64(len(zlibOut)) {
		return errUndecodable("deflate", "ambiguous: zlib and raw deflate decodings differ")
	}
	return nil
}

// compareWriter compares what is written to it with want.
type compareWriter struct {
	want    []byte
	off     int
	differs bool
}

func (c *compareWriter) Write(p []byte) (int, error) {
	if !c.differs {
		if c.off+len(p) > len(c.want) || !bytes.Equal(p, c.want[c.off:c.off+len(p)]) {
			c.differs = true
		}
	}
	c.off += len(p)
	return len(p), nil
}

// refuseUnread makes sure an answer given before any of the body was read
// does not invite it: for "Expect: 100-continue" net/http then closes the
// connection instead of sending 100 Continue and draining.
func refuseUnread(r *http.Request) {
	if httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
		r.Body = http.NoBody
	}
}

// BodyScanner is implemented by an Injector that can tell whether it reads
// request bodies for a host at all (secrets.Store: when any secret is
// stored). An Injector without it is assumed to read every body.
type BodyScanner interface {
	ScansBody(host string) bool
}

// injectorScans reports whether the injector reads request bodies to host,
// so an encoded body must be decoded for it.
func (s *Server) injectorScans(host string) bool {
	inj := s.cfg.Injector
	if inj == nil {
		return false
	}
	if bs, ok := inj.(BodyScanner); ok {
		return bs.ScansBody(host)
	}
	return true
}

// readBody buffers the request body (up to MaxHoldBody, under the memory
// budget) and decodes its Content-Encoding. It returns the decoded body and
// leaves a *bufferedBody in r.Body, held until the request ends. On failure
// it has answered the agent and returns false.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request, info errInfo) ([]byte, bool) {
	s := h.cc.s
	if bb, ok := r.Body.(*bufferedBody); ok {
		return bb.decoded, true
	}
	fail := func(err error) ([]byte, bool) {
		var be *bodyError
		if !errors.As(err, &be) {
			be = &bodyError{status: http.StatusBadRequest, code: "bad_request", reason: "could not read request body"}
		}
		be.write(w, info)
		return nil, false
	}
	codings, err := contentCodings(r.Header)
	if err != nil {
		refuseUnread(r)
		return fail(err)
	}
	lease := s.budget.lease(h.key)
	// The request context ends when ServeHTTP returns, the agent goes away
	// or the handler panics: every path gives the bytes back.
	context.AfterFunc(r.Context(), lease.release)
	var raw []byte
	if r.Body != nil && r.Body != http.NoBody {
		if raw, err = readAll(r.Body, r.ContentLength, 32<<10, s.cfg.MaxHoldBody, lease, errBodyOverLimit); err != nil {
			lease.release()
			var be *bodyError
			if errors.As(err, &be) && be.status == http.StatusServiceUnavailable && r.ContentLength >= 0 {
				refuseUnread(r) // refused up front on its Content-Length
			}
			return fail(err)
		}
	}
	decoded, err := decodeBody(r.Context(), s.budget.slots, raw, codings, s.cfg.MaxHoldBody, lease)
	if err != nil {
		lease.release()
		return fail(err)
	}
	r.Body = &bufferedBody{raw: raw, decoded: decoded, codings: codings, sep: len(codings) > 0 && len(raw) > 0,
		lease: lease, r: bytes.NewReader(raw)}
	return decoded, true
}

// forwardBuffered puts a buffered body back as r's body for the upstream:
// the bytes the agent sent, with their exact length.
func forwardBuffered(r *http.Request) *bufferedBody {
	bb, ok := r.Body.(*bufferedBody)
	if !ok {
		return nil
	}
	bb.r.Reset(bb.raw)
	r.ContentLength = int64(len(bb.raw))
	r.TransferEncoding = nil
	if len(bb.raw) == 0 {
		r.Body = http.NoBody
	}
	return bb
}

// injectDecoded runs the injector on the decoded form of an encoded
// buffered body, so placeholders inside a compressed body are replaced, and
// misused ones found, before anything goes upstream. If the injector left
// the content as it was, the agent's encoded bytes go upstream unchanged;
// if it replaced something, the new content goes decoded, Content-Encoding
// removed, with its exact Content-Length: every server that takes an
// encoded body takes an unencoded one, and clawd does not compress a real
// secret together with text the agent chose (CRIME/BREACH: the compressed
// size would tell the agent about the secret).
func (h *handler) injectDecoded(inj Injector, r *http.Request, host string, bb *bufferedBody) (Injection, error) {
	ce, cl := r.Header["Content-Encoding"], r.Header["Content-Length"]
	r.Header.Del("Content-Encoding")
	r.Body = io.NopCloser(bytes.NewReader(bb.decoded))
	r.ContentLength = int64(len(bb.decoded))
	if len(bb.decoded) == 0 {
		r.Body = http.NoBody
	}
	restore := func() {
		r.Header["Content-Encoding"] = ce
		if cl != nil {
			r.Header["Content-Length"] = cl
		}
		bb.r.Reset(bb.raw)
		r.Body = bb
		r.ContentLength = int64(len(bb.raw))
	}
	injection, err := inj.Inject(r, host)
	if err != nil {
		restore()
		return injection, err
	}
	var out []byte
	if r.Body != nil && r.Body != http.NoBody {
		// Replacements may make the content longer than MaxHoldBody.
		limit := 2*h.cc.s.cfg.MaxHoldBody + 1<<20
		out, err = readAll(r.Body, -1, int64(len(bb.decoded))+4<<10, limit, bb.lease, errTooLarge("request body with injected secrets exceeds the limit"))
		r.Body.Close()
		if err != nil {
			restore()
			if m, ok := injection.(interface{ Misuse() error }); ok && m.Misuse() != nil {
				return nil, m.Misuse()
			}
			var be *bodyError
			if errors.As(err, &be) {
				return nil, err
			}
			return nil, fmt.Errorf("inject into decoded body: %w", err)
		}
	}
	if bytes.Equal(out, bb.decoded) {
		bb.lease.shrink(int64(cap(out)))
		restore()
		return injection, nil
	}
	// Changed: the raw and decoded bytes are no longer needed.
	bb.lease.shrink(int64(cap(bb.raw)))
	if bb.sep {
		bb.lease.shrink(int64(cap(bb.decoded)))
	}
	bb.raw, bb.decoded = nil, nil
	r.Body = io.NopCloser(bytes.NewReader(out))
	r.ContentLength = int64(len(out))
	r.TransferEncoding = nil
	if cl != nil {
		r.Header.Set("Content-Length", itoa(len(out)))
	}
	return injection, nil
}
