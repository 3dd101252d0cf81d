package policy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const decideYAML = `
default:
  rules:
    - name: anthropic
      hosts: api.anthropic.com
      ports: 443
      action: allow
sets:
  - name: main
    match:
      name: "agent-*"
    rules:
      - name: first-wins
        hosts: dup.example.com
        action: deny
      - name: second-loses
        hosts: dup.example.com
        action: allow
      - name: exact
        hosts: exact.example.com
        action: allow
      - name: glob
        hosts: "*.glob.example.com"
        action: allow
      - name: ports
        hosts: ports.example.com
        ports: [443, "8000-8002"]
        action: allow
      - name: db
        cidrs: [10.20.0.0/16, "2001:db8::/32", 192.0.2.7]
        ports: 5432
        action: allow
      - name: disabled
        enabled: false
        hosts: disabled.example.com
        action: allow
      - name: gh-delete
        hosts: api.github.com
        methods: DELETE
        intercept: true
        action: deny
        reason: ask a human to delete things
      - name: gh-issues
        hosts: api.github.com
        methods: [POST, PATCH]
        paths: /repos/*/issues/**
        action: approve
        approval_timeout: 3m
      - name: gh-v1
        hosts: api.github.com
        paths: /v1/**
        methods: GET
        action: allow
      - name: gh-header
        hosts: api.github.com
        methods: PUT
        headers:
          X-Clawd-Test: "yes-*"
        action: allow
      - name: gh
        hosts: api.github.com
        readonly: true
      - name: stripe-body
        hosts: api.stripe.com
        intercept: true
        body_contains: Reverse_Transfer
        action: deny
      - name: stripe
        hosts: api.stripe.com
        action: allow
      - name: limited
        hosts: limited.example.com
        action: allow
        rate_limit: 2/minute
      - name: plain-http
        hosts: plain.example.com
        ports: 80
        paths: /ok/**
        action: allow
  - name: labelled
    match:
      labels:
        team: ml-*
      runtime: docker
    default_action: approve
    approval_timeout: 20m
    rules:
      - name: no-smtp
        ports: 25
        action: deny
  - name: ns
    match:
      namespace: builds
    default_action: allow
    rules: []
`

var (
	agent    = Container{ID: "c1", Name: "agent-1", Runtime: "containerd", Namespace: "default"}
	other    = Container{ID: "c2", Name: "other", Runtime: "containerd", Namespace: "default"}
	mlDocker = Container{ID: "c3", Name: "/trainer", Runtime: "docker", Namespace: "moby", Labels: map[string]string{"team": "ml-vision"}}
)

