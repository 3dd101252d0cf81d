package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// ErrPlaceholderMisuse is wrapped by the error Inject returns (and a body
// read fails with) when a request carries the placeholder of a secret to a
// host, or a path, the secret is not bound to. The proxy answers 403 and
// forwards nothing; the audit event is "exfiltration".
var ErrPlaceholderMisuse = errors.New("placeholder of a secret sent where the secret is not bound")

// MisuseError names the secret (never its value) and where its placeholder
// was found.
type MisuseError struct {
	Secret string // secret name
	Host   string // destination host of the request
	Where  string // "header Authorization", "query", "path", "body", "host", "userinfo"
	// OutsidePaths is set when the host is bound but the request path is
	// outside the secret's Paths.
	OutsidePaths bool
}

func (e *MisuseError) Error() string {
	why := "which is not bound to that host"
	if e.OutsidePaths {
		why = "outside the paths that secret is limited to"
	}
	return fmt.Sprintf("placeholder of secret %s in %s of a request to %q, %s: %v", e.Secret, e.Where, e.Host, why, ErrPlaceholderMisuse)
}

func (e *MisuseError) Unwrap() error { return ErrPlaceholderMisuse }

// maxBufferedBody is the largest body with a known length that is read
// whole: misuse in it is found before anything is forwarded, and
// Content-Length stays exact. Larger or unknown-length bodies stream.
const maxBufferedBody = 1 << 20

// Injection is what Inject did to one request. It scrubs the response and
// tells the audit log which secrets were used. Safe for concurrent use: the
// request body may still be streaming in the transport's goroutine.
type Injection struct {
	store *Store
	st    *state
	extra []pair // request-specific scrub rules (Basic credentials we built)
	// streamed are the secrets a streamed request body may still inject
	// when the response arrives (HTTP/2 and HTTP/1 servers may answer
	// before the body is done): scrubbed as if injected.
	streamed []*entry

	mu     sync.Mutex
	names  []string
	misuse error
}

// Names returns the secrets injected into the request so far, sorted. For a
// streamed body it is complete once the body has been read.
func (inj *Injection) Names() []string {
	if inj == nil {
		return nil
	}
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return slices.Clone(inj.names)
}

// Misuse returns the ErrPlaceholderMisuse error found while streaming the
// request body, or nil. The transport's error for the aborted request may
// not wrap it, so the proxy should check this after RoundTrip fails.
func (inj *Injection) Misuse() error {
	if inj == nil {
		return nil
	}
	inj.mu.Lock()
	defer inj.mu.Unlock()
	return inj.misuse
}

func (inj *Injection) used(name string) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if i, found := slices.BinarySearch(inj.names, name); !found {
		inj.names = slices.Insert(inj.names, i, name)
		inj.store.metrics.injected([]string{name})
	}
}

func (inj *Injection) setMisuse(err error) {
	inj.mu.Lock()
	defer inj.mu.Unlock()
	if inj.misuse == nil {
		inj.misuse = err
		var me *MisuseError
		if errors.As(err, &me) {
			inj.store.metrics.misused(me.Secret)
		}
	}
}

