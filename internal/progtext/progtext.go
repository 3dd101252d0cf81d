// Package progtext owns how clawd writes a program for people (issue 16):
// the command line shown in audit lines and approval cards, with the
// credentials an agent put on it redacted (Redact), and the escaping of
// any text about a program, its path and its command line (Escape), so
// that such text cannot forge a line or show other text than it holds.
// Policy never matches this text; it is for people only.
//
// Redaction is deliberately generous: a value that might be a credential
// is hidden even when it is not one, because a command line is chosen by
// the agent and shown to people and log stores that must never see a
// secret. What is redacted, in argument lists (argv) and, for arguments
// that hold several words (sh -c '…', python -c '…'), in the words they
// hold (quotes understood):
//
//   - the value of a flag whose name looks secret (it contains key, token,
//     secret, pass, pwd, auth, cred, cookie or bearer, in any case), in both
//     forms: --api-key v, --api-key=v; and of --user, --proxy-user, --cert
//     (curl's user:password and cert:password);
//   - the value of the short flags -u, -U, -E and -p, separate (-u v) or
//     attached (-uv, -pPASS, also as the last of a cluster: -sSu v);
//   - header values whose name looks secret (Authorization, Cookie,
//     X-Api-Key, Private-Token, …) after -H/--header or as an argument of
//     their own (httpie's Authorization:Bearer\ x); an Authorization
//     scheme is kept (Bearer [redacted]);
//   - NAME=value anywhere in an argument (environment assignments, query
//     strings, java -Dname=value, form bodies) whose NAME looks secret, and
//     JSON members ("password": "…") likewise;
//   - URL user info (https://user:pw@host → https://[redacted]@host) and
//     the token after Bearer;
//   - single-dash long flags likewise (-token v, -api-key v, -password v:
//     then both the attached and the next word), and the password flags of
//     particular programs (redis-cli -a, openssl -k, ldap* -w/-y, sqlcmd
//     and bcp -P);
//   - a header in the value of any NAME=value (git -c
//     http.extraheader=Authorization: Basic …);
//   - the word after a word that names a secret (aws configure set
//     aws_secret_access_key v, git config github.token v, netrc
//     "password v", python "token = v", JS "{token: v}"), and the rest of
//     a secret assignment left open (auth=("me", "v"));
//   - URL signatures (X-Amz-Signature, sig=), user info with any character
//     but / and white space, and user:password@host without a scheme;
//   - words nested deeper than maxDepth quote levels, whole;
//   - as a last resort, a whole word holding password, secret, token, … followed
//     by ':' or '=' and a value that no rule above recognised.
package progtext

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Redacted replaces every value Redact hides.
const Redacted = "[redacted]"

// MaxCmdline bounds Cmdline's result (bytes, before the "…" that marks a
// cut).
const MaxCmdline = 512

// Cmdline turns /proc/PID/cmdline (NUL-separated arguments) into the one
// line audit lines and cards show: arguments redacted, escaped, joined by
// spaces and cut at MaxCmdline bytes.
func Cmdline(raw []byte) string {
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	var out strings.Builder
	for i, a := range Redact(args) {
		if i > 0 {
			out.WriteByte(' ')
		}
		out.WriteString(Escape(a))
		if out.Len() > MaxCmdline {
			break
		}
	}
	s := out.String()
	if len(s) > MaxCmdline {
		s = strings.ToValidUTF8(s[:MaxCmdline], "") + "…"
	}
	return s
}

