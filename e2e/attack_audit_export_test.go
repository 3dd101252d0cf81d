package e2e

// Red-team regression tests against the real OpenTelemetry Collector
// (docs/attacks/audit.md).

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/audit/otlp"
)

// HOLE (medium): an agent's long request path of multi-byte characters
// makes a line that export cuts at MaxRecordBytes inside a character; the
// export request with it cannot be encoded, and the lines batched with it
// never reach the real collector (over HTTP and gRPC).
func TestAttackAuditExportLongUTF8Line(t *testing.T) {
	for _, proto := range []string{"http", "grpc"} {
		t.Run(proto, func(t *testing.T) {
			col := startCollectorProto(t, proto)
			cfg := otlp.Config{Endpoint: col.Endpoint, BatchInterval: 50 * time.Millisecond, Timeout: 5 * time.Second}
			if proto == "grpc" {
				cfg.Protocol, cfg.Insecure = otlp.ProtocolGRPC, true
			}
			e, err := otlp.New(cfg, prometheus.NewRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "audit.log")
			l, err := audit.OpenWith(path, audit.Options{Tee: e.Tee})
			if err != nil {
				t.Fatal(err)
			}
			l.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", Path: "/short-before", Action: "allow"})
			for pad := range 2 { // one of the two cuts falls inside an "é"
				l.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", Path: "/" + strings.Repeat("a", pad) + strings.Repeat("é", 40<<10), Action: "deny"})
			}
			l.Log(audit.Entry{Event: audit.EventDecision, Container: "agent", Path: "/short-after", Action: "deny", Rule: "r"})
			l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			e.Close(ctx)
			var got []string
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				got = got[:0]
				for _, r := range col.Received(t) {
					got = append(got, r.Attrs["clawd.path"])
				}
				if len(got) >= 4 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(got) != 4 {
				t.Fatalf("the real collector got %d of 4 records (paths %s)", len(got), fmt.Sprint(shorten(got)))
			}
		})
	}
}

func shorten(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = tail(x, 20)
	}
	return out
}