func mustParse(t testing.TB, y string) *Policy {
	t.Helper()
	p, err := Parse([]byte(y), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestDecide(t *testing.T) {
	p := mustParse(t, decideYAML)
	ip := netip.MustParseAddr
	https := func(host, method, path string) Input {
		return Input{Container: agent, Host: host, DstPort: 443, DstIP: ip("203.0.113.1"), Method: method, Path: path}
	}
	tests := []struct {
		name      string
		in        Input
		action    Action
		rule      string
		reason    string // substring
		intercept bool
		needBody  bool
	}{
		// Container selection.
		{"default set allows model API", Input{Container: other, Host: "api.anthropic.com", DstPort: 443}, Allow, "anthropic", "", false, false},
		{"default set denies the rest", Input{Container: other, Host: "example.com", DstPort: 443}, Deny, "default",
			`no rule allows host "example.com" port 443 for container "other" (set "default")`, false, false},
		{"name glob selects set", Input{Container: agent, Host: "api.anthropic.com", DstPort: 443}, Deny, "default", `set "main"`, false, false},
		{"labels and runtime select set", Input{Container: mlDocker, Host: "x.example.com", DstPort: 443}, Approve, "default", "holds it for approval", false, false},
		{"labelled set deny rule without host", Input{Container: mlDocker, DstIP: ip("198.51.100.1"), DstPort: 25}, Deny, "no-smtp", "198.51.100.1:25", false, false},
		{"label mismatch falls to default", Input{Container: Container{Runtime: "docker", Labels: map[string]string{"team": "web"}}, Host: "x.example.com", DstPort: 443}, Deny, "default", `set "default"`, false, false},
		{"namespace selects allow-all set", Input{Container: Container{Namespace: "builds"}, Host: "anything.example", DstPort: 1}, Allow, "default", "default action", false, false},

		// Hosts.
		{"exact host", https("exact.example.com", "", ""), Allow, "exact", `allowed by rule "exact"`, false, false},
		{"host is case-insensitive, trailing dot", https("EXACT.Example.com.", "", ""), Allow, "exact", "", false, false},
		{"exact does not match sub", https("a.exact.example.com", "", ""), Deny, "default", "", false, false},
		{"host port is ignored", https("exact.example.com:443", "", ""), Allow, "exact", "", false, false},
		{"two trailing dots match nothing", https("exact.example.com..", "", ""), Deny, "default", "", false, false},
		{"NUL in host matches nothing", https("a.glob.example.com\x00", "", ""), Deny, "default", "", false, false},
		{"glob one level", https("a.glob.example.com", "", ""), Allow, "glob", "", false, false},
		{"glob two levels", https("a.b.glob.example.com", "", ""), Allow, "glob", "", false, false},
		{"glob not apex", https("glob.example.com", "", ""), Deny, "default", "", false, false},
		{"glob not suffix without dot", https("xglob.example.com", "", ""), Deny, "default", "", false, false},
		{"first match wins", https("dup.example.com", "", ""), Deny, "first-wins", `denied by rule "first-wins"`, false, false},
		{"disabled rule ignored", https("disabled.example.com", "", ""), Deny, "default", "", false, false},
		{"no host no rule", Input{Container: agent, DstIP: ip("203.0.113.9"), DstPort: 443}, Deny, "default", "203.0.113.9:443", false, false},

		// Ports.
		{"port listed", https("ports.example.com", "", ""), Allow, "ports", "", false, false},
		{"port in range", Input{Container: agent, Host: "ports.example.com", DstPort: 8001}, Allow, "ports", "", false, false},
		{"port outside", Input{Container: agent, Host: "ports.example.com", DstPort: 8003}, Deny, "default", "port 8003", false, false},

		// CIDR.
		{"cidr v4", Input{Container: agent, DstIP: ip("10.20.3.4"), DstPort: 5432}, Allow, "db", "", false, false},
		{"cidr v4-mapped v6", Input{Container: agent, DstIP: ip("::ffff:10.20.3.4"), DstPort: 5432}, Allow, "db", "", false, false},
		{"cidr v6", Input{Container: agent, DstIP: ip("2001:db8::1"), DstPort: 5432}, Allow, "db", "", false, false},
		{"single ip", Input{Container: agent, DstIP: ip("192.0.2.7"), DstPort: 5432}, Allow, "db", "", false, false},
		{"cidr applies with a host too", Input{Container: agent, Host: "db.internal", DstIP: ip("10.20.0.1"), DstPort: 5432}, Allow, "db", "", false, false},
		{"cidr outside", Input{Container: agent, DstIP: ip("10.21.0.1"), DstPort: 5432}, Deny, "default", "", false, false},
		{"cidr wrong port", Input{Container: agent, DstIP: ip("10.20.0.1"), DstPort: 5433}, Deny, "default", "", false, false},

		// Methods, paths, interception.
		{"HTTP rules never allow a connection without HTTP", https("api.github.com", "", ""), Deny, "default", `no rule allows host "api.github.com" port 443`, true, false},
		{"raw TCP to an intercepted host", Input{Container: agent, Host: "api.github.com", DstPort: 22}, Deny, "default", "port 22", true, false},
		{"method deny", https("api.github.com", "DELETE", "/repos/a/b"), Deny, "gh-delete", "ask a human to delete things", true, false},
		{"method case does not dodge a deny", https("api.github.com", "delete", "/repos/a/b"), Deny, "gh-delete", "", true, false},
		{"path glob approve", https("api.github.com", "POST", "/repos/acme/issues/12/comments"), Approve, "gh-issues", "requires human approval", true, false},
		{"** matches zero segments", https("api.github.com", "PATCH", "/repos/acme/issues"), Approve, "gh-issues", "", true, false},
		{"* is exactly one segment", https("api.github.com", "POST", "/repos/acme/x/issues/1"), Approve, "gh", "read-only: POST needs human approval", true, false},
		{"query string ignored", https("api.github.com", "POST", "/repos/acme/issues?state=open"), Approve, "gh-issues", "", true, false},
		{"path case does not dodge a rule", https("api.github.com", "POST", "/REPOS/acme/Issues"), Approve, "gh-issues", "", true, false},
		{"/v1/** matches /v1", https("api.github.com", "GET", "/v1"), Allow, "gh-v1", "", true, false},
		{"/v1/** matches /v1/x/y", https("api.github.com", "GET", "/v1/x/y"), Allow, "gh-v1", "", true, false},
		{"/v1/** not /v1beta", https("api.github.com", "GET", "/v1beta"), Allow, "gh", "", true, false},
		{"percent-decoded before matching", https("api.github.com", "GET", "/%76%31/x"), Allow, "gh-v1", "", true, false},
		{"dot segments resolved", https("api.github.com", "GET", "/v2/../v1/./x"), Allow, "gh-v1", "", true, false},
		{"dotdot leaves the pattern", https("api.github.com", "POST", "/repos/acme/issues/../../x"), Approve, "gh", "", true, false},
		{"encoded dotdot resolved", https("api.github.com", "POST", "/repos/acme/issues/%2e%2e/%2E%2E/x"), Approve, "gh", "", true, false},
		{"double slash collapsed", https("api.github.com", "POST", "//repos//acme/issues"), Approve, "gh-issues", "", true, false},
		{"encoded slash denied", https("api.github.com", "POST", "/repos/a%2Fb/issues"), Deny, "gh-issues", "encoded slash", true, false},
		{"encoded backslash denied", https("api.github.com", "POST", "/repos/a%5cb/issues"), Deny, "gh-issues", "encoded slash or backslash", true, false},
		{"encoded NUL denied", https("api.github.com", "POST", "/repos/a%00/issues"), Deny, "gh-issues", "NUL", true, false},
		{"invalid escape denied", https("api.github.com", "POST", "/repos/a%zz/issues"), Deny, "gh-issues", "invalid percent escape", true, false},
		{"truncated escape denied", https("api.github.com", "POST", "/repos/a%2"), Deny, "gh-issues", "invalid percent escape", true, false},
		{"backslash denied", https("api.github.com", "POST", `/repos\a/issues`), Deny, "gh-issues", "backslash", true, false},
		{"escaping root denied", https("api.github.com", "POST", "/../repos/a/issues"), Deny, "gh-issues", "climb above /", true, false},
		{"double encoding denied", https("api.github.com", "POST", "/repos/a%252Fb/issues"), Deny, "gh-issues", "double percent-encoded", true, false},
		{"relative path denied", https("api.github.com", "POST", "repos/a/issues"), Deny, "gh-issues", "does not start with /", true, false},
		{"ambiguous path fine without path rules", https("api.github.com", "HEAD", "/a%2Fb"), Allow, "gh", "", true, false},
		{"readonly GET", https("api.github.com", "GET", "/user"), Allow, "gh", "", true, false},
		{"readonly OPTIONS", https("api.github.com", "OPTIONS", "/user"), Allow, "gh", "", true, false},
		{"readonly PUT approve", https("api.github.com", "PUT", "/user"), Approve, "gh", "read-only: PUT", true, false},
		{"plain http path rule", Input{Container: agent, Host: "plain.example.com", DstPort: 80, Method: "GET", Path: "/ok/1"}, Allow, "plain-http", "", false, false},
		{"plain http path miss", Input{Container: agent, Host: "plain.example.com", DstPort: 80, Method: "GET", Path: "/nope"}, Deny, "default", "", false, false},
		{"plain http rule needs HTTP", Input{Container: agent, Host: "plain.example.com", DstPort: 80}, Deny, "default", "", false, false},

		// Body.
		{"body unknown asks for it", https("api.stripe.com", "POST", "/v1/refunds"), Deny, "stripe-body", "buffer it", true, true},
		{"body match case-insensitive", func() Input {
			in := https("api.stripe.com", "POST", "/v1/refunds")
			in.Body, in.BodyKnown = []byte("amount=1&REVERSE_TRANSFER=true"), true
			return in
		}(), Deny, "stripe-body", "", true, false},
		{"body without match falls through", func() Input {
			in := https("api.stripe.com", "POST", "/v1/refunds")
			in.Body, in.BodyKnown = []byte("amount=1"), true
			return in
		}(), Allow, "stripe", "", true, false},
		{"empty known body", func() Input {
			in := https("api.stripe.com", "POST", "/v1/refunds")
			in.BodyKnown = true
			return in
		}(), Allow, "stripe", "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.in)
			if d.Action != tt.action || d.Rule != tt.rule || d.Intercept != tt.intercept || d.NeedBody != tt.needBody {
				t.Fatalf("Decide = %s (intercept %v, needBody %v); want %s by %q (intercept %v, needBody %v)",
					FormatDecision(d), d.Intercept, d.NeedBody, tt.action, tt.rule, tt.intercept, tt.needBody)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Fatalf("reason %q does not contain %q", d.Reason, tt.reason)
			}
			if d.Reason == "" {
				t.Fatal("empty reason")
			}
		})
	}
}

func TestDecideHeaders(t *testing.T) {
	p := mustParse(t, decideYAML)
	in := Input{Container: agent, Host: "api.github.com", DstPort: 443, Method: "PUT", Path: "/x"}
	for _, tt := range []struct {
		header http.Header
		rule   string
	}{
		{nil, "gh"},
		{http.Header{"X-Clawd-Test": {"no"}}, "gh"},
		{http.Header{"X-Clawd-Test": {"yes-please"}}, "gh-header"},
		{http.Header{"X-Clawd-Test": {"no", "yes-"}}, "gh-header"},
	} {
		in.Header = tt.header
		if d := p.Decide(in); d.Rule != tt.rule {
			t.Errorf("header %v: rule %q, want %q", tt.header, d.Rule, tt.rule)
		}
	}
}

func TestDecideApprovalTimeout(t *testing.T) {
	p := mustParse(t, decideYAML)
	d := p.Decide(Input{Container: agent, Host: "api.github.com", DstPort: 443, Method: "POST", Path: "/repos/a/issues"})
	if d.ApprovalTimeout != 3*time.Minute {
		t.Errorf("rule timeout = %v, want 3m", d.ApprovalTimeout)
	}
	d = p.Decide(Input{Container: agent, Host: "api.github.com", DstPort: 443, Method: "POST", Path: "/user"})
	if d.ApprovalTimeout != DefaultApprovalTimeout {
		t.Errorf("readonly timeout = %v, want default %v", d.ApprovalTimeout, DefaultApprovalTimeout)
	}
	d = p.Decide(Input{Container: mlDocker, Host: "a.example", DstPort: 443})
	if d.ApprovalTimeout != 20*time.Minute {
		t.Errorf("set default timeout = %v, want 20m", d.ApprovalTimeout)
	}
}

func TestDefaultDenyIsAboutDestinations(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: anthropic
      hosts: api.anthropic.com
      action: allow
`)
	c := Container{ID: "x"}
	ip := netip.MustParseAddr("1.1.1.1")
	for _, in := range []Input{
		{Container: c, Host: "api.anthropic.com.evil.com", DstPort: 443, DstIP: ip},
		{Container: c, Host: "evil.com", DstPort: 443, DstIP: ip},
		{Container: c, DstPort: 53, DstIP: ip},
		{Container: c, Host: "anthropic.com", DstPort: 443},
		{Container: c},
	} {
		if d := p.Decide(in); d.Action != Deny || d.Rule != "default" {
			t.Errorf("%+v: %s, want default deny", in, FormatDecision(d))
		}
	}
	if d := p.Decide(Input{Container: c, Host: "api.anthropic.com", DstPort: 8443}); d.Action != Allow {
		t.Errorf("any port: %s", FormatDecision(d))
	}
}

func TestRateLimit(t *testing.T) {
	p := mustParse(t, decideYAML)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(c Container, d time.Duration) Decision {
		return p.Decide(Input{Container: c, Host: "limited.example.com", DstPort: 443, Now: t0.Add(d)})
	}
	steps := []struct {
		c          Container
		at         time.Duration
		action     Action
		retryAfter time.Duration
	}{
		{agent, 0, Allow, 0},
		{agent, time.Second, Allow, 0},                                    // burst of 2
		{agent, 2 * time.Second, Deny, 28 * time.Second},                  // next token at 30s
		{Container{ID: "c9", Name: "agent-9"}, 2 * time.Second, Allow, 0}, // per container
		{agent, 29 * time.Second, Deny, time.Second},
		{agent, 30 * time.Second, Allow, 0},
		{agent, 31 * time.Second, Deny, 29 * time.Second},
		{agent, 10 * time.Minute, Allow, 0}, // refilled
		{agent, 10 * time.Minute, Allow, 0},
		{agent, 10 * time.Minute, Deny, 30 * time.Second},
	}
	for i, s := range steps {
		d := at(s.c, s.at)
		if d.Action != s.action || d.RetryAfter != s.retryAfter || d.RateLimited != (s.action == Deny) {
			t.Fatalf("step %d at %v: %s (retry %v), want %s retry %v", i, s.at, FormatDecision(d), d.RetryAfter, s.action, s.retryAfter)
		}
		if d.RateLimited && (d.Rule != "limited" || !strings.Contains(d.Reason, "2 per minute")) {
			t.Fatalf("step %d: rule %q reason %q", i, d.Rule, d.Reason)
		}
	}
}

func TestLimiterPrune(t *testing.T) {
	l := newLimiter()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	spec := rateSpec{n: 1, per: time.Second}
	for i := 0; i < 5000; i++ {
		l.take(limitKey{who: string(rune(i))}, spec, t0.Add(time.Duration(i)*time.Second))
	}
	if n := len(l.tat); n > 3000 {
		t.Fatalf("limiter holds %d buckets after pruning, want refilled ones dropped", n)
	}
}

func TestIntercepts(t *testing.T) {
	p := mustParse(t, decideYAML+`
  - name: everything
    match: {name: mitm}
    rules:
      - name: all
        intercept: true
        readonly: true
`)
	for _, tt := range []struct {
		c    Container
		host string
		want bool
	}{
		{agent, "api.github.com", true},
		{agent, "API.GITHUB.COM.", true},
		{agent, "api.stripe.com", true},
		{agent, "exact.example.com", false},
		{agent, "", false},
		{other, "api.github.com", false},
		{Container{Name: "mitm"}, "anything.example", true},
		{Container{Name: "mitm"}, "", false},
	} {
		if got := p.Intercepts(tt.c, tt.host); got != tt.want {
			t.Errorf("Intercepts(%s, %q) = %v, want %v", tt.c.Name, tt.host, got, tt.want)
		}
	}
}

func TestMayResolve(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: block
      hosts: blocked.example.com
      action: deny
    - name: a
      hosts: [api.anthropic.com, "*.svc.example.com"]
      action: allow
sets:
  - name: with-cidr
    match: {name: cidr}
    rules:
      - name: db
        cidrs: 10.0.0.0/8
        action: allow
  - name: approve-default
    match: {name: approver}
    default_action: approve
  - name: cidr-deny
    match: {name: cidrdeny}
    rules:
      - name: db
        cidrs: 10.0.0.0/8
        action: deny
`)
	for _, tt := range []struct {
		c    string
		name string
		want bool
	}{
		{"x", "api.anthropic.com", true},
		{"x", "API.anthropic.com.", true},
		{"x", "a.svc.example.com", true},
		{"x", "svc.example.com", false},
		{"x", "blocked.example.com", false},
		{"x", "example.com", false},
		{"x", "", false},
		{"cidr", "anything.example", true},
		{"approver", "anything.example", true},
		{"cidrdeny", "anything.example", false},
	} {
		if got := p.MayResolve(Container{Name: tt.c}, tt.name); got != tt.want {
			t.Errorf("MayResolve(%s, %q) = %v, want %v", tt.c, tt.name, got, tt.want)
		}
	}
}

