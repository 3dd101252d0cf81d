package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/e2e/harness"
)

// Issue 16, "audit that leaves the host": the daemon's audit log is a
// signed hash chain that `clawd audit verify` checks, and every line also
// goes to a real OpenTelemetry Collector (e2e/otelcol: the upstream OTLP
// receiver) over OTLP/HTTP.

var (
	otelcolOnce sync.Once
	otelcolPath string
	otelcolErr  error
)

// otelcolBin builds e2e/otelcol once, cached under /var/cache/clawd-e2e
// keyed by its sources (a first build takes a few minutes on 2 cores).
func otelcolBin(t testing.TB) string {
	t.Helper()
	otelcolOnce.Do(func() {
		h := sha256.New()
		for _, f := range []string{"main.go", "go.mod", "go.sum"} {
			b, err := os.ReadFile(filepath.Join("otelcol", f))
			if err != nil {
				otelcolErr = err
				return
			}
			fmt.Fprintf(h, "%s %d\n", f, len(b))
			h.Write(b)
		}
		otelcolPath = filepath.Join(harness.AgentRootCache, "otelcol-"+hex.EncodeToString(h.Sum(nil))[:16])
		if _, err := os.Stat(otelcolPath); err == nil {
			return
		}
		if err := os.MkdirAll(harness.AgentRootCache, 0o755); err != nil {
			otelcolErr = err
			return
		}
		tmp := otelcolPath + ".tmp" + shortRand()
		cmd := exec.Command("go", "build", "-o", tmp, ".")
		cmd.Dir = "otelcol"
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			otelcolErr = fmt.Errorf("build e2e/otelcol: %v\n%s", err, out)
			return
		}
		otelcolErr = os.Rename(tmp, otelcolPath)
	})
	if otelcolErr != nil {
		t.Fatal(otelcolErr)
	}
	return otelcolPath
}

func shortRand() string {
	b := make([]byte, 4)
	f, _ := os.Open("/dev/urandom")
	f.Read(b)
	f.Close()
	return hex.EncodeToString(b)
}

// collector is a running otelcol with an OTLP/HTTP receiver on loopback
// that writes every batch it receives to Out.
type collector struct {
	Endpoint string
	Out      string
	cmd      *exec.Cmd
}

func startCollector(t *testing.T) *collector { return startCollectorProto(t, "http") }

