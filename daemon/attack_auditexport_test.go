package daemon

// Red-team regression tests (docs/attacks/audit.md).

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/clawd-dev/clawd/audit"
)

// HOLE (medium): lines waiting for export when the daemon crashes (or
// that failed while the collector was unreachable) are never exported:
// the next daemon exports only the lines it writes itself, nothing of the
// JSONL file before them. "Export every audit line" and "nothing is lost
// on restart or crash" do not hold for the copy that leaves the host.
func TestAttackExportLosesLinesAcrossCrash(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collogs.ExportLogsServiceRequest
		if proto.Unmarshal(b, &req) != nil {
			http.Error(w, "bad", 400)
			return
		}
		mu.Lock()
		for _, rl := range req.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					bodies = append(bodies, lr.Body.GetStringValue())
				}
			}
		}
		mu.Unlock()
		out, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()

	dir := t.TempDir()
	cfg := func(ep string) Config {
		return Config{StateDir: dir, AuditLog: filepath.Join(dir, "audit.log"), AuditKey: filepath.Join(dir, "audit-key"), AuditCheckpointEvery: 1000,
			AuditOTLP: &AuditOTLPConfig{Endpoint: ep, Timeout: 200 * time.Millisecond}}
	}
	// The first daemon: the collector is unreachable, then it crashes.
	d1 := &Daemon{cfg: cfg(down), log: zap.NewNop(), reg: prometheus.NewRegistry()}
	if err := d1.openAudit(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/secret-exfil/1", "/secret-exfil/2", "/secret-exfil/3"} {
		d1.audit.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", Path: p, Action: "deny", Rule: "r"})
	}
	// crash: no Close. The collector is back for the next daemon.
	d2 := &Daemon{cfg: cfg(srv.URL), log: zap.NewNop(), reg: prometheus.NewRegistry()}
	if err := d2.openAudit(); err != nil {
		t.Fatal(err)
	}
	d2.audit.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", Path: "/after-restart", Action: "allow"})
	time.Sleep(2 * time.Second)
	d2.audit.Close()
	d2.closeAuditExport()
	mu.Lock()
	defer mu.Unlock()
	got := strings.Join(bodies, "\n")
	if !strings.Contains(got, "/after-restart") {
		t.Fatalf("the second daemon exported nothing: %q", got)
	}
	for _, p := range []string{"/secret-exfil/1", "/secret-exfil/2", "/secret-exfil/3"} {
		if !strings.Contains(got, p) {
			t.Fatalf("the line of %s (written before the crash, never exported) never reached the collector after the restart; the collector holds %d lines", p, len(bodies))
		}
	}
}

// HOLE (medium, config side of the grpc userinfo leak in audit/otlp):
// protocol grpc takes host:port; user:password@host:port passes the
// config's credential check (it looks for userinfo after "://" only).
func TestAttackConfigGRPCEndpointUserinfo(t *testing.T) {
	_, err := parseAuditOTLPBytes("clawd.yaml", []byte("audit-otlp:\n  protocol: grpc\n  endpoint: user:s3cret@collector.example.test:4317\n"))
	if err == nil {
		t.Fatal("a grpc endpoint with a password in it accepted: it is logged in export errors")
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("the error quotes the password: %v", err)
	}
}

// HOLE (low): the headers file holds the collector's credentials ("keep it
// 0600", says the config's comment), but one that every user can read is
// taken as is; the audit key next to it is refused for the same.
func TestAttackHeadersFileOthersCanRead(t *testing.T) {
	dir := t.TempDir()
	hdr := filepath.Join(dir, "otlp-headers")
	if err := os.WriteFile(hdr, []byte("Authorization: Bearer s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(hdr, 0o644)
	c := &AuditOTLPConfig{Endpoint: "http://127.0.0.1:4318", HeadersFile: hdr}
	if _, err := c.otlpConfig("v", "h"); err == nil {
		t.Fatal("a world-readable headers file with credentials accepted")
	}
}
