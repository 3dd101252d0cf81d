package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"time"
)

type kind int

const (
	kindRaw  kind = iota // anything else: decided on IP and port
	kindTLS              // a TLS ClientHello
	kindHTTP             // an HTTP/1.x request line
)

type sniffed struct {
	kind kind
	sni  string   // TLS server name, normalized; "" when absent
	alpn []string // protocols the TLS client offers
}

// maxMethodLen bounds how far we look for the space after an HTTP method.
const maxMethodLen = 24

// sniff looks at the start of the stream without consuming it: everything it
// reads stays buffered in br and is later replayed to whoever handles the
// connection. Errors (EOF, deadline) end sniffing with whatever is known.
func sniff(br *bufio.Reader) sniffed {
	first, err := br.Peek(1)
	if err != nil {
		return sniffed{kind: kindRaw}
	}
	if first[0] == 0x16 { // TLS handshake record
		hdr, err := br.Peek(5)
		if err != nil {
			return sniffed{kind: kindRaw}
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		rec, err := br.Peek(5 + n)
		if err != nil {
			return sniffed{kind: kindRaw}
		}
		hello, ok := parseClientHello(rec)
		if !ok {
			return sniffed{kind: kindRaw}
		}
		return sniffed{kind: kindTLS, sni: normHost(hello.ServerName), alpn: hello.SupportedProtos}
	}
	if looksHTTP(br) {
		return sniffed{kind: kindHTTP}
	}
	return sniffed{kind: kindRaw}
}

// looksHTTP reports whether the stream starts with an HTTP method token and a
// space. It only waits for more bytes while the prefix still looks like a
// method, so a short non-HTTP greeting is not held up.
func looksHTTP(br *bufio.Reader) bool {
	for i := 0; i <= maxMethodLen; i++ {
		b, err := br.Peek(i + 1)
		if err != nil {
			return false
		}
		c := b[i]
		switch {
		case c == ' ':
			return i > 0
		case c >= 'A' && c <= 'Z', c == '-' || c == '_':
		default:
			return false
		}
	}
	return false
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