// Inject replaces, in req, the placeholders of secrets bound to host (the
// request's destination, port ignored) by their values: in every header
// (including inside "Basic base64(user:placeholder)"), the path, the
// secret's path template or regex, and the query and body for secrets with
// Query and Body set. Header-mode secrets set their header even if the agent sent none.
// Call it after the policy allowed the request, with the request about to
// be sent upstream.
//
// If any part of the request carries the placeholder of a secret not bound
// to host, or outside the secret's Paths, Inject returns an error wrapping
// ErrPlaceholderMisuse and leaves headers, URL and (except for a consumed
// small body) the request untouched: answer 403, forward nothing.
//
// Bodies: a body with a known length up to 1 MiB is read whole, so misuse
// in it fails Inject itself and Content-Length is fixed up exactly.
// Larger or chunked bodies are replaced while streaming (Content-Length
// becomes -1 if replacements may change the length); a misused placeholder
// in such a body makes the body's Read fail before the placeholder's bytes
// are forwarded, which aborts the upstream request, and Injection.Misuse
// reports it. Bodies with a Content-Encoding other than identity are
// passed through unscanned.
//
// When some secret is bound to host, Accept-Encoding is removed so the
// response arrives uncompressed and ScrubResponse can see it.
func (s *Store) Inject(req *http.Request, host string) (*Injection, error) {
	st := s.snap.Load()
	inj := &Injection{store: s, st: st}
	if len(st.inject) == 0 || req == nil || req.URL == nil {
		return inj, nil
	}
	host = hostname.Normalize(host)

	var active, forbidden []*entry
	for _, e := range st.inject { // never a Clawd secret
		if e.meta.boundTo(host) && e.meta.pathAllowed(req.URL.Path) {
			active = append(active, e)
		} else {
			forbidden = append(forbidden, e)
		}
	}
	misuse := func(e *entry, where string) error {
		err := &MisuseError{Secret: e.meta.Name, Host: host, Where: where, OutsidePaths: e.meta.boundTo(host)}
		inj.setMisuse(err)
		return err
	}
	check := func(where string, vs ...string) error {
		for _, e := range forbidden {
			for _, v := range vs {
				if strings.Contains(v, e.meta.Placeholder) {
					return misuse(e, where)
				}
			}
		}
		return nil
	}

	// Look everywhere first, change nothing until the request is known clean.
	if err := check("host", host, req.Host); err != nil {
		return nil, err
	}
	if u := req.URL.User; u != nil {
		pw, _ := u.Password()
		if err := check("userinfo", u.Username(), pw); err != nil {
			return nil, err
		}
	}
	for name, vs := range req.Header {
		where := "header " + name
		if err := check(where, strings.ToLower(name)); err != nil {
			return nil, err
		}
		if err := check(where, vs...); err != nil {
			return nil, err
		}
		for _, v := range vs {
			if dec, ok := decodeBasic(v); ok {
				err := check(where, string(dec))
				clear(dec)
				if err != nil {
					return nil, err
				}
			}
		}
	}
	for name, vs := range req.Trailer {
		if err := check("trailer "+name, vs...); err != nil {
			return nil, err
		}
	}
	uq, _ := url.QueryUnescape(req.URL.RawQuery)
	if err := check("query", req.URL.RawQuery, uq); err != nil {
		return nil, err
	}
	if err := check("path", req.URL.Path, req.URL.RawPath); err != nil {
		return nil, err
	}

	// Body first: a small body can still fail the request with misuse, and
	// then the headers and URL must stay untouched.
	if err := inj.body(req, host, active, forbidden, misuse); err != nil {
		return nil, err
	}
	inj.headers(req, active)
	inj.url(req, active)
	if len(active) > 0 {
		req.Header.Del("Accept-Encoding")
	}
	return inj, nil
}

func (inj *Injection) headers(req *http.Request, active []*entry) {
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	for _, e := range active {
		ph := e.meta.Placeholder
		formatted := func() string { return strings.Replace(e.meta.Format, valueToken, string(e.value), 1) }
		// The secret's own header holding the placeholder in any form is
		// rewritten to the configured format ("token ph" -> "Bearer value").
		if e.meta.Header != "" && !e.meta.HeaderMode {
			for _, v := range req.Header.Values(e.meta.Header) {
				dec, ok := decodeBasic(v)
				inBasic := ok && bytes.Contains(dec, []byte(ph))
				clear(dec)
				if strings.Contains(v, ph) || inBasic {
					req.Header.Set(e.meta.Header, formatted())
					inj.used(e.meta.Name)
					break
				}
			}
		}
		for name, vs := range req.Header {
			for i, v := range vs {
				if strings.Contains(v, ph) {
					vs[i] = strings.ReplaceAll(v, ph, string(e.value))
					inj.used(e.meta.Name)
					continue
				}
				dec, ok := decodeBasic(v)
				if !ok || !bytes.Contains(dec, []byte(ph)) {
					clear(dec)
					continue
				}
				origEnc := strings.TrimSpace(v[6:])
				prefix := v[:len(v)-len(strings.TrimLeft(v[6:], " \t"))]
				real := bytes.ReplaceAll(dec, []byte(ph), e.value)
				enc := base64.StdEncoding.EncodeToString(real)
				clear(real)
				vs[i] = prefix + enc
				// If the server echoes the credentials we built, the agent
				// gets its own encoded placeholder back.
				inj.extra = append(inj.extra, pair{old: []byte(enc), new: []byte(origEnc)})
				clear(dec)
				inj.used(e.meta.Name)
			}
			req.Header[name] = vs
		}
		if e.meta.HeaderMode {
			for _, h := range e.meta.RemoveHeaders {
				req.Header.Del(h)
			}
			req.Header.Set(e.meta.Header, formatted())
			inj.used(e.meta.Name)
		}
	}
}

