package policy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// hostPattern is an exact host name, or with glob a "*.name" pattern that
// matches any name strictly below name (a.name, a.b.name) but not name itself.
type hostPattern struct {
	name string
	glob bool
}

func (h hostPattern) String() string {
	if h.glob {
		return "*." + h.name
	}
	return h.name
}

func (h hostPattern) match(host string) bool {
	if !h.glob {
		return host == h.name
	}
	return hostname.Below(host, h.name)
}

// covers reports whether every host matched by o is also matched by h.
func (h hostPattern) covers(o hostPattern) bool {
	if !h.glob {
		return !o.glob && o.name == h.name
	}
	if o.glob {
		return o.name == h.name || h.match(o.name)
	}
	return h.match(o.name)
}

type portRange struct{ lo, hi uint16 }

// pathPattern is a compiled segment pattern: "*" matches exactly one
// segment, "**" zero or more, anything else itself.
type pathPattern struct {
	src  string
	segs []string
}

func parsePathPattern(s string) (pathPattern, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "/") {
		return pathPattern{}, fmt.Errorf("%q must start with /", s)
	}
	if strings.ContainsAny(s, "?#") {
		return pathPattern{}, fmt.Errorf("%q: the query string is ignored when matching; write the path only", s)
	}
	if strings.ContainsAny(s, "%\\") {
		return pathPattern{}, fmt.Errorf("%q: write paths decoded (no %% escapes or backslashes); requests are percent-decoded before matching", s)
	}
	pp := pathPattern{src: s}
	for _, seg := range strings.Split(s[1:], "/") {
		switch {
		case seg == "":
			continue // "//" and a trailing slash are ignored, as for requests
		case seg == "." || seg == "..":
			return pathPattern{}, fmt.Errorf("%q: . and .. segments are not allowed in patterns", s)
		case seg == "*" || seg == "**":
		case strings.Contains(seg, "*"):
			return pathPattern{}, fmt.Errorf("%q: * and ** must be whole path segments (as in /repos/*/issues/**)", s)
		}
		pp.segs = append(pp.segs, seg)
	}
	return pp, nil
}

// match reports whether the normalized request segments match. It is the
// classic wildcard algorithm over segments: "**" backtracks, "*" is one.
// Literal segments compare case-insensitively: some servers treat /Admin
// as /admin, and a deny rule must not be dodged by changing case.
func (pp pathPattern) match(segs []string) bool {
	p, s := 0, 0
	starP, starS := -1, 0
	for s < len(segs) {
		switch {
		case p < len(pp.segs) && pp.segs[p] == "**":
			starP, starS = p, s
			p++
		case p < len(pp.segs) && (pp.segs[p] == "*" || strings.EqualFold(pp.segs[p], segs[s])):
			p++
			s++
		case starP >= 0:
			starS++
			p, s = starP+1, starS
		default:
			return false
		}
	}
	for p < len(pp.segs) && pp.segs[p] == "**" {
		p++
	}
	return p == len(pp.segs)
}

// errAmbiguousPath and friends explain why a request path was refused. They
// never echo the path: it may carry tokens.
var (
	errPathNotAbsolute = errors.New("the request path does not start with /")
	errPathEncodedSep  = errors.New("the request path contains an encoded slash or backslash (%2F, %5C)")
	errPathBackslash   = errors.New("the request path contains a backslash")
	errPathNUL         = errors.New("the request path contains a NUL or control character")
	errPathBadEscape   = errors.New("the request path contains an invalid percent escape")
	errPathDoubleEnc   = errors.New("the request path is double percent-encoded (%25XX)")
	errPathEscapesRoot = errors.New("the request path uses .. to climb above /")
	errPathParams      = errors.New("the request path contains ';' (path parameters, which servlet containers strip and others keep)")
)

