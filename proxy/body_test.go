package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/adler32"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
	dto "github.com/prometheus/client_model/go"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/secrets"
)

// Encoders for the codings clawd decodes.

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zl(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func fl(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.DefaultCompression)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func br(b []byte) []byte {
	var buf bytes.Buffer
	w := brotli.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

var zstdEnc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

func zs(b []byte) []byte { return zstdEnc.EncodeAll(b, nil) }

// codingCases are the Content-Encoding values clawd must see through, with
// an encoder producing such a body.
var codingCases = []struct {
	name, ce string
	enc      func([]byte) []byte
}{
	{"gzip", "gzip", gz},
	{"x-gzip", "x-gzip", gz},
	{"GZIP upper case", "GZIP", gz},
	{"deflate zlib", "deflate", zl},
	{"deflate raw", "deflate", fl},
	{"br", "br", br},
	{"zstd", "zstd", zs},
	{"gzip then br", "gzip, br", func(b []byte) []byte { return br(gz(b)) }},
	{"identity, zstd", "identity, zstd", zs},
}

func postEncoded(t *testing.T, cl *http.Client, url, ce string, body []byte) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	if ce != "" {
		req.Header.Set("Content-Encoding", ce)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// bufferedInUse waits until no request-body bytes are held (requests end
// asynchronously) and fails if some stay.
func bufferedInUse(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		total, _ := s.budget.inUse("")
		if total == 0 && gaugeValue(s.m.buffered) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffered body bytes still held: %d (gauge %v)", total, gaugeValue(s.m.buffered))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func gaugeValue(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestBodyEncodedContains: body conditions see the decoded body, for every
// coding, over HTTP/1.1 and intercepted HTTP/2; a body only inspected goes
// upstream byte for byte as the agent sent it, Content-Encoding intact.
func TestBodyEncodedContains(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		for _, cc := range codingCases {
			t.Run(fmt.Sprintf("h2=%v/%s", h2, cc.name), func(t *testing.T) {
				up := newUpstream(t, h2, h2, nil)
				dec := newDecider(policy.Allow, rule{name: "no-rm", bodyContains: "rm -rf", action: policy.Deny})
				var cl *http.Client
				scheme := "http"
				if h2 {
					dec.intercept["example.com"] = true
					scheme = "https"
				}
				e := newEnv(t, dec, func(c *Config) {
					if h2 {
						c.UpstreamRoots = upstreamPool(up)
					}
				})
				if h2 {
					pool := x509.NewCertPool()
					pool.AppendCertsFromPEM(e.ca.CertPEM())
					cl = e.client(up.addr(), &tls.Config{RootCAs: pool}, true)
				} else {
					cl = e.client(up.addr(), nil, false)
				}
				url := scheme + "://example.com/v1/messages"

				bad := cc.enc([]byte(`{"tool":"bash","cmd":"rm -rf /"}`))
				resp := postEncoded(t, cl, url, cc.ce, bad)
				if m := jsonBody(t, resp); resp.StatusCode != 403 || m["rule"] != "no-rm" {
					t.Fatalf("encoded deny: %d %v", resp.StatusCode, m)
				}
				if up.hits.Load() != 0 {
					t.Fatal("denied body reached the upstream")
				}

				plain := []byte(`{"tool":"bash","cmd":"ls -l"}`)
				good := cc.enc(plain)
				resp = postEncoded(t, cl, url, cc.ce, good)
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("encoded allow: %d", resp.StatusCode)
				}
				r, b := up.last()
				if !bytes.Equal(b, good) || r.Header.Get("Content-Encoding") != cc.ce {
					t.Errorf("upstream got %q (Content-Encoding %q), want the agent's bytes with %q", b, r.Header.Get("Content-Encoding"), cc.ce)
				}
				dec.mu.Lock()
				last := dec.inputs[len(dec.inputs)-1]
				dec.mu.Unlock()
				if !last.BodyKnown || !bytes.Equal(last.Body, plain) {
					t.Errorf("policy saw body %q, want the decoded %q", last.Body, plain)
				}
				bufferedInUse(t, e.srv)
			})
		}
	}
}

// secretEnv is a proxy with the real secret store: secret "api" (body
// replacement on) bound to api.example.com.
func secretEnv(t *testing.T, dec *fakeDecider, mod func(*Config)) (*env, *upstream, string, string) {
	t.Helper()
	dir := t.TempDir()
	st, err := secrets.Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const real = "sk-real-value-0123456789"
	sec, err := st.Set(secrets.Secret{Name: "api", Hosts: []string{"api.example.com"}, Body: true}, []byte(real))
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, dec, func(c *Config) {
		c.Injector = storeInjector{st}
		c.Names = fakeNames{"api.example.com": up.addr().Addr(), "evil.example.com": up.addr().Addr()}
		if mod != nil {
			mod(c)
		}
	})
	return e, up, sec.Placeholder, real
}

// TestBodyEncodedInjection: a placeholder inside a compressed body is replaced
// (the upstream gets the new content decoded, Content-Encoding removed,
// exact Content-Length); a compressed body without one goes unchanged; a
// placeholder for another host inside a compressed body is misuse, found
// before anything is forwarded, for small and large (streamed) bodies.
func TestBodyEncodedInjection(t *testing.T) {
	for _, cc := range codingCases {
		t.Run(cc.name, func(t *testing.T) {
			e, up, ph, real := secretEnv(t, newDecider(policy.Allow), nil)
			cl := e.client(up.addr(), nil, false)

			resp := postEncoded(t, cl, "http://api.example.com/v1", cc.ce, cc.enc([]byte(`{"key":"`+ph+`"}`)))
			resp.Body.Close()
			r, b := up.last()
			if resp.StatusCode != 200 || r == nil {
				t.Fatalf("inject: %d", resp.StatusCode)
			}
			if want := `{"key":"` + real + `"}`; string(b) != want || r.Header.Get("Content-Encoding") != "" || r.ContentLength != int64(len(want)) {
				t.Errorf("upstream got %q (Content-Encoding %q, length %d), want %q decoded", b, r.Header.Get("Content-Encoding"), r.ContentLength, want)
			}
			if ent := e.audit.next(t); ent.Action != "allow" || ent.BytesOut != int64(len(b)) {
				t.Errorf("audit = %+v", ent)
			}

			// Past the injector's 1 MiB whole-body limit it streams; still replaced.
			big := strings.Repeat("y", 2<<20) + ph
			resp = postEncoded(t, cl, "http://api.example.com/v1", cc.ce, cc.enc([]byte(big)))
			resp.Body.Close()
			if r, b = up.last(); resp.StatusCode != 200 || string(b) != strings.Repeat("y", 2<<20)+real || r.Header.Get("Content-Encoding") != "" {
				t.Errorf("large encoded body: %d, upstream got %d bytes (Content-Encoding %q)", resp.StatusCode, len(b), r.Header.Get("Content-Encoding"))
			}
			e.audit.next(t)

			clean := cc.enc([]byte(`{"key":"none here"}`))
			resp = postEncoded(t, cl, "http://api.example.com/v1", cc.ce, clean)
			resp.Body.Close()
			if r, b = up.last(); resp.StatusCode != 200 || !bytes.Equal(b, clean) || r.Header.Get("Content-Encoding") != cc.ce {
				t.Errorf("clean body: %d, upstream got %q (%q), want the agent's bytes", resp.StatusCode, b, r.Header.Get("Content-Encoding"))
			}
			e.audit.next(t)

			hits := up.hits.Load()
			for _, size := range []int{0, 3 << 20} { // small, and past the injector's 1 MiB whole-body limit
				body := strings.Repeat("x", size) + `{"key":"` + ph + `"}`
				resp = postEncoded(t, cl, "http://evil.example.com/v1", cc.ce, cc.enc([]byte(body)))
				if m := jsonBody(t, resp); resp.StatusCode != 403 || m["error"] != "placeholder_misuse" {
					t.Errorf("misuse in a %d-byte encoded body: %d %v", len(body), resp.StatusCode, m)
				}
				if ent := e.audit.next(t); ent.Event != "exfiltration" {
					t.Errorf("audit = %+v", ent)
				}
			}
			if up.hits.Load() != hits {
				t.Error("a body with a misused placeholder reached the upstream")
			}
			bufferedInUse(t, e.srv)
		})
	}
}

// holdRecorder approves every hold after recording it.
type holdRecorder struct {
	mu    sync.Mutex
	holds []approval.Hold
}

func (a *holdRecorder) Request(_ context.Context, h approval.Hold) approval.Outcome {
	a.mu.Lock()
	a.holds = append(a.holds, h)
	a.mu.Unlock()
	return approval.Outcome{Approved: true, Status: approval.StatusApproved, ID: "a1", By: "cli"}
}

// TestBodyEncodedPreview: the approval card shows the decoded text and its
// size; the hash is of the bytes that go upstream, which are the agent's.
func TestBodyEncodedPreview(t *testing.T) {
	for _, cc := range codingCases {
		t.Run(cc.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			ap := &holdRecorder{}
			e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap })
			plain := []byte(`{"title":"please merge","pad":"` + strings.Repeat("p", 10<<10) + `"}`)
			raw := cc.enc(plain)
			resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/merge", cc.ce, raw)
			resp.Body.Close()
			if resp.StatusCode != 200 || len(ap.holds) != 1 {
				t.Fatalf("approved: %d, %d holds", resp.StatusCode, len(ap.holds))
			}
			h := ap.holds[0]
			sum := sha256.Sum256(raw)
			if !bytes.HasPrefix(h.Body, []byte(`{"title":"please merge"`)) || len(h.Body) != defaultPreviewLimit ||
				h.BodySize != int64(len(plain)) || h.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("hold preview %q…, size %d, sha %s; want decoded text, size %d, sha of the raw bytes", h.Body[:min(40, len(h.Body))], h.BodySize, h.BodySHA256, len(plain))
			}
			if r, b := up.last(); !bytes.Equal(b, raw) || r.Header.Get("Content-Encoding") != cc.ce {
				t.Error("the approved request did not go upstream as the agent sent it")
			}
			bufferedInUse(t, e.srv)
		})
	}
}