// decodeBasic returns the decoded credentials of a "Basic ..." value.
func decodeBasic(v string) ([]byte, bool) {
	if len(v) < 6 || !strings.EqualFold(v[:6], "basic ") {
		return nil, false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[6:]))
	if err != nil {
		return nil, false
	}
	return dec, true
}

func (inj *Injection) url(req *http.Request, active []*entry) {
	u := req.URL
	changed := false
	rawPath := u.EscapedPath()
	for _, e := range active {
		ph := e.meta.Placeholder
		if e.meta.Query && strings.Contains(u.RawQuery, ph) {
			u.RawQuery = strings.ReplaceAll(u.RawQuery, ph, url.QueryEscape(string(e.value)))
			inj.used(e.meta.Name)
			changed = true
		}
		if strings.Contains(rawPath, ph) {
			rawPath = strings.ReplaceAll(rawPath, ph, url.PathEscape(string(e.value)))
			inj.used(e.meta.Name)
			changed = true
		}
		if e.pathRE != nil {
			if m := e.pathRE.FindStringSubmatchIndex(rawPath); m != nil && m[2] >= 0 {
				rawPath = rawPath[:m[2]] + url.PathEscape(string(e.value)) + rawPath[m[3]:]
				inj.used(e.meta.Name)
				changed = true
			}
		}
	}
	if !changed {
		return
	}
	if p, err := url.PathUnescape(rawPath); err == nil {
		u.Path, u.RawPath = p, rawPath
	}
	if req.RequestURI != "" {
		req.RequestURI = u.RequestURI()
	}
}

func (inj *Injection) body(req *http.Request, host string, active, forbidden []*entry, misuse func(*entry, string) error) error {
	if req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	if ce := req.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return nil
	}
	var pairs []pair
	replacing := false
	for _, e := range active {
		if e.meta.Body {
			name := e.meta.Name
			pairs = append(pairs, pair{old: []byte(e.meta.Placeholder), new: e.value, hit: func() { inj.used(name) }})
			replacing = true
		}
	}
	for _, e := range forbidden {
		pairs = append(pairs, pair{old: []byte(e.meta.Placeholder), err: &MisuseError{
			Secret: e.meta.Name, Host: host, Where: "body", OutsidePaths: e.meta.boundTo(host),
		}})
	}
	m := newMatcher(pairs)
	if m.empty() {
		return nil
	}
	// For client requests ContentLength 0 with a body means "unknown".
	if req.ContentLength > 0 && req.ContentLength <= maxBufferedBody {
		b, err := io.ReadAll(io.LimitReader(req.Body, req.ContentLength+1))
		req.Body.Close()
		if err != nil {
			clear(b)
			return fmt.Errorf("read request body: %w", err)
		}
		if int64(len(b)) != req.ContentLength {
			clear(b)
			return fmt.Errorf("request body is %d bytes, Content-Length says %d", len(b), req.ContentLength)
		}
		out, err := m.replace(b)
		clear(b)
		if err != nil {
			clear(out)
			var me *MisuseError
			if errors.As(err, &me) {
				for _, e := range forbidden {
					if e.meta.Name == me.Secret {
						return misuse(e, "body")
					}
				}
			}
			return err
		}
		req.Body = io.NopCloser(bytes.NewReader(out))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(out)), nil }
		req.ContentLength = int64(len(out))
		if req.Header.Get("Content-Length") != "" {
			req.Header.Set("Content-Length", strconv.Itoa(len(out)))
		}
		return nil
	}
	req.Body = newReplaceReader(req.Body, m, inj.setMisuse)
	req.GetBody = nil // a retry would resend the original body
	for _, e := range active {
		if e.meta.Body {
			inj.streamed = append(inj.streamed, e)
		}
	}
	if replacing {
		req.ContentLength = -1
		req.Header.Del("Content-Length")
	}
	return nil
}

