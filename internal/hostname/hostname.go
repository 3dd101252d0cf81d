// Package hostname owns host names: the one canonical form that a Host
// header, a TLS SNI, a policy or secret host, a DNS question and a
// certificate name are compared in. Policy matching, secret binding, DNS
// consistency and certificate minting all go through Normalize, so a name
// that matches in one of them matches in all of them.
//
// The rules, in the order Normalize applies them:
//
//   - ASCII white space around the value is trimmed; an empty value stays ""
//     (callers read "" as "no host given").
//   - A port is split off: "name:port", "1.2.3.4:port", "[v6]:port". A port
//     is up to five digits, at most 65535, or empty ("name:"). Brackets must
//     hold an IPv6 literal. An unbracketed value with two or more colons is
//     a bare IPv6 literal and has no port.
//   - An IP literal is written in netip's canonical form. An IPv4-mapped
//     IPv6 address ("::ffff:1.2.3.4") is unmapped to the IPv4 address, as
//     the connection's own address is. A zone ("fe80::1%eth0") is refused:
//     it names an interface of the sender, never a host.
//   - A name is lower-cased (ASCII only) and loses ONE trailing dot.
//   - What is left must be an IPv4 literal or a name that Valid accepts.
//
// Anything else — NUL and other control bytes, spaces inside, percent or
// backslash escapes, "..", empty labels, a second trailing dot, non-ASCII,
// over-long names or labels, a malformed port or bracket, an IPv4 literal
// in a form netip does not parse ("0x7f.1", "127.1", "010.0.0.1") — is
// Invalid, a fixed value that is not a name, not an IP literal, not empty
// and normalises to itself. It therefore never equals a policy or secret
// host, never resolves, never gets a certificate, and is never mistaken for
// an absent host.
package hostname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Invalid is what Normalize returns for a value that is neither a host name
// nor an IP literal.
const Invalid = "(invalid)"

// Limits of a DNS name in text form, without the trailing dot.
const (
	maxName  = 253
	maxLabel = 63
)

// Normalize returns the canonical form of a Host header, SNI, policy host
// or DNS name: "", Invalid, a canonical IP literal (no brackets, no port) or
// a name Valid accepts. It does not allocate when s is already canonical,
// has only a port or brackets to drop, or spaces or a trailing dot to trim.
func Normalize(s string) string {
	s = trimSpace(s)
	if s == "" {
		return ""
	}
	host, _, ok := Split(s)
	if !ok {
		return Invalid
	}
	if strings.IndexByte(host, ':') >= 0 {
		return canonIP6(host)
	}
	return canonName(host)
}

// Split splits a Host header or authority into host and port the way
// Normalize reads it: "[v6]:port", "[v6]", "host:port", "host", or a bare
// IPv6 literal (two or more colons without brackets, which has no port).
// host is returned as written, without brackets; port may be "". ok is
// false for malformed brackets or a port that is not up to five digits
// of at most 65535.
func Split(hostport string) (host, port string, ok bool) {
	if hostport != "" && hostport[0] == '[' {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", false
		}
		host, rest := hostport[1:end], hostport[end+1:]
		if strings.IndexByte(host, ':') < 0 {
			return "", "", false // brackets hold IPv6 literals only
		}
		if rest == "" {
			return host, "", true
		}
		if rest[0] != ':' || !validPort(rest[1:]) {
			return "", "", false
		}
		return host, rest[1:], true
	}
	i := strings.IndexByte(hostport, ':')
	if i < 0 {
		return hostport, "", true
	}
	if strings.IndexByte(hostport[i+1:], ':') >= 0 {
		return hostport, "", true // bare IPv6
	}
	if !validPort(hostport[i+1:]) {
		return "", "", false
	}
	return hostport[:i], hostport[i+1:], true
}

// Valid reports whether name is a DNS name in canonical form: lower-case
// letters, digits, '-' and '_' in non-empty labels of at most 63 bytes, at
// most 253 bytes in all, no trailing dot, and a last label that is not a
// number (all digits, or 0x and hex digits), since resolvers and URL
// parsers read such a name as an IPv4 address. IP literals are not names.
func Valid(name string) bool {
	upper, ok := scan(name, false)
	return ok && !upper
}

// IsIP reports whether host is an IP literal without a zone, in any form
// netip parses (Normalize's output is in canonical form).
func IsIP(host string) bool {
	_, ok := IP(host)
	return ok
}

// IP returns the address of an IP literal host (no brackets, no zone),
// without allocating for names.
func IP(host string) (netip.Addr, bool) {
	if host == "" || strings.IndexByte(host, ':') < 0 && !(isDigit(host[0]) && isDigit(host[len(host)-1])) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	return a, err == nil && a.Zone() == ""
}