// Escape writes every character that is not printable (Unicode's
// graphic characters and the ASCII space) as an escape: invalid UTF-8
// bytes and ASCII controls as \xHH, others as \uHHHH or \UHHHHHHHH. That
// covers line breaks, U+2028 and U+2029 (line breaks to JavaScript and
// some log viewers), bidirectional overrides and isolates (U+202A–U+202E,
// U+2066–U+2069: text shown in another order), zero-width and other
// format characters, and non-ASCII spaces. Backslashes are kept as they
// are, so Escape(Escape(s)) == Escape(s): a layer that escapes again
// changes nothing.
func Escape(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == ' ' || unicode.IsPrint(r):
			b.WriteString(s[i : i+n])
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// Redact returns args with the credentials they carry replaced by
// Redacted (see the package doc). It never removes or adds an argument.
func Redact(args []string) []string { return redactWords(args, 0) }

// maxDepth bounds how far Redact looks into words within words.
const maxDepth = 4

type expect int

const (
	none   expect = iota
	value         // the next word is a flag's value
	header        // the next word is a header (-H)
)

func redactWords(ws []string, depth int) []string {
	out := make([]string, len(ws))
	next := none
	prog := ""
	for i, w := range ws {
		q, u := unquote(w)
		k := next
		next = none
		switch k {
		case value:
			if u == "=" || u == ":" {
				// token = "v", password : v
				out[i], next = w, value
				continue
			}
			out[i] = requote(q, Redacted)
			continue
		case header:
			if r, ok := redactHeader(u); ok {
				out[i] = requote(q, r)
				continue
			}
			out[i] = redactText(w, depth)
			continue
		}
		if _, ok := progFlags[baseName(u)]; ok {
			prog = baseName(u)
		}
		if len(u) == 2 && u[0] == '-' && strings.IndexByte(progFlags[prog], u[1]) >= 0 {
			// redis-cli -a v, openssl -k v, ldapsearch -w v, sqlcmd -P v
			out[i], next = w, value
			continue
		}
		if r, n, ok := redactFlag(u); ok {
			out[i], next = requote(q, r), n
			continue
		}
		// NAME=<secret header> (git -c http.extraheader=Authorization: …).
		if name, val, ok := strings.Cut(u, "="); ok && name != "" {
			if r, ok := redactHeader(val); ok {
				out[i] = requote(q, name+"="+r)
				continue
			}
		}
		// "password:" or "Authorization:" alone: its value is the next word.
		if name, ok := strings.CutSuffix(u, ":"); ok {
			if name = lastName(name); headerName.MatchString(name) && secretName(name) {
				out[i], next = w, value
				continue
			}
		}
		// A secret's name as a word of its own: its value is the next word
		// (aws configure set aws_secret_access_key v, git config
		// github.token v, netrc "password v", python "token = v").
		if t := lastName(strings.TrimRight(u, "'\"")); !strings.HasPrefix(t, "-") && positional.MatchString(t) {
			out[i], next = w, value
			continue
		}
		out[i] = redactText(w, depth)
		// auth=("me", "v"): the value goes on past this word.
		if m := openValue.FindStringSubmatch(u); m != nil && secretName(m[1]) {
			next = value
		}
	}
	return out
}

// progFlags are single-letter flags that take a password in one program
// (separate: -a v); the generic ones are valueShort.
var progFlags = map[string]string{
	"redis-cli": "a", "keydb-cli": "a", "valkey-cli": "a",
	"openssl":    "k",
	"ldapsearch": "wy", "ldapmodify": "wy", "ldapadd": "wy", "ldapdelete": "wy", "ldapwhoami": "wy", "ldappasswd": "wsyat", "ldapcompare": "wy", "ldapmodrdn": "wy", "ldapexop": "wy",
	"sqlcmd": "P", "bcp": "P", "osql": "P", "isql": "P", "mysqladmin": "P",
}

// lastName is what follows the last opening bracket, comma, semicolon or
// quote in a word: the name in f({token: or dict(api_key.
func lastName(u string) string {
	if i := strings.LastIndexAny(u, "({[,;'\""); i >= 0 {
		return u[i+1:]
	}
	return u
}

func baseName(u string) string {
	if i := strings.LastIndexByte(u, '/'); i >= 0 {
		return u[i+1:]
	}
	return u
}

var (
	// positional: a word that names a secret and nothing else.
	positional = regexp.MustCompile(`(?i)^[a-z0-9_.-]*(password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key|private[_-]?key|credentials?)$`)
	// openValue: NAME=( or NAME=[ or NAME={ left open at the end of a word.
	openValue = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*[(\[{][^)\]}]*$`)
)

// redactFlag handles a word that is a flag. It returns the word as shown,
// what the next word is, and whether the word was a flag at all.
func redactFlag(u string) (string, expect, bool) {
	if name, ok := strings.CutPrefix(u, "--"); ok && name != "" {
		name, val, eq := strings.Cut(name, "=")
		l := strings.ToLower(name)
		switch {
		case strings.HasPrefix(l, "no-"):
			return "", none, false
		case l == "header" || strings.HasSuffix(l, "-header"):
			if !eq {
				return u, header, true
			}
			if r, ok := redactHeader(val); ok {
				return "--" + name + "=" + r, none, true
			}
			return "", none, false
		case secretName(l) || l == "user" || l == "proxy-user" || l == "cert" || l == "proxy-cert":
			if !eq {
				return u, value, true
			}
			return "--" + name + "=" + Redacted, none, true
		}
		return "", none, false
	}
	if len(u) < 2 || u[0] != '-' || !isLetter(u[1]) {
		return "", none, false
	}
	// A single-dash long flag (Go's flag package, Java, openssl):
	// -token v, -api-key v, -password v.
	if name, _, eq := strings.Cut(u[1:], "="); len(name) > 2 && headerName.MatchString(name) && secretName(name) {
		switch {
		case eq:
			return "-" + name + "=" + Redacted, none, true
		case valueShort(u[1]):
			// -password v or -pPASSWORD: either may be the secret.
			return u[:2] + Redacted, value, true
		default:
			return u, value, true
		}
	}
	c := u[1]
	if len(u) == 2 {
		switch {
		case valueShort(c):
			return u, value, true
		case c == 'H':
			return u, header, true
		}
		return "", none, false
	}
	switch {
	case valueShort(c):
		return u[:2] + Redacted, none, true
	case c == 'H':
		if r, ok := redactHeader(u[2:]); ok {
			return "-H" + r, none, true
		}
		return "", none, false
	}
	// A cluster of short flags (-sSu): its last one may take the next word.
	for i := 1; i < len(u); i++ {
		if !isLetter(u[i]) {
			return "", none, false
		}
	}
	switch last := u[len(u)-1]; {
	case valueShort(last):
		return u, value, true
	case last == 'H':
		return u, header, true
	}
	return "", none, false
}

// valueShort: -u user:password, -U proxy user:password, -E cert:password,
// -p password (mysql), -pPASSWORD.
func valueShort(c byte) bool { return c == 'u' || c == 'U' || c == 'E' || c == 'p' }

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

var headerName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// redactHeader redacts "Name: value" (or "Name:value") when Name looks
// secret; ok is false when u is not such a header.
func redactHeader(u string) (string, bool) {
	name, val, ok := strings.Cut(u, ":")
	name = strings.TrimSpace(name)
	if !ok || !headerName.MatchString(name) || !secretName(name) {
		return "", false
	}
	val = strings.TrimSpace(val)
	if l := strings.ToLower(name); l == "authorization" || l == "proxy-authorization" {
		if scheme, _, ok := strings.Cut(val, " "); ok && len(scheme) <= 16 && headerName.MatchString(scheme) {
			return name + ": " + scheme + " " + Redacted, true
		}
	}
	return name + ": " + Redacted, true
}

// secretWords make a name (flag, header, variable, JSON member) secret.
var secretWords = []string{"key", "token", "secret", "pass", "pwd", "auth", "cred", "cookie", "bearer"}

func secretName(name string) bool {
	l := strings.ToLower(name)
	// Signed URLs: X-Amz-Signature, Azure SAS sig, X-Goog-Signature.
	if l == "sig" || strings.Contains(l, "signature") || strings.HasSuffix(l, "-sig") || strings.HasSuffix(l, "_sig") {
		return true
	}
	for _, w := range secretWords {
		if strings.Contains(l, w) {
			return true
		}
	}
	return false
}

var (
	userinfo = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@`)
	// bareUser is user:password@host without a scheme (curl takes it).
	bareUser   = regexp.MustCompile(`(?i)(^|[\s'"=(,])[^\s/:@'"]+:[^\s/@]*@([a-z0-9-]+\.)*[a-z0-9-]+`)
	jsonMember = regexp.MustCompile(`("((?:[^"\\]|\\.){1,64})"\s*:\s*)"(?:[^"\\]|\\.)*"`)
	assignment = regexp.MustCompile(`(^|[^A-Za-z0-9_.-])(-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=(\([^)]*\)?|\[[^\]]*\]?|\{[^}]*\}?|'[^']*'|"[^"]*"|[^\s&;'"]*)`)
	bearer     = regexp.MustCompile(`(?i)\b(bearer\s+)[^\s'"]+`)
)

