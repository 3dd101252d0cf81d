// Command agent is the test agent: a static HTTP(S) client copied into test
// containers, where busybox's wget cannot do HTTPS, HTTP/2, custom methods
// or headers. It prints one JSON object describing what it got:
//
//	{"status":200,"proto":"HTTP/2.0","headers":{...},"body":"...","error":""}
//
// Exit status is 0 whenever an HTTP answer arrived (whatever its status).
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

type answer struct {
	Status  int                 `json:"status"`
	Proto   string              `json:"proto,omitempty"`
	Headers map[string][]string `json:"headers,omitempty"`
	Body    string              `json:"body"`
	Error   string              `json:"error,omitempty"`
	Cert    string              `json:"cert_issuer,omitempty"` // issuer CN of the server certificate
}

func main() {
	var (
		method    = flag.String("X", "GET", "method")
		data      = flag.String("d", "", "request body")
		dataSize  = flag.Int("data-size", 0, "send a body of this many bytes ('a'..'z' repeating)")
		cacert    = flag.String("cacert", "", "PEM file of CAs to trust (default: the system bundle)")
		h2        = flag.Bool("http2", false, "use HTTP/2 (ALPN h2) for https URLs")
		connectTo = flag.String("connect-to", "", "dial this ip:port instead of the URL's host (Host/SNI stay the URL's)")
		sni       = flag.String("sni", "", "TLS server name to send (default: the URL's host)")
		timeout   = flag.Duration("timeout", 20*time.Second, "overall timeout")
		count     = flag.Int("n", 1, "send the request this many times on one connection (keep-alive)")
		gzipBody  = flag.Bool("gzip", false, "gzip the request body and send Content-Encoding: gzip (as Claude Code does)")
		headers   headerFlags
	)
	flag.Var(&headers, "H", "header 'Name: value' (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: agent [flags] URL")
		os.Exit(2)
	}
	url := flag.Arg(0)

	tlsCfg := &tls.Config{ServerName: *sni}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			fail(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if *connectTo != "" {
			addr = *connectTo
		}
		return dialer.DialContext(ctx, network, addr)
	}
	var rt http.RoundTripper
	if *h2 {
		rt = &http2.Transport{TLSClientConfig: tlsCfg, DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}}
	} else {
		rt = &http.Transport{TLSClientConfig: tlsCfg, DialContext: dial, ForceAttemptHTTP2: false, DisableCompression: true}
	}
	client := &http.Client{Transport: rt, Timeout: *timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	body := []byte(*data)
	if *dataSize > 0 {
		body = make([]byte, *dataSize)
		for i := range body {
			body[i] = byte('a' + i%26)
		}
	}
	if *gzipBody {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(body)
		zw.Close()
		body = buf.Bytes()
		headers = append(headers, "Content-Encoding: gzip")
	}
	var out []answer
	for i := 0; i < *count; i++ {
		req, err := http.NewRequest(*method, url, bytes.NewReader(body))
		if err != nil {
			fail(err)
		}
		if len(body) == 0 {
			req.Body = nil
		}
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ":")
			if strings.EqualFold(strings.TrimSpace(k), "host") {
				req.Host = strings.TrimSpace(v)
				continue
			}
			req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		resp, err := client.Do(req)
		if err != nil {
			out = append(out, answer{Error: err.Error()})
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		a := answer{Status: resp.StatusCode, Proto: resp.Proto, Headers: resp.Header, Body: string(b)}
		if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
			a.Cert = resp.TLS.PeerCertificates[0].Issuer.CommonName
		}
		out = append(out, a)
	}
	enc := json.NewEncoder(os.Stdout)
	if len(out) == 1 {
		enc.Encode(out[0])
	} else {
		enc.Encode(out)
	}
	if len(out) == 1 && out[0].Error != "" {
		os.Exit(1)
	}
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(answer{Error: err.Error()})
	os.Exit(1)
}
