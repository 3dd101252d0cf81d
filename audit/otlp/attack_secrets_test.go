package otlp

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): secrets in the
// exporter's logs.

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/clawd-dev/clawd/audit"
)

// HOLE (medium): the otlploghttp exporter puts the collector's response
// body into its error ("failed to send logs to …: 401 Unauthorized
// (body: …)"), and clawd logs that error at Warn. An endpoint that
// echoes the credential it refused — common for API gateways ("invalid
// API key: …"), or a wrong endpoint, a TLS-terminating proxy's debug page
// — puts the headers' secret into clawd's log, which more people read
// than the 0600 headers file. Project rule: secrets never in logs.
func TestAttackCollectorEchoesCredentialIntoLogs(t *testing.T) {
	const secret = "s3cr3t-ingest-token-4242"
	c := newCollector(t)
	c.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "invalid credentials: "+r.Header.Get("Authorization"), http.StatusUnauthorized)
	})
	core, logs := observer.New(zap.DebugLevel)
	e, err := New(Config{Endpoint: c.srv.URL, Headers: map[string]string{"Authorization": "Bearer " + secret}, Timeout: time.Second, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := audit.OpenWith(filepath.Join(t.TempDir(), "audit.log"), audit.Options{Tee: e.Tee})
	l.Log(audit.Entry{Event: audit.EventDecision, Path: "/x"})
	l.Close()
	time.Sleep(500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	e.Close(ctx)
	if logs.Len() == 0 {
		t.Fatal("setup: no export failure logged")
	}
	for _, en := range logs.All() {
		s := en.Message + fmt.Sprint(en.ContextMap())
		if strings.Contains(s, secret) {
			t.Fatalf("the exporter's log holds the header secret: %s", s)
		}
	}
}