// redactText redacts within one word (which may hold several).
func redactText(s string, depth int) string {
	q, u := unquote(s)
	if r, ok := redactHeader(u); ok {
		return requote(q, r)
	}
	s = userinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
	s = replaceSubmatch(bareUser, s, func(m []string) string {
		if strings.Contains(m[0], Redacted) {
			return m[0]
		}
		at := strings.LastIndexByte(m[0], '@')
		return m[1] + Redacted + m[0][at:]
	})
	s = replaceSubmatch(jsonMember, s, func(m []string) string {
		if secretName(m[2]) {
			return m[1] + `"` + Redacted + `"`
		}
		return m[0]
	})
	s = replaceSubmatch(assignment, s, func(m []string) string {
		if secretName(m[2]) {
			return m[1] + m[2] + "=" + Redacted
		}
		return m[0]
	})
	s = bearer.ReplaceAllString(s, "${1}"+Redacted)
	if depth >= maxDepth && strings.ContainsAny(s, " \t\n\r\v\f") {
		// Words nested deeper than Redact looks: hidden whole.
		q, _ := unquote(s)
		return requote(q, Redacted)
	}
	if strings.ContainsAny(s, " \t\n\r\v\f") {
		spans := splitWords(s)
		if len(spans) > 1 || q != 0 {
			words := make([]string, len(spans))
			for i, sp := range spans {
				words[i] = s[sp[0]:sp[1]]
			}
			if len(spans) == 1 {
				// One quoted word holding spaces: look inside.
				q, u := unquote(s)
				return requote(q, redactText(u, depth+1))
			}
			red := redactWords(words, depth+1)
			var b strings.Builder
			last := 0
			for i, sp := range spans {
				b.WriteString(s[last:sp[0]])
				b.WriteString(red[i])
				last = sp[1]
			}
			b.WriteString(s[last:])
			return b.String()
		}
	}
	if lastResort(s) {
		q, _ := unquote(s)
		return requote(q, Redacted)
	}
	return s
}

