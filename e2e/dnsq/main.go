// Command dnsq is a tiny DNS client for test containers: busybox nslookup
// cannot query over TCP. It asks one question and prints one JSON object:
//
//	{"rcode":"NOERROR","answers":["198.51.100.10"],"error":""}
//
// Exit status is 0 whenever an answer arrived (whatever its rcode).
//
// With -socket 4|6 (and optionally -sendto) it asks over UDP with raw
// socket calls instead: an AF_INET or AF_INET6 socket (an IPv4 server on an
// AF_INET6 socket is the v4-mapped address), connected and written, or
// unconnected with sendto. That is how tests reach a DNS listener other
// than port 53 in every way the kernel hooks must see.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
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
		sock   = flag.Int("socket", 0, "4 or 6: ask over UDP with a raw AF_INET or AF_INET6 socket")
		sendto = flag.Bool("sendto", false, "with -socket: unconnected socket, sendto() instead of connect() and write()")
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
	var r *dns.Msg
	var err error
	if *sock != 0 {
		r, err = rawExchange(m, srv, *sock, *sendto)
	} else {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		if *tcp {
			c.Net = "tcp"
		}
		r, _, err = c.Exchange(m, srv)
	}
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

// rawExchange asks m at srv over UDP with a socket of family 4 or 6.
func rawExchange(m *dns.Msg, srv string, family int, sendto bool) (*dns.Msg, error) {
	ap, err := netip.ParseAddrPort(srv)
	if err != nil {
		return nil, err
	}
	out, err := m.Pack()
	if err != nil {
		return nil, err
	}
	af := unix.AF_INET
	var sa unix.Sockaddr
	if family == 6 {
		af = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	} else {
		if !ap.Addr().Unmap().Is4() {
			return nil, fmt.Errorf("%s is not IPv4", ap.Addr())
		}
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if sendto {
		err = unix.Sendto(fd, out, 0, sa)
	} else if err = unix.Connect(fd, sa); err == nil {
		_, err = unix.Write(fd, out)
	}
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 65535)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err == nil && r.Id == m.Id {
			return r, nil
		}
	}
}

func fail(err error) {
	json.NewEncoder(os.Stdout).Encode(result{Error: err.Error(), Answers: []string{}})
	os.Exit(1)
}