// TestBodyDecompressionBomb: a body decoding past MaxHoldBody is refused with
// 413 while it decodes, for every coding, with nothing left held.
func TestBodyDecompressionBomb(t *testing.T) {
	zeros := make([]byte, 24<<20)
	cases := append(codingCases[:0:0], codingCases...)
	cases = append(cases, struct {
		name, ce string
		enc      func([]byte) []byte
	}{"gzip of gzip", "gzip, gzip", func(b []byte) []byte { return gz(gz(b)) }})
	for _, cc := range cases {
		t.Run(cc.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			e := newEnv(t, newDecider(policy.Allow, rule{name: "scan", bodyContains: "x", action: policy.Deny}), func(c *Config) { c.MaxHoldBody = 1 << 20 })
			bomb := cc.enc(zeros)
			if len(bomb) > 1<<20 {
				t.Fatalf("test bomb is %d bytes", len(bomb))
			}
			resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/", cc.ce, bomb)
			m := jsonBody(t, resp)
			if resp.StatusCode != 413 || m["error"] != "body_too_large" || !strings.Contains(m["reason"].(string), "decod") {
				t.Errorf("bomb: %d %v", resp.StatusCode, m)
			}
			if up.hits.Load() != 0 {
				t.Error("bomb forwarded")
			}
			bufferedInUse(t, e.srv)
		})
	}
}

