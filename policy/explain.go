package policy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// Explain decides what the policy does with one request, for
// `clawd policy test FILE --container NAME METHOD URL`. The URL's scheme
// says how the request would travel:
//
//   - http://host[:port]/path: plain HTTP, method and path are visible;
//   - https://host[:port]/path: TLS; method and path are only visible when
//     the policy intercepts host, otherwise only the host name (SNI) is;
//   - tcp://host-or-ip:port: a raw TCP connection (method is ignored).
//
// Host names are not resolved: rules by IP only apply when the URL's host
// is an IP address.
func Explain(p *Policy, c Container, method, rawURL string) (Decision, error) {
	return ExplainProgram(p, c, Program{}, method, rawURL)
}

// ExplainProgram is Explain for a request made by prog (the zero Program:
// unknown, as clawd treats a process it cannot identify).
func ExplainProgram(p *Policy, c Container, prog Program, method, rawURL string) (Decision, error) {
	if p == nil {
		return Decision{}, fmt.Errorf("explain: no policy")
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Decision{}, fmt.Errorf("explain: parse URL: %w", err)
	}
	scheme := strings.ToLower(u.Scheme)
	var defPort uint16
	switch scheme {
	case "http":
		defPort = 80
	case "https":
		defPort = 443
	case "tcp":
	default:
		return Decision{}, fmt.Errorf("explain: URL %q: scheme must be http, https or tcp", rawURL)
	}
	host := hostname.Normalize(u.Hostname())
	if host == "" {
		return Decision{}, fmt.Errorf("explain: URL %q has no host", rawURL)
	}
	if host == hostname.Invalid {
		return Decision{}, fmt.Errorf("explain: URL %q: %q is not a host name or IP address", rawURL, u.Hostname())
	}
	in := Input{Container: c, DstPort: defPort, Program: prog}
	if ps := u.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return Decision{}, fmt.Errorf("explain: URL %q: bad port %q", rawURL, ps)
		}
		in.DstPort = uint16(n)
	}
	if in.DstPort == 0 {
		return Decision{}, fmt.Errorf("explain: URL %q: tcp URLs need a port", rawURL)
	}
	if ip, ok := hostname.IP(host); ok {
		in.DstIP = ip
	} else {
		in.Host = host
	}
	if scheme == "tcp" {
		return p.Decide(in), nil
	}
	if scheme == "https" && !p.Intercepts(c, in.Host) {
		// Passthrough TLS: clawd sees only the SNI.
		return p.Decide(in), nil
	}
	method = strings.ToUpper(strings.TrimSpace(method))
	if method == "" {
		method = "GET"
	}
	if !validMethod(method) {
		return Decision{}, fmt.Errorf("explain: %q is not an HTTP method", method)
	}
	in.Method = method
	in.Path = u.EscapedPath()
	if in.Path == "" {
		in.Path = "/"
	}
	in.Header = map[string][]string{}
	return p.Decide(in), nil
}

// FormatDecision renders d on one line for the CLI and logs, e.g.
//
//	approve (rule "github-write", timeout 10m0s): rule "github-write" requires human approval
func FormatDecision(d Decision) string {
	var b strings.Builder
	if d.NeedBody {
		b.WriteString("need body")
	} else if d.Action == "" {
		b.WriteString("undecided")
	} else {
		b.WriteString(string(d.Action))
	}
	var attrs []string
	if d.Rule != "" {
		attrs = append(attrs, fmt.Sprintf("rule %q", d.Rule))
	}
	if d.Action == Approve && d.ApprovalTimeout > 0 {
		attrs = append(attrs, "timeout "+d.ApprovalTimeout.String())
	}
	if d.RateLimited {
		attrs = append(attrs, "rate limited, retry after "+d.RetryAfter.String())
	}
	if d.Budget != nil && d.Action != Deny {
		attrs = append(attrs, "budget "+d.Budget.String()) // LLM budgets (issue 16)
	}
	if d.Intercept {
		attrs = append(attrs, "TLS intercepted")
	}
	if d.Audit && d.Action != Allow {
		attrs = append(attrs, "mode audit: let through and audited as would "+string(d.Action))
	}
	if !d.UpstreamProxy.IsZero() && d.Action != Deny {
		attrs = append(attrs, "via upstream proxy "+d.UpstreamProxy.String())
	}
	if len(attrs) > 0 {
		b.WriteString(" (" + strings.Join(attrs, ", ") + ")")
	}
	if d.Reason != "" {
		b.WriteString(": " + d.Reason)
	}
	if d.NextSteps != "" && d.Action != Allow {
		b.WriteString("; next steps: " + d.NextSteps)
	}
	return b.String()
}
