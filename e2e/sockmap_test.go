package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const sockmapPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: echo
      cidrs: [198.51.100.10/32]
      ports: 9000
      action: allow
    - name: tls-pass
      hosts: pass.upstream.test
      ports: 8443
      action: allow
`

// With `passthrough: sockmap`, allowed raw TCP and SNI-passthrough flows are
// carried by the kernel: the agent gets exactly its bytes back, TLS works
// end to end with the upstream's own certificate across keep-alive
// requests, the audit line counts every byte, and the metric shows that the
// kernel (not clawd) moved them.
func TestSockmapPassthrough(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	_, srv := polUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: sockmapPolicy, Extra: "upstream-ca-file: " + srv.CAFile + "\npassthrough: sockmap\n"})
	files := map[string]string{agentBin(t): "/agent", srv.CAFile: "/testca.pem"}
	ct := ctd.Run(t, "sockmap", harness.RunOpts{Files: files})
	cl.MustCLI("attach", ct.Name)

	t.Run("raw-tcp-echo", func(t *testing.T) {
		const size = 6 << 20
		// The upload is closed (half-close) once sent; the echo server
		// answers every byte and closes; nc ends when the answer does.
		out, code := sh(t, ct, fmt.Sprintf("head -c %d /dev/urandom > /tmp/in && timeout 30 nc %s %d < /tmp/in > /tmp/out; "+
			"echo exit=$?; wc -c < /tmp/out; md5sum < /tmp/in; md5sum < /tmp/out", size, harness.UpstreamIPv4, harness.UpstreamEchoPort))
		lines := strings.Fields(out)
		if code != 0 || len(lines) < 6 || lines[1] != strconv.Itoa(size) || lines[2] != lines[4] {
			t.Fatalf("echo through the kernel relay: %q (exit %d), want %d bytes back with the same md5", out, code, size)
		}
		eventually(t, "the audit line of the echo flow with every byte counted", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Container == ct.Name && e.Proto == "tcp" && e.Rule == "echo" && e.BytesOut == size && e.BytesIn == size {
					return true
				}
			}
			return false
		})
	})

	t.Run("tls-passthrough-keepalive", func(t *testing.T) {
		srv.Reset()
		answers := agentMulti(t, ct, 20, "-cacert", "/testca.pem", fmt.Sprintf("https://pass.upstream.test:%d/km", polTLSPort))
		for i, a := range answers {
			if a.Status != 200 || a.Cert != polTestCAName {
				t.Fatalf("request %d through the kernel relay: %+v, want 200 with the upstream's own certificate", i, a)
			}
		}
		if n := srv.Count(fmt.Sprintf(":%d", polTLSPort), "/km"); n != 20 {
			t.Fatalf("upstream saw /km %d times, want 20", n)
		}
	})

	// The kernel must have moved most of the echo's two 6 MiB streams: all
	// of the answer, and the upload but for what already waited in clawd's
	// receive queue when the flow was decided (that part is sent by clawd;
	// the socket buffer holds at most a few hundred KiB then).
	m := regexp.MustCompile(`(?m)^clawd_passthrough_kernel_bytes_total ([0-9.e+]+)$`).FindStringSubmatch(secScrapeMetrics(t, cl))
	if m == nil {
		t.Fatal("no clawd_passthrough_kernel_bytes_total in the metrics")
	}
	if v, _ := strconv.ParseFloat(m[1], 64); v < 1.5*(6<<20) {
		t.Fatalf("clawd_passthrough_kernel_bytes_total = %s, want at least %d (the echo flow in the kernel)", m[1], 3*(6<<20)/2)
	}
}