// TestBodyUnknownEncodingRefusedWhenNeeded: a coding clawd cannot decode is
// refused (415) whenever the body must be read (body condition, hold,
// secret scanning), and passes untouched when nothing reads the body.
func TestBodyUnknownEncodingRefusedWhenNeeded(t *testing.T) {
	body := []byte("\x1f\x9d\x90opaque")
	t.Run("body condition", func(t *testing.T) {
		up := newUpstream(t, false, false, nil)
		e := newEnv(t, newDecider(policy.Allow, rule{name: "scan", bodyContains: "x", action: policy.Deny}), nil)
		cl := e.client(up.addr(), nil, false)
		for _, ce := range []string{"compress", "x-custom", "gzip, gzip, gzip, gzip", "gzip, snappy"} {
			resp := postEncoded(t, cl, "http://api.example.com/", ce, body)
			if m := jsonBody(t, resp); resp.StatusCode != 415 || m["error"] != "unsupported_content_encoding" {
				t.Errorf("%q: %d %v", ce, resp.StatusCode, m)
			}
		}
		resp := postEncoded(t, cl, "http://api.example.com/", "identity", []byte("plain"))
		resp.Body.Close()
		if resp.StatusCode != 200 || up.hits.Load() != 1 {
			t.Errorf("identity: %d, upstream hits %d", resp.StatusCode, up.hits.Load())
		}
		bufferedInUse(t, e.srv)
	})
	t.Run("hold", func(t *testing.T) {
		up := newUpstream(t, false, false, nil)
		ap := &holdRecorder{}
		e := newEnv(t, newDecider(policy.Approve), func(c *Config) { c.Approver = ap })
		resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/", "compress", body)
		if m := jsonBody(t, resp); resp.StatusCode != 415 || len(ap.holds) != 0 || up.hits.Load() != 0 {
			t.Errorf("held unknown coding: %d %v, %d holds", resp.StatusCode, m, len(ap.holds))
		}
	})
	t.Run("secret scanning", func(t *testing.T) {
		e, up, _, _ := secretEnv(t, newDecider(policy.Allow), nil)
		resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/", "compress", body)
		if m := jsonBody(t, resp); resp.StatusCode != 415 || up.hits.Load() != 0 {
			t.Errorf("unknown coding with secrets stored: %d %v", resp.StatusCode, m)
		}
	})
	t.Run("nothing reads the body", func(t *testing.T) {
		up := newUpstream(t, false, false, nil)
		e := newEnv(t, newDecider(policy.Allow), nil)
		resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/", "compress", body)
		resp.Body.Close()
		if r, b := up.last(); resp.StatusCode != 200 || !bytes.Equal(b, body) || r.Header.Get("Content-Encoding") != "compress" {
			t.Errorf("passthrough: %d %q", resp.StatusCode, b)
		}
	})
}

