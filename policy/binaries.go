package policy

import (
	"fmt"
	"strings"
)

// Program identifies the process that made a connection (issue 16,
// `binaries:`). The daemon fills it from the TGID the kernel's connect hook
// recorded; the agent never supplies it. Policy matches Path and SHA256
// only; Cmdline and PID are shown in audit lines and approval cards.
type Program struct {
	// Known is false when clawd could not tell which program connected (no
	// record, the process exited, its PID was reused, it left the
	// container's cgroup): no allow, approve or readonly rule with binaries
	// matches it, and every deny rule with binaries does.
	Known   bool
	Path    string // the executable as the container sees it; "" when its file was deleted
	SHA256  string // lower-case hex of the executable's content; "" when it could not be read
	Cmdline string // sanitised and bounded, for people only
	PID     uint32 // host PID (the thread group ID)
}

// binaryPattern is one entry of a rule's binaries list: a path glob, a
// sha256 digest, or both ("path@sha256:hex"), in which case both must hold.
//
// Path globs are matched segment by segment on the executable's path as the
// container sees it: "**" matches zero or more whole segments, and within a
// segment "*" matches any run of characters (never "/"), as in header
// values. Matching is case-sensitive (file names are).
type binaryPattern struct {
	src    string
	segs   []string // nil: any path (digest only)
	sha256 string   // "": any content
}

func (b binaryPattern) String() string { return b.src }

const sha256Prefix = "sha256:"

func parseBinaryPattern(s string) (binaryPattern, error) {
	src := s
	s = strings.TrimSpace(s)
	b := binaryPattern{src: src}
	path := s
	if i := strings.LastIndex(s, "@"+sha256Prefix); i >= 0 {
		path = s[:i]
		b.sha256 = s[i+1+len(sha256Prefix):]
		if path == "" {
			return binaryPattern{}, fmt.Errorf("%q: write sha256:<hex> alone, or /path@sha256:<hex>", src)
		}
	} else if d, ok := strings.CutPrefix(s, sha256Prefix); ok {
		path, b.sha256 = "", d
		if d == "" {
			return binaryPattern{}, fmt.Errorf("%q: sha256: needs 64 hex digits", src)
		}
	}
	if b.sha256 != "" || strings.HasSuffix(s, "@"+sha256Prefix) {
		if len(b.sha256) != 64 || strings.Trim(strings.ToLower(b.sha256), "0123456789abcdef") != "" {
			return binaryPattern{}, fmt.Errorf("%q: a sha256 digest is 64 hex digits (sha256sum prints it)", src)
		}
		b.sha256 = strings.ToLower(b.sha256)
	}
	if path == "" {
		if b.sha256 == "" {
			return binaryPattern{}, fmt.Errorf("empty entry: name a program path or sha256:<hex>")
		}
		return b, nil
	}
	// Any other spelling of the digest (@SHA256:, @Sha256:, "@ sha256:")
	// would silently be part of a path naming another file: refused.
	if lp := strings.ToLower(path); strings.HasPrefix(lp, sha256Prefix) || strings.Contains(lp, "@sha256") || strings.Contains(lp, sha256Prefix) {
		return binaryPattern{}, fmt.Errorf("%q: write sha256:<hex> alone, or /path@sha256:<hex> (lower case, no spaces)", src)
	}
	if !strings.HasPrefix(path, "/") {
		return binaryPattern{}, fmt.Errorf("%q: a program path is absolute, as the container sees it (/usr/bin/git), or sha256:<hex>", src)
	}
	if strings.ContainsAny(path, "\x00\n\r\\") {
		return binaryPattern{}, fmt.Errorf("%q: control characters and backslashes are not allowed in program paths", src)
	}
	b.segs = []string{}
	for _, seg := range strings.Split(path[1:], "/") {
		switch {
		case seg == "":
			return binaryPattern{}, fmt.Errorf("%q: empty path segment (// or a trailing /); name the executable", src)
		case seg == "." || seg == "..":
			return binaryPattern{}, fmt.Errorf("%q: . and .. segments are not allowed; the kernel reports resolved paths", src)
		case seg != strings.TrimSpace(seg):
			// "/usr/bin/curl @sha256:…" would name "curl " (trailing space).
			return binaryPattern{}, fmt.Errorf("%q: a path segment begins or ends with white space (a space before @sha256:?); write /path@sha256:<hex> with no spaces", src)
		case strings.Contains(seg, "**") && seg != "**":
			return binaryPattern{}, fmt.Errorf("%q: ** must be a whole path segment (as in /opt/**/bin/tool)", src)
		}
		b.segs = append(b.segs, seg)
	}
	if b.sha256 == "" && catchAll(b.segs) {
		return binaryPattern{}, fmt.Errorf("%q names no directory or file, only wildcards: it matches every program (the agent can put its own at any path), so the rule would restrict nothing; name the program (/usr/bin/git), a directory (/usr/bin/*) or pin a digest (sha256:<hex>), or drop binaries", src)
	}
	if b.sha256 == "" && strings.Trim(b.segs[0], "*") == "" {
		// /**/git, /*/bin/git: the agent can create a file at a matching
		// path (/tmp/git, /tmp/bin/git; every container has a writable
		// /tmp, /var/tmp, /dev/shm).
		return binaryPattern{}, fmt.Errorf("%q starts with a wildcard: the agent can put its own program at a matching path (such as /tmp%s), so the rule would restrict nothing; name the directory (/usr/bin/git, /opt/**/bin/tool) or pin a digest (/**/git@sha256:<hex>)", src, "/"+strings.Join(b.segs[1:], "/"))
	}
	if last := b.segs[len(b.segs)-1]; last == "**" {
		return binaryPattern{}, fmt.Errorf("%q: a trailing ** would match every program below a directory, including interpreters and shells copied there; name the executable (a trailing * within the directory is allowed)", src)
	}
	return b, nil
}

