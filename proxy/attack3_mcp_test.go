package proxy

// Red team, round 3 (issue 16, MCP gate): request bodies whose content
// coding the real SDK server (express.json, body-parser 2) decodes. clawd
// decides on the body it decodes and forwards the agent's encoded bytes, so
// every coding where the two decoders could disagree must be refused, and
// a denied call must never reach the server in any coding.

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
)

func gzipBytes(s string) []byte {
	var buf bytes.Buffer
	z := gzip.NewWriter(&buf)
	io.WriteString(z, s)
	z.Close()
	return buf.Bytes()
}

// Every coding of a denied call, and every way of stacking or splitting
// codings, ends in a deny that never reaches the upstream. Checked against
// the SDK 1.32.2 server (createMcpExpressApp, body-parser 2): a gzip body
// of two members (the call split across them) RAN delete_file there (Node's
// gunzip reads every member), raw deflate is refused by body-parser
// ("unknown compression method"), a single gzip ran the call.
// (Passes: a regression test.)
func TestAttackMCPEncodedBodies(t *testing.T) {
	m := newMCPEnv(t, approval.Outcome{})
	del := mcpCall(1, "delete_file", `{"path":"/work/a"}`)
	echo := mcpCall(1, "echo", `{"text":"hi"}`)
	zl := func(s string) []byte {
		var buf bytes.Buffer
		z := zlib.NewWriter(&buf)
		io.WriteString(z, s)
		z.Close()
		return buf.Bytes()
	}
	raw := func(s string) []byte {
		var buf bytes.Buffer
		z, _ := flate.NewWriter(&buf, 5)
		io.WriteString(z, s)
		z.Close()
		return buf.Bytes()
	}
	br := func(s string) []byte {
		var buf bytes.Buffer
		z := brotli.NewWriter(&buf)
		io.WriteString(z, s)
		z.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name   string
		body   []byte
		ce     []string // Content-Encoding headers, one per line
		reason string   // in the audit reason ("" for the tool's deny)
	}{
		{"gzip", gzipBytes(del), []string{"gzip"}, ""},
		{"GZIP upper case", gzipBytes(del), []string{"GZIP"}, ""},
		{"x-gzip", gzipBytes(del), []string{"x-gzip"}, ""},
		{"identity, gzip", gzipBytes(del), []string{"identity, gzip"}, ""},
		{"identity then gzip headers", gzipBytes(del), []string{"identity", "gzip"}, ""},
		{"gzip two members split the call", append(gzipBytes(del[:30]), gzipBytes(del[30:])...), []string{"gzip"}, "data after the end"},
		{"gzip echo then a second member", append(gzipBytes(echo), gzipBytes(" ")...), []string{"gzip"}, "data after the end"},
		{"gzip then trailing zeros", append(gzipBytes(del), 0, 0, 0, 0), []string{"gzip"}, "data after the end"},
		{"gzip twice", gzipBytes(string(gzipBytes(del))), []string{"gzip, gzip"}, ""},
		{"gzip twice in two headers", gzipBytes(string(gzipBytes(del))), []string{"gzip", "gzip"}, ""},
		{"zlib deflate", zl(del), []string{"deflate"}, ""},
		{"raw deflate", raw(del), []string{"deflate"}, ""},
		{"zlib then trailing bytes", append(zl(del), ' '), []string{"deflate"}, "data after the end"},
		{"br", br(del), []string{"br"}, ""},
		{"br then a second stream", append(br(echo), br(" ")...), []string{"br"}, "not valid br"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hits := m.up.hits.Load()
			req, _ := http.NewRequest("POST", "http://api.example.com/mcp", bytes.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header["Content-Encoding"] = tt.ce
			resp, err := m.cl.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			e := m.audit.next(t)
			if m.up.hits.Load() != hits {
				t.Fatalf("the body reached the upstream (status %d: %s)", resp.StatusCode, b)
			}
			if e.Action != audit.ActionDeny || !strings.Contains(e.Reason, tt.reason) {
				t.Fatalf("audit %q: %q, want deny with %q", e.Action, e.Reason, tt.reason)
			}
		})
	}
}
