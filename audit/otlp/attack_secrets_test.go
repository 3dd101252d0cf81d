package otlp

// Red-team round 2 (docs/attacks/audit.md, "Round 2"): secrets in the
// exporter's logs.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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

// echoServer is an OTLP/gRPC logs service that refuses every export with
// the authorization it got in its message.
type echoServer struct {
	collogs.UnimplementedLogsServiceServer
}

func (echoServer) Export(ctx context.Context, _ *collogs.ExportLogsServiceRequest) (*collogs.ExportLogsServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	return nil, status.Error(codes.PermissionDenied, "invalid credentials: "+strings.Join(md.Get("authorization"), ","))
}

// HOLE (medium, R9 over gRPC): the status message of a refusal is in the
// exporter's error, logged at Warn: a server that echoes the credential
// puts it into clawd's log.
func TestAttackGRPCCollectorEchoesCredentialIntoLogs(t *testing.T) {
	const secret = "s3cr3t-grpc-token-4242"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collogs.RegisterLogsServiceServer(srv, echoServer{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	core, logs := observer.New(zap.DebugLevel)
	e, err := New(Config{Endpoint: ln.Addr().String(), Protocol: ProtocolGRPC, Insecure: true, Headers: map[string]string{"authorization": "Bearer " + secret}, Timeout: time.Second, BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := audit.OpenWith(filepath.Join(t.TempDir(), "audit.log"), audit.Options{Tee: e.Tee})
	l.Log(audit.Entry{Event: audit.EventDecision, Path: "/x"})
	l.Close()
	time.Sleep(700 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	e.Close(ctx)
	if logs.Len() == 0 {
		t.Fatal("setup: no export failure logged")
	}
	for _, en := range logs.All() {
		if s := en.Message + fmt.Sprint(en.ContextMap()); strings.Contains(s, secret) {
			t.Fatalf("the exporter's log holds the header secret: %s", s)
		}
	}
}
