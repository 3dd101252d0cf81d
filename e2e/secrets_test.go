package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const secretsTLSPort = 8453

var secPlaceholderRE = regexp.MustCompile(`clawd-ph-[A-Za-z0-9_-]+`)

// TestSecretInjectionEndToEnd: an attached container holding only a
// placeholder talks HTTPS to an intercepted upstream; the upstream gets the
// real value, the agent never sees it, other hosts get nothing, rotation
// applies live, a tampered store is refused while the last good copy keeps
// working, and no real value shows up in logs, audit or metrics.
func TestSecretInjectionEndToEnd(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	echo := secStartTLSEcho(t, up, secretsTLSPort)
	policy := fmt.Sprintf(`version: 1
default:
  default_action: deny
  rules:
    - name: upstream-tls
      hosts: ["api.upstream.test", "other.upstream.test"]
      ports: %d
      intercept: true
      action: allow
`, secretsTLSPort)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: policy, Extra: "upstream-ca-file: " + echo.CAFile + "\n"})

	real1 := "s3cr3t-value-" + secRand(t)
	real2 := "r0tated-value-" + secRand(t)
	out, err := secCLIStdin(cl, real1, "secret", "set", "api", "--host", "api.upstream.test",
		"--header", "Authorization", "--format", "Bearer {value}")
	if err != nil {
		t.Fatalf("secret set: %v\n%s", err, out)
	}
	ph := secPlaceholderRE.FindString(out)
	if ph == "" || strings.Contains(out, real1) {
		t.Fatalf("secret set output has no placeholder or shows the value: %q", out)
	}
	ls := cl.MustCLI("secret", "ls")
	if !strings.Contains(ls, ph) || !strings.Contains(ls, "api.upstream.test") || strings.Contains(ls, real1) {
		t.Fatalf("secret ls:\n%s", ls)
	}
	// At rest: no plaintext.
	store, err := os.ReadFile(filepath.Join(cl.StateDir, "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(store), real1) || strings.Contains(string(store), base64.StdEncoding.EncodeToString([]byte(real1))) {
		t.Fatal("secrets.json holds the plaintext value")
	}

	caFile := secWriteCA(t, cl)
	ct := ctd.Run(t, "secagent", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent", caFile: "/clawd-ca.pem"}})
	cl.MustCLI("attach", ct.Name)

	apiURL := fmt.Sprintf("https://api.upstream.test:%d", secretsTLSPort)
	otherURL := fmt.Sprintf("https://other.upstream.test:%d", secretsTLSPort)
	call := func(url string) AgentAnswer {
		t.Helper()
		return agent(t, ct, "-cacert", "/clawd-ca.pem", "-H", "Authorization: Bearer "+ph, url)
	}

	t.Run("injected upstream, scrubbed for the agent", func(t *testing.T) {
		echo.Reset()
		a := call(apiURL + "/v1/me")
		if a.Status != 200 {
			t.Fatalf("agent got %+v", a)
		}
		got := echo.seenPath("/v1/me")
		if len(got) != 1 {
			t.Fatalf("upstream saw %d requests for /v1/me, want 1", len(got))
		}
		if auth := strings.Join(got[0].Headers["Authorization"], ","); auth != "Bearer "+real1 {
			t.Fatalf("upstream got Authorization %q, want the real value (redacted here)", secRedact(auth, real1))
		}
		if strings.Contains(a.Body, real1) || strings.Contains(fmt.Sprint(a.Headers), real1) {
			t.Fatal("the agent's response contains the real secret")
		}
		if !strings.Contains(a.Body, ph) {
			t.Fatalf("the echoed body should carry the placeholder: %.300s", a.Body)
		}
		if h := strings.Join(a.Headers["X-Echo-Authorization"], ","); h != "Bearer "+ph {
			t.Fatalf("echoed header = %q, want the placeholder", secRedact(h, real1))
		}
		if a.Cert == "" || strings.Contains(a.Cert, "e2e upstream") {
			t.Fatalf("the agent should see clawd's certificate, issuer %q", a.Cert)
		}
	})

	t.Run("placeholder to another host is refused", func(t *testing.T) {
		echo.Reset()
		a := call(otherURL + "/steal")
		if a.Status != 403 || !strings.Contains(a.Body, "placeholder_misuse") {
			t.Fatalf("misuse answered %+v", a)
		}
		if n := len(echo.Requests()); n != 0 {
			t.Fatalf("the other host's upstream saw %d requests", n)
		}
		eventually(t, "an exfiltration audit line", func() bool {
			for _, e := range cl.AuditEntries() {
				if e.Event == "exfiltration" && e.Container == ct.Name && e.Host != "" && strings.HasPrefix(e.Host, "other.upstream.test") && e.Path == "/steal" {
					return true
				}
			}
			return false
		})
		// The same request without a placeholder is fine (the host is allowed).
		a = agent(t, ct, "-cacert", "/clawd-ca.pem", otherURL+"/plain")
		if a.Status != 200 || len(echo.seenPath("/plain")) != 1 {
			t.Fatalf("plain request to the other host: %+v", a)
		}
	})

	t.Run("rotation applies without restart", func(t *testing.T) {
		out, err := secCLIStdin(cl, real2+"\n", "secret", "rotate", "api")
		if err != nil || strings.Contains(out, real2) {
			t.Fatalf("rotate: %v %q", err, secRedact(out, real2))
		}
		if ls := cl.MustCLI("secret", "ls"); !strings.Contains(ls, ph) {
			t.Fatalf("placeholder changed on rotation:\n%s", ls)
		}
		i := 0
		eventually(t, "the rotated value on the wire", func() bool {
			i++
			p := fmt.Sprintf("/rot%d", i)
			a := call(apiURL + p)
			got := echo.seenPath(p)
			if a.Status != 200 || len(got) != 1 {
				t.Fatalf("request %s: agent %+v, upstream saw %d", p, a, len(got))
			}
			if strings.Contains(a.Body, real2) || strings.Contains(a.Body, real1) {
				t.Fatal("the agent's response contains a real secret")
			}
			return strings.Join(got[0].Headers["Authorization"], ",") == "Bearer "+real2
		})
	})

	t.Run("tampered store keeps the last good copy", func(t *testing.T) {
		path := filepath.Join(cl.StateDir, "secrets.json")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		rec := f["secrets"].([]any)[0].(map[string]any)
		ctext, err := base64.StdEncoding.DecodeString(rec["ciphertext"].(string))
		if err != nil || len(ctext) == 0 {
			t.Fatalf("ciphertext: %v", err)
		}
		ctext[len(ctext)/2] ^= 0x01
		rec["ciphertext"] = base64.StdEncoding.EncodeToString(ctext)
		nb, _ := json.Marshal(f)
		tmp := path + ".e2e"
		if err := os.WriteFile(tmp, nb, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		out, err := cl.CLI("secret", "ls")
		if err == nil || !strings.Contains(strings.ToLower(out), "tamper") {
			t.Fatalf("secret ls on a tampered store: err=%v\n%s", err, out)
		}
		eventually(t, "the daemon to notice the tampered store", func() bool {
			for _, l := range cl.LogLines() {
				if s := fmt.Sprint(l); strings.Contains(strings.ToLower(s), "tamper") {
					return true
				}
			}
			return false
		})
		echo.Reset()
		a := call(apiURL + "/after-tamper")
		got := echo.seenPath("/after-tamper")
		if a.Status != 200 || len(got) != 1 || strings.Join(got[0].Headers["Authorization"], ",") != "Bearer "+real2 {
			t.Fatalf("after tamper: agent %d, upstream saw %d requests (want the last good value injected)", a.Status, len(got))
		}
		if _, err := cl.Client().Status(context.Background()); err != nil {
			t.Fatalf("daemon not answering after tamper: %v", err)
		}
	})

	t.Run("loopback-bound API and metrics unreachable", func(t *testing.T) {
		_, apiPort, _ := strings.Cut(cl.API, ":")
		_, metricsPort, _ := strings.Cut(cl.Metrics, ":")
		for _, port := range []string{apiPort, metricsPort} {
			for _, host := range []string{ct.HostIPv4.String(), "127.0.0.1", "198.51.100.1"} {
				for _, path := range []string{"/healthz", "/metrics"} {
					u := "http://" + host + ":" + port + path
					a := agent(t, ct, "-timeout", "10s", u)
					if a.Status == 200 || strings.Contains(a.Body, "# HELP") || strings.Contains(a.Body, `"ok":true`) {
						t.Errorf("%s from the container: %d %.200s", u, a.Status, a.Body)
					}
				}
			}
		}
	})

	t.Run("no secret value in logs, audit or metrics", func(t *testing.T) {
		logB, _ := os.ReadFile(cl.LogPath)
		auditB, _ := os.ReadFile(cl.Audit)
		if len(logB) == 0 || len(auditB) == 0 {
			t.Fatalf("empty log (%d bytes) or audit (%d bytes)", len(logB), len(auditB))
		}
		secNoLeak(t, []string{real1, real2}, map[string]string{
			"daemon log": string(logB), "audit log": string(auditB), "metrics": secScrapeMetrics(t, cl),
		})
	})
}

// secRedact hides v in s for failure messages.
func secRedact(s, v string) string { return strings.ReplaceAll(s, v, "[REAL]") }

func secRand(t testing.TB) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
