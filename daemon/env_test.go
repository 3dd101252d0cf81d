package daemon

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/secrets"
)

func testEnv() []EnvVar {
	return AgentEnv([]secrets.Secret{
		{Name: "anthropic", Preset: "anthropic", Env: []string{"ANTHROPIC_API_KEY"}, Placeholder: "clawd-ph-anthropic-0123456789abcdef0123456789abcdef"},
	})
}

func TestAgentEnv(t *testing.T) {
	got := map[string]string{}
	for _, v := range testEnv() {
		got[v.Name] = v.Value
	}
	want := map[string]string{
		"CLAWD_SECRET_ANTHROPIC": "clawd-ph-anthropic-0123456789abcdef0123456789abcdef",
		"ANTHROPIC_API_KEY":      "clawd-ph-anthropic-0123456789abcdef0123456789abcdef",
		"NODE_EXTRA_CA_CERTS":    "/etc/ssl/certs/clawd-ca.pem",
		"DENO_CERT":              "/etc/ssl/certs/clawd-ca.pem",
		"SSL_CERT_FILE":          "/etc/ssl/certs/clawd-bundle.pem",
		"REQUESTS_CA_BUNDLE":     "/etc/ssl/certs/clawd-bundle.pem",
		"CURL_CA_BUNDLE":         "/etc/ssl/certs/clawd-bundle.pem",
		"AWS_CA_BUNDLE":          "/etc/ssl/certs/clawd-bundle.pem",
		"GIT_SSL_CAINFO":         "/etc/ssl/certs/clawd-bundle.pem",
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestFormatEnv(t *testing.T) {
	vars := append(testEnv(), EnvVar{Name: "ODD", Value: `it's "quoted" $HOME`})

	var ef bytes.Buffer
	if err := FormatEnv(&ef, vars, "env-file"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ef.String(), "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/clawd-ca.pem\n") || strings.Count(ef.String(), "\n") != len(vars) {
		t.Errorf("env-file:\n%s", ef.String())
	}

	// The shell form round-trips through a real shell.
	var sh bytes.Buffer
	FormatEnv(&sh, vars, "shell")
	out, err := exec.Command("sh", "-c", sh.String()+`printf '%s|%s' "$ODD" "$ANTHROPIC_API_KEY"`).Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `it's "quoted" $HOME|clawd-ph-anthropic-0123456789abcdef0123456789abcdef` {
		t.Errorf("shell round trip: %q", out)
	}

	// The k8s form is a container env list.
	var k bytes.Buffer
	FormatEnv(&k, vars, "k8s")
	var doc struct {
		Env []struct{ Name, Value string } `yaml:"env"`
	}
	if err := yaml.Unmarshal(k.Bytes(), &doc); err != nil {
		t.Fatalf("k8s: %v\n%s", err, k.String())
	}
	if len(doc.Env) != len(vars) || doc.Env[len(vars)-1].Value != vars[len(vars)-1].Value {
		t.Errorf("k8s: %+v", doc.Env)
	}
	if err := FormatEnv(&k, vars, "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}
