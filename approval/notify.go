package approval

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"
)

// sensitiveHeaders carry credentials; their values are never shown, whatever
// the redactor thinks of them.
var sensitiveHeaders = map[string]bool{
	"Authorization": true, "Proxy-Authorization": true, "Cookie": true, "Set-Cookie": true,
	"X-Api-Key": true, "Api-Key": true, "X-Auth-Token": true, "X-Goog-Api-Key": true,
	"Private-Token": true, "X-Amz-Security-Token": true,
}

const redacted = "[redacted]"

// Bounds on what an agent can put on a card through headers.
const (
	maxShownHeaders     = 64
	maxShownHeaderValue = 1024
)

func (m *Manager) redactHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	n := 0
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		if n >= maxShownHeaders {
			break
		}
		n++
		for _, v := range vs {
			if sensitiveHeaders[ck] {
				if ck == "Authorization" || ck == "Proxy-Authorization" {
					if scheme, _, ok := strings.Cut(v, " "); ok && len(scheme) < 16 {
						v = scheme + " " + redacted
						out[ck] = append(out[ck], v)
						continue
					}
				}
				v = redacted
			} else {
				// Redact before cutting, so a cut cannot split a secret
				// into a prefix the redactor no longer recognises.
				v = truncate(m.sanitize(v), maxShownHeaderValue)
			}
			out[ck] = append(out[ck], v)
		}
	}
	return out
}

