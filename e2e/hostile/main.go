// Command hostile is the hostile agent of the gate tests (issue 11, "one
// gate decides every byte"). It runs inside an attached container and
// tries, one vector at a time, to get a request past clawd's per-request
// decision: downgrades to an uninspected splice, parser differentials,
// co-hosted names, DNS rebinding, encoded bodies, DNS by another
// container's rule set. For each vector it prints one JSON line:
//
//	{"vector":"c1-late-delete","result":"answered","detail":"403","start":..., "end":...}
//
// result is "answered" (an HTTP answer came back; detail lists its status
// codes), "closed" (the connection ended without an HTTP answer), "tls-error"
// (the TLS handshake failed: refused or alerted), "error" (could not even
// connect), "open" (hold mode: the connection works), "dns" (detail: rcode
// and answers). start/end are Unix milliseconds, so the test can match the
// audit lines clawd wrote while the vector ran.
//
// Every payload carries the marker "hostile-<vector>" (in the request path,
// in a TLS ClientHello's ALPN list, in an SSLv2 challenge, in raw bytes), so
// the upstream's records name any vector that got through, and whether it
// came through clawd's parser or raw.
//
// Besides the vectors (-only / -class) it has modes: -hold (keep one
// connection alive and report when it is closed), -uploads (many
// concurrent large uploads), -dns-scan (ask every loopback UDP/TCP listener
// of the netns) and -rb (rebinding: resolve a name, then dial the address).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

var (
	ip4      = flag.String("ip", "198.51.100.10", "upstream IPv4")
	ip6      = flag.String("ip6", "2001:db8::10", "upstream IPv6")
	strict   = flag.String("host", "strict.upstream.test", "the intercepted host (DELETE and /admin/** denied, POST /upload/** approved)")
	loose    = flag.String("loose", "loose.upstream.test", "a co-hosted name allowed as TLS passthrough")
	blocked  = flag.String("blocked", "blocked.upstream.test", "a co-hosted name whose rule denies every connection")
	httpPort = flag.Int("http", 8190, "plain HTTP port of the intercepted host")
	tlsPort  = flag.Int("tls", 8593, "TLS port of the intercepted host")
	connPort = flag.Int("conn", 9114, "a purely connection-level port (banner + echo)")
	coPort   = flag.Int("co-echo", 9115, "echo port allowed for the loose name only")
	late     = flag.Duration("late", 600*time.Millisecond, "how late a late first byte is (twice clawd's --peek-timeout)")
	gap      = flag.Duration("gap", 250*time.Millisecond, "pause between vectors (so audit lines fall in one vector's window)")
	only     = flag.String("only", "", "comma-separated vectors to run")
	class    = flag.String("class", "", "comma-separated vector name prefixes to run (c1, c2, ...)")
	list     = flag.Bool("list", false, "list the vectors and exit")
	ph       = flag.String("placeholder", "", "a secret placeholder bound to another host (c8-exfil vectors)")
	wait     = flag.Duration("wait", 3*time.Second, "how long to wait for an answer")

	holdMode = flag.String("hold", "", "hold mode: tcp, ws or http; keep a connection to -addr alive and report")
	holdAddr = flag.String("addr", "", "hold/uploads mode: ip:port to connect to")
	holdTag  = flag.String("tag", "hold", "hold mode: the vector name")
	holdFor  = flag.Duration("for", 90*time.Second, "hold mode: give up after this long")
	holdPath = flag.String("path", "/", "hold (ws, http) and uploads mode: request path")

	uploads = flag.Int("uploads", 0, "uploads mode: this many concurrent POSTs to -addr -path ({i} = index)")
	upSize  = flag.Int64("size", 15_000_000, "uploads mode: body size")

	dnsScan = flag.String("dns-scan", "", "pod mode: ask every loopback DNS listener of the netns for this name")

	rb rbList
)

type result struct {
	Vector string `json:"vector"`
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
}

func report(v, res, detail string, start time.Time) {
	b, _ := json.Marshal(result{v, res, detail, start.UnixMilli(), time.Now().UnixMilli()})
	fmt.Println(string(b))
}

// vector is one attempt; run returns result and detail.
type vector struct {
	name string
	run  func(name string) (string, string)
}

func main() {
	flag.Var(&rb, "rb", "rebinding vector TAG/NAME/IP/PORT/PROTO (proto http, tls or raw); repeatable")
	flag.Parse()
	switch {
	case *holdMode != "":
		hold(*holdMode, *holdAddr, *holdTag, *holdPath, *holdFor)
		return
	case *uploads > 0:
		runUploads(*holdAddr, *holdPath, *uploads, *upSize)
		return
	case *dnsScan != "":
		scanDNS(*dnsScan)
		return
	case len(rb) > 0:
		runRebind(rb)
		return
	}
	vs := allVectors()
	if *list {
		names := make([]string, 0, len(vs))
		for _, v := range vs {
			names = append(names, v.name)
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, "\n"))
		return
	}
	want := map[string]bool{}
	for _, v := range strings.Split(*only, ",") {
		if v != "" {
			want[v] = true
		}
	}
	var prefixes []string
	for _, p := range strings.Split(*class, ",") {
		if p != "" {
			prefixes = append(prefixes, p+"-")
		}
	}
	seen := map[string]bool{}
	ran := 0
	for _, v := range vs {
		if seen[v.name] {
			fmt.Fprintf(os.Stderr, "duplicate vector %s\n", v.name)
			os.Exit(2)
		}
		seen[v.name] = true
		sel := len(want) == 0 && len(prefixes) == 0 || want[v.name]
		for _, p := range prefixes {
			if strings.HasPrefix(v.name, p) {
				sel = true
			}
		}
		if !sel {
			continue
		}
		if ran > 0 {
			time.Sleep(*gap)
		}
		ran++
		start := time.Now()
		res, detail := v.run(v.name)
		report(v.name, res, detail, start)
	}
	for w := range want {
		if !seen[w] {
			fmt.Fprintf(os.Stderr, "unknown vector %s\n", w)
			os.Exit(2)
		}
	}
}

func allVectors() []vector {
	var vs []vector
	vs = append(vs, downgradeVectors()...)
	vs = append(vs, parserVectors()...)
	vs = append(vs, cohostVectors()...)
	vs = append(vs, encodedVectors()...)
	return vs
}

type rbList []string

func (r *rbList) String() string     { return strings.Join(*r, ",") }
func (r *rbList) Set(v string) error { *r = append(*r, v); return nil }
