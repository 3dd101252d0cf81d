package policy

import (
	"net/netip"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, and a
// policy it accepts must be usable.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"testdata/good/everything.yaml", "testdata/good/example.yaml", "testdata/bad/misc.yaml", "testdata/good/binaries.yaml", "testdata/bad/binaries.yaml", "testdata/bad/learn.yaml", "testdata/good/budget.yaml", "testdata/bad/budget.yaml", "testdata/good/mcp.yaml", "testdata/bad/mcp.yaml"} {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(decideYAML))
	f.Add([]byte(mcpYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		c := Container{ID: "x", Name: "agent-1", Runtime: "docker", Labels: map[string]string{"team": "ml-x"}}
		for _, in := range []Input{
			{Container: c, Host: "api.github.com", DstPort: 443},
			{Container: c, Host: "a.example.com", DstPort: 80, Method: "POST", Path: "/v1/x"},
			{Container: c, DstIP: netip.MustParseAddr("10.0.0.1"), DstPort: 5432},
			{Container: c, Host: "mcp.example.com", DstPort: 443, Method: "POST", Path: "/mcp", BodyKnown: true,
				Body: []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"limit":5,"sort":"asc"}}}`)},
		} {
			d := p.Decide(in)
			if d.Action != Allow && d.Action != Deny && d.Action != Approve {
				t.Fatalf("Decide returned action %q", d.Action)
			}
		}
		p.MayResolve(c, "api.github.com")
		p.Intercepts(c, "api.github.com")
	})
}

// FuzzDecide throws hostile request facts at a fixed policy. Besides not
// panicking, a path rule must never match a path the normalizer refuses,
// and a decision always carries a reason.
func FuzzDecide(f *testing.F) {
	p := mustParse(f, decideYAML)
	f.Add("api.github.com", "POST", "/repos/a/issues/1", uint16(443), []byte{10, 20, 0, 1}, []byte("x"))
	f.Add("api.github.com", "GET", "/v1/%2e%2e/x", uint16(443), []byte{}, []byte(""))
	f.Add("a.b.glob.example.com", "", "", uint16(8080), []byte{192, 0, 2, 7}, []byte(nil))
	f.Add("api.stripe.com", "POST", "/v1/refunds?x=1", uint16(443), []byte{}, []byte("REVERSE_TRANSFER"))
	f.Add("API.GITHUB.COM.", "DELETE", "/a%2F..%5c", uint16(443), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 20, 1, 1}, []byte{})
	f.Fuzz(func(t *testing.T, host, method, path string, port uint16, ip, body []byte) {
		addr, _ := netip.AddrFromSlice(ip)
		in := Input{Container: agent, Host: host, Method: method, Path: path, DstPort: port, DstIP: addr, Body: body, BodyKnown: len(body) > 0}
		d := p.Decide(in)
		if d.Action != Allow && d.Action != Deny && d.Action != Approve {
			t.Fatalf("action %q", d.Action)
		}
		if d.Reason == "" || d.Rule == "" {
			t.Fatalf("decision without rule or reason: %+v", d)
		}
		if _, err := normalizePath(path); err != nil && d.Rule == "gh-issues" && d.Action == Approve {
			t.Fatalf("path rule matched an ambiguous path %q", path)
		}
		if segs, err := normalizePath(path); err == nil {
			again, err := normalizePath("/" + strings.Join(segs, "/"))
			if err == nil && strings.Join(again, "/") != strings.Join(segs, "/") {
				t.Fatalf("normalizePath not idempotent on %q: %q vs %q", path, segs, again)
			}
		}
	})
}
