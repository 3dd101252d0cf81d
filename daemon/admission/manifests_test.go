package admission

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const manifests = "../../deploy/kubernetes"

func decodeAll(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		docs = append(docs, d)
	}
}

// get walks a decoded YAML document by keys and list indexes.
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestWebhookManifests checks that deploy/kubernetes/webhook says what this
// package and the daemon serve: the Service reaches the port the DaemonSet
// patch listens on, the webhook calls Path for labelled pods with v1
// reviews, and the certificate files and patch are where
// `clawd webhook-cert` writes them.
func TestWebhookManifests(t *testing.T) {
	dir := filepath.Join(manifests, "webhook")
	var svc, mwc, ds map[string]any
	for _, f := range []string{"webhook.yaml", "daemonset-webhook.yaml"} {
		for _, d := range decodeAll(t, filepath.Join(dir, f)) {
			switch d["kind"] {
			case "Service":
				svc = d
			case "MutatingWebhookConfiguration":
				mwc = d
			case "DaemonSet":
				ds = d
			}
		}
	}
	if svc == nil || mwc == nil || ds == nil {
		t.Fatal("webhook manifests lack a Service, MutatingWebhookConfiguration or DaemonSet patch")
	}
	if get(mwc, "metadata", "name") != ConfigName {
		t.Errorf("MutatingWebhookConfiguration name %v, want %s", get(mwc, "metadata", "name"), ConfigName)
	}
	wh := get(mwc, "webhooks", 0)
	if get(wh, "name") != WebhookName || get(wh, "sideEffects") != "None" ||
		!slices.Equal(toStrings(get(wh, "admissionReviewVersions")), []string{"v1"}) {
		t.Errorf("webhook %v", wh)
	}
	cs := get(wh, "clientConfig", "service")
	if get(cs, "name") != get(svc, "metadata", "name") || get(cs, "namespace") != get(svc, "metadata", "namespace") || get(cs, "path") != Path {
		t.Errorf("clientConfig.service %v does not name the Service %v at %s", cs, get(svc, "metadata"), Path)
	}
	names := ServiceNames(get(svc, "metadata", "name").(string), get(svc, "metadata", "namespace").(string))
	if names[0] != "clawd-webhook.clawd-system.svc" {
		t.Errorf("the Service is %s; clawd webhook-cert's defaults name clawd-webhook.clawd-system", names[0])
	}
	if get(wh, "objectSelector", "matchLabels", AttachLabel) != "true" {
		t.Errorf("objectSelector %v", get(wh, "objectSelector"))
	}
	rule := get(wh, "rules", 0)
	if !slices.Equal(toStrings(get(rule, "resources")), []string{"pods"}) || !slices.Equal(toStrings(get(rule, "operations")), []string{"CREATE"}) {
		t.Errorf("rule %v", rule)
	}
	if get(svc, "spec", "selector", "app.kubernetes.io/name") != "clawd" || get(svc, "spec", "ports", 0, "port") != 443 {
		t.Errorf("Service %v", get(svc, "spec"))
	}
	target := get(svc, "spec", "ports", 0, "targetPort")

	ctr := get(ds, "spec", "template", "spec", "containers", 0)
	env := map[string]string{}
	for _, e := range get(ctr, "env").([]any) {
		env[get(e, "name").(string)] = get(e, "value").(string)
	}
	ap, err := netip.ParseAddrPort(env["CLAWD_WEBHOOK_LISTEN"])
	if err != nil || !ap.Addr().IsUnspecified() || strconv.Itoa(int(ap.Port())) != strconv.Itoa(target.(int)) {
		t.Errorf("CLAWD_WEBHOOK_LISTEN %q, want 0.0.0.0 and the Service's targetPort %v", env["CLAWD_WEBHOOK_LISTEN"], target)
	}
	mount := get(ctr, "volumeMounts", 0)
	if filepath.Dir(env["CLAWD_WEBHOOK_CERT"]) != get(mount, "mountPath") || filepath.Base(env["CLAWD_WEBHOOK_CERT"]) != "tls.crt" ||
		filepath.Base(env["CLAWD_WEBHOOK_KEY"]) != "tls.key" {
		t.Errorf("cert %q key %q, mount %v", env["CLAWD_WEBHOOK_CERT"], env["CLAWD_WEBHOOK_KEY"], mount)
	}
	vol := get(ds, "spec", "template", "spec", "volumes", 0)
	if get(vol, "name") != get(mount, "name") {
		t.Errorf("volume %v, mount %v", vol, mount)
	}

	k := decodeAll(t, filepath.Join(dir, "kustomization.yaml"))[0]
	if k["kind"] != "Component" {
		t.Errorf("deploy/kubernetes/webhook is a %v, want a kustomize Component", k["kind"])
	}
	gen := get(k, "secretGenerator", 0)
	if get(gen, "name") != get(vol, "secret", "secretName") || get(gen, "type") != "kubernetes.io/tls" ||
		!slices.Equal(toStrings(get(gen, "files")), []string{"tls/tls.crt", "tls/tls.key"}) {
		t.Errorf("secretGenerator %v, volume %v", gen, vol)
	}
	var patches []string
	for _, p := range get(k, "patches").([]any) {
		patches = append(patches, get(p, "path").(string))
	}
	if !slices.Contains(patches, "tls/ca-bundle.yaml") || !slices.Contains(patches, "daemonset-webhook.yaml") {
		t.Errorf("patches %v", patches)
	}
	base := decodeAll(t, filepath.Join(manifests, "kustomization.yaml"))[0]
	if !slices.Contains(toStrings(base["components"]), "webhook") {
		t.Error("deploy/kubernetes does not include the webhook component")
	}
	ignore, _ := os.ReadFile(filepath.Join(dir, ".gitignore"))
	if !strings.Contains(string(ignore), "tls/") {
		t.Error("the generated key under webhook/tls could be committed")
	}
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
