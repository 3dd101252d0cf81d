// Command upstream is the demo's "internet": an HTTP echo server and a DNS
// server for *.demo.test, run inside the demo's upstream network namespace
// (scripts/demo.sh). It only ever answers; it never dials out.
//
//	upstream -http :80 -dns 198.51.100.130:53 -log /tmp/clawd-demo/upstream.log \
//	    -a api.demo.test=198.51.100.130 -a evil.demo.test=198.51.100.131
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

type records map[string]net.IP

func (r records) String() string { return fmt.Sprint(map[string]net.IP(r)) }
func (r records) Set(s string) error {
	name, ip, ok := strings.Cut(s, "=")
	if !ok || net.ParseIP(ip) == nil {
		return fmt.Errorf("want NAME=IP, got %q", s)
	}
	r[dns.Fqdn(strings.ToLower(name))] = net.ParseIP(ip)
	return nil
}

func main() {
	recs := records{}
	httpAddr := flag.String("http", ":80", "HTTP echo listen address")
	dnsAddr := flag.String("dns", "", "DNS listen address (UDP and TCP)")
	logPath := flag.String("log", "", "append one line per HTTP request here")
	flag.Var(recs, "a", "A record NAME=IP (repeatable)")
	flag.Parse()

	var mu sync.Mutex
	var logf io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			log.Fatal(err)
		}
		logf = f
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		auth := r.Header.Get("Authorization")
		if auth == "" {
			auth = "(none)"
		}
		mu.Lock()
		fmt.Fprintf(logf, "%s %s %s host=%s authorization=%q body=%q\n", r.RemoteAddr, r.Method, r.URL.RequestURI(), r.Host, auth, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "upstream %s got %s %s (authorization: %s)\n", r.Host, r.Method, r.URL.RequestURI(), auth)
	})
	if *dnsAddr != "" {
		h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(q)
			m.Authoritative = true
			for _, qq := range q.Question {
				ip, ok := recs[strings.ToLower(qq.Name)]
				if !ok {
					m.Rcode = dns.RcodeNameError
					continue
				}
				if qq.Qtype == dns.TypeA && ip.To4() != nil {
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: ip.To4()})
				}
			}
			w.WriteMsg(m)
		})
		for _, n := range []string{"udp", "tcp"} {
			s := &dns.Server{Addr: *dnsAddr, Net: n, Handler: h}
			go func() { log.Fatal(s.ListenAndServe()) }()
		}
	}
	log.Fatal(http.ListenAndServe(*httpAddr, nil))
}
