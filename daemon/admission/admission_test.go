package admission

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/proxy/ca"
)

const placeholder = "clawd-ph-anthropic-0123456789abcdef0123456789abcdef"

func testVars() []ca.EnvVar {
	return append([]ca.EnvVar{{Name: "ANTHROPIC_API_KEY", Value: placeholder}}, ca.TrustEnv()...)
}

// serveTLS runs the handler behind the CertLoader on loopback, as the
// daemon does, and returns a client that trusts the generated CA and names
// the Service, as the API server does.
func serveTLS(t *testing.T, h http.Handler) (string, *http.Client) {
	t.Helper()
	certs, err := NewCerts("clawd-webhook", "clawd-system", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, certs.Cert, 0o644)
	os.WriteFile(keyFile, certs.Key, 0o600)
	l := &CertLoader{CertFile: certFile, KeyFile: keyFile}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{GetCertificate: l.GetCertificate, MinVersion: tls.VersionTLS12}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certs.CA) {
		t.Fatal("bad CA")
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "clawd-webhook.clawd-system.svc"},
	}}
	return "https://" + ln.Addr().String() + Path, c
}

func post(t *testing.T, c *http.Client, url string, body []byte) Review {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var rev Review
	if err := json.Unmarshal(b, &rev); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	if rev.APIVersion != "admission.k8s.io/v1" || rev.Kind != "AdmissionReview" || rev.Response == nil || rev.Request != nil {
		t.Fatalf("answer is not an AdmissionReview response: %s", b)
	}
	// The wire form: patch is base64 of a JSON array.
	var raw struct {
		Response map[string]any `json:"response"`
	}
	json.Unmarshal(b, &raw)
	if p, ok := raw.Response["patch"]; ok {
		if _, isString := p.(string); !isString {
			t.Fatalf("patch is not a base64 string on the wire: %s", b)
		}
	}
	return rev
}

func fixture(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/pod-create.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withObject returns the fixture review with its object edited by f.
func withReview(t *testing.T, f func(rev map[string]any)) []byte {
	t.Helper()
	var rev map[string]any
	json.Unmarshal(fixture(t), &rev)
	f(rev)
	b, _ := json.Marshal(rev)
	return b
}

func object(rev map[string]any) map[string]any {
	return rev["request"].(map[string]any)["object"].(map[string]any)
}

func TestWebhookMutatesLabelledPod(t *testing.T) {
	var logged []string
	url, c := serveTLS(t, &Handler{Env: testVars, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	in := fixture(t)
	rev := post(t, c, url, in)
	r := rev.Response
	if r.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" || !r.Allowed || r.PatchType != "JSONPatch" || len(r.Patch) == 0 {
		t.Fatalf("response %+v", r)
	}
	var orig map[string]any
	json.Unmarshal(in, &orig)
	obj := object(orig)
	patched := applyPatch(t, obj, r.Patch)

	var p struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			InitContainers []struct {
				Name string
				Env  []map[string]any
			} `json:"initContainers"`
			Containers []struct {
				Name string
				Env  []map[string]any
			} `json:"containers"`
		} `json:"spec"`
	}
	b, _ := json.Marshal(patched)
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if p.Metadata.Labels[TrustLabel] != "true" || p.Metadata.Labels["app"] != "coder" || p.Metadata.Labels[AttachLabel] != "true" {
		t.Errorf("labels %v", p.Metadata.Labels)
	}
	env := func(list []map[string]any) map[string]any {
		m := map[string]any{}
		for _, e := range list {
			if v, ok := e["value"]; ok {
				m[e["name"].(string)] = v
			} else {
				m[e["name"].(string)] = e["valueFrom"]
			}
		}
		return m
	}
	all := append(append([]struct {
		Name string
		Env  []map[string]any
	}{}, p.Spec.InitContainers...), p.Spec.Containers...)
	if len(all) != 3 {
		t.Fatalf("containers %+v", all)
	}
	for _, ctr := range all {
		e := env(ctr.Env)
		for _, v := range testVars() {
			want := v.Value
			if ctr.Name == "agent" && v.Name == "NODE_EXTRA_CA_CERTS" {
				want = "/custom/ca.pem" // the pod's own value wins
			}
			if e[v.Name] != want {
				t.Errorf("container %s: %s = %v, want %q", ctr.Name, v.Name, e[v.Name], want)
			}
		}
	}
	if e := env(p.Spec.Containers[0].Env); e["POD_NAME"] == nil || len(p.Spec.Containers[0].Env) != len(testVars())+1 {
		t.Errorf("agent env %v", p.Spec.Containers[0].Env)
	}
	if a := p.Metadata.Annotations[InjectedAnnotation]; !strings.Contains(a, "ANTHROPIC_API_KEY") || !strings.Contains(a, "SSL_CERT_FILE") {
		t.Errorf("annotations %v", p.Metadata.Annotations)
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "agents/coder-7d9c8f6b5-*") || strings.Contains(logged[0], placeholder) {
		t.Errorf("log %q", logged)
	}

	// Reinvoked on the patched pod, the webhook has nothing to add.
	again := withReview(t, func(rev map[string]any) { rev["request"].(map[string]any)["object"] = patched })
	if r := post(t, c, url, again).Response; r.PatchType != "" || len(r.Patch) != 0 || !r.Allowed {
		t.Errorf("second review patched again: %s", r.Patch)
	}
}