// catchAll reports whether a path pattern has no literal character in any
// segment (/**/*, /*, /*/**/*): whatever the depth it asks for, the agent
// can create a program there.
func catchAll(segs []string) bool {
	for _, s := range segs {
		if strings.Trim(s, "*") != "" {
			return false
		}
	}
	return true
}

// match reports whether p is this pattern's program. p must be Known.
func (b binaryPattern) match(p Program) bool {
	if b.sha256 != "" && p.SHA256 != b.sha256 {
		return false
	}
	if b.segs == nil {
		return true
	}
	if p.Path == "" || !strings.HasPrefix(p.Path, "/") {
		return false
	}
	return matchSegs(b.segs, strings.Split(p.Path[1:], "/"))
}

// matchSegs is the wildcard algorithm of pathPattern.match with "*" globs
// inside segments and case-sensitive comparison.
func matchSegs(pat, segs []string) bool {
	p, s := 0, 0
	starP, starS := -1, 0
	for s < len(segs) {
		switch {
		case p < len(pat) && pat[p] == "**":
			starP, starS = p, s
			p++
		case p < len(pat) && glob(pat[p], segs[s]):
			p++
			s++
		case starP >= 0:
			starS++
			p, s = starP+1, starS
		default:
			return false
		}
	}
	for p < len(pat) && pat[p] == "**" {
		p++
	}
	return p == len(pat)
}

// binariesMatch reports whether the rule's binaries condition holds for p.
// An unknown program fails closed: it is none of the programs an allow,
// approve or readonly rule names, and any of those a deny rule names.
func (r *rule) binariesMatch(p Program) bool {
	if len(r.binaries) == 0 {
		return true
	}
	if !p.Known {
		return r.action == Deny && !r.readonly
	}
	for _, b := range r.binaries {
		if b.match(p) {
			return true
		}
	}
	return false
}

// checkBinaries refuses a list that mixes path-only entries with digests:
// the entries are alternatives, so the path-only one would let any content
// at that path through, which is rarely what the digest next to it meant.
func checkBinaries(bs []binaryPattern) error {
	var pathOnly, digest string
	for _, b := range bs {
		if b.sha256 == "" {
			pathOnly = b.src
		} else {
			digest = b.src
		}
	}
	if pathOnly != "" && digest != "" {
		return fmt.Errorf("%q and %q: entries are alternatives, so the path-only one lets any content at that path through; pin it as /path@sha256:<hex> or move it to its own rule", pathOnly, digest)
	}
	return nil
}

// ProgramFor builds the Program `clawd policy test --program PATH
// [--program-sha256 HEX]` asks about; an empty path is an unknown program.
func ProgramFor(path, sum string) (Program, error) {
	if path == "" {
		if sum != "" {
			return Program{}, fmt.Errorf("--program-sha256 needs --program (the path as the container sees it)")
		}
		return Program{}, nil
	}
	if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, "\x00\n\r") {
		return Program{}, fmt.Errorf("--program %q: an absolute path, as the container sees it", path)
	}
	sum = strings.ToLower(sum)
	if sum != "" && (len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "") {
		return Program{}, fmt.Errorf("--program-sha256: 64 hex digits (sha256sum prints them)")
	}
	return Program{Known: true, Path: path, SHA256: sum}, nil
}
