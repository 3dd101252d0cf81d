package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuditOTLPConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "clawd.yaml")
	hdr := filepath.Join(dir, "otlp-headers")
	os.WriteFile(hdr, []byte("# credentials\nAuthorization: Bearer s3cret\n"), 0o600)
	os.WriteFile(cfgPath, []byte(`state-dir: `+dir+`
audit-otlp:
  endpoint: http://127.0.0.1:4318
  headers:
    X-Tenant: team-a
  headers-file: `+hdr+`
  timeout: 3s
  queue-size: 100
  resource:
    deployment.environment: prod
`), 0o600)
	c, err := LoadConfig(newFlags(t, "--config", cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	o := c.AuditOTLP
	if o == nil || o.Endpoint != "http://127.0.0.1:4318" || o.Timeout != 3*time.Second || o.QueueSize != 100 || o.Resource["deployment.environment"] != "prod" {
		t.Fatalf("audit-otlp %+v", o)
	}
	oc, err := o.otlpConfig("v1", "h")
	if err != nil || oc.Headers["Authorization"] != "Bearer s3cret" || oc.Headers["X-Tenant"] != "team-a" || oc.HostName != "h" {
		t.Fatalf("otlp config %+v %v", oc, err)
	}
	if c.AuditKey != dir+"/audit-key" || c.AuditCheckpointEvery != 1000 || c.AuditCheckpointInterval != time.Minute {
		t.Fatalf("audit key/checkpoints %q %d %v", c.AuditKey, c.AuditCheckpointEvery, c.AuditCheckpointInterval)
	}
	// No section, no export.
	os.WriteFile(cfgPath, []byte("state-dir: "+dir+"\n"), 0o600)
	if c, err = LoadConfig(newFlags(t, "--config", cfgPath)); err != nil || c.AuditOTLP != nil {
		t.Fatalf("without audit-otlp: %+v %v", c.AuditOTLP, err)
	}
}

// Every mistake in audit-otlp is refused with the file and line of it, and
// a header value (a credential) never appears in the error.
func TestAuditOTLPConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"audit-otlp:\n  endpoint: http://x\n  endpiont: http://y\n", "clawd.yaml:3: audit-otlp: unknown key \"endpiont\""},
		{"audit-otlp:\n  protocol: grpc\n", "clawd.yaml:2: audit-otlp: endpoint is required"},
		{"audit-otlp:\n  endpoint: 127.0.0.1:4318\n", "clawd.yaml:2: audit-otlp: endpoint \"127.0.0.1:4318\": want an http:// or https:// URL"},
		{"audit-otlp:\n  endpoint: http://x\n  protocol: udp\n", "clawd.yaml:3: audit-otlp: protocol \"udp\""},
		{"audit-otlp:\n  endpoint: http://x\n  timeout: soon\n", "clawd.yaml:3: audit-otlp: timeout \"soon\""},
		{"audit-otlp:\n  endpoint: http://x\n  timeout: -1s\n", "clawd.yaml:3: audit-otlp: timeout \"-1s\""},
		{"audit-otlp:\n  endpoint: http://x\n  queue-size: 0\n", "clawd.yaml:3: audit-otlp: queue-size \"0\""},
		{"audit-otlp:\n  endpoint: http://x\n  insecure: maybe\n", "clawd.yaml:3: audit-otlp: insecure \"maybe\""},
		{"audit-otlp:\n  endpoint: http://x\n  insecure: true\n", "insecure is for protocol grpc"},
		{"audit-otlp:\n  endpoint: http://x\n  headers: [a]\n", "clawd.yaml:3: audit-otlp: headers: want a mapping"},
		{"audit-otlp:\n  endpoint: http://x\n  headers:\n    \"Bad Name\": v\n", "clawd.yaml:4: audit-otlp: headers: \"Bad Name\" is not a valid header name"},
		{"audit-otlp:\n  endpoint: http://x\n  headers:\n    Authorization: \"Bearer s3cret\\r\\nX: y\"\n", "clawd.yaml:4: audit-otlp: headers: the value of Authorization is not a valid header value"},
		{"audit-otlp:\n  endpoint: http://x\n  endpoint: http://y\n", `line 3: mapping key "endpoint" already defined`},
		{"audit-otlp: http://x\n", "clawd.yaml:1: audit-otlp: want a mapping"},
		{"audit-otlp:\n  endpoint: [http://x]\n", "clawd.yaml:2: audit-otlp: endpoint: want a single value"},
		{"audit-checkpoint-every: -1\n", "audit-checkpoint-every must not be negative"},
		{"audit-checkpoint-interval: -1s\n", "audit-checkpoint-interval must not be negative"},
	} {
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "clawd.yaml")
		os.WriteFile(cfgPath, []byte(tc.yaml), 0o600)
		_, err := LoadConfig(newFlags(t, "--config", cfgPath, "--state-dir", dir))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.yaml, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows a header value: %v", tc.yaml, err)
		}
	}
}

func TestAuditOTLPHeadersFileErrors(t *testing.T) {
	dir := t.TempDir()
	hdr := filepath.Join(dir, "h")
	os.WriteFile(hdr, []byte("Authorization Bearer s3cret\n"), 0o600)
	_, err := (&AuditOTLPConfig{Endpoint: "http://x", HeadersFile: hdr}).otlpConfig("", "")
	if err == nil || !strings.Contains(err.Error(), hdr+":1:") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("bad headers file: %v", err)
	}
	if _, err := (&AuditOTLPConfig{Endpoint: "http://x", HeadersFile: hdr + ".missing"}).otlpConfig("", ""); err == nil {
		t.Fatal("missing headers file accepted")
	}
}
