package proxy

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawd-dev/clawd/internal/hostname"
	"github.com/clawd-dev/clawd/policy"
)

// The framer sits between an agent connection and net/http and vets every
// HTTP/1 request on it before net/http reads it: the request line and every
// header field of each head (keep-alive and pipelined requests included),
// and the framing of each body (Content-Length, or chunked: chunk-size
// lines, extensions, the empty trailer), to know exactly where the next
// head starts. It accepts only the strict subset of HTTP/1.1 that Go's
// net/http, Node's llhttp and nginx read the same way; anything else is
// refused with 400 {"error":"ambiguous_request"} (431 for an oversized
// head) before net/http, the policy or the upstream see it. Accepted bytes
// pass unchanged, so the request net/http parses (and the policy decides,
// and ReverseProxy re-serialises upstream) is the one every common server
// would read from them. The one normalisation: empty lines (CRLF) before a
// request line, which servers skip, are dropped.
//
// Refused: bare CR or LF, obs-fold, NUL and other control bytes, tabs or
// repeated spaces in the request line, HTTP/0.9 (no version), versions
// other than HTTP/1.0 and HTTP/1.1 (so "PRI * HTTP/2.0", h2c prior
// knowledge), a target that is not origin-form (a path of RFC 3986 path
// characters with valid %XX escapes, then any visible query but '#'),
// absolute-form http(s) without userinfo and with the authority of Host,
// authority-form (only for CONNECT) or "*" (only for OPTIONS); fragments,
// raw spaces and non-ASCII in the target; header names other than
// ALPHA/DIGIT/"-" (so no whitespace before the colon, no empty names, no
// underscores, which nginx drops and CGI servers fold into dashes), a Host
// that is missing on HTTP/1.1, repeated, empty or not host[:port],
// Content-Length repeated (even equal), signed, with leading zeros, trailing
// whitespace or over 15 digits, Transfer-Encoding other than exactly one "chunked" (any case;
// ReverseProxy re-frames it), Transfer-Encoding on HTTP/1.0 or together
// with Content-Length, chunk-size lines with whitespace or malformed
// extensions, request trailers (no rule sees them), and heads over
// maxHeadBytes.
//
// net/http serves one request at a time, so a refusal found ahead
// (pipelined behind requests still being answered) waits until net/http
// has answered every request before it and reads again; only then the
// framer writes its answer, and every later write of net/http (its own
// "400 Bad Request" for the truncated head) is dropped. A body found
// malformed after its request went to the handler fails the body read
// instead (the upstream gets a cut-off body, never a complete different
// request), and the connection ends after the handler's answer.
//
// Upgrades: after a request with an Upgrade header the framer interprets
// nothing more until net/http says how the request ended: StateHijacked
// (the handler took the connection over, which in net/http only a
// protocol switch the upstream accepted with 101 does) makes it pass
// every further byte untouched; StateIdle (answered without a switch)
// makes it go on reading requests. The handler needs no call of its own:
// net/http's ConnState, wired in frame, is the hook.
type framer struct {
	net.Conn
	h *handler // the connection's handler: audit entry and names; nil in tests

	mu     sync.Mutex
	idles  int           // StateIdle callbacks: requests net/http answered and kept the connection for
	pass   bool          // hijacked
	closed bool          // closed by net/http
	gen    int           // counts the changes above
	rdl    time.Time     // the read deadline, for waits that read nothing
	wake   chan struct{} // non-nil while a Read waits; closed on any change

	// The reader's side: net/http's reads are serialised (its connReader
	// never reads twice at once), so none of this needs the lock.
	mode     fmode
	st       fstate
	heads    int    // complete heads released to net/http
	held     []byte // read but not yet released (after an upgrade request)
	rerr     error  // a read error that came with bytes, returned next
	sawEOF   bool   // the agent closed its side while the framer held bytes
	why      refusal
	answered atomic.Bool // the framer's answer went out: net/http's writes are dropped

	m      msgState
	method [frameMaxMethod]byte
	auth   [maxAuthority]byte // authority of an absolute- or authority-form target
	host   [maxAuthority]byte // the Host header's value
	val    [maxAuthority]byte // the value of the field being read, when it matters
	name   [len("transfer-encoding")]byte
	path   [auditPathLen]byte // the target's path, for the audit line
}

type fmode uint8

const (
	modeParse  fmode = iota // interpreting requests
	modeHold                // after an upgrade request: waiting for net/http's verdict
	modePass                // after a switch of protocols: no interpretation
	modeRefuse              // a head is refused: answer once net/http answered the rest
	modeBroken              // a body turned out malformed while its request was served
	modeDone                // refused: EOF
)

type fstate uint8

