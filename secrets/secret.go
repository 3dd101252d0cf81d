// Package secrets keeps the real API keys clawd injects into agent traffic.
//
// The agent only ever holds placeholders ("clawd-ph-github-<32 hex>"). After
// the policy allowed a request, the proxy calls Store.Inject, which swaps the
// placeholders of secrets bound to the destination host for the real values
// and refuses requests that carry a placeholder to any other host
// (ErrPlaceholderMisuse). Responses pass through Injection.ScrubResponse so
// a server echoing a key back never hands the real value to the agent.
//
// Values live encrypted at rest (AES-256-GCM, see store.go) and as []byte in
// memory; no String, error, log field or metric ever holds one.
package secrets

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// Secret is the metadata of one secret. It never holds the value, so it is
// safe to print, marshal, log and show in approval cards.
type Secret struct {
	// Name identifies the secret: [a-z0-9][a-z0-9_-]{0,62}.
	Name string `json:"name"`
	// Hosts the secret may be sent to, in hostname.Pattern form: lower-case
	// DNS names, "*.example.com" for any subdomain (not example.com
	// itself), or IP literals.
	Hosts []string `json:"hosts"`
	// Preset is "anthropic", "openai" or "github" when the secret was set
	// with one; the preset's header settings are already filled in below.
	Preset string `json:"preset,omitempty"`
	// Header is the request header that carries the secret, and Format its
	// value with "{value}" where the secret goes (default "{value}"). A
	// request header Header that holds the placeholder in any form (for
	// example "token <ph>") is rewritten to Format.
	Header string `json:"header,omitempty"`
	Format string `json:"format,omitempty"`
	// HeaderMode sets Header to Format on every request to a bound host,
	// even when the agent sent no such header or a different value. The
	// agent then needs no placeholder at all.
	HeaderMode bool `json:"header_mode,omitempty"`
	// RemoveHeaders are deleted from requests in header mode (the Anthropic
	// preset removes a client Authorization header, since x-api-key wins).
	RemoveHeaders []string `json:"remove_headers,omitempty"`
	// Paths limits the secret to request paths matching one of these
	// segment-aware patterns ("*" one segment, "**" any number, including
	// none). Empty means every path. Outside them the placeholder is not
	// replaced and its presence is misuse.
	Paths []string `json:"paths,omitempty"`
	// PathTemplate puts the value into the path even when the agent wrote
	// something else there: "/bot{value}/**" turns "/botX/sendMessage" into
	// "/bot<value>/sendMessage". It is compiled to PathRegex.
	PathTemplate string `json:"path_template,omitempty"`
	// PathRegex is a regular expression with exactly one capture group,
	// matched against the escaped path; the group is replaced by the value.
	PathRegex string `json:"path_regex,omitempty"`
	// Query opts in to replacing the placeholder in the query string, and
	// Body in request bodies. Both are off by default because APIs store
	// query parameters and bodies (an issue title, a gist) where the agent
	// could read the value back later, transformed past the response
	// scrubber. Misuse detection covers the query and body regardless.
	Query bool `json:"query,omitempty"`
	Body  bool `json:"body,omitempty"`
	// Env lists extra environment variable names `clawd attach --env`
	// suggests for the placeholder (GITHUB_TOKEN for the github preset).
	Env []string `json:"env,omitempty"`
	// Clawd marks a credential for clawd itself (an upstream proxy's
	// password, an approval channel's token): it has no hosts and no
	// placeholder, is never injected into an agent's request, and only
	// Store.Credential reads it.
	Clawd bool `json:"clawd,omitempty"`
	// Placeholder is what the agent holds instead of the value. It is set
	// on create and kept by Rotate and by replacing Set ("" for Clawd
	// secrets).
	Placeholder string `json:"placeholder"`
	// Created is when the secret was first set; Rotated when its value was
	// last changed (zero if never).
	Created time.Time `json:"created"`
	Rotated time.Time `json:"rotated,omitzero"`
}

// String shows the name and hosts only; a Secret has no value to show.
func (s Secret) String() string {
	if s.Clawd {
		return fmt.Sprintf("secret %s (clawd-owned)", s.Name)
	}
	return fmt.Sprintf("secret %s (hosts %s)", s.Name, strings.Join(s.Hosts, ","))
}

// Preset is a known API's way of presenting a key.
type Preset struct {
	Name          string
	Hosts         []string // default hosts when none are given
	Header        string
	Format        string
	RemoveHeaders []string
	Env           []string // env vars agents' SDKs read the key from
}