// zlibRawPolyglot is a "deflate" body that is a valid zlib stream and also
// a complete raw deflate stream with other content.
func zlibRawPolyglot() []byte {
	const total = 2 + 5 + 0xFEFE + 4
	in := make([]byte, total)
	for i := range in {
		in[i] = 'a' + byte(i%26)
	}
	// zlib header 78 01; as raw deflate: a non-final stored block whose
	// LEN/NLEN are the next four bytes (0x0101, 0xFEFE).
	copy(in, []byte{0x78, 0x01, 0x01, 0xFE, 0xFE, 0x01, 0x01})
	// zlib: one final stored block of 0xFEFE bytes from offset 7.
	// raw: 257 bytes from offset 5, then a final stored block at 262 up to the end.
	rawLen := uint16(total - 267)
	in[262], in[263], in[264], in[265], in[266] = 0x01, byte(rawLen), byte(rawLen>>8), byte(^rawLen), byte(^rawLen>>8)
	binary.BigEndian.PutUint32(in[total-4:], adler32.Checksum(in[7:total-4]))
	return in
}

// TestBodyCorruptEncoded: truncated, corrupt, trailing-data and ambiguous
// bodies are refused with 400 when a rule needs them, never allowed.
func TestBodyCorruptEncoded(t *testing.T) {
	text := []byte(strings.Repeat(`{"msg":"hello world"}`, 500))
	g := gz(text)
	corrupt := bytes.Clone(g)
	corrupt[len(corrupt)/2] ^= 0xff
	poly := zlibRawPolyglot()
	if z, err := zlib.NewReader(bytes.NewReader(poly)); err != nil {
		t.Fatal(err)
	} else if _, err := io.ReadAll(z); err != nil {
		t.Fatalf("polyglot is not valid zlib: %v", err)
	}
	if _, err := io.ReadAll(flate.NewReader(bytes.NewReader(poly))); err != nil {
		t.Fatalf("polyglot is not valid raw deflate: %v", err)
	}
	cases := []struct {
		name, ce string
		body     []byte
	}{
		{"gzip truncated", "gzip", g[:len(g)-9]},
		{"gzip header only", "gzip", g[:5]},
		{"gzip corrupt", "gzip", corrupt},
		{"gzip trailing data", "gzip", append(bytes.Clone(g), "junk"...)},
		{"gzip two members", "gzip", append(gz([]byte("innocent")), gz([]byte("second member"))...)},
		{"not gzip", "gzip", text},
		{"zlib truncated", "deflate", zl(text)[:40]},
		{"raw deflate truncated", "deflate", fl(text)[:40]},
		{"zlib raw polyglot", "deflate", poly},
		{"br truncated", "br", br(text)[:20]},
		{"br trailing data", "br", append(br(text), "junk"...)},
		{"not br", "br", text},
		{"zstd truncated", "zstd", zs(text)[:20]},
		{"zstd trailing garbage", "zstd", append(zs(text), "junkjunk"...)},
		{"not zstd", "zstd", text},
		{"gzip, br with the layers swapped", "gzip, br", gz(br(text))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, false, false, nil)
			e := newEnv(t, newDecider(policy.Allow, rule{name: "scan", bodyContains: "forbidden", action: policy.Deny}), nil)
			resp := postEncoded(t, e.client(up.addr(), nil, false), "http://api.example.com/", tc.ce, tc.body)
			m := jsonBody(t, resp)
			if resp.StatusCode != 400 || m["error"] != "body_undecodable" {
				t.Errorf("%d %v", resp.StatusCode, m)
			}
			if tc.name == "zlib raw polyglot" && !strings.Contains(fmt.Sprint(m["reason"]), "ambiguous") {
				t.Errorf("polyglot refused for another reason: %v", m["reason"])
			}
			if up.hits.Load() != 0 {
				t.Error("undecodable body forwarded")
			}
			bufferedInUse(t, e.srv)
		})
	}
}