// normalizePath turns a request target into decoded segments with "." and
// ".." resolved and empty segments dropped. Anything an upstream server
// might read differently from us is an error, so a path rule can never be
// bypassed by an encoding trick.
func normalizePath(raw string) ([]string, error) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if !strings.HasPrefix(raw, "/") {
		return nil, errPathNotAbsolute
	}
	var dec []byte
	if strings.ContainsAny(raw, "%\\") || hasCtl(raw) {
		dec = make([]byte, 0, len(raw))
		for i := 0; i < len(raw); i++ {
			c := raw[i]
			switch {
			case c == '\\':
				return nil, errPathBackslash
			case c < 0x20 || c == 0x7f:
				return nil, errPathNUL
			case c == '%':
				if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
					return nil, errPathBadEscape
				}
				b := unhex(raw[i+1])<<4 | unhex(raw[i+2])
				switch {
				case b == '/' || b == '\\':
					return nil, errPathEncodedSep
				case b < 0x20 || b == 0x7f:
					return nil, errPathNUL
				case b == '%' && i+4 < len(raw) && isHex(raw[i+3]) && isHex(raw[i+4]):
					return nil, errPathDoubleEnc
				}
				dec = append(dec, b)
				i += 2
			default:
				dec = append(dec, c)
			}
		}
	}
	var path string
	if dec != nil {
		path = string(dec)
	} else {
		path = raw
	}
	if strings.IndexByte(path, ';') >= 0 {
		return nil, errPathParams
	}
	segs := make([]string, 0, 8)
	for _, seg := range strings.Split(path[1:], "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return nil, errPathEscapesRoot
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	return segs, nil
}

func hasCtl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

type headerCond struct {
	name  string // canonical
	value string // glob: * matches any run of characters
}

type labelCond struct {
	key, value string // value is a glob
}

// selector picks containers for a set. Every field given must match; within
// a field any listed value may match.
type selector struct {
	names      []string // globs over Container.Name
	runtimes   []string
	namespaces []string
	labels     []labelCond
}

func (s *selector) match(c Container) bool {
	if s == nil {
		return false
	}
	if len(s.names) > 0 {
		name := strings.TrimPrefix(c.Name, "/") // Docker reports "/name"
		ok := false
		for _, g := range s.names {
			if glob(g, name) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(s.runtimes) > 0 && !contains(s.runtimes, c.Runtime) {
		return false
	}
	if len(s.namespaces) > 0 && !contains(s.namespaces, c.Namespace) {
		return false
	}
	for _, l := range s.labels {
		v, ok := c.Labels[l.key]
		if !ok || !glob(l.value, v) {
			return false
		}
	}
	return true
}

// glob matches s against a pattern where * matches any run of characters
// (including none) and everything else matches itself.
func glob(pattern, s string) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starI = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case starP >= 0:
			starI++
			p, i = starP+1, starI
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// containsFold reports whether lowerNeedle (already lower case) occurs in
// hay, ASCII case-insensitively, without allocating.
func containsFold(hay, lowerNeedle []byte) bool {
	for _, c := range lowerNeedle {
		if c >= 0x80 {
			// Non-ASCII: pay for a full Unicode lower-casing of the body.
			return bytes.Contains(bytes.ToLower(hay), lowerNeedle)
		}
	}
	n := len(lowerNeedle)
	if n == 0 {
		return true
	}
	first := lowerNeedle[0]
	for i := 0; i+n <= len(hay); i++ {
		if lower(hay[i]) != first {
			continue
		}
		j := 1
		for j < n && lower(hay[i+j]) == lowerNeedle[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ResolveDotSegments is target (an origin-form request target) with its
// path's dot segments ("." and "..", also percent-encoded) resolved the
// way the policy reads the path (normalizePath: empty segments dropped
// too), the rest (segments, their escapes, a trailing slash, the query) as
// sent; ok is false when the path has no dot segment (target is then
// returned as it is) or one that climbs above the root (the policy refuses
// such a path wherever a path condition asks). The proxy forwards what
// this returns, so that the path the policy decided on is the path the
// upstream routes on (docs/attacks/16-budget-r2.md, hole 8).
func ResolveDotSegments(target string) (string, bool) {
	path, rest := target, ""
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		path, rest = target[:i], target[i:]
	}
	if !strings.HasPrefix(path, "/") {
		return target, false
	}
	if !strings.ContainsAny(path, ".%") {
		return target, false // no segment can be a dot segment (the common case: no allocation)
	}
	dots := func(seg string) string {
		if len(seg) > 6 || !strings.ContainsAny(seg, ".%") {
			return ""
		}
		d := strings.ReplaceAll(strings.ReplaceAll(seg, "%2e", "."), "%2E", ".")
		if d == "." || d == ".." {
			return d
		}
		return ""
	}
	raw := strings.Split(path[1:], "/")
	found := false
	for _, seg := range raw {
		found = found || dots(seg) != ""
	}
	if !found {
		return target, false
	}
	segs := make([]string, 0, len(raw))
	for _, seg := range raw {
		switch {
		case seg == "":
		case dots(seg) == ".":
		case dots(seg) == "..":
			if len(segs) == 0 {
				return target, false
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	out := "/" + strings.Join(segs, "/")
	if last := raw[len(raw)-1]; len(segs) > 0 && (last == "" || dots(last) != "") {
		out += "/"
	}
	return out + rest, true
}
