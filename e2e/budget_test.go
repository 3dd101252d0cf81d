package e2e

// LLM budgets (issue 16) as a user meets them: the official Anthropic and
// OpenAI SDKs in an attached container spend small budgets against the
// fake APIs (fakeapi_test.go), get 429 budget_exhausted which they do not
// retry, `clawd ls` shows the usage, the audit lines carry the tokens, and
// a restarted daemon still refuses.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/e2e/harness"
)

const budgetE2EPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: anthropic
      hosts: api.anthropic.com
      ports: 443
      intercept: true
      action: allow
      budget: {tokens: 1000000, requests: 2, per: 24h}
    - name: openai
      hosts: api.openai.com
      ports: 443
      intercept: true
      action: allow
      budget: {tokens: 1000000, requests: 2, per: 1h, unmetered: 9000}
`

func TestBudgetRealSDKs(t *testing.T) {
	root := harness.AgentRoot(t)
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	t.Cleanup(up.AddName(fakeAnthropicHost))
	t.Cleanup(up.AddName(fakeOpenAIHost))
	realA, realO := "sk-ant-api03-real-"+secRand(t), "sk-proj-real-"+secRand(t)
	api := startFakeAPI(t, up, realA, realO)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: budgetE2EPolicy, Extra: "upstream-ca-file: " + api.CAFile + "\n"})
	for name, v := range map[string]string{"anthropic": realA, "openai": realO} {
		if out, err := secCLIStdin(cl, v, "secret", "set", name, "--preset", name); err != nil {
			t.Fatalf("secret set %s: %v\n%s", name, err, out)
		}
	}
	var env []string
	for _, l := range strings.Split(strings.TrimSpace(cl.MustCLI("env")), "\n") {
		env = append(env, l)
	}
	ct := ctd.Run(t, "agent", harness.RunOpts{Rootfs: root, Files: map[string]string{realClientsDir(t): "/clients"}, Env: append([]string{"HOME=/root", "LANG=C.UTF-8"}, env...)})
	cl.MustCLI("attach", ct.Name, "--trust-ca")

	seen := func(host string) int {
		return len(slices.DeleteFunc(api.Requests(), func(s apiSeen) bool { return s.Host != host }))
	}
	anthropic := func(mode string) clientOut {
		return runClient(t, ct, "node-official", "/clients/anthropic.cjs", mode, "b-"+mode)
	}
	openai := func(mode string) clientOut {
		return runClient(t, ct, "node-official", "/clients/openai.cjs", mode, "b-"+mode)
	}

	// Anthropic: 15 tokens a call (JSON: 12 in + 3 out; SSE: message_start
	// 12 in + message_delta 3 out). Two calls spend the 2 requests.
	if o := anthropic("create"); o.Status != 200 || o.Text == "" {
		t.Fatalf("anthropic create: %+v", o)
	}
	if o := anthropic("stream"); o.Status != 200 || len(o.Deltas) != 3 {
		t.Fatalf("anthropic stream: %+v", o)
	}
	o := anthropic("create")
	if o.Status != 429 || !strings.Contains(o.Error, "budget_exhausted") {
		t.Fatalf("anthropic over budget: %+v, want 429 budget_exhausted", o)
	}
	// The SDK retries 429s by default: x-should-retry: false stopped it.
	if n := seen(fakeAnthropicHost); n != 2 {
		t.Fatalf("the Anthropic upstream saw %d requests, want 2 (the refused one never reaches it, and is not retried)", n)
	}

	// OpenAI: a JSON call reports 15; the SDK's stream does not ask for
	// its usage (stream_options.include_usage), clawd asks for it
	// (docs/attacks/16-budget-r2.md, hole 2) and keeps the usage chunk
	// from the SDK: metered, 15. Two calls spend the 2 requests.
	if o := openai("create"); o.Status != 200 {
		t.Fatalf("openai create: %+v", o)
	}
	if o := openai("stream"); o.Status != 200 || len(o.Deltas) != 3 {
		t.Fatalf("openai stream: %+v", o)
	}
	if o := openai("create"); o.Status != 429 || !strings.Contains(o.Error, "budget_exhausted") {
		t.Fatalf("openai over budget: %+v", o)
	}
	if n := seen(fakeOpenAIHost); n != 2 {
		t.Fatalf("the OpenAI upstream saw %d requests, want 2", n)
	}

	// The audit says what each request cost, and why the last was refused.
	var tokens []string
	denials := 0
	for _, e := range cl.AuditEntries() {
		if e.Event != "decision" || (e.Host != fakeAnthropicHost && e.Host != fakeOpenAIHost) || e.Method != "POST" {
			continue
		}
		if e.Status == 429 {
			denials++
			if e.Action != "deny" || !strings.Contains(e.Reason, "budget of rule") || !strings.Contains(e.Reason, "spent") {
				t.Errorf("denial audit line %+v", e)
			}
			continue
		}
		tokens = append(tokens, fmt.Sprintf("%s=%d%s", e.Rule, e.Tokens, e.Usage))
	}
	if want := []string{"anthropic=15", "anthropic=15", "openai=15", "openai=15"}; !slices.Equal(tokens, want) || denials != 2 {
		t.Fatalf("audit tokens %v (denials %d), want %v and 2 denials", tokens, denials, want)
	}

	lsShows := func(when string) {
		t.Helper()
		ls := cl.MustCLI("ls")
		for _, want := range []string{
			ct.Name + ": budget default/anthropic: 30/1000000 tokens, 2/2 requests in the 24h window",
			ct.Name + ": budget default/openai: 30/1000000 tokens, 2/2 requests in the 1h window",
		} {
			if !strings.Contains(ls, want) || !strings.Contains(ls, "SPENT") {
				t.Fatalf("%s: clawd ls does not show %q:\n%s", when, want, ls)
			}
		}
	}
	lsShows("before the restart")

	// A policy reload (a rule added first, the budget rules keep their
	// names) keeps every window: still spent.
	cl.WritePolicy(strings.Replace(budgetE2EPolicy, "  rules:\n", "  rules:\n    - name: docs\n      hosts: docs.example.com\n      action: allow\n", 1))
	cl.MustCLI("policy", "reload")
	lsShows("after a policy reload")
	if o := anthropic("create"); o.Status != 429 || !strings.Contains(o.Error, "budget_exhausted") {
		t.Fatalf("anthropic after a reload: %+v, want 429 budget_exhausted", o)
	}

	// A restart does not hand the container a fresh budget.
	cl.Stop()
	cl.Start()
	lsShows("after the restart")
	if o := anthropic("create"); o.Status != 429 || !strings.Contains(o.Error, "budget_exhausted") {
		t.Fatalf("anthropic after a restart: %+v, want 429 budget_exhausted", o)
	}
	if n := seen(fakeAnthropicHost); n != 2 {
		t.Fatalf("after the restart the Anthropic upstream saw %d requests, want 2", n)
	}
}
