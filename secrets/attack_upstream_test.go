package secrets

import (
	"bytes"
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"
)

// HELD. An agent secret turned into a clawd secret (`clawd secret set gh
// --clawd`): the placeholder the agent still holds injects nothing, and
// nothing the agent sends (old placeholder, name, Basic-wrapped forms, the
// env variable name) makes the store put the clawd value into a request.
func TestAttackUpstreamAgentSecretTurnedClawd(t *testing.T) {
	s, _ := openTest(t)
	old := mustSet(t, s, Secret{Name: "gh", Hosts: []string{"api.github.com"}}, "ghp_agentvalue1234")
	mustSet(t, s, Secret{Name: "gh", Clawd: true}, "corp-user:clawdpass-xyz")
	basic := base64.StdEncoding.EncodeToString([]byte("x:" + old.Placeholder))
	req := httptest.NewRequest("POST", "https://api.github.com/p?t="+old.Placeholder, strings.NewReader("k="+old.Placeholder+"&gh&CLAWD_SECRET_GH"))
	req.Header.Set("Authorization", "Bearer "+old.Placeholder)
	req.Header.Set("Proxy-Authorization", "Basic "+basic)
	req.Header.Set("X-Gh", "gh")
	if _, err := s.Inject(req, "api.github.com"); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	var dump bytes.Buffer
	req.Write(&dump)
	if strings.Contains(dump.String(), "clawdpass") || strings.Contains(dump.String(), "ghp_agentvalue") {
		t.Fatalf("a value went into the request:\n%s", dump.String())
	}
	for _, l := range EnvLines(s.List()) {
		if strings.Contains(l, "GH") {
			t.Errorf("env line for the clawd secret: %s", l)
		}
	}
	if g, ok := s.Get("gh"); !ok || g.Placeholder != "" || !g.Clawd {
		t.Errorf("Get = %+v", g)
	}
	var b bytes.Buffer
	FormatTable(&b, s.List())
	if strings.Contains(b.String(), "clawdpass") || strings.Contains(b.String(), old.Placeholder) {
		t.Errorf("ls:\n%s", b.String())
	}
	// Credential of an agent secret is refused without its value.
	mustSet(t, s, Secret{Name: "oa", Hosts: []string{"api.openai.com"}}, "sk-agentvalue999")
	if v, err := s.Credential("oa"); err == nil || v != "" || strings.Contains(err.Error(), "sk-agentvalue") {
		t.Errorf("Credential(agent) = %q, %v", v, err)
	}
}
