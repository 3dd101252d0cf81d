package e2e

import (
	"encoding/base64"
	"net"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// The framing policy plus a cidrs rule allowing the upstream's service
// address on its plain port (a "service subnet" rule). upstream.test keeps
// its HTTP-level rules: DELETE and /admin/** denied.
func attackHostPolicy() string {
	return framingPolicy + `    - name: service-subnet
      cidrs: [` + harness.UpstreamIPv4.String() + `/32]
      ports: [8080]
      action: allow
`
}

// TestAttackHostAsAddressLiteral: from an attached container that resolved
// upstream.test through clawd's DNS, a plain-HTTP DELETE /admin/x to the
// same address is refused with Host: upstream.test (control) but reaches
// the upstream with Host: <the address>, or as HTTP/1.0 with no Host: the
// request is decided as a request to the address (the cidrs rule), not to
// the name clawd's DNS gave the container for it.
func TestAttackHostAsAddressLiteral(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up, srv := polUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: attackHostPolicy(), Extra: "upstream-ca-file: " + srv.CAFile + "\n"})
	ct := ctd.Run(t, "attack-host", harness.RunOpts{Files: map[string]string{bypassBin(t): "/bypass"}})
	cl.MustCLI("attach", ct.Name)
	if out, code := sh(t, ct, "timeout 10 nslookup upstream.test"); code != 0 || !strings.Contains(out, harness.UpstreamIPv4.String()) {
		t.Fatalf("nslookup upstream.test: %d %s", code, out)
	}
	dst := net.JoinHostPort(harness.UpstreamIPv4.String(), "8080")
	send := func(in string) ([]string, []string) {
		up.Reset()
		r, ok := runBypass(t, ct, "-send", dst, "-data", base64.StdEncoding.EncodeToString([]byte(in)))["send"]
		if !ok {
			t.Fatalf("send: %+v", r)
		}
		var seen []string
		for _, s := range up.Requests() {
			seen = append(seen, s.Method+" "+s.Path+" Host="+s.Host)
		}
		return statuses(r.Detail), seen
	}
	if got, seen := send("DELETE /admin/x HTTP/1.1\r\nHost: upstream.test\r\n\r\n"); len(seen) != 0 || strings.Join(got, ",") != "403" {
		t.Fatalf("control: %v, upstream saw %v", got, seen)
	}
	for name, in := range map[string]string{
		"Host: address":      "DELETE /admin/x HTTP/1.1\r\nHost: " + harness.UpstreamIPv4.String() + "\r\n\r\n",
		"Host: address:port": "DELETE /admin/x HTTP/1.1\r\nHost: " + dst + "\r\n\r\n",
		"HTTP/1.0 no Host":   "DELETE /admin/x HTTP/1.0\r\n\r\n",
	} {
		if got, seen := send(in); len(seen) != 0 {
			t.Errorf("%s: the upstream of upstream.test (DELETE and /admin denied) received %v; agent got %v", name, seen, got)
		}
	}
}