// Head states first: the head byte limit counts bytes in states < sBody.
const (
	sStart        fstate = iota // before a request line: CRLF pairs are dropped
	sStartLF                    // dropped a CR before the request line: LF must follow
	sMethod                     //
	sTarget                     // see msgState.tpart
	sVersion                    //
	sLF                         // CR seen ending the request line or a field: LF must follow
	sFieldStart                 // start of a field line, or the empty line
	sName                       //
	sValueOWS                   // after the colon
	sValue                      //
	sHeadLF                     // CR of the empty line: LF ends the head
	sBody                       // Content-Length body: m.remain bytes
	sChunkSize                  //
	sChunkExtName               //
	sChunkExtVal                // after '='
	sChunkExtTok                //
	sChunkExtQ                  // in a quoted-string
	sChunkExtQP                 // after a backslash in a quoted-string
	sChunkExtQEnd               // after the closing quote
	sChunkLF                    // CR ending a chunk-size line: LF must follow
	sChunkData                  // m.remain bytes
	sChunkCR                    // CRLF after chunk data
	sChunkDataLF                //
	sTrailer                    // after the last chunk: only the empty line
	sTrailerLF                  //
)

// Target parts (msgState.tpart).
const (
	tpBegin   uint8 = iota
	tpPath          // origin-form, or the path of absolute-form
	tpQuery         //
	tpStar          // "*"
	tpScheme        // absolute-form: "http" or "https"
	tpSlash1        // after "scheme:"
	tpSlash2        // after "scheme:/"
	tpAuthAbs       // absolute-form authority
	tpAuth          // authority-form (CONNECT)
)

// Header fields the framer looks at.
const (
	hOther uint8 = iota
	hHost
	hContentLength
	hTransferEncoding
	hUpgrade
)

const (
	// maxHeadBytes bounds a request head, empty lines before it included:
	// a 1 MiB field fits with the rest of a head. net/http allows its
	// MaxHeaderBytes (1 MiB) plus 4 KiB: the framer refuses first, with
	// its own 431.
	maxHeadBytes   = 1<<20 + 2<<10
	frameMaxMethod = 32
	maxAuthority   = 255
	maxCLDigits    = 15
	maxChunkDigits = 16 // as Go's chunked reader (leading zeros count)
	maxChunkLine   = 1024
	maxChunkSize   = 1 << 48
	holdLimit      = 64 << 10 // bytes read ahead behind an upgrade request
	auditPathLen   = 256
	lingerTime     = 500 * time.Millisecond // as net/http's rstAvoidanceDelay
	lingerBytes    = 256 << 10
	answerTimeout  = 5 * time.Second

	// ruleAmbiguous names framing refusals in audit lines and metrics.
	ruleAmbiguous = "ambiguous-request"
)

// msgState is the state of the request being read; reset between requests.
type msgState struct {
	headBytes int
	mlen      int
	tpart     uint8
	pct       uint8 // hex digits still due after '%'
	slen      int   // scheme letters
	scheme    [5]byte
	alen      int
	plen      int
	tdone     bool // the target was read completely
	vpos      int
	minor     byte
	lfNext    fstate
	nlen      int
	kind      uint8
	vlen      int
	vtrim     int // vlen up to the last byte that is not whitespace
	vover     bool
	hosts     int
	hlen      int
	cls, tes  int
	cl        int64
	chunked   bool
	upgrade   bool
	remain    int64
	clen      int    // bytes of the chunk-size line so far
	digits    int    // hex digits of the chunk size
	csize     uint64 // the chunk size
	extn      int    // length of the chunk extension name being read
}

// refusal is why the framer refused, and how it answers.
type refusal struct {
	status int // 400 or 431; 0: no answer of its own (broken body)
	reason string
}

var errFraming = errors.New("clawd: malformed request framing")

// Character classes.
const (
	cTchar = 1 << iota // token: method, chunk extensions
	cName              // field name: ALPHA DIGIT "-"
	cPath              // path: unreserved, sub-delims, ":", "@", "/"
	cQuery             // query: VCHAR but "#"
	cValue             // field value: VCHAR, SP, HTAB, obs-text
	cHex
	cHost // authority bytes: ALPHA DIGIT "-" "." "_" ":" "[" "]"
)

var cls = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum {
			t[c] |= cTchar | cName | cPath | cHost
		}
		if c >= 0x21 && c <= 0x7e && c != '#' {
			t[c] |= cQuery
		}
		if c >= 0x21 && c <= 0x7e || c == ' ' || c == '\t' || c >= 0x80 {
			t[c] |= cValue
		}
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' {
			t[c] |= cHex
		}
	}
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] |= cTchar
	}
	for _, c := range []byte("-._~!$&'()*+,;=:@/") {
		t[c] |= cPath
	}
	t['-'] |= cName
	for _, c := range []byte("-._:[]") {
		t[c] |= cHost
	}
	return t
}()

