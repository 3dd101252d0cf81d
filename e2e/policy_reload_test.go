package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// polReloadPolicy: rule "toggle" is switched by the test (%s = true/false).
const polReloadPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: a
      hosts: api.upstream.test
      ports: 8080
      paths: /a/**
      action: allow
    - name: limited
      hosts: api.upstream.test
      ports: 8080
      paths: /limited
      rate_limit: 2/hour
      action: allow
    - name: toggle
      enabled: %s
      hosts: api.upstream.test
      ports: 8080
      paths: /toggle/**
      action: allow
`

// polBrokenPolicy has a typo on line 6 and a bad CIDR on line 10.
const polBrokenPolicy = `version: 1
default:
  default_action: allow
  rules:
    - name: a
      hots: api.upstream.test
      action: allow
    - name: b
      cidrs:
        - 10.1.2.3/8
      action: allow
`

func TestPolicyHotReload(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(polReloadPolicy, "false")})
	ct := ctd.Run(t, "polreload", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	cl.MustCLI("attach", ct.Name)
	up.Reset()
	const api = "http://api.upstream.test:8080"

	if a := agent(t, ct, api+"/a/1"); a.Status != 200 {
		t.Fatalf("allowed GET: %+v", a)
	}
	polExpectDeny(t, agent(t, ct, api+"/toggle/0"), 403, "blocked_by_policy", "")
	// Use up the rate limit's budget before any reload.
	for i := 0; i < 2; i++ {
		if a := agent(t, ct, api+"/limited"); a.Status != 200 {
			t.Fatalf("request %d under the rate limit: %+v", i, a)
		}
	}

	// A keep-alive connection: one request now, the next after the reload.
	req := func(p string) string {
		return fmt.Sprintf(`GET %s HTTP/1.1\r\nHost: api.upstream.test:8080\r\n\r\n`, p)
	}
	sh(t, ct, fmt.Sprintf("((printf '%s'; i=0; while [ $i -lt 300 ] && [ ! -f /tmp/go ]; do sleep 0.1; i=$((i+1)); done; printf '%s'; sleep 5) | timeout 40 nc api.upstream.test 8080 > /tmp/ka) </dev/null >/dev/null 2>&1 &",
		req("/a/keepalive-1"), req("/toggle/keepalive-2")))
	eventually(t, "the first answer on the keep-alive connection", func() bool {
		out, _ := sh(t, ct, "cat /tmp/ka")
		return strings.Contains(out, "/a/keepalive-1")
	})

	// Editing the file (atomic rename, as editors do) changes the next decision.
	cl.WritePolicy(fmt.Sprintf(polReloadPolicy, "true"))
	var tries, okPath = 0, ""
	eventually(t, "the edited policy to allow /toggle", func() bool {
		tries++
		p := fmt.Sprintf("/toggle/%d", tries)
		a := agent(t, ct, api+p)
		if a.Status == 200 {
			okPath = p
			return true
		}
		if a.Status != 403 {
			t.Fatalf("during reload: %+v", a)
		}
		return false
	})
	// Rate-limit counters survive the reload.
	polExpectDeny(t, agent(t, ct, api+"/limited"), 429, "rate_limited", "limited")
	if n := upCount(up, "/limited"); n != 2 {
		t.Fatalf("upstream saw /limited %d times, want 2", n)
	}

	// The open keep-alive connection gets the new decision too.
	sh(t, ct, "touch /tmp/go")
	eventually(t, "the second answer on the keep-alive connection", func() bool {
		out, _ := sh(t, ct, "cat /tmp/ka")
		return strings.Count(out, "HTTP/1.1 ") == 2
	})
	if out, _ := sh(t, ct, "cat /tmp/ka"); strings.Count(out, "HTTP/1.1 200") != 2 || !strings.Contains(out, `"/toggle/keepalive-2"`) {
		t.Fatalf("keep-alive connection after the reload:\n%s", out)
	}
	// The upstream saw only the requests the new policy allowed.
	for _, s := range up.Requests() {
		if strings.HasPrefix(s.Path, "/toggle/") && s.Path != okPath && s.Path != "/toggle/keepalive-2" {
			t.Fatalf("upstream saw %s, which was denied", s.Path)
		}
	}

	// A broken edit is rejected: the previous policy keeps serving and
	// `clawd status` shows the error with its line.
	cl.WritePolicy(polBrokenPolicy)
	eventually(t, "clawd status to show the broken policy", func() bool {
		out := cl.MustCLI("status")
		return strings.Contains(out, "policy error") && strings.Contains(out, ":6:") && strings.Contains(out, `"hots"`)
	})
	if a := agent(t, ct, api+"/toggle/after-broken"); a.Status != 200 {
		t.Fatalf("the previous policy stopped serving after a broken edit: %+v", a)
	}
	// The broken file allows everything by default: it must not be in force.
	polExpectDeny(t, agent(t, ct, api+"/elsewhere"), 403, "blocked_by_policy", "")
	if out, err := cl.CLI("policy", "reload"); err == nil || !strings.Contains(out, ":6:") {
		t.Fatalf("clawd policy reload of a broken file: err %v, output %q", err, out)
	}

	// SIGHUP with the broken file: reported, previous policy kept.
	cl.HUP()
	eventually(t, "a log line for the failed SIGHUP reload", func() bool {
		for _, l := range cl.LogLines() {
			if m, _ := l["msg"].(string); strings.HasPrefix(m, "SIGHUP: policy reload failed") {
				return true
			}
		}
		return false
	})
	if a := agent(t, ct, api+"/toggle/after-hup"); a.Status != 200 {
		t.Fatalf("after a failed SIGHUP reload: %+v", a)
	}

	// A good file again: the error clears and the decision follows the file.
	cl.WritePolicy(fmt.Sprintf(polReloadPolicy, "false"))
	eventually(t, "the policy error to clear", func() bool {
		return !strings.Contains(cl.MustCLI("status"), "policy error")
	})
	polExpectDeny(t, agent(t, ct, api+"/toggle/disabled-again"), 403, "blocked_by_policy", "")
	if out := cl.MustCLI("policy", "reload"); strings.Contains(out, "error") {
		t.Fatalf("clawd policy reload: %s", out)
	}

	// SIGHUP also reopens the audit log (log rotation).
	rotated := cl.Audit + ".1"
	if err := os.Rename(cl.Audit, rotated); err != nil {
		t.Fatal(err)
	}
	cl.HUP()
	eventually(t, "a log line for the SIGHUP reload", func() bool {
		for _, l := range cl.LogLines() {
			if m, _ := l["msg"].(string); strings.HasPrefix(m, "SIGHUP: policy reloaded") {
				return true
			}
		}
		return false
	})
	if a := agent(t, ct, api+"/a/after-rotate"); a.Status != 200 {
		t.Fatalf("after SIGHUP: %+v", a)
	}
	eventually(t, "the decision in the reopened audit log", func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Path == "/a/after-rotate" {
				return true
			}
		}
		return false
	})
	if b, _ := os.ReadFile(rotated); strings.Contains(string(b), "/a/after-rotate") {
		t.Fatal("the decision after SIGHUP went to the rotated audit log")
	}
}

func TestPolicyCLICheckAndTest(t *testing.T) {
	bin := clawdBin(t)
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yaml")
	good := filepath.Join(dir, "policy.yaml")
	os.WriteFile(broken, []byte(polBrokenPolicy), 0o600)
	os.WriteFile(good, []byte(polPolicy), 0o600)
	run := func(args ...string) (string, error) {
		out, err := execOut(bin, args...)
		return out, err
	}

	out, err := run("policy", "check", broken)
	if err == nil {
		t.Fatalf("policy check of a broken file succeeded: %s", out)
	}
	for _, want := range []string{broken + `:6:`, `unknown key "hots"`, broken + `:10:`, "10.1.2.3/8"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy check output lacks %q:\n%s", want, out)
		}
	}
	if out, err := run("policy", "check", good); err != nil {
		t.Fatalf("policy check of a good file: %v\n%s", err, out)
	}

	for _, c := range []struct {
		container, method, url string
		want                   []string
	}{
		{"polweb-1", "GET", "http://api.upstream.test:8080/v1/items", []string{"allow", `"v1-read"`}},
		{"polweb-1", "POST", "http://api.upstream.test:8080/v1/items", []string{"deny", `"v1-no-writes"`}},
		{"polweb-1", "GET", "http://api.upstream.test:8080/admin/x", []string{"deny", `"admin-block"`}},
		{"polweb-1", "GET", "https://mitm.upstream.test:8443/secret/x", []string{"deny", `"mitm-secret"`}},
		{"polweb-1", "GET", "http://other.upstream.test:8080/", []string{"deny", "other.upstream.test"}},
		// Another container gets another set.
		{"polraw-1", "GET", "http://api.upstream.test:8080/v1/items", []string{"deny", `"raw"`}},
	} {
		out, err := run("policy", "test", good, "--container", c.container, c.method, c.url)
		if err != nil {
			t.Errorf("policy test %s %s %s: %v\n%s", c.container, c.method, c.url, err, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("policy test %s %s %s: %q lacks %q", c.container, c.method, c.url, out, w)
			}
		}
		if first := strings.Fields(out); len(first) == 0 || first[0] != c.want[0] {
			t.Errorf("policy test %s %s %s: decision %q, want %s", c.container, c.method, c.url, out, c.want[0])
		}
	}
	if out, err := run("policy", "test", broken, "--container", "x", "GET", "http://a.test/"); err == nil {
		t.Errorf("policy test on a broken file succeeded: %s", out)
	}
}

func execOut(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}
