package secrets

import (
	"bytes"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

const proxyPass = "corp-user:s3cret-proxy-pass"

func TestClawdSecretCredential(t *testing.T) {
	s, dir := openTest(t)
	sec := mustSet(t, s, Secret{Name: "corp-proxy", Clawd: true}, proxyPass)
	if !sec.Clawd || sec.Placeholder != "" || len(sec.Hosts) != 0 {
		t.Fatalf("Set = %+v, want a clawd secret without placeholder or hosts", sec)
	}
	agentSec := mustSet(t, s, Secret{Name: "gh", Hosts: []string{"api.github.com"}}, "ghp_agentkey123")

	// Survives a reopen (the flag is in the authenticated metadata).
	s2, err := Open(dir+"/secrets.json", dir+"/secrets.key")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{s, s2} {
		v, err := st.Credential("corp-proxy")
		if err != nil || v != proxyPass {
			t.Fatalf("Credential = %q, %v", v, err)
		}
		// An agent's secret is never handed to clawd's own uses.
		if v, err := st.Credential("gh"); err == nil || v != "" || strings.Contains(err.Error(), "ghp_agentkey123") {
			t.Errorf("Credential(agent secret) = %q, %v; want an error without the value", v, err)
		}
		if _, err := st.Credential("missing"); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("Credential(missing) error = %v", err)
		}
		if _, err := st.Credential("Bad Name"); err == nil {
			t.Error("Credential(invalid name) succeeded")
		}
	}

	// Refused settings: a clawd secret is never injected anywhere.
	for _, spec := range []Secret{
		{Name: "x", Clawd: true, Hosts: []string{"a.example"}},
		{Name: "x", Clawd: true, Preset: "github"},
		{Name: "x", Clawd: true, Header: "Authorization"},
		{Name: "x", Clawd: true, Env: []string{"X"}},
	} {
		if _, err := s.Set(spec, []byte(proxyPass)); err == nil {
			t.Errorf("Set(%+v) succeeded, want refused", spec)
		} else if strings.Contains(err.Error(), proxyPass) {
			t.Errorf("error holds the value: %v", err)
		}
	}

	// ls shows it as clawd-owned, env lines never mention it.
	var b bytes.Buffer
	FormatTable(&b, s.List())
	if !regexpMatch(`(?m)^corp-proxy\s+\(clawd-owned\)\s+-\s`, b.String()) || strings.Contains(b.String(), proxyPass) {
		t.Errorf("ls output:\n%s", b.String())
	}
	for _, l := range EnvLines(s.List()) {
		if strings.Contains(strings.ToLower(l), "corp") {
			t.Errorf("env line for a clawd secret: %s", l)
		}
	}
	if got := s.RedactString("auth " + proxyPass + " end"); got != "auth [REDACTED:corp-proxy] end" {
		t.Errorf("Redact = %q", got)
	}
	if strings.Contains(sec.String(), proxyPass) {
		t.Error("String holds the value")
	}

	// Rotating keeps it a clawd secret.
	if _, err := s.Rotate("corp-proxy", []byte("corp-user:rotated-pass")); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Credential("corp-proxy"); v != "corp-user:rotated-pass" {
		t.Errorf("after Rotate: %q", v)
	}
	// Turned into an agent secret, it gets a fresh placeholder and is no
	// longer clawd's.
	as := mustSet(t, s, Secret{Name: "corp-proxy", Hosts: []string{"b.example"}}, proxyPass)
	if !validPlaceholder("corp-proxy", as.Placeholder) {
		t.Errorf("placeholder %q", as.Placeholder)
	}
	if _, err := s.Credential("corp-proxy"); err == nil {
		t.Error("Credential of a secret turned into an agent's succeeded")
	}
	_ = agentSec
}

// TestClawdSecretNeverInjected: whatever an agent sends (the secret's name,
// something shaped like its placeholder), a clawd secret's value never
// goes into the request, and it does not count as bound to any host.
func TestClawdSecretNeverInjected(t *testing.T) {
	s, _ := openTest(t)
	mustSet(t, s, Secret{Name: "corp-proxy", Clawd: true}, proxyPass)
	fake := placeholderPrefix + "corp-proxy-0123456789abcdef0123456789abcdef"
	body := "x=" + fake + "&y={corp-proxy}"
	req := httptest.NewRequest("POST", "https://api.example.com/p?"+"q="+fake, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+fake)
	req.Header.Set("Proxy-Authorization", "corp-proxy")
	req.Header.Set("X-Name", "CLAWD_SECRET_CORP_PROXY")
	inj, err := s.Inject(req, "api.example.com")
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	var dump bytes.Buffer
	req.Write(&dump)
	if strings.Contains(dump.String(), "s3cret") {
		t.Fatalf("the clawd secret went into the request:\n%s", dump.String())
	}
	if !strings.Contains(dump.String(), "Bearer "+fake) {
		t.Errorf("request changed:\n%s", dump.String())
	}
	if len(inj.Names()) != 0 {
		t.Errorf("injected %v", inj.Names())
	}
	if s.BoundTo("api.example.com") || s.ScansBody("api.example.com") {
		t.Error("a clawd secret counts as bound / scanned")
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