// serveAs serves one loopback connection as container c's connection to dst.
func serveAs(t *testing.T, srv *Server, c policy.Container, dst netip.AddrPort) net.Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		conn, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		srv.ServeConn(context.Background(), conn, ConnMeta{Container: c, OrigDst: dst})
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func clientAs(t *testing.T, srv *Server, c policy.Container, dst netip.AddrPort) *http.Client {
	tr := &http.Transport{
		DialContext:        func(context.Context, string, string) (net.Conn, error) { return serveAs(t, srv, c, dst), nil },
		DisableCompression: true,
		MaxConnsPerHost:    0,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// gateApprover holds every request until open is closed, then approves.
type gateApprover struct {
	open  chan struct{}
	holds chan approval.Hold
}

func (a *gateApprover) Request(ctx context.Context, h approval.Hold) approval.Outcome {
	a.holds <- h
	select {
	case <-a.open:
		return approval.Outcome{Approved: true, Status: approval.StatusApproved}
	case <-ctx.Done():
		return approval.Outcome{Status: approval.StatusCancelled}
	}
}

// TestBodyBudgetFlood: 50 concurrent held 1 MiB uploads from 3 containers
// against a global budget of 8 MiB (4 MiB per container). Admission is
// counted in bytes: exactly 8 MiB is held, the high-water mark never passes
// 8 MiB or a container's 4 MiB, every other upload gets 503 with
// Retry-After, and once the holds end the budget is back to 0.
func TestBodyBudgetFlood(t *testing.T) {
	const (
		size    = 1 << 20
		uploads = 50
		global  = 8 << 20
		perCtr  = 4 << 20
	)
	up := newUpstream(t, false, false, nil)
	ap := &gateApprover{open: make(chan struct{}), holds: make(chan approval.Hold, uploads)}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) {
		c.Approver = ap
		c.MaxBufferedBytes, c.MaxBufferedBytesPerContainer = global, perCtr
	})
	ctrs := []policy.Container{
		{ID: "c1", Name: "agent-a"}, {ID: "c2", Name: "agent-b"}, {ID: "c3", Name: "agent-c"},
	}
	var clients []*http.Client
	for _, c := range ctrs {
		clients = append(clients, clientAs(t, e.srv, c, up.addr()))
	}
	body := bytes.Repeat([]byte("u"), size)
	type result struct {
		status int
		retry  string
		err    string
	}
	results := make(chan result, uploads)
	for i := 0; i < uploads; i++ {
		go func(i int) {
			resp, err := clients[i%len(clients)].Post(fmt.Sprintf("http://api.example.com/upload/%d", i), "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				results <- result{err: err.Error()}
				return
			}
			m := map[string]any{}
			if resp.StatusCode != 200 {
				m = jsonBody(t, resp)
			} else {
				resp.Body.Close()
			}
			s, _ := m["error"].(string)
			results <- result{status: resp.StatusCode, retry: resp.Header.Get("Retry-After"), err: s}
		}(i)
	}
	// Wait until every upload is either held or answered: nothing here
	// depends on timing.
	held, refused := 0, 0
	perHeld := map[string]int{}
	for held+refused < uploads {
		select {
		case h := <-ap.holds:
			held++
			perHeld[h.Container.ID]++
			if h.BodySize != size {
				t.Errorf("hold of %d bytes", h.BodySize)
			}
		case r := <-results:
			refused++
			if r.status != 503 || r.retry != "10" || r.err != "buffer_budget_exhausted" {
				t.Errorf("refused upload: %+v", r)
			}
		case <-time.After(waitLimit):
			t.Fatalf("stuck with %d held, %d refused", held, refused)
		}
	}
	total, _ := e.srv.budget.inUse("")
	// Held heads count too (headSlack each, at most): the budget is full,
	// never passed.
	if held*size > global || total > global || total < int64(held*size) || (held+1)*(size+headSlack) <= global ||
		gaugeValue(e.srv.m.buffered) != float64(total) {
		t.Errorf("held %d uploads, %d bytes reserved, gauge %v; want the %d-byte budget full and never passed", held, total, gaugeValue(e.srv.m.buffered), global)
	}
	for id, n := range perHeld {
		if n*size > perCtr {
			t.Errorf("container %s holds %d uploads, over its budget", id, n)
		}
	}
	e.srv.budget.mu.Lock()
	peak := e.srv.budget.peak
	e.srv.budget.mu.Unlock()
	if peak > global {
		t.Errorf("high-water mark %d passed the budget %d", peak, global)
	}
	if got := counterValue(e.srv.m.bufferRefused.WithLabelValues("global")) + counterValue(e.srv.m.bufferRefused.WithLabelValues("container")); int(got) != refused {
		t.Errorf("refusal counter %v, want %d", got, refused)
	}
	// Each refusal is audited with its status and why.
	for i := 0; i < refused; i++ {
		if ent := e.audit.next(t); ent.Status != 503 || ent.Action != "deny" || !strings.Contains(ent.Reason, "budget") {
			t.Errorf("audit of a refused upload: %+v", ent)
		}
	}
	close(ap.open)
	for i := 0; i < held; i++ {
		if r := <-results; r.status != 200 {
			t.Errorf("approved upload: %+v", r)
		}
	}
	if up.hits.Load() != int64(held) {
		t.Errorf("upstream saw %d uploads, want %d", up.hits.Load(), held)
	}
	bufferedInUse(t, e.srv)
}