func replaceSubmatch(re *regexp.Regexp, s string, f func([]string) string) string {
	idx := re.FindAllStringSubmatchIndex(s, -1)
	if idx == nil {
		return s
	}
	var b strings.Builder
	last := 0
	for _, m := range idx {
		sub := make([]string, len(m)/2)
		for i := range sub {
			if m[2*i] >= 0 {
				sub[i] = s[m[2*i]:m[2*i+1]]
			}
		}
		b.WriteString(s[last:m[0]])
		b.WriteString(f(sub))
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// lastWords are the words lastResort looks for.
var lastWords = []string{"password", "passwd", "secret", "authorization", "bearer", "apikey", "api_key", "api-key", "token", "cookie", "credential", "private_key", "private-key"}

// lastResort reports whether a word still holds a secret word followed by
// ':' or '=' (or their URL encodings) and a value not yet redacted.
func lastResort(s string) bool {
	l := strings.ToLower(s)
	for _, w := range lastWords {
		for off := 0; ; {
			i := strings.Index(l[off:], w)
			if i < 0 {
				break
			}
			rest := l[off+i+len(w):]
			off += i + len(w)
			rest = strings.TrimLeft(rest, "abcdefghijklmnopqrstuvwxyz0123456789_-\"'")
			var sep int
			switch {
			case strings.HasPrefix(rest, ":"), strings.HasPrefix(rest, "="):
				sep = 1
			case strings.HasPrefix(rest, "%3a"), strings.HasPrefix(rest, "%3d"):
				sep = 3
			default:
				continue
			}
			v := strings.TrimLeft(rest[sep:], " \"'")
			if v != "" && !strings.HasPrefix(v, strings.ToLower(Redacted)) {
				return true
			}
		}
	}
	return false
}

// splitWords splits s at white space outside quotes ('…', "…"; a backslash
// escapes the next character outside single quotes), as a shell would;
// each span is [start, end) in s.
func splitWords(s string) [][2]int {
	var spans [][2]int
	start, q := -1, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q != 0:
			if c == '\\' && q == '"' && i+1 < len(s) {
				i++
			} else if c == q {
				q = 0
			}
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			if start >= 0 {
				spans = append(spans, [2]int{start, i})
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
		switch c {
		case '\'', '"':
			q = c
		case '\\':
			i++
		}
	}
	if start >= 0 {
		spans = append(spans, [2]int{start, len(s)})
	}
	return spans
}

// unquote strips one pair of matching quotes around a whole word.
func unquote(w string) (byte, string) {
	if len(w) >= 2 && (w[0] == '\'' || w[0] == '"') && w[len(w)-1] == w[0] {
		return w[0], w[1 : len(w)-1]
	}
	return 0, w
}

func requote(q byte, s string) string {
	if q == 0 {
		return s
	}
	return string(q) + s + string(q)
}