// frame wraps the agent connection c that net/http serves with srv in a
// framer and chains srv.ConnState to it. It is the one call serveHTTP
// makes; the handler needs nothing else (see framer).
func frame(c net.Conn, srv *http.Server, h *handler) net.Conn {
	f := newFramer(c, h)
	next := srv.ConnState
	srv.ConnState = func(nc net.Conn, st http.ConnState) {
		f.connState(st)
		if next != nil {
			next(nc, st)
		}
	}
	if _, ok := c.(*tls.Conn); ok {
		return tlsFramer{f} // net/http fills Request.TLS from ConnectionState
	}
	return f
}

func newFramer(c net.Conn, h *handler) *framer { return &framer{Conn: c, h: h} }

// tlsFramer is the framer of an intercepted TLS connection.
type tlsFramer struct{ *framer }

func (t tlsFramer) ConnectionState() tls.ConnectionState {
	return t.Conn.(*tls.Conn).ConnectionState()
}

// connState is net/http's ConnState for the framed connection.
func (f *framer) connState(st http.ConnState) {
	f.mu.Lock()
	switch st {
	case http.StateIdle:
		f.idles++
	case http.StateHijacked:
		f.pass = true
	case http.StateClosed:
		f.closed = true
	default:
		f.mu.Unlock()
		return
	}
	f.bumpLocked()
	f.mu.Unlock()
}

func (f *framer) bumpLocked() {
	f.gen++
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

// answeredAll reports whether net/http has answered every request the
// framer released (it is reading the next head), and whether it hijacked.
func (f *framer) answeredAll() (all, hijacked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.idles >= f.heads, f.pass
}

// waitChange blocks until net/http reports a change (idle, hijack, close)
// or the read deadline passes (which is how net/http ends a background
// read: abortPendingRead sets a deadline in the past).
func (f *framer) waitChange() error {
	f.mu.Lock()
	gen := f.gen
	for f.gen == gen {
		dl := f.rdl
		var tc <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				f.mu.Unlock()
				return os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			tc = t.C
		}
		if f.wake == nil {
			f.wake = make(chan struct{})
		}
		ch := f.wake
		f.mu.Unlock()
		select {
		case <-ch:
		case <-tc:
		}
		f.mu.Lock()
	}
	f.mu.Unlock()
	return nil
}

func (f *framer) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.rdl = t
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
	f.mu.Unlock()
	return f.Conn.SetReadDeadline(t)
}

func (f *framer) SetDeadline(t time.Time) error {
	f.mu.Lock()
	f.rdl = t
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
	f.mu.Unlock()
	return f.Conn.SetDeadline(t)
}

// Write passes net/http's writes, except after the framer's own answer.
func (f *framer) Write(p []byte) (int, error) {
	if f.answered.Load() {
		return len(p), nil
	}
	return f.Conn.Write(p)
}

// Close closes the connection; after a refusal it first half-closes and
// drains briefly, so the agent reads the answer instead of a reset.
func (f *framer) Close() error {
	f.mu.Lock()
	f.closed = true
	f.bumpLocked()
	f.mu.Unlock()
	if f.answered.Load() {
		if cw, ok := closeWriterOf(f.Conn); ok {
			cw.CloseWrite()
			f.Conn.SetReadDeadline(time.Now().Add(lingerTime))
			io.Copy(io.Discard, io.LimitReader(f.Conn, lingerBytes))
		}
	}
	return f.Conn.Close()
}

type closeWriter interface{ CloseWrite() error }

func closeWriterOf(c net.Conn) (closeWriter, bool) {
	if bc, ok := c.(*bufConn); ok {
		c = bc.Conn
	}
	cw, ok := c.(closeWriter)
	return cw, ok
}

// read reads from the agent: a pending error first.
func (f *framer) read(p []byte) (int, error) {
	if err := f.rerr; err != nil {
		f.rerr = nil
		return 0, err
	}
	return f.Conn.Read(p)
}

func (f *framer) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch f.mode {
		case modeParse:
			var n int
			var err error
			if len(f.held) > 0 {
				n = copy(p, f.held)
				f.held = f.held[n:]
				if len(f.held) == 0 {
					f.held = nil
				}
			} else if n, err = f.read(p); n == 0 {
				return 0, err
			}
			if err != nil {
				f.rerr = err // after the bytes
			}
			if w := f.scan(p, n); w > 0 {
				return w, nil
			}
			// Nothing to release: dropped empty lines, or a refusal
			// or hold with nothing before it.

		case modeHold:
			all, hijacked := f.answeredAll()
			switch {
			case hijacked:
				f.mode = modePass
			case all:
				f.mode = modeParse // answered without a switch: read on
			case len(f.held) < holdLimit && !f.sawEOF:
				// A handler runs (net/http's background read is
				// here): keep reading, to see the agent go away,
				// but interpret nothing.
				n, err := f.read(p)
				f.held = append(f.held, p[:n]...)
				if err == io.EOF {
					f.sawEOF = true
				} else if err != nil {
					return 0, err
				}
			default:
				if err := f.waitChange(); err != nil {
					return 0, err
				}
			}

		case modePass:
			if len(f.held) > 0 {
				n := copy(p, f.held)
				f.held = f.held[n:]
				return n, nil
			}
			return f.read(p)

		case modeRefuse:
			all, hijacked := f.answeredAll()
			switch {
			case hijacked:
				f.mode = modeDone
			case all:
				f.answer()
				f.mode = modeDone
				return 0, io.EOF
			case !f.sawEOF:
				// Requests before the refused one are being
				// answered: wait for them (and discard).
				_, err := f.read(p)
				if err == io.EOF {
					f.sawEOF = true
				} else if err != nil {
					return 0, err
				}
			default:
				if err := f.waitChange(); err != nil {
					return 0, err
				}
			}

		case modeBroken:
			if all, _ := f.answeredAll(); all {
				f.mode = modeDone
				continue
			}
			return 0, errFraming

		default: // modeDone
			return 0, io.EOF
		}
	}
}