// TestBodyBudgetChunked: a body of unknown length is admitted as it
// arrives and refused when the next bytes would pass the budget (503), or
// with 413 when it alone is bigger than the budget.
func TestBodyBudgetChunked(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	ap := &gateApprover{open: make(chan struct{}), holds: make(chan approval.Hold, 4)}
	e := newEnv(t, newDecider(policy.Approve), func(c *Config) {
		c.Approver = ap
		c.MaxBufferedBytesPerContainer = 1 << 20
		c.MaxHoldBody = 4 << 20
	})
	a := policy.Container{ID: "ca", Name: "a"}
	cl := clientAs(t, e.srv, a, up.addr())
	first := make(chan int, 1)
	go func() {
		resp, err := cl.Post("http://api.example.com/up/1", "", bytes.NewReader(make([]byte, 768<<10)))
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	<-ap.holds
	chunked := func(c *http.Client, n int) *http.Response {
		req, _ := http.NewRequest("POST", "http://api.example.com/up/2", io.NopCloser(bytes.NewReader(make([]byte, n))))
		req.ContentLength = -1
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := chunked(cl, 512<<10)
	if m := jsonBody(t, resp); resp.StatusCode != 503 || m["error"] != "buffer_budget_exhausted" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("chunked past the container budget: %d %v", resp.StatusCode, m)
	}
	_, ctrUse := e.srv.budget.inUse(a.Key())
	if ctrUse < 768<<10 || ctrUse > 768<<10+headSlack {
		t.Errorf("container holds %d bytes after the refusal, want the first upload's %d (and its head)", ctrUse, 768<<10)
	}
	resp = chunked(clientAs(t, e.srv, policy.Container{ID: "cb", Name: "b"}, up.addr()), 2<<20)
	if m := jsonBody(t, resp); resp.StatusCode != 413 || m["error"] != "body_too_large" {
		t.Errorf("chunked bigger than the budget: %d %v", resp.StatusCode, m)
	}
	e.srv.budget.mu.Lock()
	peak := e.srv.budget.peak
	e.srv.budget.mu.Unlock()
	if peak > 2<<20 {
		t.Errorf("high-water mark %d", peak)
	}
	// A held chunked body counts its bytes, not the room grown for them.
	c := policy.Container{ID: "cc", Name: "c"}
	third := make(chan int, 1)
	go func() {
		resp := chunked(clientAs(t, e.srv, c, up.addr()), 300<<10)
		resp.Body.Close()
		third <- resp.StatusCode
	}()
	<-ap.holds
	if _, n := e.srv.budget.inUse(c.Key()); n < 300<<10 || n > 300<<10+headSlack {
		t.Errorf("held chunked body of %d bytes reserves %d (with its head)", 300<<10, n)
	}
	close(ap.open)
	if s := <-first; s != 200 {
		t.Errorf("held upload: %d", s)
	}
	if s := <-third; s != 200 {
		t.Errorf("held chunked upload: %d", s)
	}
	bufferedInUse(t, e.srv)
}

// panicApprover panics inside the hold.
type panicApprover struct{ holds chan approval.Hold }

func (a *panicApprover) Request(_ context.Context, h approval.Hold) approval.Outcome {
	a.holds <- h
	panic("approver bug")
}

// TestBodyBudgetReleasedOnEveryPath: whatever ends a request that buffered
// its body (forwarded, refused, denied, timed out, agent gone, panic, dead
// or aborted upstream, decode errors), the budget is back to 0.
func TestBodyBudgetReleasedOnEveryPath(t *testing.T) {
	text := []byte(`{"a":"b"}`)
	outcome := func(out approval.Outcome) Approver {
		return &fakeApprover{out: out, holds: make(chan approval.Hold, 8)}
	}
	type tc struct {
		name     string
		approver Approver
		upstream http.HandlerFunc
		dead     bool
		ce       string
		body     []byte
		maxHold  int64
		perCtr   int64
		path     string
		// agentGone closes the connection after the request was sent and
		// before it was answered.
		agentGone bool
	}
	hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	cases := []tc{
		{name: "body rule allow, forwarded", path: "/scan/ok", body: text},
		{name: "body rule deny", path: "/scan/deny", body: []byte("forbidden")},
		{name: "gzip, forwarded", path: "/scan/ok", ce: "gzip", body: gz(text)},
		{name: "gzip corrupt", path: "/scan/ok", ce: "gzip", body: gz(text)[:10]},
		{name: "gzip bomb", path: "/scan/ok", ce: "gzip", body: gz(make([]byte, 4<<20)), maxHold: 1 << 20},
		{name: "unknown coding", path: "/scan/ok", ce: "compress", body: text},
		{name: "over MaxHoldBody", path: "/scan/ok", body: make([]byte, 2<<20), maxHold: 1 << 20},
		{name: "over the budget", path: "/scan/ok", body: make([]byte, 2<<20), perCtr: 1 << 20},
		{name: "approved", path: "/hold", body: text, approver: outcome(approval.Outcome{Approved: true, Status: "approved"})},
		{name: "approver denied", path: "/hold", body: text, approver: outcome(approval.Outcome{Status: approval.StatusDenied})},
		{name: "hold timed out", path: "/hold", body: text, approver: outcome(approval.Outcome{Status: approval.StatusTimeout})},
		{name: "agent gone during the hold", path: "/hold", body: text, agentGone: true,
			approver: &fakeApprover{block: true, holds: make(chan approval.Hold, 1), cancelled: make(chan struct{})}},
		{name: "approver panics", path: "/hold", body: text, approver: &panicApprover{holds: make(chan approval.Hold, 1)}},
		{name: "upstream dead", path: "/scan/ok", body: text, dead: true},
		{name: "agent gone while the upstream answers (abort)", path: "/scan/ok", body: text, upstream: hang, agentGone: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, false, false, c.upstream)
			dst := up.addr()
			if c.dead {
				dst = freeAddr(t)
			}
			dec := newDecider(policy.Allow,
				rule{name: "hold", pathPrefix: "/hold", action: policy.Approve},
				rule{name: "scan", pathPrefix: "/scan", bodyContains: "forbidden", action: policy.Deny})
			e := newEnv(t, dec, func(cfg *Config) {
				cfg.Approver = c.approver
				cfg.MaxHoldBody, cfg.MaxBufferedBytesPerContainer = c.maxHold, c.perCtr
				cfg.Names = fakeNames{"api.example.com": dst.Addr()}
			})
			conn := e.dial(dst)
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: %d\r\n", c.path, len(c.body))
			if c.ce != "" {
				head += "Content-Encoding: " + c.ce + "\r\n"
			}
			go func() { io.WriteString(conn, head+"\r\n"); conn.Write(c.body) }()
			if c.agentGone {
				if c.upstream != nil {
					deadline := time.Now().Add(waitLimit)
					for up.hits.Load() == 0 && time.Now().Before(deadline) {
						time.Sleep(time.Millisecond)
					}
				} else {
					<-c.approver.(*fakeApprover).holds
				}
				if total, _ := e.srv.budget.inUse(""); total == 0 {
					t.Error("nothing reserved while the body is held")
				}
				conn.Close()
			} else {
				conn.SetReadDeadline(time.Now().Add(waitLimit))
				io.Copy(io.Discard, io.LimitReader(conn, 1)) // an answer (or the close)
			}
			bufferedInUse(t, e.srv)
		})
	}
}

