package proxy

import (
	"errors"
	"io"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/audit"
)

// CAFile is where `clawd attach --trust-ca` puts clawd's CA certificate in
// a container, and what the fix in a distrust audit line points at.
const CAFile = "/etc/ssl/certs/clawd-ca.pem"

// untrustedFix is the advice of every distrust line: most agents that do
// not trust clawd are runtimes with their own root list.
const untrustedFix = "the agent does not trust clawd's CA: official Node builds need NODE_EXTRA_CA_CERTS=" + CAFile +
	", pip's certifi REQUESTS_CA_BUNDLE, httpx/uv SSL_CERT_FILE, Java its cacerts (clawd attach --trust-ca imports it); " +
	"`clawd env <container>` prints every variable and `clawd doctor --container <container>` checks each runtime"

// untrustedCounts counts handshakes each container aborted on clawd's leaf.
type untrustedCounts struct {
	mu sync.Mutex
	m  map[string]uint64 // container key -> count
}

func (u *untrustedCounts) add(key string) {
	u.mu.Lock()
	if u.m == nil {
		u.m = map[string]uint64{}
	}
	u.m[key]++
	u.mu.Unlock()
}

// Untrusted is how many intercepted TLS handshakes the container (by its
// Key) aborted on clawd's certificate: it does not trust clawd's CA.
func (s *Server) Untrusted(containerKey string) uint64 {
	s.untrusted.mu.Lock()
	defer s.untrusted.mu.Unlock()
	return s.untrusted.m[containerKey]
}

// Forget drops what the proxy counts for a detached container.
func (s *Server) Forget(containerKey string) {
	s.untrusted.mu.Lock()
	delete(s.untrusted.m, containerKey)
	s.untrusted.mu.Unlock()
}

// certRejection tells whether a failed server handshake means the client
// refused clawd's certificate, and how it said so. sentCert is whether the
// handshake got as far as choosing the certificate (so a close after it is
// the client walking away from what it was shown).
func certRejection(err error, sentCert bool) (string, bool) {
	if err == nil || !sentCert {
		return "", false
	}
	msg := err.Error()
	if i := strings.Index(msg, "remote error: tls: "); i >= 0 {
		alert := msg[i+len("remote error: tls: "):]
		switch alert {
		case "bad certificate", "unsupported certificate", "revoked certificate", "expired certificate",
			"unknown certificate", "unknown certificate authority", "access denied", "decrypt error":
			return "it sent the TLS alert \"" + alert + "\"", true
		}
		return "", false
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(msg, "connection reset") {
		return "it closed the connection after seeing clawd's certificate", true
	}
	return "", false
}

// recordUntrusted audits, logs and counts a handshake the agent aborted on
// clawd's leaf for host.
func (s *Server) recordUntrusted(e audit.Entry, how string, m ConnMeta) {
	e.Time = s.cfg.Now().UTC()
	e.Event, e.Action = audit.EventTLSUntrusted, audit.ActionAborted
	e.Reason = how + "; " + untrustedFix
	s.audit.Log(e)
	s.untrusted.add(m.Container.Key())
	s.m.untrusted.WithLabelValues(m.Container.Name).Inc()
	s.log.Info("agent refused clawd's certificate", zap.String("container", m.Container.Name), zap.String("host", e.Host),
		zap.String("dst", e.Dst), zap.String("how", how), zap.String("fix", untrustedFix))
}
