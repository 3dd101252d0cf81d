package suggest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/internal/addrclass"
	"github.com/clawd-dev/clawd/policy"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func line(t *testing.T, e audit.Entry) string {
	t.Helper()
	if e.Time.IsZero() {
		e.Time = t0
	}
	if e.Event == "" {
		e.Event = audit.EventDecision
	}
	if e.Container == "" {
		e.Container = "agent-1"
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func req(method, host, path, proto, dst string) audit.Entry {
	return audit.Entry{Method: method, Host: host, Path: path, Proto: proto, Dst: dst, Action: "allow", Mode: "audit", Would: "deny", Rule: "default"}
}

// hostileLog is what an agent in audit mode could make clawd write, and
// what a damaged file holds.
func hostileLog(t *testing.T) string {
	var b strings.Builder
	for _, e := range []audit.Entry{
		req("GET", "api.example.com", "/v1/models", "https", "203.0.113.10:443"),
		req("GET", "API.Example.com.", "/v1/models/x", "https", "203.0.113.10:443"),
		req("HEAD", "api.example.com", "/health", "https", "203.0.113.10:443"),
		req("GET", "api.example.com", "/", "https", "203.0.113.10:443"),
		req("POST", "api.example.com", "/v1/messages", "https", "203.0.113.10:443"),
		req("DELETE", "api.example.com", "/v1/files/abc", "https", "203.0.113.10:443"),
		req("GET", "plain.example.com", "/../etc", "http", "203.0.113.11:80"),
		req("PUT", "plain.example.com", "/weird path/x", "http", "203.0.113.11:80"),
		// Connection-level: TLS not intercepted, raw TCP by address.
		{Proto: "tls", SNI: "git.example.com", Host: "git.example.com", Dst: "203.0.113.12:443", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"},
		{Proto: "tcp", Dst: "203.0.113.13:22", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"},
		// Special destinations: never proposed, and the names with them.
		req("GET", "metadata.google.internal", "/computeMetadata/v1/", "http", "169.254.169.254:80"),
		req("GET", "rebind.example.com", "/", "https", "203.0.113.14:443"),
		req("GET", "rebind.example.com", "/", "https", "10.0.0.5:443"),
		{Proto: "tcp", Dst: "127.0.0.1:6379", Action: "allow", Mode: "audit", Would: "deny", Rule: "default"},
		{Proto: "https", Method: "GET", Host: "hostaddr.example.com", Path: "/", Dst: "203.0.113.15:443", Action: "deny", Rule: "special-address"},
		{Proto: "tcp", Dst: "[2001:db8:ffff::1]:5432", Action: "allow", Rule: "default", Mode: "audit", Would: "deny"},
		{Proto: "tcp", Dst: "[fe80::1]:5432", Action: "allow", Rule: "default", Mode: "audit", Would: "deny"},
		// A human refused it: not proposed.
		{Proto: "https", Method: "POST", Host: "pay.example.com", Path: "/charge", Dst: "203.0.113.16:443", Action: "denied", Rule: "pay"},
		// Forged names and methods: dropped.
		req("GET", "evil.example.com\"\n- name: x", "/", "https", "203.0.113.17:443"),
		req("GET", "a b.example.com", "/", "https", "203.0.113.17:443"),
		req("G\"ET", "api.example.com", "/", "https", "203.0.113.10:443"),
		{Container: "agent-*", Proto: "https", Method: "GET", Host: "glob.example.com", Path: "/", Dst: "203.0.113.18:443", Action: "allow"},
		// Not decisions, or too old.
		{Event: "approval", Proto: "https", Method: "GET", Host: "appr.example.com", Dst: "203.0.113.19:443"},
		{Time: t0.Add(-48 * time.Hour), Proto: "https", Method: "GET", Host: "old.example.com", Path: "/", Dst: "203.0.113.20:443", Action: "allow"},
		// Another container.
		{Container: "agent-2", Proto: "https", Method: "GET", Host: "other.example.com", Path: "/", Dst: "203.0.113.21:443", Action: "allow"},
	} {
		b.WriteString(line(t, e))
	}
	b.WriteString("not json at all\n")
	b.WriteString(`{"time":"2026-12-01T12:00:00Z","event":"decision","dst":12}` + "\n")
	b.WriteString(`{"time":"2026-12-01T12:00:00Z","event":"decision","container":"agent-1","host":"` + strings.Repeat("a", 2<<20) + `.example.com","dst":"203.0.113.1:443","proto":"tls"}` + "\n")
	b.WriteString("\n\x00\xff\n")
	b.WriteString(line(t, req("GET", "last.example.com", "/x", "https", "203.0.113.22:443"))) // after the junk
	return b.String()
}

func collect(t *testing.T, o Options, log string) (*Collector, Result, *policy.Policy) {
	t.Helper()
	c := New(o)
	if err := c.Read(strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	res, err := c.Propose()
	if err != nil {
		t.Fatal(err)
	}
	if res.YAML == nil {
		return c, res, nil
	}
	p, err := policy.Parse(res.YAML, "suggested.yaml")
	if err != nil {
		t.Fatalf("the proposal is no valid policy: %v\n%s", err, res.YAML)
	}
	return c, res, p
}

type probe struct {
	container, method, host, path string
	dst                           string
	want                          policy.Action
}

func checkProbes(t *testing.T, p *policy.Policy, probes []probe) {
	t.Helper()
	for _, pr := range probes {
		dst := netip.MustParseAddrPort(pr.dst)
		c := policy.Container{ID: pr.container, Name: pr.container, Runtime: "containerd"}
		d := p.Decide(policy.Input{Container: c, DstIP: dst.Addr(), DstPort: dst.Port(), Host: pr.host, Method: pr.method, Path: pr.path, BodyKnown: true})
		if d.Action != pr.want {
			t.Errorf("%s %s %s%s at %s: %s by %q, want %s", pr.container, pr.method, pr.host, pr.path, pr.dst, d.Action, d.Rule, pr.want)
		}
	}
}

func TestSuggestFromHostileLog(t *testing.T) {
	c, res, p := collect(t, Options{Since: t0.Add(-24 * time.Hour)}, hostileLog(t))
	if p == nil {
		t.Fatal("nothing proposed")
	}
	y := string(res.YAML)
	t.Logf("proposal:\n%s", y)
	if !strings.HasPrefix(y, "# Proposed by clawd policy suggest") || !strings.Contains(y, "# Never proposed (seen at special addresses or refused by clawd): hostaddr.example.com, metadata.google.internal, rebind.example.com\n") {
		t.Errorf("header comment missing or wrong")
	}
	var rules []string // the proposal without its comments
	for _, l := range strings.Split(y, "\n") {
		if !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	y = strings.Join(rules, "\n")
	for _, bad := range []string{"evil", "metadata", "rebind", "hostaddr", "169.254", "127.0.0.1", "10.0.0.5", "fe80", "pay.example.com", "glob", "old.example", "appr.example", "aaaa", "- name: x", "6379"} {
		if strings.Contains(y, bad) {
			t.Errorf("proposal mentions %q", bad)
		}
	}
	for _, want := range []string{"metadata.google.internal", "rebind.example.com", "hostaddr.example.com"} {
		if !strings.Contains(strings.Join(res.Refused, ","), want) {
			t.Errorf("Refused = %v, want %s", res.Refused, want)
		}
	}
	if c.Bad < 6 {
		t.Errorf("Bad = %d, want at least the 6 junk lines", c.Bad)
	}
	if c.Unplain != 2 || !slices.ContainsFunc(res.Skipped, func(s string) bool {
		return strings.HasPrefix(s, "plain.example.com: 2 requests with a path that is not plain")
	}) {
		t.Errorf("Unplain = %d, Skipped = %q: want plain.example.com's 2 requests", c.Unplain, res.Skipped)
	}
	if c.ByRule != 0 {
		t.Errorf("ByRule = %d, want 0 (pay.example.com was a human's no)", c.ByRule)
	}
	checkProbes(t, p, []probe{
		// Reads allowed on the seen prefixes, intercepted.
		{"agent-1", "GET", "api.example.com", "/v1/models", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "api.example.com", "/v1/other", "203.0.113.10:443", policy.Allow},
		{"agent-1", "HEAD", "api.example.com", "/health", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "api.example.com", "/", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "api.example.com", "/admin", "203.0.113.10:443", policy.Deny},
		// Writes held.
		{"agent-1", "POST", "api.example.com", "/v1/messages", "203.0.113.10:443", policy.Approve},
		{"agent-1", "DELETE", "api.example.com", "/v1/files/abc", "203.0.113.10:443", policy.Approve},
		{"agent-1", "PATCH", "api.example.com", "/v1/messages", "203.0.113.10:443", policy.Deny},
		// A request whose path was not plain is skipped (counted), never
		// widened to the host: it used to make the read rule host-wide,
		// which an agent could set off on purpose with "GET /**"
		// (TestAttack16Suggest_StarPathWidensToHost).
		{"agent-1", "GET", "plain.example.com", "/anything", "203.0.113.11:80", policy.Deny},
		{"agent-1", "GET", "plain.example.com", "/etc", "203.0.113.11:80", policy.Deny},
		{"agent-1", "PUT", "plain.example.com", "/x", "203.0.113.11:80", policy.Deny},
		{"agent-1", "POST", "plain.example.com", "/x", "203.0.113.11:80", policy.Deny},
		// Connections.
		{"agent-1", "", "git.example.com", "", "203.0.113.12:443", policy.Allow},
		{"agent-1", "", "git.example.com", "", "203.0.113.12:22", policy.Deny},
		{"agent-1", "", "", "", "203.0.113.13:22", policy.Allow},
		{"agent-1", "", "", "", "[2001:db8:ffff::1]:5432", policy.Allow},
		{"agent-1", "GET", "last.example.com", "/x", "203.0.113.22:443", policy.Allow},
		// Other containers get their own set; unseen ones nothing.
		{"agent-2", "GET", "other.example.com", "/", "203.0.113.21:443", policy.Allow},
		{"agent-2", "GET", "api.example.com", "/v1/models", "203.0.113.10:443", policy.Deny},
		{"agent-3", "GET", "api.example.com", "/v1/models", "203.0.113.10:443", policy.Deny},
		// Never: special names and addresses.
		{"agent-1", "GET", "metadata.google.internal", "/computeMetadata/v1/", "169.254.169.254:80", policy.Deny},
		{"agent-1", "GET", "rebind.example.com", "/", "203.0.113.14:443", policy.Deny},
		{"agent-1", "", "", "", "127.0.0.1:6379", policy.Deny},
	})
	// A hold must never be widened to a connection-level allow for the
	// same port: git.example.com's rule is connect-only, api's are HTTP.
	if strings.Contains(y, `"connect-api.example.com"`) {
		t.Error("connection-level rule proposed for a host with HTTP rules")
	}
}

// The host's own addresses are special too (Options.Classify; by default
// the addresses of the host suggest runs on).
func TestSuggestNeverTheHost(t *testing.T) {
	log := line(t, req("GET", "self.example.com", "/", "https", "203.0.113.99:443")) +
		line(t, audit.Entry{Proto: "tcp", Dst: "203.0.113.99:22", Action: "allow"}) +
		line(t, req("GET", "ok.example.com", "/", "https", "203.0.113.98:443"))
	host := netip.MustParseAddr("203.0.113.99")
	_, res, p := collect(t, Options{Classify: addrclass.Extra{Host: func(a netip.Addr) bool { return a == host }}.Classify}, log)
	if strings.Contains(string(res.YAML), "203.0.113.99") || len(res.Refused) != 1 || res.Refused[0] != "self.example.com" {
		t.Errorf("refused %v; proposal:\n%s", res.Refused, res.YAML)
	}
	checkProbes(t, p, []probe{
		{"agent-1", "GET", "ok.example.com", "/", "203.0.113.98:443", policy.Allow},
		{"agent-1", "GET", "self.example.com", "/", "203.0.113.99:443", policy.Deny},
		{"agent-1", "", "", "", "203.0.113.99:22", policy.Deny},
	})
}

func TestSuggestContainerFilter(t *testing.T) {
	_, _, p := collect(t, Options{Container: "agent-2"}, hostileLog(t))
	if got := strings.Join(p.Sets(), ","); got != "suggested-agent-2,default" {
		t.Errorf("sets = %s", got)
	}
}

// With the policy in force, only what it does not already allow (or hold,
// for writes) is proposed, in the set the container falls in.
func TestSuggestDiff(t *testing.T) {
	cur, err := policy.Parse([]byte(`
sets:
  - name: agents
    match: {name: "agent-*"}
    mode: audit
    rules:
      - name: api-reads
        hosts: api.example.com
        intercept: true
        readonly: true
`), "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, res, p := collect(t, Options{Current: cur}, hostileLog(t))
	y := string(res.YAML)
	t.Logf("diff:\n%s", y)
	if strings.Contains(y, "api.example.com") {
		t.Error("proposes rules for api.example.com, which the current policy allows (reads) and holds (writes)")
	}
	if got := strings.Join(p.Sets(), ","); got != "agents,default" {
		t.Errorf("sets = %s, want the current set's name", got)
	}
	checkProbes(t, p, []probe{
		{"agent-1", "", "git.example.com", "", "203.0.113.12:443", policy.Allow},
		{"agent-2", "GET", "other.example.com", "/", "203.0.113.21:443", policy.Allow},
	})
	// Nothing new: nothing proposed.
	c := New(Options{Current: cur})
	c.Read(strings.NewReader(line(t, req("GET", "api.example.com", "/v1", "https", "203.0.113.10:443"))))
	if r, err := c.Propose(); err != nil || r.YAML != nil || r.Rules != 0 {
		t.Errorf("nothing new: %v %q", err, r.YAML)
	}
}

func TestParseSince(t *testing.T) {
	for in, want := range map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "90m": 90 * time.Minute, " 1d ": 24 * time.Hour} {
		if got, err := ParseSince(in); err != nil || got != want {
			t.Errorf("ParseSince(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "-1h", "0d", "d", "7days", "1e9d", "99999d", "1w"} {
		if _, err := ParseSince(bad); err == nil {
			t.Errorf("ParseSince(%q) accepted", bad)
		}
	}
}

// Rotated files (plain and gzip) are read with the current one.
func TestFilesRotated(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "audit.log")
	os.WriteFile(base, []byte(line(t, req("GET", "now.example.com", "/", "https", "203.0.113.30:443"))), 0o600)
	os.WriteFile(base+".1", []byte(line(t, req("GET", "one.example.com", "/", "https", "203.0.113.31:443"))), 0o600)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(line(t, req("GET", "two.example.com", "/", "https", "203.0.113.32:443"))))
	zw.Close()
	os.WriteFile(base+".2.gz", gz.Bytes(), 0o600)
	files, err := Files(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 || files[0] != base+".2.gz" || files[2] != base {
		t.Fatalf("Files = %v", files)
	}
	c := New(Options{})
	for _, f := range files {
		if err := c.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.Propose()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"now", "one", "two"} {
		if !strings.Contains(string(res.YAML), h+".example.com") {
			t.Errorf("%s.example.com missing from\n%s", h, res.YAML)
		}
	}
	if _, err := Files(filepath.Join(dir, "missing.log")); err == nil {
		t.Error("Files(missing) = nil error")
	}
}

// Whatever the audit log holds, the proposal is a valid policy that
// reaches no special address.
func FuzzSuggest(f *testing.F) {
	f.Add(`{"time":"2026-12-01T12:00:00Z","event":"decision","container":"a","dst":"203.0.113.1:443","host":"x.example.com","proto":"https","method":"GET","path":"/a/b"}`)
	f.Add(`{"time":"2026-12-01T12:00:00Z","event":"decision","container":"a","dst":"203.0.113.1:80","host":"x.example.com","proto":"http","method":"POST","path":"/%2e%2e/\u0000"}`)
	f.Add(`{"time":"2026-12-01T12:00:00Z","event":"decision","container":"a","dst":"[2001:db8::5]:22","proto":"tcp"}`)
	f.Add(`{"time":"2026-12-01T12:00:00Z","event":"decision","container":"a","dst":"203.0.113.1:443","sni":"Y.Example.COM.","proto":"tls"}`)
	f.Add(`{"event":"decision","container":"a","dst":"169.254.169.254:80","host":"m.example.com","proto":"http","method":"GET"}`)
	f.Add("{\"event\":\"decision\"}\n\n{")
	// Issue 16 attacks: a hyphen label, a zoned dst, a star path, a name
	// and an address that spell the same rule name.
	f.Add(`{"event":"decision","container":"a","dst":"203.0.113.1:443","host":"-a.example.com","proto":"https","method":"GET","path":"/"}`)
	f.Add(`{"event":"decision","container":"a","dst":"[2001:db8::1%eth0]:22","proto":"tcp"}`)
	f.Add(`{"event":"decision","container":"a","dst":"203.0.113.1:443","host":"x.example.com","proto":"https","method":"GET","path":"/**"}`)
	f.Add(`{"event":"decision","container":"a","dst":"203.0.113.1:443","sni":"2001-db8--1","proto":"tls"}` + "\n" + `{"event":"decision","container":"a","dst":"[2001:db8::1]:443","proto":"tcp"}`)
	f.Fuzz(func(t *testing.T, log string) {
		c := New(Options{})
		if err := c.Read(strings.NewReader(log)); err != nil {
			t.Fatal(err)
		}
		res, err := c.Propose()
		if err != nil {
			t.Fatal(err)
		}
		if res.YAML == nil {
			return
		}
		p, err := policy.Parse(res.YAML, "fuzz")
		if err != nil {
			t.Fatalf("invalid proposal: %v\n%s", err, res.YAML)
		}
		_ = p
	})
}

// Many distinct plain first segments widen a read rule to the host, and
// the proposal says so above the rule; up to maxReadPaths keep their
// prefixes.
func TestSuggestWideningSaysSo(t *testing.T) {
	var b strings.Builder
	for i := 0; i <= maxReadPaths; i++ {
		b.WriteString(line(t, req("GET", "wide.example.com", "/p"+strconv.Itoa(i)+"/x", "https", "203.0.113.10:443")))
	}
	for i := 0; i < maxReadPaths; i++ {
		b.WriteString(line(t, req("GET", "narrow.example.com", "/p"+strconv.Itoa(i)+"/x", "https", "203.0.113.11:443")))
	}
	_, res, p := collect(t, Options{}, b.String())
	y := string(res.YAML)
	want := "# Host-wide: 9 distinct first path segments were seen (more than 8)."
	if strings.Count(y, want) != 1 || !strings.Contains(y[strings.Index(y, want):], `- name: "read-wide.example.com"`) {
		t.Errorf("no widening comment above the wide rule (want %q once):\n%s", want, y)
	}
	checkProbes(t, p, []probe{
		{"agent-1", "GET", "wide.example.com", "/other", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "narrow.example.com", "/p7/y", "203.0.113.11:443", policy.Allow},
		{"agent-1", "GET", "narrow.example.com", "/other", "203.0.113.11:443", policy.Deny},
	})
}

// --diff: what a named rule of the current policy refuses is never
// proposed, even when the line was decided by the default (the policy
// changed since); proposed rule names never collide with the current
// set's own (disabled ones too), so the merged policy loads.
func TestSuggestDiffRespectsAuthorRules(t *testing.T) {
	const curSrc = `
sets:
  - name: agents
    match: {name: "agent-*"}
    rules:
      - name: no-paste
        hosts: paste.example.com
        action: deny
      - name: read-api.example.com
        hosts: api.example.com
        intercept: true
        methods: GET
        paths: ["/v2/**"]
        action: allow
      - name: read-api.example.com-2
        enabled: false
        hosts: api.example.com
        action: allow
`
	cur, err := policy.Parse([]byte(curSrc), "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	log := line(t, req("GET", "paste.example.com", "/x", "https", "203.0.113.11:443")) +
		line(t, req("GET", "api.example.com", "/v1/x", "https", "203.0.113.10:443"))
	c, res, _ := collect(t, Options{Current: cur}, log)
	if strings.Contains(string(res.YAML), "paste.example.com") || c.ByRule != 1 {
		t.Errorf("ByRule = %d; proposal:\n%s", c.ByRule, res.YAML)
	}
	if !strings.Contains(string(res.YAML), `- name: "read-api.example.com-3"`) {
		t.Errorf("rule name not made unique against the current set:\n%s", res.YAML)
	}
	merged := mergeAfter(t, curSrc, res.YAML)
	checkProbes(t, merged, []probe{
		{"agent-1", "GET", "api.example.com", "/v1/y", "203.0.113.10:443", policy.Allow},
		{"agent-1", "GET", "paste.example.com", "/x", "203.0.113.11:443", policy.Deny},
	})
}

// A rule may not be called "default": audit lines name the default action
// so, and suggest would take its refusals for the default's.
func TestRuleNamedDefaultRefused(t *testing.T) {
	_, err := policy.Parse([]byte("default:\n  rules:\n    - name: default\n      hosts: paste.example.com\n      action: deny\n"), "t.yaml")
	if err == nil || !strings.Contains(err.Error(), `t.yaml:3: default: rule name "default" is reserved`) {
		t.Errorf("err = %v", err)
	}
}
