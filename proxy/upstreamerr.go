package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"unicode/utf8"
)

// upstreamFailure names the class of a failed upstream request in a fixed
// text clawd chose: the agent's 502 reason and the audit line carry it, never
// the error's own text. That text can hold what the upstream (or anything
// on its path) wrote, such as a malformed status line or a certificate's
// names, and an agent takes clawd's answer as clawd's word. The details
// go to the daemon log only, through logSafe.
func upstreamFailure(err error) string {
	if r, ok := proxyReason(err); ok {
		return r // clawd's own text: the proxy's address and status code
	}
	var (
		ne   net.Error
		cve  *tls.CertificateVerificationError
		ua   x509.UnknownAuthorityError
		he   x509.HostnameError
		ci   x509.CertificateInvalidError
		rhe  tls.RecordHeaderError
		alrt tls.AlertError
		op   *net.OpError
	)
	msg := err.Error()
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "the upstream did not answer in time"
	case errors.As(err, &cve), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci):
		return "the upstream's TLS certificate did not verify"
	case errors.As(err, &rhe), errors.As(err, &alrt), strings.Contains(msg, "tls: "):
		return "the TLS handshake with the upstream failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the upstream refused the connection"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the upstream"
	case errors.As(err, &op) && op.Op == "dial":
		return "could not connect to the upstream"
	case strings.Contains(msg, "malformed HTTP"), strings.Contains(msg, "http2: "), strings.Contains(msg, "invalid header"):
		return "the upstream's answer was not valid HTTP"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		strings.Contains(msg, "connection reset"), strings.Contains(msg, "server closed"), strings.Contains(msg, "EOF"):
		return "the upstream closed the connection before answering"
	}
	return "the request to the upstream failed"
}

// maxLogDetail bounds an upstream error's text in the daemon log.
const maxLogDetail = 300

// logSafe is an error text fit for the daemon log: printable runes only
// (controls, bidi and line separators become '?'), at most maxLogDetail
// bytes.
func logSafe(s string) string {
	if len(s) > maxLogDetail {
		s = s[:maxLogDetail]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20, r == 0x7f, r >= 0x80 && r < 0xa0, r == utf8.RuneError,
			r >= 0x200b && r <= 0x200f, r >= 0x2028 && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0xfeff:
			return '?'
		}
		return r
	}, s)
}
