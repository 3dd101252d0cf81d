package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/e2e/harness"
)

// Upstream test servers of the policy tests, added to the shared upstream
// netns with up.Listen:
//
//	198.51.100.10:8081  (and [2001:db8::10]:8081) plain HTTP: /redirect, /sse, /ws* (WebSocket), else a JSON echo
//	198.51.100.10:8443  (and [2001:db8::10]:8443) the same over TLS (h2 and http/1.1) with a leaf of a test CA
//	198.51.100.20:8080  plain HTTP, an address no test name resolves to (spoofing target)
//	198.51.100.20:8443  TLS on that address
//
// clawd trusts the test CA through `upstream-ca-file`; containers get it
// mounted at /testca.pem.

const (
	polTestCAName = "clawd-e2e upstream test CA"
	polOtherIP    = "198.51.100.20"
	polPlainPort  = 8081
	polTLSPort    = 8443
)

// polSeen is one request a policy-test server received.
type polSeen struct {
	Addr, Method, Path, Host, Proto, SNI string
	Headers                              http.Header
}

type polServers struct {
	CAFile string // PEM of the test CA (world-readable, for bind mounts)

	mu      sync.Mutex
	seen    []polSeen
	release chan struct{} // closed to let /sse send its second event
}

var (
	polOnce sync.Once
	polSrv  *polServers
	polErr  error
)

// polUpstream returns the shared upstream with the policy-test servers added.
func polUpstream(t testing.TB) (*harness.Upstream, *polServers) {
	t.Helper()
	up := harness.SharedUpstream(t)
	polOnce.Do(func() { polSrv, polErr = startPolServers(up) })
	if polErr != nil {
		t.Fatal(polErr)
	}
	return up, polSrv
}

// Reset forgets the recorded requests and re-arms /sse.
func (s *polServers) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = nil
	s.release = make(chan struct{})
}

// Release lets a pending /sse handler send its second event.
func (s *polServers) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
}

// Count returns how many requests for path (without query) reached a
// listener whose address ends in addr ("" = any listener, ":8443" = that
// port on any address).
func (s *polServers) Count(addr, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.seen {
		if strings.SplitN(r.Path, "?", 2)[0] == path && strings.HasSuffix(r.Addr, addr) {
			n++
		}
	}
	return n
}

// Seen returns the recorded requests.
func (s *polServers) Seen() []polSeen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]polSeen(nil), s.seen...)
}

func startPolServers(up *harness.Upstream) (*polServers, error) {
	// The spoofing target: one more address in the upstream netns.
	ns := filepath.Base(up.Netns)
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "addr", "add", polOtherIP + "/32", "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil && !strings.Contains(string(out), "File exists") {
			return nil, fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	caCert, caKey, caPEM, err := polNewCA()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "clawd-e2e-polca")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	s := &polServers{CAFile: filepath.Join(dir, "testca.pem"), release: make(chan struct{})}
	if err := os.WriteFile(s.CAFile, caPEM, 0o644); err != nil {
		return nil, err
	}
	leaf, err := polLeaf(caCert, caKey)
	if err != nil {
		return nil, err
	}
	for _, l := range []struct {
		ip   string
		port int
		tls  bool
	}{
		{harness.UpstreamIPv4.String(), polPlainPort, false},
		{harness.UpstreamIPv4.String(), polTLSPort, true},
		{harness.UpstreamIPv6.String(), polPlainPort, false},
		{harness.UpstreamIPv6.String(), polTLSPort, true},
		{polOtherIP, 8080, false},
		{polOtherIP, polTLSPort, true},
	} {
		addr := net.JoinHostPort(l.ip, fmt.Sprint(l.port))
		ln, err := up.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", addr, err)
		}
		srv := &http.Server{Handler: s.handler(addr), ReadHeaderTimeout: 10 * time.Second}
		if l.tls {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{leaf}, NextProtos: []string{"h2", "http/1.1"}}
			go srv.ServeTLS(ln, "", "")
		} else {
			go srv.Serve(ln)
		}
	}
	return s, nil
}

func (s *polServers) handler(addr string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := polSeen{Addr: addr, Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Proto: r.Proto, Headers: r.Header.Clone()}
		if r.TLS != nil {
			rec.SNI = r.TLS.ServerName
		}
		s.mu.Lock()
		s.seen = append(s.seen, rec)
		release := s.release
		s.mu.Unlock()
		switch {
		case r.URL.Path == "/redirect":
			w.Header().Set("Location", "http://elsewhere.upstream.test/landed")
			w.WriteHeader(http.StatusFound)
		case r.URL.Path == "/hop-response":
			w.Header().Set("Connection", "X-Resp-Hop")
			w.Header().Set("X-Resp-Hop", "1")
			w.Header().Set("X-Resp-Keep", "1")
			w.WriteHeader(200)
		case r.URL.Path == "/sse":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(200)
			fmt.Fprint(w, "data: sse-one\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
				return
			case <-time.After(30 * time.Second):
			}
			fmt.Fprint(w, "data: sse-two\n\n")
		case strings.HasPrefix(r.URL.Path, "/ws") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket"):
			polServeWS(w, r)
		default:
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(rec)
		}
	})
}

// polServeWS answers a WebSocket upgrade, then echoes the first bytes the
// client sends as "ECHO:<bytes>" and closes.
func polServeWS(w http.ResponseWriter, r *http.Request) {
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
	brw.Flush()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 256)
	n, _ := brw.Read(buf)
	fmt.Fprintf(conn, "ECHO:%s", buf[:n])
}

func polNewCA() (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: polTestCAName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func polLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: harness.UpstreamDomain},
		DNSNames:     []string{harness.UpstreamDomain, "*." + harness.UpstreamDomain},
		IPAddresses:  []net.IP{harness.UpstreamIPv4.AsSlice(), netip.MustParseAddr(polOtherIP).AsSlice()},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// dnsqBin is the static DNS client for containers (mount it at /dnsq).
func dnsqBin(t testing.TB) string { return toolBin(t, "dnsq") }

type dnsAnswer struct {
	Rcode   string   `json:"rcode"`
	Answers []string `json:"answers"`
	Error   string   `json:"error"`
}

// dnsq runs /dnsq in ct and decodes its answer.
func dnsq(t testing.TB, ct *harness.Container, args ...string) dnsAnswer {
	t.Helper()
	out, _ := sh(t, ct, "/dnsq "+strings.Join(args, " ")+" 2>/dev/null")
	var a dnsAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("dnsq %v output %q: %v", args, out, err)
	}
	return a
}

// agentMulti runs /agent with -n N and decodes its list of answers.
func agentMulti(t testing.TB, ct *harness.Container, n int, args ...string) []AgentAnswer {
	t.Helper()
	out, _ := sh(t, ct, "/agent -n "+fmt.Sprint(n)+" "+strings.Join(args, " ")+" 2>/dev/null")
	var as []AgentAnswer
	if err := json.Unmarshal([]byte(out), &as); err != nil {
		t.Fatalf("agent -n %d output %q: %v", n, out, err)
	}
	return as
}

// denyBody is clawd's JSON answer instead of the upstream's.
type denyBody struct {
	Error, Rule, Method, Host, Path, Reason string
	RetryAfter                              int `json:"retry_after"`
}

func parseDeny(t testing.TB, a AgentAnswer) denyBody {
	t.Helper()
	var d denyBody
	if err := json.Unmarshal([]byte(a.Body), &d); err != nil {
		t.Fatalf("answer body is not clawd's JSON: %+v: %v", a, err)
	}
	return d
}