// startCollectorProto starts a collector receiving OTLP over proto ("http"
// or "grpc"); Endpoint is what clawd.yaml's audit-otlp endpoint takes.
func startCollectorProto(t *testing.T, proto string) *collector {
	t.Helper()
	bin := otelcolBin(t)
	dir := t.TempDir()
	addr := freePort(t)
	c := &collector{Endpoint: "http://" + addr, Out: filepath.Join(dir, "received.jsonl")}
	if proto == "grpc" {
		c.Endpoint = addr
	}
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      `+proto+`:
        endpoint: %s
exporters:
  jsonlines:
    path: %s
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [jsonlines]
`, addr, c.Out)
	cfgPath := filepath.Join(dir, "otelcol.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	logf, _ := os.Create(filepath.Join(dir, "otelcol.log"))
	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		c.cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("collector log:\n%s", tail(string(b), 4000))
		}
	})
	eventually(t, "the collector listens", func() bool {
		b, _ := os.ReadFile(logf.Name())
		return strings.Contains(string(b), "Everything is ready")
	})
	return c
}

// otlpRecord is what the collector wrote of one log record (OTLP JSON).
type otlpRecord struct {
	Body     string
	Severity string
	Event    string
	Attrs    map[string]string
	Resource map[string]string
}

type otlpKV struct {
	Key   string `json:"key"`
	Value struct {
		String *string `json:"stringValue"`
		Int    *string `json:"intValue"`
		Double *float64
	} `json:"value"`
}

func kvMap(kvs []otlpKV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch {
		case kv.Value.String != nil:
			m[kv.Key] = *kv.Value.String
		case kv.Value.Int != nil:
			m[kv.Key] = *kv.Value.Int
		}
	}
	return m
}

// Received reads the records the collector got, in order.
func (c *collector) Received(t *testing.T) []otlpRecord {
	t.Helper()
	f, err := os.Open(c.Out)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []otlpRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var batch struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKV `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						Body struct {
							String string `json:"stringValue"`
						} `json:"body"`
						SeverityText string   `json:"severityText"`
						EventName    string   `json:"eventName"`
						Attributes   []otlpKV `json:"attributes"`
					} `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &batch); err != nil {
			t.Fatalf("collector output %q: %v", sc.Text(), err)
		}
		for _, rl := range batch.ResourceLogs {
			res := kvMap(rl.Resource.Attributes)
			for _, sl := range rl.ScopeLogs {
				for _, r := range sl.LogRecords {
					out = append(out, otlpRecord{Body: r.Body.String, Severity: r.SeverityText, Event: r.EventName, Attrs: kvMap(r.Attributes), Resource: res})
				}
			}
		}
	}
	return out
}

const auditxPolicy = `version: 1
default:
  default_action: deny
  rules:
    - name: up-ok
      hosts: api.upstream.test
      ports: 8080
      paths: /ok/**
      action: allow
    - name: up-block
      hosts: api.upstream.test
      ports: 8080
      paths: /blocked/**
      action: deny
      reason: blocked by the e2e policy
`

func TestAuditChainVerifiesAndGoesToTheCollector(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	up := harness.SharedUpstream(t)
	col := startCollector(t)
	hdr := filepath.Join(t.TempDir(), "otlp-headers")
	os.WriteFile(hdr, []byte("Authorization: Bearer e2e-collector-token\n"), 0o600)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: auditxPolicy, Extra: fmt.Sprintf(`audit-checkpoint-every: 4
audit-otlp:
  endpoint: %s
  headers-file: %s
  timeout: 5s
  resource:
    deployment.environment: e2e
`, col.Endpoint, hdr)})
	ct := ctd.Run(t, "auditx", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	up.Reset()

	const api = "http://api.upstream.test:8080"
	if out, code := wget(t, ct, api+"/ok/1"); code != 0 || !strings.Contains(out, "/ok/1") {
		t.Fatalf("allowed request: %d %s", code, out)
	}
	if out, code := wget(t, ct, api+"/blocked/1"); code == 0 || !strings.Contains(out, "403") {
		t.Fatalf("denied request got through: %d %s", code, out)
	}
	for _, s := range up.Requests() {
		if strings.HasPrefix(s.Path, "/blocked") {
			t.Fatalf("the upstream saw the denied request: %+v", s)
		}
	}
	find := func(path string) *audit.Entry {
		for _, e := range cl.AuditEntries() {
			if e.Event == audit.EventDecision && e.Path == path {
				return &e
			}
		}
		return nil
	}
	eventually(t, "both decisions audited", func() bool { return find("/ok/1") != nil && find("/blocked/1") != nil })
	// clawd status names the chain's head: the seq a copy should reach.
	m := regexp.MustCompile(`audit chain head:  seq (\d+), sha256 [0-9a-f]{64}`).FindStringSubmatch(cl.MustCLI("status"))
	if m == nil {
		t.Fatalf("clawd status shows no audit chain head")
	}
	var headSeq int
	fmt.Sscan(m[1], &headSeq)
	// A clean shutdown ends the log with a signed checkpoint and sends
	// what is queued to the collector.
	cl.Stop()

	pub := filepath.Join(cl.StateDir, "audit-key.pub")
	if fi, err := os.Stat(filepath.Join(cl.StateDir, "audit-key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit key: %v %v", fi, err)
	}
	out, err := exec.Command(cl.Bin, "audit", "verify", "--key", pub, cl.Audit).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK: ") || strings.Contains(string(out), "unsigned tail") || !strings.Contains(string(out), "signature(s) verified") {
		t.Fatalf("verify of the daemon's log: %v\n%s", err, out)
	}
	var lastSeq int
	if m := regexp.MustCompile(`seq 1\.\.(\d+)`).FindStringSubmatch(string(out)); m != nil {
		fmt.Sscan(m[1], &lastSeq)
	}
	if lastSeq <= headSeq {
		t.Fatalf("verify ends at seq %d, the head before shutdown was %d (the shutdown checkpoint follows it):\n%s", lastSeq, headSeq, out)
	}

	// What the collector received is the audit file, line for line, with
	// the facts as attributes.
	file, _ := os.ReadFile(cl.Audit)
	lines := strings.Split(strings.TrimSuffix(string(file), "\n"), "\n")
	got := col.Received(t)
	if len(got) != len(lines) {
		t.Fatalf("collector received %d records for %d audit lines", len(got), len(lines))
	}
	var blockedLine int
	var rebuilt strings.Builder
	for i, r := range got {
		if r.Body != lines[i] {
			t.Fatalf("record %d body %q, want the audit line %q", i, r.Body, lines[i])
		}
		rebuilt.WriteString(r.Body + "\n")
		if r.Attrs["clawd.seq"] != fmt.Sprint(i+1) {
			t.Errorf("record %d: clawd.seq %q", i, r.Attrs["clawd.seq"])
		}
		if r.Resource["service.name"] != "clawd" || r.Resource["deployment.environment"] != "e2e" || r.Resource["host.name"] == "" {
			t.Errorf("record %d resource %v", i, r.Resource)
		}
		switch r.Attrs["clawd.path"] {
		case "/ok/1":
			if r.Event != "clawd.decision" || r.Attrs["clawd.container"] != ct.Name || r.Attrs["clawd.rule"] != "up-ok" || r.Attrs["clawd.action"] != "allow" || r.Severity != "INFO" || r.Attrs["clawd.container_id"] == "" {
				t.Errorf("allowed request's record: %+v", r)
			}
		case "/blocked/1":
			blockedLine = i + 1
			if r.Event != "clawd.decision" || r.Attrs["clawd.container"] != ct.Name || r.Attrs["clawd.rule"] != "up-block" || r.Attrs["clawd.action"] != "deny" || r.Severity != "WARN" || r.Attrs["clawd.status"] != "403" {
				t.Errorf("denied request's record: %+v", r)
			}
		}
		for k, v := range r.Attrs {
			if strings.Contains(v, "e2e-collector-token") {
				t.Errorf("the collector credential is in attribute %s", k)
			}
		}
	}
	if blockedLine == 0 || got[len(got)-1].Event != "clawd.checkpoint" {
		t.Fatalf("records: no denied decision, or the last is not the shutdown checkpoint: %+v", got[len(got)-1])
	}
	if b, _ := os.ReadFile(cl.LogPath); strings.Contains(string(b), "e2e-collector-token") {
		t.Error("the daemon log shows the collector credential")
	}
	// The off-host copy verifies on its own.
	verify := exec.Command(cl.Bin, "audit", "verify", "--key", pub, "-")
	verify.Stdin = strings.NewReader(rebuilt.String())
	if out, err := verify.CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK: ") {
		t.Fatalf("verify of the collector's copy: %v\n%s", err, out)
	}

	// Someone turns the denial into an allow with sed: verify fails and
	// names that line.
	script := fmt.Sprintf(`%ds/"action":"deny"/"action":"allow"/`, blockedLine)
	if out, err := exec.Command("sed", "-i", script, cl.Audit).CombinedOutput(); err != nil {
		t.Fatalf("sed: %v %s", err, out)
	}
	out, err = exec.Command(cl.Bin, "audit", "verify", "--key", pub, cl.Audit).CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("FAILED at line %d: altered", blockedLine)) {
		t.Fatalf("verify of the edited log: %v\n%s", err, out)
	}
}

// A restarted daemon continues the chain of the file (and a SIGHUP after
// logrotate moved it starts the new file linked to the old one's end).
func TestAuditChainAcrossRestartAndRotation(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: auditxPolicy})
	ct := ctd.Run(t, "auditr", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	const api = "http://api.upstream.test:8080"
	if out, code := wget(t, ct, api+"/ok/before-restart"); code != 0 {
		t.Fatalf("/ok/before-restart: %s", out)
	}
	cl.Stop()
	cl.Start()
	if out, code := wget(t, ct, api+"/ok/after-restart"); code != 0 {
		t.Fatalf("/ok/after-restart: %s", out)
	}
	// logrotate: move the file, SIGHUP.
	if err := os.Rename(cl.Audit, cl.Audit+".1"); err != nil {
		t.Fatal(err)
	}
	cl.HUP()
	eventually(t, "the daemon reopened the audit log", func() bool { _, err := os.Stat(cl.Audit); return err == nil })
	if out, code := wget(t, ct, api+"/ok/after-rotation"); code != 0 {
		t.Fatalf("/ok/after-rotation: %s", out)
	}
	eventually(t, "the request after rotation audited", func() bool {
		b, _ := os.ReadFile(cl.Audit)
		return strings.Contains(string(b), "/ok/after-rotation")
	})
	cl.Stop()
	pub := filepath.Join(cl.StateDir, "audit-key.pub")
	old, err := exec.Command(cl.Bin, "audit", "verify", "--key", pub, cl.Audit+".1").CombinedOutput()
	if err != nil || !strings.Contains(string(old), ": OK: ") || strings.Contains(string(old), "unsigned tail") {
		t.Fatalf("rotated file: %v\n%s", err, old)
	}
	cur, err := exec.Command(cl.Bin, "audit", "verify", "--key", pub, cl.Audit).CombinedOutput()
	if err != nil || !strings.Contains(string(cur), "links to a line before this file (a rotated log)") {
		t.Fatalf("new file: %v\n%s", err, cur)
	}
	both := exec.Command("sh", "-c", fmt.Sprintf("cat %s.1 %s | %s audit verify --key %s -", cl.Audit, cl.Audit, cl.Bin, pub))
	out, err := both.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "seq 1..") || strings.Contains(string(out), "rotated log") {
		t.Fatalf("both files: %v\n%s", err, out)
	}
	for _, p := range []string{"/ok/before-restart", "/ok/after-restart"} {
		b, _ := os.ReadFile(cl.Audit + ".1")
		if !strings.Contains(string(b), p) {
			t.Errorf("rotated file lacks %s", p)
		}
	}
}

// A collector that is not there costs the agent nothing and the audit file
// nothing: requests are served, every decision is in the verified file,
// and the failed export is counted in the metrics.
func TestAuditExportToAnAbsentCollector(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	cl := StartClawd(t, ctd, ClawdOpts{Policy: auditxPolicy, Extra: fmt.Sprintf("audit-otlp:\n  endpoint: http://%s\n  timeout: 1s\n", freePort(t))})
	ct := ctd.Run(t, "auditd", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	const api = "http://api.upstream.test:8080"
	for i := range 5 {
		if out, code := wget(t, ct, fmt.Sprintf("%s/ok/down%d", api, i)); code != 0 {
			t.Fatalf("request %d with the collector down: %s", i, out)
		}
	}
	metric := regexp.MustCompile(`(?m)^clawd_audit_export_records_total\{result="failed"\} (\d+)`)
	eventually(t, "the failed export counted", func() bool {
		m := metric.FindStringSubmatch(httpGetBody("http://" + cl.Metrics + "/metrics"))
		return m != nil && m[1] != "0"
	})
	cl.Stop()
	out, err := exec.Command(cl.Bin, "audit", "verify", "--key", filepath.Join(cl.StateDir, "audit-key.pub"), cl.Audit).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK: ") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(cl.Audit)
	for i := range 5 {
		if !strings.Contains(string(b), fmt.Sprintf(`"path":"/ok/down%d"`, i)) {
			t.Errorf("the audit file lacks request %d", i)
		}
	}
}

// The same over OTLP/gRPC (no TLS, on loopback).
func TestAuditExportOverGRPC(t *testing.T) {
	ctd := harness.SharedContainerd(t)
	harness.SharedUpstream(t)
	col := startCollectorProto(t, "grpc")
	cl := StartClawd(t, ctd, ClawdOpts{Policy: auditxPolicy, Extra: fmt.Sprintf("audit-otlp:\n  endpoint: %s\n  protocol: grpc\n  insecure: true\n", col.Endpoint)})
	ct := ctd.Run(t, "auditg", harness.RunOpts{})
	cl.MustCLI("attach", ct.Name)
	if out, code := wget(t, ct, "http://api.upstream.test:8080/blocked/grpc"); code == 0 {
		t.Fatalf("denied request got through: %s", out)
	}
	cl.Stop()
	file, _ := os.ReadFile(cl.Audit)
	lines := strings.Split(strings.TrimSuffix(string(file), "\n"), "\n")
	got := col.Received(t)
	if len(got) != len(lines) {
		t.Fatalf("collector received %d records for %d audit lines", len(got), len(lines))
	}
	found := false
	for i, r := range got {
		if r.Body != lines[i] {
			t.Fatalf("record %d body %q, want %q", i, r.Body, lines[i])
		}
		if r.Attrs["clawd.path"] == "/blocked/grpc" {
			found = r.Attrs["clawd.container"] == ct.Name && r.Attrs["clawd.rule"] == "up-block" && r.Attrs["clawd.action"] == "deny"
		}
	}
	if !found {
		t.Fatalf("no record of the denial with its container, rule and action: %+v", got)
	}
}
