package policy

import (
	"strings"
	"testing"
	"time"
)

func TestExplain(t *testing.T) {
	p, err := Load("../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	coder := Container{Name: "agent1", Labels: map[string]string{"clawd.dev/profile": "coder"}}
	tests := []struct {
		c      Container
		method string
		url    string
		want   string // FormatDecision prefix
	}{
		{coder, "GET", "https://api.github.com/repos/acme/app/issues", `allow (rule "github", TLS intercepted)`},
		{coder, "post", "https://api.github.com/repos/acme/app/issues", `approve (rule "github", timeout 15m0s, TLS intercepted): rule "github" is read-only: POST needs human approval`},
		{coder, "POST", "https://api.github.com/repos/acme/app/issues/7/comments", `approve (rule "github-issue-comments", timeout 5m0s, TLS intercepted)`},
		{coder, "DELETE", "https://API.github.com:443/repos/acme/app", `deny (rule "github-no-deletes", TLS intercepted)`},
		{coder, "POST", "https://api.github.com/repos/acme%2Fapp/issues/7/comments", `deny (rule "github-issue-comments", TLS intercepted): denied: the request path contains an encoded slash`},
		{coder, "GET", "https://github.com/acme/app.git/info/refs?service=git-upload-pack", `allow (rule "github-git")`},
		{coder, "GET", "https://raw.githubusercontent.com/acme/app/main/README.md", `allow (rule "github-git")`},
		{coder, "POST", "https://api.stripe.com/v1/refunds", `need body (rule "stripe-no-reverse-transfer", TLS intercepted)`},
		{coder, "POST", "https://api.stripe.com/v1/charges", `deny (rule "default", TLS intercepted)`}, // no Content-Type header
		{coder, "GET", "https://api.stripe.com/v1/customers/cus_1", `allow (rule "stripe-read", TLS intercepted)`},
		{coder, "", "tcp://10.20.1.2:5432", `allow (rule "postgres")`},
		{coder, "", "tcp://[fd00:20::5]:5432", `allow (rule "postgres")`},
		{coder, "", "tcp://10.21.1.2:5432", `deny (rule "default"): no rule allows 10.21.1.2:5432 for container "agent1" (set "coders")`},
		{coder, "GET", "http://example.com/", `deny (rule "default"): no rule allows host "example.com" port 80 for container "agent1" (set "coders"); add a rule`},
		{Container{Name: "sandbox-7", Runtime: "docker"}, "POST", "https://api.anthropic.com/v1/messages", `allow (rule "anthropic-api")`},
		{Container{Name: "sandbox-7", Runtime: "docker"}, "GET", "https://api.github.com/", `deny (rule "default"): no rule allows host "api.github.com" port 443 for container "sandbox-7" (set "sandboxes")`},
		{Container{Name: "x", Namespace: "experiments"}, "GET", "https://anything.example/", `approve (rule "default", timeout 30m0s)`},
		{Container{Name: "x", Namespace: "experiments"}, "", "tcp://192.0.2.1:25", `deny (rule "no-smtp")`},
		{Container{Name: "someone"}, "GET", "https://api.anthropic.com/v1/models", `allow (rule "anthropic-api")`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.url, func(t *testing.T) {
			d, err := Explain(p, tt.c, tt.method, tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if got := FormatDecision(d); !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got  %s\nwant %s...", got, tt.want)
			}
		})
	}
}

func TestExplainErrors(t *testing.T) {
	p := mustParse(t, onlyAnthropic)
	for _, u := range []string{"ftp://a.example/", "https:///x", "tcp://a.example", "http://a.example:0/", "http://a.example:99999/", "://bad"} {
		if _, err := Explain(p, Container{}, "GET", u); err == nil || !strings.HasPrefix(err.Error(), "explain: ") {
			t.Errorf("Explain(%q) err = %v", u, err)
		}
	}
	if _, err := Explain(p, Container{}, "G T", "http://a.example/"); err == nil {
		t.Error("bad method accepted")
	}
	if _, err := Explain(nil, Container{}, "GET", "http://a.example/"); err == nil {
		t.Error("nil policy accepted")
	}
}

func TestFormatDecision(t *testing.T) {
	for _, tt := range []struct {
		d    Decision
		want string
	}{
		{Decision{Action: Allow, Rule: "r", Reason: "allowed by rule \"r\""}, `allow (rule "r"): allowed by rule "r"`},
		{Decision{Action: Approve, Rule: "r", ApprovalTimeout: 10 * time.Minute, Intercept: true}, `approve (rule "r", timeout 10m0s, TLS intercepted)`},
		{Decision{Action: Deny, Rule: "r", RateLimited: true, RetryAfter: 30 * time.Second}, `deny (rule "r", rate limited, retry after 30s)`},
		{Decision{Action: Deny, NeedBody: true, Rule: "b"}, `need body (rule "b")`},
		{Decision{}, `undecided`},
	} {
		if got := FormatDecision(tt.d); got != tt.want {
			t.Errorf("FormatDecision = %q, want %q", got, tt.want)
		}
	}
}