// scrubMatcher maps the values of the secrets injected into this request
// (and credentials built for it) back to placeholders. Other secrets
// cannot be in the answer, since this request never carried them: the
// response is not scanned, nor held back, for them.
func (inj *Injection) scrubMatcher() *matcher {
	var pairs []pair
	add := func(e *entry) {
		for _, p := range pairs {
			if bytes.Equal(p.old, e.value) {
				return
			}
		}
		pairs = append(pairs, pair{old: e.value, new: []byte(e.meta.Placeholder)})
	}
	for _, name := range inj.Names() {
		if e := inj.st.byName[name]; e != nil {
			add(e)
		}
	}
	for _, e := range inj.streamed {
		add(e)
	}
	pairs = append(pairs, inj.extra...)
	return newMatcher(pairs)
}

// ScrubResponse replaces every real secret value in the response headers
// and body with its placeholder, so an endpoint that echoes a key back
// never shows the agent the value. The body is scrubbed while streaming
// (values split across reads are found); a known length up to 1 MiB is
// read whole so Content-Length stays exact, otherwise it becomes -1.
// Compressed bodies (Content-Encoding set) cannot be scrubbed; Inject
// removes Accept-Encoding to avoid them.
func (inj *Injection) ScrubResponse(resp *http.Response) {
	if inj == nil || resp == nil {
		return
	}
	m := inj.scrubMatcher()
	if m.empty() {
		return
	}
	scrubHeader(m, resp.Header)
	scrubHeader(m, resp.Trailer) // filled after the body is read; best effort
	if resp.Body == nil || resp.Body == http.NoBody {
		return
	}
	if resp.Request != nil && resp.Request.Method == http.MethodHead {
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The "body" of a 101 is the upgraded stream, which ReverseProxy
		// must get as the upstream connection itself (a wrapped body makes
		// it refuse the upgrade with 502). Its frames are not scrubbed.
		return
	}
	if resp.ContentLength >= 0 && resp.ContentLength <= maxBufferedBody {
		b, err := io.ReadAll(io.LimitReader(resp.Body, resp.ContentLength))
		resp.Body.Close()
		if err != nil {
			clear(b)
			resp.Body = io.NopCloser(&errReader{err: fmt.Errorf("read response body: %w", err)})
			return
		}
		out, _ := m.replace(b)
		clear(b)
		resp.Body = io.NopCloser(bytes.NewReader(out))
		resp.ContentLength = int64(len(out))
		if resp.Header.Get("Content-Length") != "" {
			resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
		}
		return
	}
	resp.Body = newReplaceReader(resp.Body, m, nil)
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
}

func scrubHeader(m *matcher, h http.Header) {
	for name, vs := range h {
		for i, v := range vs {
			out, _ := m.replace([]byte(v))
			vs[i] = string(out)
		}
		h[name] = vs
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// Redact replaces every secret value and placeholder in b with
// "[REDACTED:name]", for approval cards, logs and audit lines. It returns
// a new slice.
func (s *Store) Redact(b []byte) []byte {
	out, _ := s.snap.Load().redact.replace(b)
	return out
}

// RedactString is Redact for strings.
func (s *Store) RedactString(v string) string {
	return string(s.Redact([]byte(v)))
}

// Hint is the x-clawd-hint header value the proxy adds to a 401/403 from a
// host no secret is bound to. host comes from the agent: anything that
// `clawd secret set --host` would not take is replaced by "HOST".
func Hint(host string) string {
	h := hostname.Normalize(host)
	if _, err := hostname.Pattern(h); err != nil {
		h = "HOST"
	}
	name := "NAME"
	if labels := strings.Split(h, "."); len(labels) >= 2 && !hostname.IsIP(h) {
		if l := strings.ReplaceAll(labels[len(labels)-2], "_", "-"); nameRE.MatchString(l) {
			name = l
		}
	}
	return fmt.Sprintf("no secret is bound to %s; run: clawd secret set %s --host %s", h, name, h)
}
