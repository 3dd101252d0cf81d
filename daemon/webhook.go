package daemon

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/daemon/admission"
)

// webhookServer serves the Kubernetes mutating admission webhook: pods
// labelled clawd.dev/attach=true get AgentEnv (this daemon's placeholders
// and the CA variables) and clawd.dev/trust-ca=true.
func (d *Daemon) webhookServer() *http.Server {
	h := &admission.Handler{
		Env:  func() []EnvVar { return AgentEnv(d.secrets.List()) },
		Logf: func(format string, args ...any) { d.log.Info(fmt.Sprintf(format, args...)) },
	}
	mux := http.NewServeMux()
	mux.Handle(admission.Path, h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"ok": true}) })
	l := &admission.CertLoader{CertFile: d.cfg.WebhookCert, KeyFile: d.cfg.WebhookKey}
	return &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{GetCertificate: l.GetCertificate, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		// TLS handshake failures (an API server with a stale caBundle)
		// are worth seeing at info level.
		ErrorLog: zap.NewStdLog(d.log.Named("webhook")),
	}
}

// WebhookCerts makes the webhook's CA and serving certificate for the
// Service service.namespace (for `clawd webhook-cert`).
func WebhookCerts(service, namespace string, validity time.Duration) (admission.Certs, error) {
	return admission.NewCerts(service, namespace, validity)
}

// WebhookCABundlePatch is the kustomize patch carrying caPEM.
func WebhookCABundlePatch(caPEM []byte) []byte { return admission.CABundlePatch(caPEM) }
