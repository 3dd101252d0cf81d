package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/internal/hostname"
)

type sniffed struct {
	stage stage
	sni   string   // TLS server name, normalized; "" when absent
	alpn  []string // protocols the TLS client offers
}

// maxMethodLen bounds how far we look for the space after an HTTP method.
const maxMethodLen = 24

// maxLeadingEmpty is how many empty lines (CRLF or LF) may precede an HTTP
// request line: servers such as Node's llhttp skip them, so the sniffer
// must not take such a request for something else.
const maxLeadingEmpty = 8

// sniff looks at the start of the stream without consuming it: everything it
// reads stays buffered in br and is later replayed to whoever handles the
// connection. Errors (EOF, deadline) end sniffing with whatever is known.
func sniff(br *bufio.Reader) sniffed {
	first, err := br.Peek(1)
	if err != nil {
		return sniffed{stage: stageOther}
	}
	if first[0] == 0x16 { // TLS handshake record
		hello, ok := peekClientHello(br)
		if !ok {
			return sniffed{stage: stageBadTLS}
		}
		return sniffed{stage: stageTLS, sni: hostname.Normalize(hello.ServerName), alpn: hello.SupportedProtos}
	}
	if looksHTTP(br) {
		return sniffed{stage: stageHTTP}
	}
	return sniffed{stage: stageOther}
}

// peekClientHello peeks TLS handshake records until they hold a whole
// ClientHello, however the client split it over records (and TCP
// segments), and lets crypto/tls parse it. A hello larger than the sniff
// buffer, or records that are not handshake records, fail.
func peekClientHello(br *bufio.Reader) (*tls.ClientHelloInfo, bool) {
	off, payload := 0, 0 // bytes of records peeked; handshake bytes in them
	need := -1           // handshake bytes of the ClientHello (4 + length)
	for need < 0 || payload < need {
		hdr, err := br.Peek(off + 5)
		if err != nil {
			return nil, false
		}
		h := hdr[off:]
		n := int(h[3])<<8 | int(h[4])
		if h[0] != 0x16 || h[1] != 3 || n == 0 || n > 1<<14 {
			return nil, false
		}
		rec, err := br.Peek(off + 5 + n)
		if err != nil {
			return nil, false
		}
		if need < 0 && payload+n >= 4 {
			// The handshake header may itself straddle records.
			var hs [4]byte
			k := 0
			for o := 0; k < 4; {
				rl := int(rec[o+3])<<8 | int(rec[o+4])
				for i := 0; i < rl && k < 4; i++ {
					hs[k] = rec[o+5+i]
					k++
				}
				o += 5 + rl
			}
			if hs[0] != 1 { // client_hello
				return nil, false
			}
			need = 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
		}
		off += 5 + n
		payload += n
	}
	rec, _ := br.Peek(off)
	return parseClientHello(rec)
}

// looksHTTP reports whether the stream starts (after at most
// maxLeadingEmpty empty lines) with an HTTP method token of any case and a
// space. It only waits for more bytes while the prefix still looks like a
// request, so a short non-HTTP greeting is not held up.
func looksHTTP(br *bufio.Reader) bool {
	i := 0
	for lines := 0; ; lines++ {
		b, err := br.Peek(i + 1)
		if err != nil {
			return false
		}
		switch {
		case b[i] == '\n':
			i++
		case b[i] == '\r':
			b, err = br.Peek(i + 2)
			if err != nil || b[i+1] != '\n' {
				return false
			}
			i += 2
		default:
			lines = -1
		}
		if lines < 0 {
			break
		}
		if lines >= maxLeadingEmpty {
			return false
		}
	}
	for j := 0; j <= maxMethodLen; j++ {
		b, err := br.Peek(i + j + 1)
		if err != nil {
			return false
		}
		c := b[i+j]
		switch {
		case c == ' ' || c == '\t': // a tab too: lenient servers split on it, the framer refuses it
			return j > 0
		case isTokenChar(c):
		default:
			return false
		}
	}
	return false
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return c < 0x80 && strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

var errHelloDone = errors.New("client hello captured")

// parseClientHello lets crypto/tls parse a ClientHello (the inetaf/tcpproxy
// technique): a server handshake on a read-only connection stops in
// GetConfigForClient, after the hello was fully validated, and nothing is
// ever written anywhere.
func parseClientHello(rec []byte) (hello *tls.ClientHelloInfo, ok bool) {
	var got *tls.ClientHelloInfo
	cfg := &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			c := *h
			c.Conn = nil
			c.SupportedProtos = append([]string(nil), h.SupportedProtos...)
			got = &c
			return nil, errHelloDone
		},
	}
	_ = tls.Server(readOnlyConn{r: bytes.NewReader(rec)}, cfg).Handshake()
	return got, got != nil
}

// readOnlyConn feeds recorded bytes to crypto/tls and swallows its writes.
type readOnlyConn struct{ r io.Reader }

func (c readOnlyConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)        { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                       { return nil }
func (readOnlyConn) LocalAddr() net.Addr                { return nil }
func (readOnlyConn) RemoteAddr() net.Addr               { return nil }
func (readOnlyConn) SetDeadline(t time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(t time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(t time.Time) error { return nil }

// bufConn replays the sniffed bytes buffered in r before reading on.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection under the buffer, so an agent's
// half-close still reaches a server that spoke first (its last reply then
// comes back).
func (c *bufConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}