// secretShapes match values that look like credentials whether or not the
// secrets redactor knows them: provider key prefixes, bearer values and long
// random-looking tokens.
var secretShapes = []*regexp.Regexp{
	regexp.MustCompile(`\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{8,}`),
	regexp.MustCompile(`\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}`),
	regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}`),
	regexp.MustCompile(`\bAKIA[0-9A-Z]{16}\b`),
	regexp.MustCompile(`\bsk-[A-Za-z0-9_-]{20,}`),
	regexp.MustCompile(`(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{8,}`),
}

var longToken = regexp.MustCompile(`[A-Za-z0-9_\-]{32,}`)

// gitSHA is a commit ID: long and random, but public and useful to see.
var gitSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// redactSecretShapes blanks credential-shaped substrings of s.
func redactSecretShapes(s string) string {
	for _, re := range secretShapes {
		s = re.ReplaceAllStringFunc(s, func(t string) string {
			if scheme, _, ok := strings.Cut(t, " "); ok && len(scheme) <= 6 {
				return scheme + " " + redacted
			}
			return redacted
		})
	}
	return longToken.ReplaceAllStringFunc(s, func(t string) string {
		if looksRandom(t) && !gitSHA.MatchString(t) {
			return redacted
		}
		return t
	})
}

// looksRandom: a long run that mixes upper, lower and digits (or is long hex
// mixed with letters) is a token, not a word or a path.
func looksRandom(t string) bool {
	var up, low, dig int
	for _, c := range t {
		switch {
		case c >= 'A' && c <= 'Z':
			up++
		case c >= 'a' && c <= 'z':
			low++
		case c >= '0' && c <= '9':
			dig++
		}
	}
	classes := 0
	for _, n := range []int{up, low, dig} {
		if n > 0 {
			classes++
		}
	}
	return classes >= 3 || (classes == 2 && dig >= 6)
}

// sanitize is what every agent-controlled string goes through before a human
// sees it: the secrets redactor, then the secret-shape redaction.
func (m *Manager) sanitize(s string) string {
	return sanitizeWith(m.red, s)
}

func sanitizeWith(r Redactor, s string) string {
	if r == nil {
		r = identity{}
	}
	return stripControls(redactSecretShapes(r.RedactString(s)))
}

// stripControls removes what could make a card lie about the request:
// control characters (line breaks that forge extra lines) and Unicode
// bidirectional overrides and isolates (text shown in another order).
// Bodies keep their line breaks; they are shown as code.
func stripControls(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			return -1
		case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
			return -1
		}
		return r
	}, s)
}

// bodyPreview renders a (redacted) body prefix for a card: pretty JSON when it parses,
// text when it is UTF-8, a size note when binary.
func (m *Manager) bodyPreview(b []byte) string {
	return stripBidi(m.bodyPreviewText(b))
}

// stripBidi removes Unicode bidirectional overrides and isolates, keeping
// line breaks (bodies are shown as code blocks).
func stripBidi(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c {
			return -1
		}
		return r
	}, s)
}

func (m *Manager) bodyPreviewText(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	// b is already through the secrets redactor (see view).
	if json.Valid(b) {
		var buf bytes.Buffer
		if json.Indent(&buf, b, "", "  ") == nil {
			return redactSecretShapes(buf.String())
		}
	}
	if !utf8.Valid(b) {
		// A cut in the middle of a rune is still text.
		trim := b
		for i := 0; i < 3 && len(trim) > 0 && !utf8.Valid(trim); i++ {
			trim = trim[:len(trim)-1]
		}
		if !utf8.Valid(trim) {
			return fmt.Sprintf("(%d bytes of binary data)", len(b))
		}
		b = trim
	}
	return redactSecretShapes(string(b))
}

// Summary is the line a card shows first for h: the first summariser that
// knows the request, else "METHOD URL"; redacted and cut to 300 characters.
func (m *Manager) Summary(h *Hold) string {
	if len(h.Tools) > 0 {
		return truncate(m.toolSummary(h), 300)
	}
	for _, s := range m.sums {
		if sum, ok := s.Summarize(h); ok {
			return truncate(m.sanitize(sum), 300)
		}
	}
	sum, _ := Generic{}.Summarize(h)
	return truncate(m.sanitize(sum), 300)
}

// toolSummary says which MCP tools a held request calls, with what:
// "MCP tool create_issue {"repo":"a/b"} on host", every key named while the
// 300 bytes allow, long values cut with their length (toolview.go). A
// batch is approved whole, so its summary first says how many calls it
// holds and names every tool (each distinct name once, with its count),
// then the calls' arguments as far as they fit: "MCP batch of 20
// tools/call on host: write_file ×20 | write_file {...}; ...".
func (m *Manager) toolSummary(h *Hold) string {
	tail := " on " + m.sanitize(h.Host)
	if len(h.Tools) == 1 {
		t := h.Tools[0]
		what := "MCP tool "
		name := truncate(m.toolName(t.Name), 80)
		kvs, ok := m.toolArgs(t.Args)
		budget := max(60, 300-len(what)-len(tail))
		return what + name + " " + renderArgs(kvs, ok, budget-len(name)-3, false) + tail
	}
	var order []string
	count := map[string]int{}
	for _, t := range h.Tools {
		n := m.toolName(t.Name)
		if count[n] == 0 {
			order = append(order, n)
		}
		count[n]++
	}
	head := fmt.Sprintf("MCP batch of %d tools/call%s: ", len(h.Tools), tail)
	// Every distinct tool named, each cut to its share of what is left.
	share := max(12, (300-len(head)-len(" | "))/len(order)-len(" ×100, "))
	names := make([]string, 0, len(order))
	used := len(head)
	for i, n := range order {
		part := truncate(n, share)
		if count[n] > 1 {
			part += fmt.Sprintf(" ×%d", count[n])
		}
		if used+len(part) > 280 && i < len(order)-1 {
			names = append(names, fmt.Sprintf("and %d more tools", len(order)-i))
			break
		}
		names = append(names, part)
		used += len(part) + 2
	}
	s := head + strings.Join(names, ", ")
	budget := 300 - len(s) - 3
	if budget < 40 {
		return s
	}
	per := max(40, budget/len(h.Tools))
	parts := make([]string, 0, len(h.Tools))
	for _, t := range h.Tools {
		name := truncate(m.toolName(t.Name), 40)
		kvs, ok := m.toolArgs(t.Args)
		parts = append(parts, name+" "+renderArgs(kvs, ok, per-len(name)-3, false))
	}
	return s + " | " + strings.Join(parts, "; ")
}