var presets = map[string]Preset{
	"anthropic": {
		Name: "anthropic", Hosts: []string{"api.anthropic.com"},
		Header: "X-Api-Key", Format: "{value}", RemoveHeaders: []string{"Authorization"},
		Env: []string{"ANTHROPIC_API_KEY"},
	},
	"openai": {
		Name: "openai", Hosts: []string{"api.openai.com"},
		Header: "Authorization", Format: "Bearer {value}",
		Env: []string{"OPENAI_API_KEY"},
	},
	"github": {
		Name: "github", Hosts: []string{"api.github.com"},
		Header: "Authorization", Format: "Bearer {value}",
		Env: []string{"GITHUB_TOKEN", "GH_TOKEN"},
	},
}

// Presets lists the preset names accepted in Secret.Preset, sorted.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

const (
	placeholderPrefix = "clawd-ph-"
	valueToken        = "{value}"
	minValueLen       = 8 // shorter values would make scrubbing and redaction mangle unrelated text
	maxValueLen       = 16 << 10
)

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	envRE  = regexp.MustCompile(`^[A-Z_][A-Z0-9_]{0,127}$`)
)

// ValidName reports whether name is an acceptable secret name.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid secret name %q: want [a-z0-9][a-z0-9_-]{0,62}", name)
	}
	return nil
}

func (s *Secret) boundTo(host string) bool {
	for _, p := range s.Hosts {
		if hostname.Match(p, host) {
			return true
		}
	}
	return false
}

// normalize applies the preset, canonicalizes fields and validates
// everything an operator can set. It never touches Placeholder or times.
func (s Secret) normalize() (Secret, error) {
	if err := ValidName(s.Name); err != nil {
		return Secret{}, err
	}
	if s.Clawd {
		if len(s.Hosts) > 0 || s.Preset != "" || s.Header != "" || s.Format != "" || s.HeaderMode ||
			len(s.RemoveHeaders) > 0 || len(s.Paths) > 0 || s.PathTemplate != "" || s.PathRegex != "" ||
			s.Query || s.Body || len(s.Env) > 0 {
			return Secret{}, fmt.Errorf("secret %s: a clawd secret is for clawd itself and is never injected: it takes no hosts, preset, header, paths, query, body or env settings", s.Name)
		}
		return Secret{Name: s.Name, Clawd: true}, nil
	}
	if s.Preset != "" {
		p, ok := presets[s.Preset]
		if !ok {
			return Secret{}, fmt.Errorf("secret %s: unknown preset %q (known: %s)", s.Name, s.Preset, strings.Join(Presets(), ", "))
		}
		if len(s.Hosts) == 0 {
			s.Hosts = slices.Clone(p.Hosts)
		}
		if s.Header == "" {
			s.Header = p.Header
			if s.Format == "" {
				s.Format = p.Format
			}
			s.RemoveHeaders = append(slices.Clone(p.RemoveHeaders), s.RemoveHeaders...)
		}
		s.HeaderMode = true
		s.Env = append(slices.Clone(p.Env), s.Env...)
	}
	if len(s.Hosts) == 0 {
		return Secret{}, fmt.Errorf("secret %s: at least one host is required", s.Name)
	}
	var hosts []string
	for _, raw := range s.Hosts {
		h, err := hostname.Pattern(raw)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %s: invalid host: %w", s.Name, err)
		}
		if !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	s.Hosts = hosts

	if s.Header != "" {
		if !httpguts.ValidHeaderFieldName(s.Header) {
			return Secret{}, fmt.Errorf("secret %s: invalid header name %q", s.Name, s.Header)
		}
		s.Header = http.CanonicalHeaderKey(s.Header)
		if s.Format == "" {
			s.Format = valueToken
		}
		if strings.Count(s.Format, valueToken) != 1 {
			return Secret{}, fmt.Errorf("secret %s: header format %q must contain %s exactly once", s.Name, s.Format, valueToken)
		}
		if !httpguts.ValidHeaderFieldValue(s.Format) {
			return Secret{}, fmt.Errorf("secret %s: header format %q holds characters not allowed in a header", s.Name, s.Format)
		}
	} else {
		if s.Format != "" {
			return Secret{}, fmt.Errorf("secret %s: a header format needs a header name", s.Name)
		}
		if s.HeaderMode {
			return Secret{}, fmt.Errorf("secret %s: header mode needs a header name", s.Name)
		}
		if len(s.RemoveHeaders) > 0 {
			return Secret{}, fmt.Errorf("secret %s: removing headers needs a header name", s.Name)
		}
	}
	s.RemoveHeaders = canonHeaders(s.RemoveHeaders)
	for _, h := range s.RemoveHeaders {
		if !httpguts.ValidHeaderFieldName(h) {
			return Secret{}, fmt.Errorf("secret %s: invalid header name %q", s.Name, h)
		}
		if h == s.Header {
			return Secret{}, fmt.Errorf("secret %s: header %s is both set and removed", s.Name, h)
		}
	}

	for _, p := range s.Paths {
		if err := validPathPattern(p); err != nil {
			return Secret{}, fmt.Errorf("secret %s: %w", s.Name, err)
		}
	}
	if s.PathTemplate != "" && s.PathRegex != "" {
		return Secret{}, fmt.Errorf("secret %s: set a path template or a path regex, not both", s.Name)
	}
	if s.PathTemplate != "" {
		re, err := templateRegex(s.PathTemplate)
		if err != nil {
			return Secret{}, fmt.Errorf("secret %s: %w", s.Name, err)
		}
		s.PathRegex = re
	}
	if s.PathRegex != "" {
		if _, err := compilePathRegex(s.PathRegex); err != nil {
			return Secret{}, fmt.Errorf("secret %s: %w", s.Name, err)
		}
	}

	var env []string
	for _, e := range s.Env {
		if !envRE.MatchString(e) {
			return Secret{}, fmt.Errorf("secret %s: invalid environment variable name %q", s.Name, e)
		}
		if !slices.Contains(env, e) {
			env = append(env, e)
		}
	}
	s.Env = env
	s.Hosts = nilIfEmpty(s.Hosts)
	s.Paths = nilIfEmpty(slices.Clone(s.Paths))
	return s, nil
}