// TestBodyZstdWindowBounded: a zstd frame asking for a window past RFC 9659's
// 8 MiB is refused before the decoder allocates it, however small the
// content.
func TestBodyZstdWindowBounded(t *testing.T) {
	// Magic, frame header (no content size, not single-segment), window
	// descriptor 2^26 = 64 MiB, then one last raw block of 5 bytes.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3, 0x29, 0x00, 0x00, 's', 'm', 'a', 'l', 'l'}
	m, _ := newMetrics(nil)
	b := newBodyBudget(0, 0, m)
	_, err := decodeBody(context.Background(), nil, frame, []string{"zstd"}, 16<<20, b.lease("k"))
	if be, ok := err.(*bodyError); !ok || be.status != 413 {
		t.Fatalf("64 MiB window: %v", err)
	}
	frame[5] = 13 << 3 // 8 MiB: fine
	l := b.lease("k")
	if out, err := decodeBody(context.Background(), nil, frame, []string{"zstd"}, 16<<20, l); err != nil || string(out) != "small" {
		t.Fatalf("8 MiB window: %q %v", out, err)
	}
	l.release()
	if total, _ := b.inUse(""); total != 0 {
		t.Errorf("%d bytes left reserved", total)
	}
}

func TestBodyContentCodings(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string // "" = none; "!" = refused
	}{
		{nil, ""},
		{[]string{"identity"}, ""},
		{[]string{"gzip"}, "gzip"},
		{[]string{" X-GZip "}, "gzip"},
		{[]string{"gzip, br"}, "gzip,br"},
		{[]string{"gzip", "zstd"}, "gzip,zstd"},
		{[]string{"deflate,,identity"}, "deflate"},
		{[]string{"compress"}, "!"},
		{[]string{"gzip;q=1"}, "!"},
		{[]string{"gzip, gzip, gzip, gzip"}, "!"},
	} {
		got, err := contentCodings(http.Header{"Content-Encoding": tc.in})
		s := strings.Join(got, ",")
		if err != nil {
			s = "!"
		}
		if s != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.in, s, err, tc.want)
		}
	}
}

// headSlack bounds what a held test request's head reserves besides its
// body (twice the head: the request and the card's copy).
const headSlack = 4096
