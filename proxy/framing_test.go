package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
)

const fh = "Host: example.com\r\n"

// framingCases are the ambiguities the framer knows, and controls. Each is
// checked by the differential rule (checkFraming) in one read and in small
// reads, and is a committed seed of FuzzFraming (TestFramingSeeds).
var framingCases = []struct {
	name    string
	in      string
	decided []string // "METHOD target" the policy saw, in order
	refuse  bool     // clawd's framing refusal ends the answers
	noSeed  bool     // too big for the fuzz target
}{
	// Controls: accepted as they are.
	{name: "GET", in: "GET /a?b=c HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a?b=c"}},
	{name: "POST with Content-Length", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 5\r\n\r\nhello", decided: []string{"POST /u"}},
	{name: "chunked with extensions", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d e\";f\r\nabc\r\n00\r\n\r\n", decided: []string{"POST /u"}},
	{name: "Transfer-Encoding in odd case", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: ChUnKeD\r\n\r\n2\r\nhi\r\n0\r\n\r\n", decided: []string{"POST /u"}},
	{name: "pipelined", in: "GET /1 HTTP/1.1\r\n" + fh + "\r\nPOST /2 HTTP/1.1\r\n" + fh + "Content-Length: 2\r\n\r\nhiGET /3 HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /1", "POST /2", "GET /3"}},
	{name: "leading empty lines dropped", in: "\r\n\r\nGET /a HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a"}},
	{name: "empty line after a POST body", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 1\r\n\r\nx\r\nGET /b HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"POST /u", "GET /b"}},
	{name: "lower-case method", in: "delete /a HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"delete /a"}},
	{name: "mixed-case method", in: "DeLeTe /a HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"DeLeTe /a"}},
	{name: "absolute-form with the Host's authority", in: "GET http://EXAMPLE.com/a?b HTTP/1.1\r\nHost: example.COM\r\n\r\n", decided: []string{"GET /a?b"}},
	{name: "absolute-form without path", in: "GET https://example.com?q HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /?q"}},
	{name: "OPTIONS *", in: "OPTIONS * HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"OPTIONS *"}},
	{name: "HTTP/1.0 without Host", in: "GET /a HTTP/1.0\r\n\r\n", decided: []string{"GET /a"}},
	{name: "header value whitespace and obs-text", in: "GET /a HTTP/1.1\r\n" + fh + "X-A:  a\tb \t\r\nX-B: \xc3\xa4\r\nX-C:\r\n\r\n", decided: []string{"GET /a"}},
	{name: "path characters and escapes", in: "GET /a-._~!$&'()*+,;=:@%2F%2e/b?x=\"{|}\\^`<>'[] HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a-._~!$&'()*+,;=:@%2F%2e/b?x=\"{|}\\^`<>'[]"}},
	{name: "Host IP literal with port", in: "GET /a HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n", decided: []string{"GET /a"}},
	{name: "Host IPv6 literal", in: "GET /a HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n", decided: nil},
	{name: "upgrade answered without a switch, then more", in: "GET /ws HTTP/1.1\r\n" + fh + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /next HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /ws", "GET /next"}},
	{name: "CONNECT", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET /a HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"CONNECT /", "GET /a"}},
	{name: "Expect 100-continue", in: "POST /u HTTP/1.1\r\n" + fh + "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", decided: []string{"POST /u"}},
	{name: "hop-by-hop headers", in: "GET /a HTTP/1.1\r\n" + fh + "TE: trailers\r\nKeep-Alive: 5\r\nConnection: x-secret\r\nX-Secret: 1\r\nUser-Agent:\r\n\r\n", decided: []string{"GET /a"}},
	{name: "h2c upgrade offer", in: "GET /a HTTP/1.1\r\n" + fh + "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\nGET /b HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a", "GET /b"}},
	{name: "upgrade with a body", in: "POST /ws HTTP/1.1\r\n" + fh + "Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabcGET /n HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"POST /ws", "GET /n"}},
	{name: "quoted chunk extension", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3;a=\"\\\"x\"\r\nabc\r\n0\r\n\r\n", decided: []string{"POST /u"}},
	{name: "Connection: close ends the requests", in: "GET /a HTTP/1.1\r\n" + fh + "Connection: close\r\n\r\nGET /b HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a"}},
	{name: "body on GET", in: "GET /a HTTP/1.1\r\n" + fh + "Content-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a", "GET /b"}},

	// Line endings and whitespace.
	{name: "obs-fold", in: "GET /a HTTP/1.1\r\n" + fh + "X-A: a\r\n b\r\n\r\n", refuse: true},
	{name: "obs-fold with tab", in: "GET /a HTTP/1.1\r\n" + fh + "X-A: a\r\n\tb\r\n\r\n", refuse: true},
	{name: "folded Host", in: "GET /a HTTP/1.1\r\nHost: example.com\r\n evil.test\r\n\r\n", refuse: true},
	{name: "whitespace before the first header", in: "GET /a HTTP/1.1\r\n " + fh + "\r\n", refuse: true},
	{name: "bare LF everywhere", in: "GET /a HTTP/1.1\n" + "Host: example.com\n\n", refuse: true},
	{name: "bare LF in a header", in: "GET /a HTTP/1.1\r\n" + fh + "X: y\nGET /admin HTTP/1.1\r\n\r\n", refuse: true},
	{name: "bare LF ends the head", in: "GET /a HTTP/1.1\r\n" + fh + "\n", refuse: true},
	{name: "bare LF before the request", in: "\nGET /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "bare LF between requests", in: "GET /a HTTP/1.1\r\n" + fh + "\r\n\nGET /b HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /a"}, refuse: true},
	{name: "bare CR in a header value", in: "GET /a HTTP/1.1\r\n" + fh + "X: a\rb\r\n\r\n", refuse: true},
	{name: "bare CR ends a line", in: "GET /a HTTP/1.1\r" + fh + "\r\n", refuse: true},
	{name: "bare CR before the request", in: "\rGET /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "tab in the request line", in: "GET\t/admin\tHTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "two spaces in the request line", in: "GET  /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "space after the version", in: "GET /a HTTP/1.1 \r\n" + fh + "\r\n", refuse: true},
	{name: "space before the method", in: " GET /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "raw space in the target", in: "GET /a b HTTP/1.1\r\n" + fh + "\r\n", refuse: true},

	// Bytes.
	{name: "NUL in a header value", in: "GET /a HTTP/1.1\r\n" + fh + "X: a\x00b\r\n\r\n", refuse: true},
	{name: "DEL in a header value", in: "GET /a HTTP/1.1\r\n" + fh + "X: a\x7fb\r\n\r\n", refuse: true},
	{name: "control byte in a header value", in: "GET /a HTTP/1.1\r\n" + fh + "X: a\x01b\r\n\r\n", refuse: true},
	{name: "NUL in the request line", in: "GET /a\x00 HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "whitespace before colon", in: "GET /a HTTP/1.1\r\nHost : evil.test\r\n" + fh + "\r\n", refuse: true},
	{name: "tab before colon", in: "GET /a HTTP/1.1\r\n" + fh + "Content-Length\t: 3\r\n\r\nabc", refuse: true},
	{name: "empty header name", in: "GET /a HTTP/1.1\r\n" + fh + ": x\r\n\r\n", refuse: true},
	{name: "underscore in a header name", in: "GET /a HTTP/1.1\r\n" + fh + "Content_Length: 3\r\n\r\nabc", refuse: true},
	{name: "dot in a header name", in: "GET /a HTTP/1.1\r\n" + fh + "X.A: 1\r\n\r\n", refuse: true},
	{name: "header line without colon", in: "GET /a HTTP/1.1\r\n" + fh + "Bad Header\r\n\r\n", refuse: true},
	{name: "method not a token", in: "GE(T /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "method too long", in: strings.Repeat("M", 40) + " /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},

	// Body framing.
	{name: "duplicate Content-Length, equal", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", refuse: true},
	{name: "duplicate Content-Length, different", in: "GET /a HTTP/1.1\r\n" + fh + "Content-Length: 0\r\nContent-Length: 44\r\n\r\nGET /admin HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "Content-Length list", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 3, 3\r\n\r\nabc", refuse: true},
	{name: "Content-Length with plus", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: +3\r\n\r\nabc", refuse: true},
	{name: "Content-Length negative", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: -1\r\n\r\nabc", refuse: true},
	{name: "Content-Length leading zeros", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 003\r\n\r\nabc", refuse: true},
	{name: "Content-Length huge", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 99999999999999999999\r\n\r\nabc", refuse: true},
	{name: "Content-Length hex", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 0x3\r\n\r\nabc", refuse: true},
	{name: "Content-Length with trailing tab", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 3\t\r\n\r\nabc", refuse: true},
	{name: "Content-Length empty", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length:\r\n\r\n", refuse: true},
	{name: "Content-Length and Transfer-Encoding", in: "GET /a HTTP/1.1\r\n" + fh + "Content-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "Transfer-Encoding and Content-Length", in: "GET /a HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n30\r\nGET /admin HTTP/1.1\r\n" + fh + "\r\n\r\n0\r\n\r\n", refuse: true},
	{name: "Transfer-Encoding chunked, identity", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", refuse: true},
	{name: "Transfer-Encoding gzip, chunked", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", refuse: true},
	{name: "Transfer-Encoding identity", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: identity\r\nContent-Length: 1\r\n\r\nx", refuse: true},
	{name: "Transfer-Encoding xchunked", in: "GET /a HTTP/1.1\r\n" + fh + "Content-Length: 48\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "Transfer-Encoding twice", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", refuse: true},
	{name: "Transfer-Encoding on HTTP/1.0", in: "POST /u HTTP/1.0\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", refuse: true},
	{name: "chunk size with space", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk size with bare LF", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk extension with whitespace", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3; a=b\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk extension without name", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3;=b\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk extension with bare LF in quotes", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3;a=\"\n\"\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk size not hex", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\ng\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk size signed", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk size too long", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n00000000000000003\r\nabc\r\n0\r\n\r\n", refuse: true},
	{name: "chunk data not followed by CRLF", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", refuse: true},
	{name: "request trailers", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", refuse: true},
	{name: "Host in a trailer", in: "POST /u HTTP/1.1\r\n" + fh + "Transfer-Encoding: chunked\r\n\r\n0\r\nHost: evil.test\r\n\r\n", refuse: true},
	{name: "good request, then a smuggling one", in: "GET /a HTTP/1.1\r\n" + fh + "\r\nPOST /u HTTP/1.1\r\n" + fh + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", decided: []string{"GET /a"}, refuse: true},
	{name: "POST body, then a bad head", in: "POST /u HTTP/1.1\r\n" + fh + "Content-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n" + fh + "X: a\r\n b\r\n\r\n", decided: []string{"POST /u"}, refuse: true},
	{name: "upgrade answered without a switch, then a bad head", in: "GET /ws HTTP/1.1\r\n" + fh + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET\t/admin HTTP/1.1\r\n" + fh + "\r\n", decided: []string{"GET /ws"}, refuse: true},

	// Targets, Host and versions.
	{name: "absolute-form to another host", in: "GET http://evil.test/a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "absolute-form to another port", in: "GET http://example.com:9000/a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "absolute-form with userinfo", in: "GET http://example.com@evil.test/a HTTP/1.1\r\nHost: evil.test\r\n\r\n", refuse: true},
	{name: "absolute-form with another scheme", in: "GET ftp://example.com/a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "absolute-form without Host", in: "GET http://example.com/a HTTP/1.1\r\n\r\n", refuse: true},
	{name: "multiple Host headers", in: "GET /a HTTP/1.1\r\n" + fh + "Host: evil.test\r\n\r\n", refuse: true},
	{name: "multiple Host headers, equal", in: "GET /a HTTP/1.1\r\n" + fh + fh + "\r\n", refuse: true},
	{name: "missing Host", in: "GET /a HTTP/1.1\r\n\r\n", refuse: true},
	{name: "empty Host", in: "GET /a HTTP/1.1\r\nHost:\r\n\r\n", refuse: true},
	{name: "Host with userinfo", in: "GET /a HTTP/1.1\r\nHost: example.com@evil.test\r\n\r\n", refuse: true},
	{name: "Host with a path", in: "GET /a HTTP/1.1\r\nHost: example.com/admin\r\n\r\n", refuse: true},
	{name: "Host with an empty port", in: "GET /a HTTP/1.1\r\nHost: example.com:\r\n\r\n", refuse: true},
	{name: "Host list", in: "GET /a HTTP/1.1\r\nHost: example.com, evil.test\r\n\r\n", refuse: true},
	{name: "HTTP/0.9", in: "GET /admin\r\n\r\n", refuse: true},
	{name: "HTTP/1.2", in: "GET /a HTTP/1.2\r\n" + fh + "\r\n", refuse: true},
	{name: "HTTP/2.0 request line", in: "GET /a HTTP/2.0\r\n" + fh + "\r\n", refuse: true},
	{name: "lower-case version", in: "GET /a http/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "h2c prior knowledge", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00", refuse: true},
	{name: "fragment in the target", in: "GET /a#/../admin HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "non-ASCII in the target", in: "GET /\xc3\xa4 HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "backslash in the path", in: "GET /a\\..\\admin HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "invalid escape", in: "GET /a%zz HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "truncated escape", in: "GET /a%2 HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "asterisk with M-SEARCH", in: "M-SEARCH * HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "asterisk with GET", in: "GET * HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "CONNECT without port", in: "CONNECT example.com HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "CONNECT with a path", in: "CONNECT /a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "target without slash", in: "GET a HTTP/1.1\r\n" + fh + "\r\n", refuse: true},
	{name: "oversized head", in: "GET /a HTTP/1.1\r\n" + fh + "X-Long: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", refuse: true, noSeed: true},
	{name: "1 MiB header (control)", in: "GET /a HTTP/1.1\r\n" + fh + "X-Long: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", decided: []string{"GET /a"}, noSeed: true},
	{name: "oversized target", in: "GET /" + strings.Repeat("a", maxHeadBytes) + " HTTP/1.1\r\n" + fh + "\r\n", refuse: true, noSeed: true},
}

func TestFramingCases(t *testing.T) {
	for _, tc := range framingCases {
		t.Run(tc.name, func(t *testing.T) {
			var r *frameRun
			if tc.noSeed {
				r = runFraming(t, []byte(tc.in), 0, nil)
			} else {
				r = checkFraming(t, []byte(tc.in))
			}
			var got []string
			for _, in := range r.inputs {
				got = append(got, in.Method+" "+in.Path)
			}
			if strings.Join(got, "\n") != strings.Join(tc.decided, "\n") {
				t.Errorf("decided %q, want %q", got, tc.decided)
			}
			if r.refused() != tc.refuse {
				t.Errorf("refused %v, want %v; answer:\n%s", r.refused(), tc.refuse, r.answer)
			}
			st := r.statuses()
			if tc.refuse {
				want := http.StatusBadRequest
				if strings.HasPrefix(tc.name, "oversized") {
					want = http.StatusRequestHeaderFieldsTooLarge
				}
				if len(st) != len(tc.decided)+1 || st[len(st)-1] != want {
					t.Errorf("statuses %v, want one per decided request, then %d", st, want)
				}
				if len(r.audits) == 0 {
					t.Fatal("no audit line")
				}
				last := r.audits[len(r.audits)-1]
				if last.Rule != ruleAmbiguous || last.Action != "deny" || last.Status != want || last.Reason == "" {
					t.Errorf("last audit line %+v, want the refusal", last)
				}
			} else if len(tc.decided) > 0 && len(st) != len(tc.decided) {
				t.Errorf("statuses %v, want %d answers", st, len(tc.decided))
			}
		})
	}
}

// TestFramingSeeds keeps the committed seed corpus of FuzzFraming in step
// with framingCases; CLAWD_WRITE_SEEDS=1 writes it.
func TestFramingSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzFraming")
	write := os.Getenv("CLAWD_WRITE_SEEDS") == "1"
	if write {
		os.MkdirAll(dir, 0o755)
	}
	for _, tc := range framingCases {
		if tc.noSeed {
			continue
		}
		content := "go test fuzz v1\n[]byte(" + strconv.Quote(tc.in) + ")\n"
		sum := sha256.Sum256([]byte(tc.in))
		name := filepath.Join(dir, hex.EncodeToString(sum[:8]))
		if write {
			if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if b, err := os.ReadFile(name); err != nil || string(b) != content {
			t.Errorf("seed for %q missing or stale (%v): run CLAWD_WRITE_SEEDS=1 go test -run TestFramingSeeds ./proxy/", tc.name, err)
		}
	}
}

// The refusal is clawd's JSON error, on a closed connection, after the
// answers to the requests before it, with an audit line and a metric.
func TestFramingRefusalAnswer(t *testing.T) {
	r := runFraming(t, []byte("GET /first HTTP/1.1\r\n"+fh+"\r\nGET /second HTTP/1.1\r\n"+fh+"X: a\r\n b\r\n\r\n"), 0, nil)
	if st := r.statuses(); fmt.Sprint(st) != "[200 400]" {
		t.Fatalf("statuses %v, want [200 400]:\n%s", st, r.answer)
	}
	i := bytes.Index(r.answer, []byte("HTTP/1.1 400"))
	resp, err := http.ReadResponse(bufioReader(r.answer[i:]), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Close || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("header %v", resp.Header)
	}
	var info map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if info["error"] != "ambiguous_request" || info["method"] != "GET" || info["host"] != "example.com" || info["path"] != "/second" ||
		!strings.Contains(info["reason"].(string), "obs-fold") {
		t.Errorf("answer %v", info)
	}
	if len(r.forwarded) != 1 || r.forwarded[0].req.URL.Path != "/first" {
		t.Errorf("upstream got %d requests, want only /first", len(r.forwarded))
	}
	e := r.audits[len(r.audits)-1]
	if e.Rule != ruleAmbiguous || e.Method != "GET" || e.Host != "example.com" || e.Path != "/second" ||
		e.Status != 400 || e.Action != "deny" || e.Proto != "http" || e.Dst != frameDst.String() || e.Container != testContainer.Name {
		t.Errorf("audit %+v", e)
	}
}

// An upgrade the upstream accepts with 101 turns the connection into a
// tunnel: what the agent sent behind the request (here before the 101
// even came) goes upstream as it is, not read as HTTP and not refused.
func TestFramingUpgradeAccepted(t *testing.T) {
	tunnel := "\x81\x02hiGET\t/admin HTTP/1.1\r\nX: a\r\n b\r\n\r\n"
	in := "GET /ws HTTP/1.1\r\n" + fh + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" + tunnel
	for _, chunk := range []int{0, 3} {
		up := &frameUpstream{upgrade: true}
		r := runFramingUp(t, []byte(in), chunk, nil, up)
		if len(r.inputs) != 1 || r.refused() {
			t.Fatalf("chunk %d: decided %d, refused %v:\n%s", chunk, len(r.inputs), r.refused(), r.answer)
		}
		if st := r.statuses(); fmt.Sprint(st) != "[101]" {
			t.Errorf("chunk %d: statuses %v", chunk, st)
		}
		if len(r.upRaw) != 1 || !bytes.HasSuffix(r.upRaw[0], []byte("\r\n\r\n"+tunnel)) {
			t.Errorf("chunk %d: upstream received %q, want the tunnel bytes after the head", chunk, r.upRaw)
		}
	}
}

// A DELETE rule catches the method in any case, a path rule the path in
// any case, with the real policy engine; what goes upstream is the
// request as decided (method as sent).
func TestFramingPolicyMethodCase(t *testing.T) {
	p, err := policy.Parse([]byte(`
version: 1
default:
  default_action: deny
  rules:
    - name: no-delete
      hosts: example.com
      ports: 80
      methods: [DELETE]
      action: deny
    - name: no-admin
      hosts: example.com
      ports: 80
      paths: ["/admin/**"]
      action: deny
    - name: rest
      hosts: example.com
      action: allow
`), "framing.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in     string
		status int
	}{
		{"DELETE /x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"delete /x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"DeLeTe /x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"\r\ndelete /x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"GET /admin/x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"get /ADMIN/x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"GET /x/../admin/x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"GET http://example.com/admin/x HTTP/1.1\r\n" + fh + "\r\n", 403},
		{"get /x HTTP/1.1\r\n" + fh + "\r\n", 200},
		{"PoSt /x HTTP/1.1\r\n" + fh + "Content-Length: 1\r\n\r\nx", 200},
	} {
		r := runFraming(t, []byte(tc.in), 0, p)
		if st := r.statuses(); len(st) != 1 || st[0] != tc.status {
			t.Errorf("%q: statuses %v, want %d", tc.in, st, tc.status)
		}
		if tc.status != 200 {
			if len(r.forwarded) != 0 {
				t.Errorf("%q: the upstream received a denied request", tc.in)
			}
			continue
		}
		if len(r.forwarded) != 1 || len(r.inputs) != 1 || r.forwarded[0].req.Method != r.inputs[0].Method ||
			r.forwarded[0].req.RequestURI != r.inputs[0].Path {
			t.Errorf("%q: forwarded %v, decided %v", tc.in, r.forwarded, r.inputs)
		}
	}
}

// The framer is on the real paths: plain HTTP (sniffed) and HTTP inside
// intercepted TLS.
func TestFramingWired(t *testing.T) {
	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), nil)
	c := e.dial(up.addr())
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx")
	b, _ := io.ReadAll(c)
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 400 ")) || !bytes.Contains(b, []byte(`"error":"ambiguous_request"`)) {
		t.Errorf("plain: answer %q", b)
	}
	if a := e.audit.next(t); a.Rule != ruleAmbiguous || a.Proto != "http" {
		t.Errorf("plain: audit %+v", a)
	}

	upTLS := newUpstream(t, true, false, nil)
	roots := x509.NewCertPool()
	roots.AddCert(upTLS.Certificate())
	dec := newDecider(policy.Allow)
	dec.intercept["example.com"] = true
	e = newEnv(t, dec, func(c *Config) { c.UpstreamRoots = roots })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM())
	tc := tls.Client(e.dial(upTLS.addr()), &tls.Config{ServerName: "example.com", RootCAs: pool, NextProtos: []string{"http/1.1"}})
	// Leading empty lines and a lower-case method: decided as "get".
	io.WriteString(tc, "\r\nget /ok HTTP/1.1\r\nHost: example.com\r\n\r\nGET /b HTTP/1.1\r\nHost: example.com\r\nX: a\r\n b\r\n\r\n")
	b, _ = io.ReadAll(tc)
	if st := (&frameRun{answer: b}).statuses(); fmt.Sprint(st) != "[200 400]" {
		t.Errorf("TLS: statuses %v:\n%s", st, b)
	}
	if got, _ := upTLS.last(); got == nil || got.Method != "get" || got.URL.Path != "/ok" {
		t.Errorf("TLS: upstream got %v", got)
	}
	if a := e.audit.next(t); a.Method != "get" || a.Path != "/ok" {
		t.Errorf("TLS: first audit %+v", a)
	}
	if a := e.audit.next(t); a.Rule != ruleAmbiguous || a.Proto != "https" || a.SNI != "example.com" {
		t.Errorf("TLS: audit %+v", a)
	}
}

func bufioReader(b []byte) *bufio.Reader { return bufio.NewReader(bytes.NewReader(b)) }

// BenchmarkFramer is the framer's own cost per keep-alive request (the
// request of BenchmarkHTTPKeepAlive, and one with a chunked body).
//
//	go test -run '^$' -bench Framer -benchmem ./proxy/
func BenchmarkFramer(b *testing.B) {
	for _, tc := range []struct{ name, req string }{
		{"get", "GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n"},
		{"chunked", "POST /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFramer(nil, nil)
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(tc.req)))
			b.ReportAllocs()
			for range b.N {
				n := copy(buf, tc.req)
				if w := f.scan(buf, n); w != n || f.mode != modeParse {
					b.Fatalf("scan %d of %d, mode %d", w, n, f.mode)
				}
			}
		})
	}
}