func TestWebhookLeavesOthersAlone(t *testing.T) {
	url, c := serveTLS(t, &Handler{Env: testVars})
	for name, edit := range map[string]func(rev map[string]any){
		"unlabelled pod": func(rev map[string]any) {
			delete(object(rev)["metadata"].(map[string]any)["labels"].(map[string]any), AttachLabel)
		},
		"attach=false": func(rev map[string]any) {
			object(rev)["metadata"].(map[string]any)["labels"].(map[string]any)[AttachLabel] = "false"
		},
		"update": func(rev map[string]any) { rev["request"].(map[string]any)["operation"] = "UPDATE" },
		"not a pod": func(rev map[string]any) {
			rev["request"].(map[string]any)["kind"] = map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"}
		},
		"ephemeral containers subresource": func(rev map[string]any) {
			rev["request"].(map[string]any)["subResource"] = "ephemeralcontainers"
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := post(t, c, url, withReview(t, edit)).Response
			if !r.Allowed || r.PatchType != "" || len(r.Patch) != 0 || r.UID == "" {
				t.Errorf("response %+v", r)
			}
		})
	}
	t.Run("opted out of the environment", func(t *testing.T) {
		r := post(t, c, url, withReview(t, func(rev map[string]any) {
			object(rev)["metadata"].(map[string]any)["annotations"] = map[string]any{OptOutAnnotation: "false"}
		})).Response
		var ops []Op
		json.Unmarshal(r.Patch, &ops)
		if len(ops) != 1 || ops[0].Path != "/metadata/labels/clawd.dev~1trust-ca" {
			t.Errorf("ops %+v", ops)
		}
	})
	t.Run("unreadable object is let through", func(t *testing.T) {
		r := post(t, c, url, withReview(t, func(rev map[string]any) { rev["request"].(map[string]any)["object"] = "not a pod" })).Response
		if !r.Allowed || len(r.Patch) != 0 || len(r.Warnings) != 1 {
			t.Errorf("response %+v", r)
		}
	})
}

func TestWebhookRefusesBadRequests(t *testing.T) {
	url, c := serveTLS(t, &Handler{Env: testVars})
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	for name, tc := range map[string]struct {
		ctype string
		body  []byte
		want  int
	}{
		"text body":  {"text/plain", fixture(t), 415},
		"not JSON":   {"application/json", []byte("{"), 400},
		"no request": {"application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400},
		"v1beta1":    {"application/json", bytes.Replace(fixture(t), []byte(`"admission.k8s.io/v1"`), []byte(`"admission.k8s.io/v1beta1"`), 1), 400},
		"too large":  {"application/json", bytes.Repeat([]byte(" "), maxReview+10), 413},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := c.Post(url, tc.ctype, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// The API server checks the serving certificate against the Service name.
	certs, _ := NewCerts("clawd-webhook", "clawd-system", time.Hour)
	x, _ := tls.X509KeyPair(certs.Cert, certs.Key)
	leaf, _ := x509.ParseCertificate(x.Certificate[0])
	for _, n := range ServiceNames("clawd-webhook", "clawd-system") {
		if leaf.VerifyHostname(n) != nil {
			t.Errorf("serving certificate does not cover %s", n)
		}
	}
}

func TestCABundlePatch(t *testing.T) {
	certs, _ := NewCerts("clawd-webhook", "clawd-system", time.Hour)
	p := string(CABundlePatch(certs.CA))
	for _, want := range []string{"kind: MutatingWebhookConfiguration", "name: " + ConfigName, "- name: " + WebhookName, "caBundle: "} {
		if !strings.Contains(p, want) {
			t.Errorf("patch lacks %q:\n%s", want, p)
		}
	}
}

// applyPatch applies RFC 6902 "add" operations (all the webhook emits).
func applyPatch(t *testing.T, doc map[string]any, patch []byte) map[string]any {
	t.Helper()
	var ops []Op
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	// Work on a copy.
	b, _ := json.Marshal(doc)
	var out map[string]any
	json.Unmarshal(b, &out)
	for _, op := range ops {
		if op.Op != "add" {
			t.Fatalf("unexpected op %+v", op)
		}
		toks := strings.Split(strings.TrimPrefix(op.Path, "/"), "/")
		for i := range toks {
			toks[i] = strings.ReplaceAll(strings.ReplaceAll(toks[i], "~1", "/"), "~0", "~")
		}
		vb, _ := json.Marshal(op.Value)
		var v any
		json.Unmarshal(vb, &v)
		var cur any = out
		for i, tok := range toks {
			last := i == len(toks)-1
			switch c := cur.(type) {
			case map[string]any:
				if last {
					if _, exists := c[tok]; exists && op.Path != "" {
						// "add" on an existing member replaces it; the webhook
						// must not rely on that.
						t.Fatalf("op %s replaces an existing member", op.Path)
					}
					c[tok] = v
				} else {
					nxt, ok := c[tok]
					if !ok {
						t.Fatalf("op %s: no parent %s", op.Path, tok)
					}
					cur = nxt
				}
			case []any:
				if last {
					if tok != "-" {
						t.Fatalf("op %s: only appends expected", op.Path)
					}
					// Re-set the parent slice.
					setSlice(t, out, toks[:i], append(c, v))
				} else {
					n, err := strconv.Atoi(tok)
					if err != nil || n >= len(c) {
						t.Fatalf("op %s: bad index %s", op.Path, tok)
					}
					cur = c[n]
				}
			default:
				t.Fatalf("op %s: cannot descend into %T", op.Path, cur)
			}
		}
	}
	return out
}

func setSlice(t *testing.T, doc map[string]any, toks []string, v []any) {
	var cur any = doc
	for i, tok := range toks {
		last := i == len(toks)-1
		switch c := cur.(type) {
		case map[string]any:
			if last {
				c[tok] = v
				return
			}
			cur = c[tok]
		case []any:
			n, _ := strconv.Atoi(tok)
			if last {
				c[n] = v
				return
			}
			cur = c[n]
		}
	}
	t.Fatalf("cannot set %v", toks)
}
