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
	"github.com/clawd-dev/clawd/policy"
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

// The proxy side of policy's TestAttackMCPBypassedByAddressAfterMCPRule:
// with the mcp rule first (as round 2's error message says) and a cidr
// allow rule for the MCP server's network after it, a POST of tools/call
// delete_file to the server by its address (Host: the IP) reaches the
// server undecided when clawd's DNS remembers no name at that address for
// any container (nobody looked the MCP host up through clawd lately, clawd
// restarted, or the agent has the address from elsewhere). The same
// request by name, or by address while the name is remembered, is decided
// by the mcp rule (denied). FAILS while the hole is open.
func TestAttackMCPByAddressReachesServer(t *testing.T) {
	mcpByAddress(t, fakeNames{}, []string{""})
}

// While clawd's DNS remembers the MCP host's name at the address, a
// request by address gets that name's rules too, the most restrictive
// winning: denied. (Passes: a regression test.)
func TestAttackMCPByAddressWithKnownName(t *testing.T) {
	mcpByAddress(t, nil, []string{"api.example.com", ""})
}

// mcpByAddress posts tools/call delete_file to each host ("" for the
// upstream's address) with names as clawd's DNS memory (nil: the env's).
func mcpByAddress(t *testing.T, names fakeNames, hosts []string) {
	pol := `
default:
  rules:
    - name: mcp
      hosts: api.example.com
      mcp: true
      action: allow
      tools:
        - name: delete_file
          action: deny
        - name: "*"
          action: allow
    - name: lab-network
      cidrs: [127.0.0.0/8]
      action: allow
`
	p, err := policy.Parse([]byte(pol), "test.yaml")
	if err != nil {
		if strings.Contains(err.Error(), "mcp") {
			return // the fix: the policy is refused
		}
		t.Fatal(err)
	}
	var up *upstream
	up = newUpstream(t, false, false, func(w http.ResponseWriter, r *http.Request) {
		_, b := up.last()
		fakeMCP(w, r, b)
	})
	// clawd's DNS has answered no container with this address.
	e := newEnv(t, nil, func(c *Config) {
		c.Decider = p
		if names != nil {
			c.Names = names
		}
	})
	cl := e.client(up.addr(), nil, false)
	for _, host := range hosts {
		if host == "" {
			host = up.addr().String()
		}
		hits := up.hits.Load()
		req, _ := http.NewRequest("POST", "http://"+host+"/mcp", strings.NewReader(mcpCall(1, "delete_file", `{"path":"/work/a"}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ae := e.audit.next(t)
		t.Logf("Host %s: %d %s; audit %s by %q: %s", host, resp.StatusCode, b, ae.Action, ae.Rule, ae.Reason)
		if up.hits.Load() != hits {
			t.Errorf("Host %s: tools/call delete_file reached the MCP server (audit %s by %q: %s; answer %d %s)", host, ae.Action, ae.Rule, ae.Reason, resp.StatusCode, b)
		}
	}
}