func TestSetFor(t *testing.T) {
	p := mustParse(t, decideYAML)
	for c, want := range map[*Container]string{&agent: "main", &other: "default", &mlDocker: "labelled"} {
		if got := p.SetFor(*c); got != want {
			t.Errorf("SetFor(%s) = %q, want %q", c.Name, got, want)
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" with err
		err      bool
	}{
		{"/", "", false},
		{"/a/b/", "a/b", false},
		{"/a/./b/../c", "a/c", false},
		{"/a%20b", "a b", false},
		{"/a%25", "a%", false},
		{"/a?x=%2F", "a", false},
		{"/a#frag", "a", false},
		{"/%2e%2e", "", true},
		{"/a/%2E%2E/%2e%2e/..", "", true},
		{"/a%2f", "", true},
		{"/a%", "", true},
		{"/a\x01", "", true},
		{"*", "", true},
	} {
		segs, err := normalizePath(tt.in)
		if (err != nil) != tt.err {
			t.Errorf("normalizePath(%q) err = %v, want err %v", tt.in, err, tt.err)
			continue
		}
		if got := strings.Join(segs, "/"); !tt.err && got != tt.want {
			t.Errorf("normalizePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHostileHostLength(t *testing.T) {
	p := mustParse(t, decideYAML)
	long := strings.Repeat("a.", 100000) + "glob.example.com"
	in := Input{Container: agent, Host: long, DstPort: 443}
	if d := p.Decide(in); d.Action != Deny || d.Rule != "default" {
		t.Fatalf("over-long host: %s", FormatDecision(d))
	}
	if p.Intercepts(agent, long) || p.MayResolve(other, long) {
		t.Fatal("over-long host intercepted or resolvable")
	}
}

// An allowed request by exact host, the hot path, must not allocate.
func TestDecideAllowDoesNotAllocate(t *testing.T) {
	p := mustParse(t, decideYAML)
	in := Input{Container: agent, Host: "exact.example.com", DstPort: 443}
	if n := testing.AllocsPerRun(100, func() { p.Decide(in) }); n != 0 {
		t.Fatalf("Decide allocates %v times per allowed request", n)
	}
}

// Rules found through different indexes (host, several CIDR lengths, any
// destination) still decide in file order.
func TestIndexesKeepFileOrder(t *testing.T) {
	p := mustParse(t, `
default:
  rules:
    - name: no-ssh
      cidrs: 10.0.0.0/8
      ports: 22
      action: deny
    - name: host-x
      hosts: x.example.com
      action: allow
    - name: net-16
      cidrs: [10.1.0.0/16, "2001:db8:1::/48"]
      action: approve
    - name: any-25
      ports: 25
      action: deny
    - name: net-24-and-host
      hosts: y.example.com
      cidrs: 10.1.2.0/24
      action: allow
    - name: host-ip
      cidrs: 10.1.2.3
      action: allow
`)
	ip := netip.MustParseAddr
	for _, tt := range []struct {
		host string
		ip   string
		port uint16
		rule string
	}{
		{"x.example.com", "10.1.1.1", 22, "no-ssh"},
		{"x.example.com", "10.1.1.1", 443, "host-x"},
		{"", "10.1.1.1", 80, "net-16"},
		{"", "10.1.2.3", 25, "net-16"},
		{"", "10.2.2.3", 25, "any-25"},
		{"y.example.com", "192.0.2.1", 443, "net-24-and-host"},
		{"", "2001:db8:1:2::1", 443, "net-16"},
		{"", "2001:db8:2::1", 443, "default"},
		{"", "11.1.2.3", 443, "default"},
	} {
		d := p.Decide(Input{Container: agent, Host: tt.host, DstIP: ip(tt.ip), DstPort: tt.port})
		if d.Rule != tt.rule {
			t.Errorf("%s %s:%d decided by %q, want %q", tt.host, tt.ip, tt.port, d.Rule, tt.rule)
		}
	}
}
