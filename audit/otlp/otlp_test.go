package otlp

import (
	"context"
	"crypto/ed25519"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/clawd-dev/clawd/audit"
)

// collector is an OTLP/HTTP logs endpoint that keeps what it received.
type collector struct {
	mu      sync.Mutex
	records []*logspb.LogRecord
	res     []*commonpb.KeyValue
	headers []http.Header
	srv     *httptest.Server
	status  int
	maxBody int // > 0: larger requests get 413, as a Collector's max_request_body_size
	refused int // requests refused for their size
}

func newCollector(t *testing.T) *collector {
	c := &collector{status: 200}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		tooBig := c.maxBody > 0 && len(body) > c.maxBody
		if tooBig {
			c.refused++
		}
		c.mu.Unlock()
		if tooBig {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		var req collogs.ExportLogsServiceRequest
		if r.URL.Path != "/v1/logs" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad request", 400)
			return
		}
		c.mu.Lock()
		c.headers = append(c.headers, r.Header.Clone())
		st := c.status
		if st == 200 {
			for _, rl := range req.ResourceLogs {
				c.res = rl.Resource.Attributes
				for _, sl := range rl.ScopeLogs {
					c.records = append(c.records, sl.LogRecords...)
				}
			}
		}
		c.mu.Unlock()
		if st != 200 {
			http.Error(w, "no", st)
			return
		}
		b, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(b)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func attr(kvs []*commonpb.KeyValue, k string) string {
	for _, kv := range kvs {
		if kv.Key == k {
			switch v := kv.Value.Value.(type) {
			case *commonpb.AnyValue_StringValue:
				return v.StringValue
			case *commonpb.AnyValue_IntValue:
				return strconv.FormatInt(v.IntValue, 10)
			}
			return kv.Value.String()
		}
	}
	return ""
}

// exportCount reads clawd_audit_export_records_total{result}.
func exportCount(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "clawd_audit_export_records_total" {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.Counter.GetValue()
				}
			}
		}
	}
	t.Fatalf("no clawd_audit_export_records_total{result=%q}", result)
	return 0
}

// What the collector receives is the audit file, line for line: each
// line's exact bytes as the body, its fields as clawd.* attributes.
func TestExportMatchesTheAuditFile(t *testing.T) {
	c := newCollector(t)
	reg := prometheus.NewRegistry()
	e, err := New(Config{Endpoint: c.srv.URL, Headers: map[string]string{"Authorization": "Bearer s3cret"}, Version: "1.2.3", HostName: "host-a", Resource: map[string]string{"deployment.environment": "test"}, BatchInterval: 10 * time.Millisecond}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	key, _, err := audit.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenWith(path, audit.Options{Key: key, Tee: e.Tee})
	if err != nil {
		t.Fatal(err)
	}
	l.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", ContainerID: "c0ffee", Host: "api.example.test", Method: "POST", Path: "/v1/x", Rule: "api", Action: "allow", Status: 200, Labels: map[string]string{"team": "a"}})
	l.Log(audit.Entry{Event: audit.EventApproval, Container: "agent", Rule: "pay", Action: "denied", By: "slack:U123"})
	l.Close()
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(file), "\n"), "\n")
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.records) != len(lines) || len(lines) != 3 {
		t.Fatalf("collector got %d records for %d lines", len(c.records), len(lines))
	}
	for i, r := range c.records {
		if r.Body.GetStringValue() != lines[i] {
			t.Errorf("record %d body %q, want the line %q", i, r.Body.GetStringValue(), lines[i])
		}
	}
	r0, r1 := c.records[0], c.records[1]
	if attr(r0.Attributes, "clawd.container") != "agent" || attr(r0.Attributes, "clawd.rule") != "api" || attr(r0.Attributes, "clawd.action") != "allow" ||
		attr(r0.Attributes, "clawd.container_id") != "c0ffee" || attr(r0.Attributes, "clawd.status") != "200" || attr(r0.Attributes, "clawd.seq") != "1" || r0.EventName != "clawd.decision" || r0.SeverityText != "INFO" {
		t.Errorf("record 0: %v", r0)
	}
	if attr(r1.Attributes, "clawd.by") != "slack:U123" || r1.SeverityText != "WARN" || attr(r1.Attributes, "clawd.prev") == "" {
		t.Errorf("record 1: %v", r1)
	}
	if r2 := c.records[2]; r2.EventName != "clawd.checkpoint" || attr(r2.Attributes, "clawd.sig") == "" {
		t.Errorf("checkpoint record: %v", r2)
	}
	if attr(c.res, "service.name") != "clawd" || attr(c.res, "service.version") != "1.2.3" || attr(c.res, "host.name") != "host-a" || attr(c.res, "deployment.environment") != "test" {
		t.Errorf("resource %v", c.res)
	}
	if c.headers[0].Get("Authorization") != "Bearer s3cret" {
		t.Errorf("headers %v", c.headers[0])
	}
	// The collector's copy is a verifiable log.
	var rebuilt strings.Builder
	for _, r := range c.records {
		rebuilt.WriteString(r.Body.GetStringValue() + "\n")
	}
	rep, err := audit.Verify(strings.NewReader(rebuilt.String()), key.Public().(ed25519.PublicKey))
	if err != nil || rep.Problem != nil || rep.Signed != 1 || rep.UnsignedTail != 0 {
		t.Errorf("the collector's copy does not verify: %+v %v", rep, err)
	}
	if got := exportCount(t, reg, "exported"); got != 3 {
		t.Errorf("exported = %v", got)
	}
}

