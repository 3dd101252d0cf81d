package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// learnPolicy: the learner's set in mode %s; nothing else is allowed.
const learnPolicy = `version: 1
default:
  default_action: deny
sets:
  - name: learning
    match: {name: "learner-*"}
    mode: %s
    default_action: deny
    next_steps: ask the operator in the agents channel to allow it
    rules:
      - name: no-deletes
        hosts: api.upstream.test
        ports: 8080
        methods: DELETE
        action: deny
        reason: deletes go through the release pipeline
        next_steps: open a ticket in RELEASES instead; do not retry
      - name: writes
        hosts: api.upstream.test
        ports: 8080
        methods: POST
        action: approve
`

// learnDeny is clawd's 403 as the agent reads it, next_steps included.
type learnDeny struct {
	Error, Rule, Reason string
	NextSteps           string `json:"next_steps"`
}

// TestLearnThenEnforce is the roll-out story at the user's level:
// an agent under a set in mode audit works unhindered while the audit log
// records what enforcement would have done; the same set enforced refuses
// with the rule, the author's reason and next_steps; `clawd policy suggest`
// turns the audit log into a policy that, loaded, allows exactly the reads
// the agent made and holds its writes for a human, except what the author's
// own deny rule refused (never proposed).
func TestLearnThenEnforce(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: fmt.Sprintf(learnPolicy, "audit")})
	ct := ctd.Run(t, "learner", harness.RunOpts{Files: map[string]string{agentBin(t): "/agent"}})
	cl.MustCLI("attach", ct.Name)
	up.Reset()
	const api = "http://api.upstream.test:8080"
	approvals := func() []approval.Approval {
		out, err := cl.CLI("approvals", "-o", "json")
		if err != nil {
			t.Fatalf("clawd approvals: %v %s", err, out)
		}
		var list []approval.Approval
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("approvals JSON %q: %v", out, err)
		}
		return list
	}

	// 1. Audit mode: everything goes through, nobody is asked.
	seen := []struct {
		method, path, would, rule string
	}{
		{"GET", "/v1/models", "deny", "default"},
		{"GET", "/v1/models/m1", "deny", "default"},
		{"POST", "/v1/messages", "approve", "writes"},
		{"DELETE", "/v1/files/f1", "deny", "no-deletes"},
		{"PATCH", "/v1/files/f9", "deny", "default"},
	}
	for _, s := range seen {
		a := agent(t, ct, "-X", s.method, "-d", "x", api+s.path)
		if a.Status != 200 || !strings.Contains(a.Body, s.path) {
			t.Fatalf("audit mode %s %s: agent got %+v, want the upstream's answer", s.method, s.path, a)
		}
		if n := upCount(up, s.path); n != 1 {
			t.Fatalf("audit mode %s %s: upstream saw it %d times", s.method, s.path, n)
		}
	}
	// A raw TCP connection the set would refuse goes through too.
	const echo = "echo learn-echo-1 | timeout 5 nc api.upstream.test 9000"
	if out, _ := sh(t, ct, echo); !strings.Contains(out, "learn-echo-1") {
		t.Fatalf("audit mode raw TCP: %q", out)
	}
	if l := approvals(); len(l) != 0 {
		t.Fatalf("audit mode: the approver was asked: %+v", l)
	}
	var lines []audit.Entry
	eventually(t, "the audit lines of the audit-mode requests", func() bool {
		lines = lines[:0]
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDecision && e.Container == ct.Name && e.Method != "" {
				lines = append(lines, e)
			}
		}
		return len(lines) >= len(seen)
	})
	var tcpLines []audit.Entry
	found := false
	for deadline := time.Now().Add(20 * time.Second); !found && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		tcpLines = tcpLines[:0]
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDecision && e.Container == ct.Name && e.Method == "" {
				tcpLines = append(tcpLines, e)
				found = found || e.Proto == "tcp" && strings.HasSuffix(e.Dst, ":9000")
			}
		}
	}
	for _, e := range tcpLines {
		// Host is one of the names clawd's DNS gave the container for the
		// address (here api.upstream.test, the only one it looked up).
		if e.Proto == "tcp" && strings.HasSuffix(e.Dst, ":9000") &&
			(e.Action != "allow" || e.Mode != "audit" || e.Would != "deny" || e.Rule != "default" || e.BytesIn == 0) {
			t.Errorf("raw TCP audit line %+v", e)
		}
	}
	if !found {
		t.Fatalf("no audit line for the raw TCP connection; connection lines: %+v", tcpLines)
	}
	for i, s := range seen {
		e := lines[i]
		if e.Method != s.method || e.Path != s.path || e.Action != "allow" || e.Mode != "audit" || e.Would != s.would || e.Rule != s.rule || e.Status != 200 {
			t.Errorf("audit line for %s %s: %+v, want action allow, mode audit, would %s, rule %s", s.method, s.path, e, s.would, s.rule)
		}
		if s.would == "deny" && e.Reason == "" {
			t.Errorf("audit line for %s %s says not why it would be denied", s.method, s.path)
		}
	}

	// 2. The same set enforced: refused, and the agent is told why and what to do.
	cl.WritePolicy(fmt.Sprintf(learnPolicy, "enforce"))
	cl.MustCLI("policy", "reload")
	up.Reset()
	a := agent(t, ct, "-X", "DELETE", api+"/v1/files/f2")
	d := learnParse(t, a, 403)
	if d.Error != "blocked_by_policy" || d.Rule != "no-deletes" || !strings.Contains(d.Reason, "deletes go through the release pipeline") ||
		d.NextSteps != "open a ticket in RELEASES instead; do not retry" {
		t.Errorf("enforced DELETE: agent got %+v", d)
	}
	a = agent(t, ct, api+"/v1/models")
	if d := learnParse(t, a, 403); d.Rule != "default" || d.NextSteps != "ask the operator in the agents channel to allow it" {
		t.Errorf("enforced GET: agent got %+v", d)
	}
	if n := len(up.Requests()); n != 0 {
		t.Fatalf("upstream saw %d requests under enforce", n)
	}
	if out, _ := sh(t, ct, "echo learn-echo-2 | timeout 5 nc api.upstream.test 9000"); strings.Contains(out, "learn-echo-2") {
		t.Fatalf("enforced raw TCP went through: %q", out)
	}

	// 3. clawd policy suggest reads that audit log (found through clawd.yaml).
	cmd := exec.Command(cl.Bin, "policy", "suggest", "--config", cl.Config, "--since", "1h", "--container", ct.Name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("clawd policy suggest: %v\n%s", err, stderr.String())
	}
	t.Logf("suggested policy:\n%s", out)
	if !strings.Contains(stderr.String(), "rules proposed") ||
		// the DELETE in audit mode, and again enforced: never proposed
		!strings.Contains(stderr.String(), "2 requests your own deny or approve rules decided were left out") {
		t.Errorf("suggest summary: %q", stderr.String())
	}
	file := filepath.Join(t.TempDir(), "suggested.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if chk, err := cl.CLI("policy", "check", file); err != nil {
		t.Fatalf("clawd policy check on the suggestion: %v\n%s", err, chk)
	}
	cl.WritePolicy(string(out))
	cl.MustCLI("policy", "reload")
	up.Reset()

	// Loaded, it allows the reads that were seen (and their prefix), no others.
	for _, p := range []string{"/v1/models", "/v1/models/m1", "/v1/models/m2"} {
		if a := agent(t, ct, api+p); a.Status != 200 {
			t.Errorf("suggested policy: GET %s: %+v", p, a)
		}
	}
	if d := learnParse(t, agent(t, ct, api+"/admin"), 403); d.Error != "blocked_by_policy" || d.NextSteps == "" {
		t.Errorf("suggested policy: GET /admin: %+v", d)
	}
	if out, _ := sh(t, ct, "echo learn-echo-3 | timeout 5 nc api.upstream.test 9000"); !strings.Contains(out, "learn-echo-3") {
		t.Errorf("suggested policy: the raw TCP connection that was seen: %q", out)
	}
	if out, _ := sh(t, ct, "echo learn-echo-4 | timeout 5 nc other.upstream.test 9000"); strings.Contains(out, "learn-echo-4") {
		t.Errorf("suggested policy: a raw TCP connection never seen went through: %q", out)
	}
	if d := learnParse(t, agent(t, ct, "-X", "PUT", api+"/v1/models"), 403); d.Error != "blocked_by_policy" {
		t.Errorf("suggested policy: PUT (never seen): %+v", d)
	}
	// The DELETE the author's no-deletes rule refused was not proposed:
	// refused at once, nobody asked.
	if d := learnParse(t, agent(t, ct, "-X", "DELETE", api+"/v1/files/f3"), 403); d.Error != "blocked_by_policy" || d.Rule != "default" {
		t.Errorf("suggested policy: DELETE (the author denied it): %+v", d)
	}
	// The writes are held: the approver sees them; one denied, one approved.
	post := apprAgentAsync(ct, "-timeout", "90s", "-X", "POST", "-d", "hello", api+"/v1/messages")
	del := apprAgentAsync(ct, "-timeout", "90s", "-X", "PATCH", "-d", "x", api+"/v1/files/f3")
	var postID, delID string
	eventually(t, "both writes to be held for approval", func() bool {
		for _, h := range approvals() {
			switch {
			case strings.HasSuffix(h.URL, "/v1/messages") && h.Method == "POST" && h.Container.Name == ct.Name:
				postID = h.ID
			case strings.HasSuffix(h.URL, "/v1/files/f3") && h.Method == "PATCH":
				delID = h.ID
			}
		}
		return postID != "" && delID != ""
	})
	if n := upCount(up, "/v1/messages") + upCount(up, "/v1/files/f3"); n != 0 {
		t.Fatalf("upstream saw %d held writes before any decision", n)
	}
	cl.MustCLI("deny", postID)
	a = apprAwait(t, post)
	if d := learnParse(t, a, 403); d.Error != "denied_by_approver" || d.NextSteps == "" || !strings.Contains(d.NextSteps, "Do not retry") {
		t.Errorf("denied POST: agent got %+v", d)
	}
	cl.MustCLI("approve", delID)
	if a := apprAwait(t, del); a.Status != 200 || !strings.Contains(a.Body, "/v1/files/f3") {
		t.Errorf("approved PATCH: %+v", a)
	}
	if upCount(up, "/v1/messages") != 0 || upCount(up, "/v1/files/f3") != 1 {
		t.Errorf("upstream saw POST %d, PATCH %d; want 0 and 1", upCount(up, "/v1/messages"), upCount(up, "/v1/files/f3"))
	}
}

func learnParse(t *testing.T, a AgentAnswer, status int) learnDeny {
	t.Helper()
	if a.Status != status {
		t.Fatalf("status %d, want %d: %+v", a.Status, status, a)
	}
	var d learnDeny
	if err := json.Unmarshal([]byte(a.Body), &d); err != nil {
		t.Fatalf("answer is not clawd's JSON: %+v: %v", a, err)
	}
	return d
}