func canonHeaders(hs []string) []string {
	var out []string
	for _, h := range hs {
		h = http.CanonicalHeaderKey(strings.TrimSpace(h))
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// validValue rejects values that would break headers or make scrubbing and
// redaction unsafe. The error never includes the value.
func validValue(v []byte) error {
	if len(v) < minValueLen {
		return fmt.Errorf("secret value too short (%d bytes, need at least %d)", len(v), minValueLen)
	}
	if len(v) > maxValueLen {
		return fmt.Errorf("secret value too long (%d bytes, at most %d)", len(v), maxValueLen)
	}
	for i, c := range v {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("secret value holds a control character at byte %d (values must fit in an HTTP header)", i)
		}
	}
	if strings.Contains(string(v), placeholderPrefix) {
		return fmt.Errorf("secret value looks like a clawd placeholder; pass the real key")
	}
	return nil
}

// validPlaceholder checks a placeholder read back from the store.
func validPlaceholder(name, ph string) bool {
	rest, ok := strings.CutPrefix(ph, placeholderPrefix+name+"-")
	if !ok || len(rest) != 32 {
		return false
	}
	for _, c := range rest {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

// validPathPattern checks a Paths entry: absolute, no dot segments.
func validPathPattern(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("invalid path pattern %q: must start with /", p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("invalid path pattern %q: no . or .. segments", p)
		}
		if strings.Contains(seg, "*") && seg != "*" && seg != "**" {
			return fmt.Errorf("invalid path pattern %q: * and ** must be whole segments", p)
		}
	}
	return nil
}

// pathMatches matches a request path against a segment-aware pattern: "*"
// is exactly one segment, "**" any number of segments (including none).
// A path with dot segments never matches: the upstream might resolve them
// and land outside the pattern.
func pathMatches(pattern, path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	ps := strings.Split(path[1:], "/")
	for _, s := range ps {
		if s == "." || s == ".." {
			return false
		}
	}
	return matchSegs(strings.Split(pattern[1:], "/"), ps)
}

func matchSegs(pat, segs []string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case "**":
			for i := 0; i <= len(segs); i++ {
				if matchSegs(pat[1:], segs[i:]) {
					return true
				}
			}
			return false
		case "*":
			if len(segs) == 0 {
				return false
			}
		default:
			if len(segs) == 0 || segs[0] != pat[0] {
				return false
			}
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

func (s *Secret) pathAllowed(path string) bool {
	if len(s.Paths) == 0 {
		return true
	}
	for _, p := range s.Paths {
		if pathMatches(p, path) {
			return true
		}
	}
	return false
}

// templateRegex turns "/bot{value}/**" into an anchored regex whose single
// group is the {value} part (one path segment's worth of characters).
func templateRegex(t string) (string, error) {
	if !strings.HasPrefix(t, "/") {
		return "", fmt.Errorf("invalid path template %q: must start with /", t)
	}
	if strings.Count(t, valueToken) != 1 {
		return "", fmt.Errorf("invalid path template %q: must contain %s exactly once", t, valueToken)
	}
	before, after, _ := strings.Cut(t, valueToken)
	if strings.Contains(before, "*") {
		return "", fmt.Errorf("invalid path template %q: wildcards only after %s", t, valueToken)
	}
	re := "^" + regexp.QuoteMeta(before) + "([^/]*)"
	// What follows {value} up to the first wildcard must match literally;
	// the rest is free.
	lit, _, wild := strings.Cut(after, "*")
	re += regexp.QuoteMeta(lit)
	if !wild {
		re += "$"
	}
	return re, nil
}

func compilePathRegex(s string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return nil, fmt.Errorf("invalid path regex: %w", err)
	}
	if re.NumSubexp() != 1 {
		return nil, fmt.Errorf("invalid path regex %q: needs exactly one capture group, has %d", s, re.NumSubexp())
	}
	return re, nil
}
