package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Fixed upstream addresses.
var (
	UpstreamIPv4 = netip.MustParseAddr("198.51.100.10")
	UpstreamIPv6 = netip.MustParseAddr("2001:db8::10")
	UpstreamDNS  = netip.MustParseAddr("198.51.100.53")
	UpstreamDNS6 = netip.MustParseAddr("2001:db8::53")
	upHostV4     = netip.MustParsePrefix("198.51.100.1/24")
	upHostV6     = netip.MustParsePrefix("2001:db8::1/64")
)

const (
	UpstreamHTTPPort = 8080 // JSON echo of the request
	UpstreamEchoPort = 9000 // TCP echo
	UpstreamUDPPort  = 9001 // UDP echo
	UpstreamDomain   = "upstream.test"
)

// Seen is one HTTP request the upstream received.
type Seen struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"` // request target as sent (with query)
	Host    string              `json:"host"`
	Remote  string              `json:"remote"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// Upstream is the "internet" containers talk to: a network namespace with
// HTTP (:8080), TCP echo (:9000), UDP echo (:9001) on 198.51.100.10 and
// [2001:db8::10], and DNS on 198.51.100.53:53 answering upstream.test and
// *.upstream.test with those addresses (NXDOMAIN otherwise), also on
// [2001:db8::53]:53.
type Upstream struct {
	Netns      string // /run/netns/clawd-up-<id>
	IPv4, IPv6 netip.Addr
	DNS        netip.Addr
	HostVeth   string

	id       string
	lock     *os.File
	mu       sync.Mutex
	seen     []Seen
	dnsSeen  []string
	dnsRRs   map[string][]dns.RR // SetDNSRecords: lower-case FQDN -> answer
	udpSeen  []string
	names    map[string]int // extra names answered with the upstream's addresses (AddName), with a count
	closers  []io.Closer
	wg       sync.WaitGroup
	stopOnce sync.Once
}

// StartUpstream creates the upstream; it is removed at t.Cleanup. Only one
// upstream exists per host at a time, so this waits while another test
// process holds it. Prefer SharedUpstream to start it once per package.
func StartUpstream(t testing.TB) *Upstream {
	t.Helper()
	RequireRoot(t)
	u, err := startUpstream(t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.stop)
	return u
}

var (
	sharedUpOnce sync.Once
	sharedUp     *Upstream
	sharedUpErr  error
)

// SharedUpstream returns the package's upstream, started on first use and
// stopped by Main. Call Reset between tests that count requests.
func SharedUpstream(t testing.TB) *Upstream {
	t.Helper()
	RequireRoot(t)
	sharedUpOnce.Do(func() {
		sharedUp, sharedUpErr = startUpstream(t.Logf)
		if sharedUpErr == nil {
			addSharedCleanup(sharedUp.stop)
		}
	})
	if sharedUpErr != nil {
		t.Fatal(sharedUpErr)
	}
	return sharedUp
}

func startUpstream(logf func(string, ...any)) (u *Upstream, err error) {
	// Another test package (e2e, run in parallel by make test's -p 2)
	// holds it for its whole run, about ten minutes on 2 CPUs.
	lock, err := lockWait("upstream", 30*time.Minute, logf)
	if err != nil {
		return nil, fmt.Errorf("start upstream: %w", err)
	}
	id := shortID(8)
	u = &Upstream{IPv4: UpstreamIPv4, IPv6: UpstreamIPv6, DNS: UpstreamDNS, HostVeth: "cup" + id, id: id, lock: lock}
	defer func() {
		if err != nil {
			u.stop()
			err = fmt.Errorf("start upstream: %w", err)
		}
	}()
	if err := markOwned(id); err != nil {
		return u, err
	}
	// A crashed run may have left an upstream veth behind.
	CleanupStale()
	if err := enableForwarding(); err != nil {
		return u, err
	}
	if u.Netns, err = newNamedNetns("clawd-up-" + id); err != nil {
		return u, err
	}
	err = setupVeth(vethSpec{
		hostName: u.HostVeth, nsPath: u.Netns, nsName: "eth0",
		hostV4: upHostV4, hostV6: upHostV6,
		innerV4: netip.PrefixFrom(UpstreamIPv4, 24), innerV6: netip.PrefixFrom(UpstreamIPv6, 64),
		extraInner: []netip.Prefix{netip.PrefixFrom(UpstreamDNS, 24), netip.PrefixFrom(UpstreamDNS6, 64)},
	})
	if err != nil {
		return u, err
	}
	if err := allowForward(id, upHostV4, upHostV6); err != nil {
		return u, err
	}
	for _, ip := range []netip.Addr{UpstreamIPv4, UpstreamIPv6} {
		httpL, err := u.Listen("tcp", netip.AddrPortFrom(ip, UpstreamHTTPPort).String())
		if err != nil {
			return u, err
		}
		srv := &http.Server{Handler: http.HandlerFunc(u.serveHTTP), ReadHeaderTimeout: time.Minute}
		u.goServe(func() { srv.Serve(httpL) })
		echoL, err := u.Listen("tcp", netip.AddrPortFrom(ip, UpstreamEchoPort).String())
		if err != nil {
			return u, err
		}
		u.goServe(func() { serveEcho(echoL) })
		pc, err := u.ListenPacket("udp", netip.AddrPortFrom(ip, UpstreamUDPPort).String())
		if err != nil {
			return u, err
		}
		u.goServe(func() { u.serveUDPEcho(pc) })
	}
	h := dns.HandlerFunc(u.serveDNS)
	for _, ip := range []netip.Addr{UpstreamDNS, UpstreamDNS6} {
		dnsAddr := netip.AddrPortFrom(ip, 53).String()
		pc, err := u.ListenPacket("udp", dnsAddr)
		if err != nil {
			return u, err
		}
		l, err := u.Listen("tcp", dnsAddr)
		if err != nil {
			return u, err
		}
		udpSrv := &dns.Server{PacketConn: pc, Handler: h}
		tcpSrv := &dns.Server{Listener: l, Handler: h}
		// Closing the sockets (in closers) stops both servers.
		u.goServe(func() { udpSrv.ActivateAndServe() })
		u.goServe(func() { tcpSrv.ActivateAndServe() })
	}
	return u, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (u *Upstream) goServe(f func()) {
	u.wg.Add(1)
	go func() { defer u.wg.Done(); f() }()
}

// Listen creates a listener inside the upstream namespace (e.g. for a TLS
// server on 198.51.100.10:8443); it is closed when the upstream stops.
func (u *Upstream) Listen(network, addr string) (net.Listener, error) {
	l, err := ListenIn(u.Netns, network, addr)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.closers = append(u.closers, l)
	u.mu.Unlock()
	return l, nil
}

// ListenPacket is Listen for UDP.
func (u *Upstream) ListenPacket(network, addr string) (net.PacketConn, error) {
	pc, err := PacketListenIn(u.Netns, network, addr)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.closers = append(u.closers, pc)
	u.mu.Unlock()
	return pc, nil
}

// Requests returns the HTTP requests received since the last Reset.
func (u *Upstream) Requests() []Seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Seen(nil), u.seen...)
}

// DNSQueries returns the names queried ("upstream.test. A") since the last Reset.
func (u *Upstream) DNSQueries() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.dnsSeen...)
}

// UDPPackets returns the payloads the UDP echo (:9001) received since the
// last Reset. Busybox has no UDP netcat; from a container send one with e.g.
// "tftp -g -r MARKER -l /tmp/x 198.51.100.10 9001" (the payload contains
// MARKER; tftp itself fails on the echoed reply, ignore its exit code).
func (u *Upstream) UDPPackets() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.udpSeen...)
}

// SetDNSRecords makes the upstream DNS answer queries for name (any case,
// with or without the trailing dot) with records, given in zone-file form
// ("evil.upstream.test. 60 IN A 127.0.0.1"); of those, the records of the
// query's type and CNAMEs are answered, the others are not. It overrides
// the built-in answers, also for names outside upstream.test; no records
// means NOERROR with an empty answer. ClearDNSRecords undoes every
// SetDNSRecords.
func (u *Upstream) SetDNSRecords(name string, records ...string) error {
	rrs := make([]dns.RR, 0, len(records))
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			return fmt.Errorf("record %q: %w", r, err)
		}
		rrs = append(rrs, rr)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.dnsRRs == nil {
		u.dnsRRs = map[string][]dns.RR{}
	}
	u.dnsRRs[dns.Fqdn(strings.ToLower(name))] = rrs
	return nil
}

// SetDNS is SetDNSRecords for plain addresses: A queries get the IPv4
// ones, AAAA queries the IPv6 ones. With no addrs the override is removed.
func (u *Upstream) SetDNS(name string, addrs ...netip.Addr) {
	if len(addrs) == 0 {
		u.mu.Lock()
		delete(u.dnsRRs, dns.Fqdn(strings.ToLower(name)))
		u.mu.Unlock()
		return
	}
	var recs []string
	for _, a := range addrs {
		typ := "AAAA"
		if a.Is4() {
			typ = "A"
		}
		recs = append(recs, fmt.Sprintf("%s 60 IN %s %s", dns.Fqdn(name), typ, a))
	}
	if err := u.SetDNSRecords(name, recs...); err != nil {
		panic(err) // addresses always make valid records
	}
}

// ClearDNSRecords forgets what SetDNSRecords set.
func (u *Upstream) ClearDNSRecords() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dnsRRs = nil
}

// AddName makes the upstream's DNS answer name (a real API host such as
// api.anthropic.com) with the upstream's addresses, as it answers
// upstream.test, until the returned function is called. Only names added
// here and *.upstream.test resolve: nothing in a test can reach a real
// host by name.
func (u *Upstream) AddName(name string) (remove func()) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	u.mu.Lock()
	if u.names == nil {
		u.names = map[string]int{}
	}
	u.names[name]++
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.names[name]--
			u.mu.Unlock()
		})
	}
}

// Reset forgets the recorded requests and queries.
func (u *Upstream) Reset() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.seen, u.dnsSeen, u.udpSeen = nil, nil, nil
}

func (u *Upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	s := Seen{Method: r.Method, Path: r.RequestURI, Host: r.Host, Remote: r.RemoteAddr, Headers: r.Header.Clone(), Body: string(body)}
	if s.Headers == nil {
		s.Headers = map[string][]string{}
	}
	u.mu.Lock()
	u.seen = append(u.seen, s)
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}

func (u *Upstream) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	for _, q := range req.Question {
		name := strings.ToLower(q.Name)
		u.mu.Lock()
		u.dnsSeen = append(u.dnsSeen, q.Name+" "+dns.TypeToString[q.Qtype])
		set, override := u.dnsRRs[name]
		u.mu.Unlock()
		if override {
			for _, rr := range set {
				if t := rr.Header().Rrtype; t == q.Qtype || t == dns.TypeCNAME {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
			continue
		}
		u.mu.Lock()
		extra := u.names[strings.TrimSuffix(name, ".")] > 0
		u.mu.Unlock()
		if !extra && name != UpstreamDomain+"." && !strings.HasSuffix(name, "."+UpstreamDomain+".") {
			m.Rcode = dns.RcodeNameError
			continue
		}
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60, Rrtype: q.Qtype}
		switch q.Qtype {
		case dns.TypeA:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: UpstreamIPv4.AsSlice()})
		case dns.TypeAAAA:
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: UpstreamIPv6.AsSlice()})
		}
	}
	w.WriteMsg(m)
}

func serveEcho(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() { defer c.Close(); io.Copy(c, c) }()
	}
}

func (u *Upstream) serveUDPEcho(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		u.mu.Lock()
		u.udpSeen = append(u.udpSeen, string(buf[:n]))
		u.mu.Unlock()
		pc.WriteTo(buf[:n], addr)
	}
}

func (u *Upstream) stop() {
	u.stopOnce.Do(func() {
		u.mu.Lock()
		cs := u.closers
		u.closers = nil
		u.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i].Close()
		}
		u.wg.Wait()
		deleteLink(u.HostVeth)
		if u.Netns != "" {
			deleteNetns(u.Netns)
		}
		removeTaggedRules(u.id)
		unmarkOwned(u.id)
		if u.lock != nil {
			u.lock.Close()
		}
	})
}

// MAC is the hardware address of the upstream's eth0, its end of the link
// to the host.
func (u *Upstream) MAC() (string, error) { return macIn(u.Netns, "eth0") }