// Pattern checks and canonicalises a host as an operator writes it in the
// policy or a secret's hosts: a name ("api.example.com"), a wildcard ("*."
// and a name of at least two labels, matching every name strictly below
// it) or an IP literal (returned canonical; callers that do not take IPs
// check IsIP). Names follow Normalize, and no label may start or end with
// '-'. The error says what is wrong in words fit for the operator.
func Pattern(s string) (string, error) {
	t := trimSpace(s)
	if t == "" {
		return "", errors.New("empty host")
	}
	lit := t
	if len(lit) > 2 && lit[0] == '[' && lit[len(lit)-1] == ']' {
		lit = lit[1 : len(lit)-1]
	}
	if a, ok := IP(lit); ok {
		return a.Unmap().String(), nil
	}
	if strings.ContainsAny(t, ":/[]") {
		return "", fmt.Errorf("%q: write the host name only, without a scheme, port or path", s)
	}
	name, wild := strings.CutPrefix(t, "*.")
	if strings.IndexByte(name, '*') >= 0 {
		return "", fmt.Errorf("%q: the only wildcard allowed is a leading \"*.\" (as in *.example.com)", s)
	}
	n := Normalize(name)
	if !wild && IsIP(n) {
		return n, nil
	}
	if !Valid(n) || !hyphensOK(n) {
		return "", fmt.Errorf("%q is not a valid host name (want a DNS name like api.example.com, or *.example.com)", s)
	}
	if !wild {
		return n, nil
	}
	if strings.IndexByte(n, '.') < 0 {
		return "", fmt.Errorf("%q would match a whole top-level domain; a wildcard needs at least two labels after \"*.\"", s)
	}
	return "*." + n, nil
}

// Match reports whether a normalised host is matched by a pattern from
// Pattern: the same name, or for "*.name" a name strictly below name.
func Match(pattern, host string) bool {
	if name, ok := strings.CutPrefix(pattern, "*."); ok {
		return Below(host, name)
	}
	return host == pattern
}

// Below reports whether host is strictly below name: "a.example.com" and
// "a.b.example.com" are below "example.com", "example.com" is not.
func Below(host, name string) bool {
	return len(host) > len(name)+1 && strings.HasSuffix(host, name) && host[len(host)-len(name)-1] == '.'
}

// canonName is Normalize for a host without a colon.
func canonName(h string) string {
	h = strings.TrimSuffix(h, ".")
	upper, ok := scan(h, true)
	switch {
	case ok && upper:
		return strings.ToLower(h)
	case ok:
		return h
	}
	// A numeric last label: only a canonical IPv4 literal is allowed.
	if a, err := netip.ParseAddr(h); err == nil && a.Is4() {
		return h
	}
	return Invalid
}

// canonIP6 is Normalize for a host with a colon: an IPv6 literal.
func canonIP6(h string) string {
	if len(h) > len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") || strings.IndexByte(h, '%') >= 0 {
		return Invalid
	}
	a, err := netip.ParseAddr(h)
	if err != nil {
		return Invalid
	}
	a = a.Unmap()
	var buf [64]byte
	if b := a.AppendTo(buf[:0]); string(b) != h {
		return string(b)
	}
	return h
}

// scan checks name as Valid does, with upper-case ASCII letters allowed
// when foldCase is set; upper says whether it met one.
func scan(name string, foldCase bool) (upper, ok bool) {
	if name == "" || len(name) > maxName {
		return false, false
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			if n := i - start; n == 0 || n > maxLabel {
				return upper, false
			}
			start = i + 1
			continue
		}
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		case 'A' <= c && c <= 'Z' && foldCase:
			upper = true
		default:
			return upper, false
		}
	}
	return upper, !numeric(name[strings.LastIndexByte(name, '.')+1:])
}

// numeric reports whether a label reads as a number to an IPv4 parser
// (inet_aton, WHATWG URL): decimal digits, or 0x and hex digits.
func numeric(label string) bool {
	if len(label) >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X') {
		for i := 2; i < len(label); i++ {
			if c := label[i] | 0x20; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(label); i++ {
		if label[i] < '0' || label[i] > '9' {
			return false
		}
	}
	return true
}

// hyphensOK reports whether no label of name starts or ends with '-', which
// clawd asks of the names an operator writes.
func hyphensOK(name string) bool {
	for label := range strings.SplitSeq(name, ".") {
		if label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	if len(p) > 5 {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

func trimSpace(s string) string {
	for s != "" && isSpace(s[0]) {
		s = s[1:]
	}
	for s != "" && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}
