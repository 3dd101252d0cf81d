package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// step is one write of a raw exchange: wait Delay, then write Data.
type step struct {
	Delay time.Duration
	Data  string
}

func now(d string) step                    { return step{0, d} }
func after(t time.Duration, d string) step { return step{t, d} }

func hostAddr(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// expand fills the templates of a vector's bytes: {P} is the marker path
// "/hostile-<vector>", {M} the bare marker, {H} the intercepted host with
// the plain port (a Host header value), {HT} with the TLS port, {HOST} the
// intercepted host alone, {LOOSE} / {BLOCKED} the co-hosted names, {IP}
// the upstream IPv4.
func expand(name, s string) string {
	return strings.NewReplacer(
		"{P}", "/hostile-"+name,
		"{M}", "hostile-"+name,
		"{H}", hostAddr(*strict, *httpPort),
		"{HT}", hostAddr(*strict, *tlsPort),
		"{HOST}", *strict,
		"{LOOSE}", *loose,
		"{BLOCKED}", *blocked,
		"{IP}", *ip4,
	).Replace(s)
}

var statusRE = regexp.MustCompile(`HTTP/1\.[01] (\d{3})`)

// statuses lists the status codes of every response in an answer.
func statuses(ans []byte) string {
	var out []string
	for _, m := range statusRE.FindAllSubmatch(ans, -1) {
		out = append(out, string(m[1]))
	}
	return strings.Join(out, ",")
}

// describe turns an answer stream into a result: "answered" with the status
// codes (and whether the upstream itself, not clawd, wrote one: the gate
// upstream marks its answers X-Gate-Upstream), else "closed".
func describe(ans []byte, closed bool, err error) (string, string) {
	if st := statuses(ans); st != "" {
		d := st
		if bytes.Contains(ans, []byte("X-Gate-Upstream")) {
			d += " upstream-answered"
		}
		return "answered", d
	}
	d := fmt.Sprintf("%d bytes back", len(ans))
	if len(ans) > 0 {
		d += ": " + strconvQuote(ans, 120)
	}
	if err != nil {
		d += " (" + err.Error() + ")"
	}
	if closed {
		return "closed", d
	}
	return "closed", d + " (no answer, still open)"
}

func strconvQuote(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return strconv.Quote(string(b))
}

// exchange writes steps on c and reads what comes back: after the last
// step, until the peer has been quiet for a moment or closes.
func exchange(c net.Conn, steps []step) (ans []byte, closed bool, err error) {
	defer c.Close()
	var buf bytes.Buffer
	readDone := make(chan struct{})
	var rerr error
	go func() {
		defer close(readDone)
		b := make([]byte, 32<<10)
		for {
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				rerr = err
				return
			}
		}
	}()
	for _, s := range steps {
		if s.Delay > 0 {
			time.Sleep(s.Delay)
		}
		c.SetWriteDeadline(time.Now().Add(*wait))
		if _, err := io.WriteString(c, s.Data); err != nil {
			break // read what came back (a refusal) anyway
		}
	}
	// Wait for the answer: up to -wait, then until quiet (the reader ends
	// on close or the deadline).
	deadline := time.Now().Add(*wait)
	last := -1
	for time.Now().Before(deadline) {
		select {
		case <-readDone:
			return buf.Bytes(), true, filterEOF(rerr)
		case <-time.After(300 * time.Millisecond):
		}
		if n := buf.Len(); n > 0 && n == last && answerComplete(buf.Bytes()) {
			break
		}
		last = buf.Len()
	}
	c.SetReadDeadline(time.Unix(1, 0))
	<-readDone
	return buf.Bytes(), false, nil
}

// answerComplete is a rough check that the last response in b is whole.
func answerComplete(b []byte) bool {
	i := bytes.LastIndex(b, []byte("HTTP/1."))
	if i < 0 {
		return true
	}
	head, body, ok := bytes.Cut(b[i:], []byte("\r\n\r\n"))
	if !ok {
		return false
	}
	m := regexp.MustCompile(`(?i)\r\ncontent-length:\s*(\d+)`).FindSubmatch(head)
	if m == nil {
		return true
	}
	n, _ := strconv.Atoi(string(m[1]))
	return len(body) >= n
}

func filterEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// rawVector sends steps to addr and describes the answer.
func rawVector(addr string, steps ...step) func(string) (string, string) {
	return func(name string) (string, string) {
		c, err := net.DialTimeout("tcp", addr, *wait)
		if err != nil {
			return "error", err.Error()
		}
		var ex []step
		for _, s := range steps {
			ex = append(ex, step{s.Delay, expand(name, s.Data)})
		}
		return describe(exchange(c, ex))
	}
}

// helloRewrite changes how the first TLS record (the ClientHello) goes on
// the wire; it gets the record and a write function.
type helloRewrite func(rec []byte, write func(b []byte) error) error

// helloConn applies a helloRewrite to the first Write (crypto/tls writes
// the ClientHello record in one Write).
type helloConn struct {
	net.Conn
	done    bool
	rewrite helloRewrite
}