// A collector that is down or refuses costs the audit file nothing: every
// line is in it, Log never waited for the collector, and the failures are
// counted.
func TestDownCollectorLosesNothingFromTheFile(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	reg := prometheus.NewRegistry()
	e, err := New(Config{Endpoint: "http://" + addr, Timeout: 200 * time.Millisecond, BatchInterval: 10 * time.Millisecond}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, _ := audit.OpenWith(path, audit.Options{Tee: e.Tee})
	for range 50 {
		l.Log(audit.Entry{Event: audit.EventDecision, Action: "deny"})
	}
	l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Close(ctx)
	if rep, _ := audit.Verify(mustOpen(t, path), nil); rep.Problem != nil || rep.Lines != 50 {
		t.Fatalf("audit file: %+v", rep)
	}
	if got := exportCount(t, reg, "failed") + exportCount(t, reg, "dropped"); got != 50 {
		t.Fatalf("failed+dropped = %v, want 50", got)
	}
	if got := exportCount(t, reg, "exported"); got != 0 {
		t.Fatalf("exported = %v", got)
	}
}

// A full export queue drops (and counts) rather than wait.
func TestFullQueueDropsAndCounts(t *testing.T) {
	c := newCollector(t)
	reg := prometheus.NewRegistry()
	e, err := newStopped(Config{Endpoint: c.srv.URL, QueueSize: 2}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sdkDropped.Store(0)
	// Nothing empties the queue yet: the third line on has no room.
	line := []byte(`{"time":"2026-01-01T00:00:00Z","event":"decision","seq":1}`)
	for range 10 {
		e.Tee(line)
	}
	if got := exportCount(t, reg, "dropped"); got != 8 {
		t.Fatalf("dropped %v, want 8", got)
	}
	go e.run()
	e.Close(context.Background())
	if got := exportCount(t, reg, "exported"); got != 2 {
		t.Fatalf("exported %v, want 2", got)
	}
	if len(c.records) != 2 {
		t.Fatalf("collector got %d records", len(c.records))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Endpoint: "127.0.0.1:4318"}, "want an http:// or https:// URL"},
		{Config{Endpoint: "http://x", Protocol: "udp"}, `protocol "udp"`},
		{Config{Protocol: ProtocolGRPC}, "want host:port"},
		{Config{Endpoint: "https://x", CAFile: "/nonexistent"}, "ca-file"},
	} {
		if _, err := New(tc.cfg, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Long lines cannot grow the export queues past QueueBytes: they are
// dropped from export (and counted), short lines still get in; a line
// over MaxRecordBytes is cut at a character boundary, marked, its string
// attributes cut.
func TestQueueIsBoundedInBytes(t *testing.T) {
	c := newCollector(t)
	reg := prometheus.NewRegistry()
	e, err := newStopped(Config{Endpoint: c.srv.URL, QueueSize: 1000, QueueBytes: 256 << 10}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := []byte(`{"event":"decision","path":"/` + strings.Repeat("é", 50<<10) + `","seq":1}`) // 100 KiB
	for range 10 {
		e.Tee(long)
	}
	if got := exportCount(t, reg, "dropped"); got != 8 {
		t.Fatalf("dropped %v of 10 lines of 100 KiB with 256 KiB of queue, want 8", got)
	}
	huge := []byte(`{"event":"decision","path":"/` + strings.Repeat("é", MaxRecordBytes) + `","seq":2}`)
	e2, err := newStopped(Config{Endpoint: c.srv.URL, QueueBytes: 8 << 20}, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e2.Tee(huge)
	go e.run()
	e.Close(context.Background())
	go e2.run()
	e2.Close(context.Background())
	if len(c.records) != 3 {
		t.Fatalf("collector got %d records, want 3", len(c.records))
	}
	for _, r := range c.records[:2] {
		if r.Body.GetStringValue() != string(long) {
			t.Fatal("a 100 KiB line not exported whole")
		}
	}
	r := c.records[2]
	body := r.Body.GetStringValue()
	if len(body) > MaxRecordBytes || !utf8.ValidString(body) || attr(r.Attributes, "clawd.truncated") == "" || attr(r.Attributes, "clawd.line_bytes") != strconv.Itoa(len(huge)) {
		t.Fatalf("a %d-byte line exported as %d bytes (valid UTF-8 %v), attrs %v", len(huge), len(body), utf8.ValidString(body), r.Attributes)
	}
	for _, kv := range r.Attributes {
		if n := len(kv.Value.GetStringValue()); n > 8<<10 {
			t.Fatalf("attribute %s of %d bytes", kv.Key, n)
		}
	}
}

// A batch with lines the collector refuses for their size loses only
// those: the short lines around them are all exported.
func TestOversizeLinesDoNotPoisonTheirBatch(t *testing.T) {
	c := newCollector(t)
	c.maxBody = 48 << 10
	reg := prometheus.NewRegistry()
	e, err := newStopped(Config{Endpoint: c.srv.URL, BatchInterval: time.Hour}, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	short := func(i int) []byte { return []byte(`{"event":"decision","path":"/s` + strconv.Itoa(i) + `","seq":1}`) }
	long := []byte(`{"event":"decision","path":"/` + strings.Repeat("b", 60<<10) + `","seq":1}`)
	want := 0
	for i := range 200 {
		if i%50 == 25 {
			e.Tee(long)
			continue
		}
		e.Tee(short(i))
		want++
	}
	go e.run()
	e.Close(context.Background())
	if len(c.records) != want {
		t.Fatalf("collector got %d records, want the %d short lines", len(c.records), want)
	}
	if got := exportCount(t, reg, "exported"); got != float64(want) {
		t.Fatalf("exported %v", got)
	}
	if got := exportCount(t, reg, "failed"); got != 4 {
		t.Fatalf("failed %v, want the 4 long lines", got)
	}
	if c.refused == 0 {
		t.Fatal("the collector refused nothing: the test did not test")
	}
}

// Credentials in an endpoint URL would be logged: refused, and nothing
// clawd prints of an endpoint holds them.
func TestEndpointCredentials(t *testing.T) {
	for _, ep := range []string{"https://user:s3cret@collector:4318", "http://s3cret@collector:4318/v1/logs", "https://u:s3cret@[2001:db8::1]:4318", "HTTPS://u:s3cret@c"} {
		_, err := New(Config{Endpoint: ep}, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "credentials") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: %v", ep, err)
		}
		if r := Redact(ep); strings.Contains(r, "s3cret") {
			t.Errorf("Redact(%s) = %s", ep, r)
		}
	}
	for ep, want := range map[string]string{
		"https://c:4318/v1/logs?token=s3cret": "https://c:4318/v1/logs?…",
		"collector:4317":                      "collector:4317",
		"http://u:p@c:1/x#frag":               "http://…@c:1/x?…",
	} {
		if got := Redact(ep); got != want {
			t.Errorf("Redact(%s) = %s, want %s", ep, got, want)
		}
	}
}