// answer writes the refusal, in clawd's JSON error style.
func (f *framer) answer() {
	info := errInfo{Error: "ambiguous_request", Reason: f.why.reason}
	status := f.why.status
	if status == http.StatusRequestHeaderFieldsTooLarge {
		info.Error = "headers_too_large"
	}
	info.Method, info.Host, info.Path = f.known()
	info.NextSteps = nextStepsFor(info.Error)
	body, _ := json.Marshal(info)
	body = append(body, '\n')
	b := make([]byte, 0, 200+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(status)...)
	b = append(b, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"...)
	b = append(b, body...)
	f.Conn.SetWriteDeadline(time.Now().Add(answerTimeout))
	f.Conn.Write(b)
	f.answered.Store(true)
	f.audit()
}

// known returns what was read of the refused request: its method and host
// once complete and valid, and the path once the whole target was valid.
func (f *framer) known() (method, host, path string) {
	m := &f.m
	if f.st > sMethod && m.mlen > 0 {
		method = string(f.method[:m.mlen])
	}
	switch {
	case m.hlen > 0:
		host = hostname.Normalize(string(f.host[:m.hlen]))
	case m.tdone && m.alen > 0:
		host = hostname.Normalize(string(f.auth[:m.alen]))
	}
	if m.tdone && m.plen <= len(f.path) {
		path = string(f.path[:m.plen])
	}
	return method, host, path
}

// audit writes the refusal's audit line: when the framer answers, after
// the lines of the requests before it; for a broken body, at once.
func (f *framer) audit() {
	status, reason := f.why.status, f.why.reason
	h := f.h
	if h == nil {
		return
	}
	s := h.cc.s
	e := h.base
	e.SNI = h.sni
	e.Method, e.Host, e.Path = f.known()
	if e.Host == "" {
		e.Host = h.cc.meta.OrigDst.Addr().String()
	}
	e.Status = status
	e.Action = string(policy.Deny)
	e.Rule = ruleAmbiguous
	e.Reason = "ambiguous request: " + reason
	// TODO(gate): when the gate owns verdicts, make this a gate verdict.
	s.record(e, policy.Decision{Action: policy.Deny, Rule: ruleAmbiguous, Reason: e.Reason}, s.cfg.Now())
}

// scan vets p[:n], which was just read, compacting in place what net/http
// may read (dropped empty lines leave gaps) and returning its length. It
// changes f.mode when it holds (the rest goes to f.held) or refuses.
func (f *framer) scan(p []byte, n int) int {
	m := &f.m
	w := 0
	msgW := -1 // where the current message began in p's output; -1: before p
	if f.st == sStart && m.headBytes == 0 {
		msgW = 0
	}
	headW := -1 // where the current message's last head byte (LF) is in p's output
	var bad refusal
	i := 0
	for i < n {
		switch f.st {
		case sBody, sChunkData:
			k := n - i
			if int64(k) > m.remain {
				k = int(m.remain)
			}
			if w != i {
				copy(p[w:], p[i:i+k])
			}
			w += k
			i += k
			m.remain -= int64(k)
			if m.remain == 0 {
				if f.st == sChunkData {
					f.st = sChunkCR
				} else if f.endMessage() {
					f.hold(p[i:n])
					return w
				} else {
					msgW = w
				}
			}
			continue
		}
		// A run of ordinary bytes (value, name, path, query): vetted in
		// one loop, as the state machine would.
		if f.st == sValue || f.st == sName || f.st == sTarget && (m.tpart == tpPath || m.tpart == tpQuery) {
			k := f.run(p[i:n], m.headBytes)
			if w != i {
				copy(p[w:], p[i:i+k])
			}
			w += k
			i += k
			m.headBytes += k
			if k > 0 {
				continue
			}
		}
		c := p[i]
		i++
		if f.st < sBody {
			if m.headBytes++; m.headBytes > maxHeadBytes {
				bad = refusal{http.StatusRequestHeaderFieldsTooLarge, "request head too large"}
				break
			}
		}
		keep := true
		switch f.st {
		case sStart:
			switch c {
			case '\r':
				f.st, keep = sStartLF, false
			case '\n':
				bad = refusal{400, "bare LF line ending"}
			default:
				f.st = sMethod
				bad = f.methodByte(c)
			}
		case sStartLF:
			if c == '\n' {
				f.st, keep = sStart, false
			} else {
				bad = refusal{400, "bare CR"}
			}
		case sMethod:
			bad = f.methodByte(c)
		case sTarget:
			bad = f.targetByte(c)
		case sVersion:
			bad = f.versionByte(c)
		case sLF:
			if c == '\n' {
				f.st = m.lfNext
			} else {
				bad = refusal{400, "bare CR"}
			}
		case sFieldStart:
			switch {
			case c == '\r':
				f.st = sHeadLF
			case cls[c]&cName != 0:
				m.nlen, m.kind, m.vlen, m.vtrim, m.vover = 0, hOther, 0, 0, false
				f.nameByte(c)
				f.st = sName
			case c == ' ' || c == '\t':
				bad = refusal{400, "obs-fold (line folding) or whitespace before a header field"}
			case c == '\n':
				bad = refusal{400, "bare LF line ending"}
			case c == ':':
				bad = refusal{400, "empty header name"}
			default:
				bad = refusal{400, "invalid character in header name"}
			}
		case sName:
			switch {
			case cls[c]&cName != 0:
				f.nameByte(c)
			case c == ':':
				f.classify()
				f.st = sValueOWS
			case c == ' ' || c == '\t':
				bad = refusal{400, "whitespace before colon"}
			default:
				bad = refusal{400, "invalid character in header name"}
			}
		case sValueOWS, sValue:
			switch {
			case c == '\r':
				bad = f.finishField()
				f.st, m.lfNext = sLF, sFieldStart
			case c == ' ' || c == '\t':
				if f.st == sValue {
					f.valueByte(c)
				}
			case cls[c]&cValue != 0:
				f.st = sValue
				f.valueByte(c)
			case c == '\n':
				bad = refusal{400, "bare LF line ending"}
			default:
				bad = refusal{400, "control character in header value"}
			}
		case sHeadLF:
			if c != '\n' {
				bad = refusal{400, "bare CR"}
				break
			}
			if bad = f.finishHead(); bad.reason != "" {
				break
			}
			if w != i-1 {
				p[w] = c
			}
			w++
			keep = false
			f.heads++
			headW = w - 1
			switch {
			case m.chunked:
				f.st = sChunkSize
			case m.cl > 0:
				f.st, m.remain = sBody, m.cl
			default:
				if f.endMessage() {
					f.hold(p[i:n])
					return w
				}
				msgW = w
			}
		default:
			bad = f.chunkByte(c)
			if bad.reason == "" && f.st == sStart { // end of the trailer
				if w != i-1 {
					p[w] = c
				}
				w++
				keep = false
				if f.endMessage() {
					f.hold(p[i:n])
					return w
				}
				msgW = w
			}
		}
		if bad.reason != "" {
			break
		}
		if keep {
			if w != i-1 {
				p[w] = c
			}
			w++
		}
	}
	if bad.reason == "" {
		return w
	}
	// Refused. A head is cut where its message began (net/http then sees
	// the requests before it end cleanly) or, begun in an earlier read,
	// where it went wrong: net/http holds a head it cannot complete. A
	// body whose head net/http has not been given yet (it is in this
	// read) is refused with its head; one being served breaks.
	f.mode = modeRefuse
	switch {
	case f.st < sBody && msgW >= 0:
		w = msgW
	case f.st < sBody:
	case headW >= 0:
		f.heads--
		w = headW
		if msgW >= 0 && msgW < w {
			w = msgW
		}
	default:
		f.mode = modeBroken
		bad.status = 0
	}
	f.why = bad
	if f.mode == modeBroken {
		f.audit()
	}
	return w
}

// run returns how many bytes at the start of b are ordinary bytes of the
// current state that need nothing but a class check (and, for names and
// paths, a copy): a header value not looked at, a field name, a path or
// query. headBytes bounds it by maxHeadBytes; 0 leaves b to the state
// machine.
func (f *framer) run(b []byte, headBytes int) int {
	m := &f.m
	if lim := maxHeadBytes - headBytes; len(b) > lim {
		b = b[:max(lim, 0)]
	}
	k := 0
	switch {
	case f.st == sValue && m.kind == hOther:
		for k < len(b) && cls[b[k]]&cValue != 0 {
			k++
		}
	case f.st == sName:
		for k < len(b) && cls[b[k]]&cName != 0 {
			if m.nlen < len(f.name) {
				f.name[m.nlen] = b[k] | 0x20
			}
			m.nlen++
			k++
		}
	case f.st == sTarget && m.tpart == tpQuery:
		for k < len(b) && cls[b[k]]&cQuery != 0 {
			k++
		}
	case f.st == sTarget && m.tpart == tpPath && m.pct == 0:
		for k < len(b) && cls[b[k]]&cPath != 0 {
			if m.plen < len(f.path) {
				f.path[m.plen] = b[k]
				m.plen++
			} else {
				m.plen = len(f.path) + 1
			}
			k++
		}
	}
	return k
}

// hold stops interpreting after an upgrade request; rest was read behind it.
func (f *framer) hold(rest []byte) {
	f.mode = modeHold
	if len(rest) == 0 {
		return
	}
	h := make([]byte, 0, len(rest)+len(f.held))
	h = append(h, rest...)
	f.held = append(h, f.held...)
}

// endMessage ends a request; it reports whether it asked to upgrade.
func (f *framer) endMessage() bool {
	up := f.m.upgrade
	f.m = msgState{}
	f.st = sStart
	return up
}

func (f *framer) methodByte(c byte) refusal {
	m := &f.m
	switch {
	case cls[c]&cTchar != 0:
		if m.mlen == len(f.method) {
			return refusal{400, "method too long"}
		}
		f.method[m.mlen] = c
		m.mlen++
	case c == ' ' && m.mlen > 0:
		f.st = sTarget
	case c == '\t':
		return refusal{400, "tab in request line"}
	case c == '\r' || c == '\n':
		return refusal{400, "incomplete request line"}
	default:
		return refusal{400, "invalid method"}
	}
	return refusal{}
}

func (f *framer) isMethod(s string) bool { return string(f.method[:f.m.mlen]) == s }

func (f *framer) targetByte(c byte) refusal {
	m := &f.m
	switch c {
	case ' ':
		return f.endTarget()
	case '\r', '\n':
		return refusal{400, "HTTP/0.9 request (no version)"}
	case '\t':
		return refusal{400, "tab in request line"}
	case '#':
		return refusal{400, "fragment in request target"}
	}
	if c >= 0x80 {
		return refusal{400, "non-ASCII byte in request target"}
	}
	switch m.tpart {
	case tpBegin:
		switch {
		case f.isMethod("CONNECT"): // authority-form only
			m.tpart = tpAuth
			return f.authByte(c)
		case c == '/':
			m.tpart = tpPath
			f.pathByte(c)
		case c == '*':
			m.tpart = tpStar
		case c|0x20 >= 'a' && c|0x20 <= 'z':
			m.tpart = tpScheme
			m.scheme[0] = c | 0x20
			m.slen = 1
		default:
			return refusal{400, "invalid request target"}
		}
	case tpPath:
		switch {
		case m.pct > 0:
			if cls[c]&cHex == 0 {
				return refusal{400, "invalid percent-encoding in request target"}
			}
			m.pct--
			f.pathByte(c)
		case c == '%':
			m.pct = 2
			f.pathByte(c)
		case c == '?':
			m.tpart = tpQuery
		case cls[c]&cPath != 0:
			f.pathByte(c)
		default:
			return refusal{400, "invalid character in request target path"}
		}
	case tpQuery:
		if cls[c]&cQuery == 0 {
			return refusal{400, "invalid character in request target query"}
		}
	case tpStar:
		return refusal{400, "invalid request target"}
	case tpScheme:
		switch {
		case c == ':':
			if s := string(m.scheme[:m.slen]); s != "http" && s != "https" {
				return refusal{400, "absolute-form target with a scheme other than http or https"}
			}
			m.tpart = tpSlash1
		case c|0x20 >= 'a' && c|0x20 <= 'z' && m.slen < len(m.scheme):
			m.scheme[m.slen] = c | 0x20
			m.slen++
		default:
			return refusal{400, "invalid request target"}
		}
	case tpSlash1, tpSlash2:
		if c != '/' {
			return refusal{400, "invalid absolute-form target"}
		}
		m.tpart++
	case tpAuthAbs:
		switch c {
		case '/', '?':
			if !validAuthority(f.auth[:m.alen], false) {
				return refusal{400, "invalid authority in absolute-form target"}
			}
			m.tpart = tpPath
			if c == '?' {
				m.tpart = tpQuery
			} else {
				f.pathByte(c)
			}
		default:
			return f.authByte(c)
		}
	case tpAuth:
		return f.authByte(c)
	}
	return refusal{}
}

func (f *framer) pathByte(c byte) {
	if m := &f.m; m.plen < len(f.path) {
		f.path[m.plen] = c
		m.plen++
	} else {
		m.plen = len(f.path) + 1 // too long for the audit line
	}
}

func (f *framer) authByte(c byte) refusal {
	m := &f.m
	if c == '@' {
		return refusal{400, "userinfo in request target"}
	}
	if cls[c]&cHost == 0 {
		return refusal{400, "invalid character in request target authority"}
	}
	if m.alen == len(f.auth) {
		return refusal{400, "request target authority too long"}
	}
	f.auth[m.alen] = c
	m.alen++
	return refusal{}
}

func (f *framer) endTarget() refusal {
	m := &f.m
	switch m.tpart {
	case tpBegin:
		return refusal{400, "empty request target or repeated space in request line"}
	case tpPath:
		if m.pct > 0 {
			return refusal{400, "invalid percent-encoding in request target"}
		}
	case tpStar:
		if !f.isMethod("OPTIONS") {
			if f.isMethod("PRI") {
				return refusal{400, "HTTP/2 connection preface (h2c prior knowledge) on an HTTP/1 connection"}
			}
			return refusal{400, `asterisk-form target "*" other than with OPTIONS`}
		}
	case tpAuthAbs:
		if !validAuthority(f.auth[:m.alen], false) {
			return refusal{400, "invalid authority in absolute-form target"}
		}
	case tpAuth:
		if !validAuthority(f.auth[:m.alen], true) {
			return refusal{400, "CONNECT target is not host:port"}
		}
	case tpScheme, tpSlash1, tpSlash2:
		return refusal{400, "invalid request target"}
	}
	m.tdone = true
	f.st = sVersion
	return refusal{}
}

func (f *framer) versionByte(c byte) refusal {
	m := &f.m
	const prefix = "HTTP/1."
	switch {
	case m.vpos < len(prefix):
		if c != prefix[m.vpos] {
			if m.vpos == 5 && c == '2' && f.isMethod("PRI") {
				return refusal{400, "HTTP/2 connection preface (h2c prior knowledge) on an HTTP/1 connection"}
			}
			if c == ' ' || c == '\t' {
				return refusal{400, "extra whitespace in request line"}
			}
			return refusal{400, "unsupported HTTP version"}
		}
	case m.vpos == len(prefix):
		if c != '0' && c != '1' {
			return refusal{400, "unsupported HTTP version"}
		}
		m.minor = c - '0'
	default:
		if c != '\r' {
			if c == '\n' {
				return refusal{400, "bare LF line ending"}
			}
			if c == ' ' || c == '\t' {
				return refusal{400, "extra whitespace in request line"}
			}
			return refusal{400, "unsupported HTTP version"}
		}
		f.st, m.lfNext = sLF, sFieldStart
	}
	m.vpos++
	return refusal{}
}

func (f *framer) nameByte(c byte) {
	m := &f.m
	if m.nlen < len(f.name) {
		f.name[m.nlen] = c | 0x20 // ALPHA DIGIT "-" only: lower-cases letters
	}
	m.nlen++
}

func (f *framer) classify() {
	m := &f.m
	if m.nlen > len(f.name) {
		return
	}
	switch string(f.name[:m.nlen]) {
	case "host":
		m.kind = hHost
	case "content-length":
		m.kind = hContentLength
	case "transfer-encoding":
		m.kind = hTransferEncoding
	case "upgrade":
		m.kind = hUpgrade
	}
}

func (f *framer) valueByte(c byte) {
	m := &f.m
	if m.kind == hOther {
		return
	}
	if m.vlen == len(f.val) {
		m.vover = true
		return
	}
	f.val[m.vlen] = c
	m.vlen++
	if c != ' ' && c != '\t' {
		m.vtrim = m.vlen
	}
}

func (f *framer) finishField() refusal {
	m := &f.m
	v := f.val[:m.vtrim]
	switch m.kind {
	case hHost:
		if m.hosts++; m.hosts > 1 {
			return refusal{400, "multiple Host headers"}
		}
		if m.vover || !validAuthority(v, false) {
			return refusal{400, "invalid Host header"}
		}
		m.hlen = copy(f.host[:], v)
	case hContentLength:
		if m.cls++; m.cls > 1 {
			return refusal{400, "duplicate Content-Length"}
		}
		// Digits only: trailing whitespace too is refused (llhttp
		// refuses a trailing tab, Go and nginx trim it).
		if m.vover || m.vtrim != m.vlen || len(v) == 0 || len(v) > maxCLDigits || len(v) > 1 && v[0] == '0' {
			return refusal{400, "invalid Content-Length"}
		}
		var n int64
		for _, d := range v {
			if d < '0' || d > '9' {
				return refusal{400, "invalid Content-Length"}
			}
			n = n*10 + int64(d-'0')
		}
		m.cl = n
	case hTransferEncoding:
		if m.tes++; m.tes > 1 {
			return refusal{400, "multiple Transfer-Encoding headers"}
		}
		if m.vover || len(v) != len("chunked") || !asciiEqualFold(v, "chunked") {
			return refusal{400, `Transfer-Encoding other than "chunked"`}
		}
		m.chunked = true
	case hUpgrade:
		m.upgrade = true
	}
	return refusal{}
}

func (f *framer) finishHead() refusal {
	m := &f.m
	switch {
	case m.cls > 0 && m.tes > 0:
		return refusal{400, "both Content-Length and Transfer-Encoding"}
	case m.tes > 0 && m.minor == 0:
		return refusal{400, "Transfer-Encoding on HTTP/1.0"}
	case m.hosts == 0 && m.minor == 1:
		return refusal{400, "missing Host header"}
	case m.alen > 0 && m.hosts > 0 && !asciiEqualFold(f.auth[:m.alen], string(f.host[:m.hlen])):
		return refusal{400, "request target authority differs from Host"}
	}
	return refusal{}
}

func (f *framer) chunkByte(c byte) refusal {
	m := &f.m
	if f.st <= sChunkLF {
		if m.clen++; m.clen > maxChunkLine {
			return refusal{400, "chunk-size line too long"}
		}
	}
	switch f.st {
	case sChunkSize:
		switch {
		case cls[c]&cHex != 0:
			if m.digits++; m.digits > maxChunkDigits {
				return refusal{400, "chunk size too long"}
			}
			m.csize = m.csize<<4 | uint64(unhex(c))
			if m.csize > maxChunkSize {
				return refusal{400, "chunk size too large"}
			}
		case m.digits == 0:
			return refusal{400, "invalid chunk size"}
		case c == ';':
			f.st, m.extn = sChunkExtName, 0
		case c == '\r':
			f.st = sChunkLF
		default:
			return refusal{400, "invalid chunk-size line"}
		}
	case sChunkExtName:
		switch {
		case cls[c]&cTchar != 0:
			m.extn++
		case m.extn == 0:
			return refusal{400, "invalid chunk extension"}
		case c == '=':
			f.st = sChunkExtVal
		case c == ';':
			m.extn = 0
		case c == '\r':
			f.st = sChunkLF
		default:
			return refusal{400, "invalid chunk extension"}
		}
	case sChunkExtVal:
		switch {
		case c == '"':
			f.st = sChunkExtQ
		case cls[c]&cTchar != 0:
			f.st = sChunkExtTok
		default:
			return refusal{400, "invalid chunk extension"}
		}
	case sChunkExtTok, sChunkExtQEnd:
		switch {
		case cls[c]&cTchar != 0 && f.st == sChunkExtTok:
		case c == ';':
			f.st, m.extn = sChunkExtName, 0
		case c == '\r':
			f.st = sChunkLF
		default:
			return refusal{400, "invalid chunk extension"}
		}
	case sChunkExtQ:
		switch {
		case c == '"':
			f.st = sChunkExtQEnd
		case c == '\\':
			f.st = sChunkExtQP
		case c == '\t' || c == ' ' || c >= 0x21 && c != 0x7f:
		default:
			return refusal{400, "invalid chunk extension"}
		}
	case sChunkExtQP:
		if c != '\t' && c != ' ' && (c < 0x21 || c == 0x7f) {
			return refusal{400, "invalid chunk extension"}
		}
		f.st = sChunkExtQ
	case sChunkLF:
		if c != '\n' {
			return refusal{400, "bare CR in chunk-size line"}
		}
		if m.csize == 0 {
			f.st = sTrailer
		} else {
			f.st, m.remain = sChunkData, int64(m.csize)
		}
		m.clen, m.digits, m.csize = 0, 0, 0
	case sChunkCR:
		if c != '\r' {
			return refusal{400, "chunk data not followed by CRLF"}
		}
		f.st = sChunkDataLF
	case sChunkDataLF:
		if c != '\n' {
			return refusal{400, "chunk data not followed by CRLF"}
		}
		f.st = sChunkSize
	case sTrailer:
		if c != '\r' {
			return refusal{400, "request trailers (no rule can see them)"}
		}
		f.st = sTrailerLF
	case sTrailerLF:
		if c != '\n' {
			return refusal{400, "bare CR"}
		}
		f.st = sStart // the caller ends the message
	}
	return refusal{}
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// validAuthority reports whether b is host[:port] as the framer accepts
// it: a name of ALPHA DIGIT "-" "." "_", or an IP literal in brackets
// (hex digits, ":" and "."); the port 1 to 5 digits up to 65535, required
// when needPort.
func validAuthority(b []byte, needPort bool) bool {
	if len(b) == 0 {
		return false
	}
	i := 0
	if b[0] == '[' {
		for i = 1; i < len(b) && b[i] != ']'; i++ {
			if c := b[i]; c != ':' && c != '.' && cls[c]&cHex == 0 {
				return false
			}
		}
		if i == len(b) || i < 3 {
			return false
		}
		i++
	} else {
		for ; i < len(b) && b[i] != ':'; i++ {
			if c := b[i]; c == '[' || c == ']' || cls[c]&cHost == 0 {
				return false
			}
		}
		if i == 0 {
			return false
		}
	}
	if i == len(b) {
		return !needPort
	}
	if b[i] != ':' {
		return false
	}
	port := b[i+1:]
	if len(port) == 0 || len(port) > 5 {
		return false
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}
