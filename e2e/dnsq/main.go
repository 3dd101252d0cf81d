// Command dnsq is a tiny DNS client for test containers: busybox nslookup
// cannot query over TCP. It asks one question and prints one JSON object:
//
//	{"rcode":"NOERROR","answers":["198.51.100.10"],"error":""}
//
// Exit status is 0 whenever an answer arrived (whatever its rcode).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

type result struct {
	Rcode   string   `json:"rcode"`
	Answers []string `json:"answers"`
	Error   string   `json:"error,omitempty"`
}

func main() {
	var (
		tcp    = flag.Bool("tcp", false, "query over TCP instead of UDP")
		server = flag.String("server", "", "ip:port of the resolver (default: first nameserver of /etc/resolv.conf, port 53)")
		qtype  = flag.String("type", "A", "query type (A, AAAA, ...)")
	)
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: dnsq [-tcp] [-server ip:port] [-type A] NAME")
		os.Exit(2)
	}
	srv := *server
	if srv == "" {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(cfg.Servers) == 0 {
			fail(fmt.Errorf("no resolver: %v", err))
		}
		srv = net.JoinHostPort(cfg.Servers[0], "53")
	}
	t, ok := dns.StringToType[strings.ToUpper(*qtype)]
	if !ok {
		fail(fmt.Errorf("unknown type %q", *qtype))
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(flag.Arg(0)), t)
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	if *tcp {
		c.Net = "tcp"
	}
	r, _, err := c.Exchange(m, srv)
	if err != nil {
		fail(err)
	}
	res := result{Rcode: dns.RcodeToString[r.Rcode], Answers: []string{}}
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			res.Answers = append(res.Answers, v.A.String())
		case *dns.AAAA:
			res.Answers = append(res.Answers, v.AAAA.String())
		default:
			res.Answers = append(res.Answers, rr.String())
		}
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(result{Error: err.Error(), Answers: []string{}})
	os.Exit(1)
}