func (c *helloConn) Write(b []byte) (int, error) {
	if c.done || c.rewrite == nil {
		return c.Conn.Write(b)
	}
	c.done = true
	err := c.rewrite(b, func(p []byte) error { _, err := c.Conn.Write(p); return err })
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// splitRecords re-frames the ClientHello record into records of at most
// size bytes of handshake data each (TLS allows a handshake message to span
// records); version, if non-zero, replaces the records' version field.
func splitRecords(size int, version uint16) helloRewrite {
	return func(rec []byte, write func([]byte) error) error {
		if len(rec) < 5 || rec[0] != 0x16 {
			return write(rec)
		}
		vers := [2]byte{rec[1], rec[2]}
		if version != 0 {
			vers = [2]byte{byte(version >> 8), byte(version)}
		}
		body := rec[5:]
		var out []byte
		for len(body) > 0 {
			n := min(size, len(body))
			out = append(out, 0x16, vers[0], vers[1], byte(n>>8), byte(n))
			out = append(out, body[:n]...)
			body = body[n:]
		}
		return write(out)
	}
}

// splitWrites writes the record in two TCP segments: the first at bytes,
// then the rest after pause.
func splitWrites(at int, pause time.Duration) helloRewrite {
	return func(rec []byte, write func([]byte) error) error {
		at := min(at, len(rec))
		if err := write(rec[:at]); err != nil {
			return err
		}
		time.Sleep(pause)
		return write(rec[at:])
	}
}

// emptyFirst sends a zero-length handshake record before the hello.
func emptyFirst(rec []byte, write func([]byte) error) error {
	return write(append([]byte{0x16, rec[1], rec[2], 0, 0}, rec...))
}

// tlsOpts configures one TLS vector.
type tlsOpts struct {
	addr    string
	sni     string // "" sends no server_name extension
	lateBy  time.Duration
	rewrite helloRewrite
	reqs    []string // requests (templates) written after the handshake
}

// tlsVector handshakes (accepting any certificate: the agent only wants
// through) with the marker in its ALPN list, then sends the requests.
func tlsVector(o tlsOpts) func(string) (string, string) {
	return func(name string) (string, string) {
		raw, err := net.DialTimeout("tcp", o.addr, *wait)
		if err != nil {
			return "error", err.Error()
		}
		if o.lateBy > 0 {
			time.Sleep(o.lateBy)
		}
		cfg := &tls.Config{
			ServerName:         o.sni,
			InsecureSkipVerify: true,
			NextProtos:         []string{"http/1.1", "x-hostile-" + name},
		}
		tc := tls.Client(&helloConn{Conn: raw, rewrite: o.rewrite}, cfg)
		tc.SetDeadline(time.Now().Add(*wait + 10*time.Second))
		if err := tc.Handshake(); err != nil {
			raw.Close()
			return "tls-error", err.Error()
		}
		tc.SetDeadline(time.Time{})
		issuer := "?"
		if cs := tc.ConnectionState(); len(cs.PeerCertificates) > 0 {
			issuer = cs.PeerCertificates[0].Issuer.CommonName
		}
		var steps []step
		for _, r := range o.reqs {
			steps = append(steps, now(expand(name, r)))
		}
		res, d := describe(exchange(tc, steps))
		return res, d + " cert=" + strconv.Quote(issuer)
	}
}

// sslv2Hello is an SSLv2-compatible CLIENT-HELLO (the form old clients
// send first) whose 16-byte challenge carries the marker.
func sslv2Vector(addr string) func(string) (string, string) {
	return func(name string) (string, string) {
		c, err := net.DialTimeout("tcp", addr, *wait)
		if err != nil {
			return "error", err.Error()
		}
		chal := []byte("hostile-" + name)
		if len(chal) > 32 {
			chal = chal[:32]
		}
		ciphers := []byte{0x00, 0x00, 0x2f, 0x00, 0x00, 0x35, 0x00, 0x00, 0xff} // TLS_RSA_WITH_AES_128/256_CBC_SHA, SCSV
		msg := []byte{0x01, 0x03, 0x01,
			byte(len(ciphers) >> 8), byte(len(ciphers)), 0, 0, byte(len(chal) >> 8), byte(len(chal))}
		msg = append(msg, ciphers...)
		msg = append(msg, chal...)
		rec := append([]byte{0x80 | byte(len(msg)>>8), byte(len(msg))}, msg...)
		return describe(exchange(c, []step{now(string(rec))}))
	}
}

// h2Preface is HTTP/2 with prior knowledge: the preface, an empty
// SETTINGS frame and a HEADERS frame for method and path, encoded as HPACK
// literals without Huffman coding so the marker stays readable on the wire.
func h2Preface(method, path, authority string) string {
	var hb []byte
	lit := func(n, v string) {
		hb = append(hb, 0x10, byte(len(n)))
		hb = append(hb, n...)
		hb = append(hb, byte(len(v)))
		hb = append(hb, v...)
	}
	lit(":method", method)
	lit(":scheme", "http")
	lit(":path", path)
	lit(":authority", authority)
	var b []byte
	b = append(b, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"...)
	b = append(b, 0, 0, 0, 0x4, 0, 0, 0, 0, 0)                                              // SETTINGS
	b = append(b, byte(len(hb)>>16), byte(len(hb)>>8), byte(len(hb)), 0x1, 0x5, 0, 0, 0, 1) // HEADERS, END_STREAM|END_HEADERS, stream 1
	b = append(b, hb...)
	return string(b)
}

// readStatus reads one HTTP response head from br.
func readStatus(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return strings.TrimSpace(line), err
		}
		if l == "\r\n" || l == "\n" {
			break
		}
	}
	return strings.TrimSpace(line), nil
}
