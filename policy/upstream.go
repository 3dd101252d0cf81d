package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// UpstreamProxy is the HTTP proxy clawd sends an allowed connection
// through (the company's egress proxy). The zero value means none: clawd
// dials the destination itself.
//
// It carries no secret: Credential names a clawd-owned secret in the
// secret store (`clawd secret set NAME --clawd`, value "user:password"),
// which the proxy resolves when it dials.
type UpstreamProxy struct {
	// Scheme is "http" (CONNECT in clear to the proxy) or "https" (TLS to
	// the proxy first, verified for Host).
	Scheme string
	// Addr is "host:port" (IPv6 literals in brackets); the port is always
	// given.
	Addr string
	// Credential is the name of a clawd secret for Proxy-Authorization
	// Basic; "" sends none.
	Credential string
}

// IsZero reports whether u is "no upstream proxy".
func (u UpstreamProxy) IsZero() bool { return u == UpstreamProxy{} }

// Host is the proxy's host name or address, without the port.
func (u UpstreamProxy) Host() string {
	h, _, _ := net.SplitHostPort(u.Addr)
	return h
}

// String is the proxy's URL (and credential name), safe to log: it never
// holds a secret.
func (u UpstreamProxy) String() string {
	if u.IsZero() {
		return "none"
	}
	s := u.Scheme + "://" + u.Addr
	if u.Credential != "" {
		s += " (credential " + u.Credential + ")"
	}
	return s
}

// credentialRE is secrets.ValidName's pattern (policy does not import the
// store).
var credentialRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

var errUserinfo = errors.New("the URL holds a user name or password, which must never be in the policy; store \"user:password\" with `clawd secret set NAME --clawd` and write credential: NAME")

// ParseUpstreamProxyURL parses "http://host:port" or "https://host:port"
// strictly: no userinfo (credentials never go in the policy), no path,
// query or fragment, an explicit port.
func ParseUpstreamProxyURL(s string) (UpstreamProxy, error) {
	if strings.Contains(s, "@") {
		// Not echoed: the userinfo may be a password.
		return UpstreamProxy{}, errUserinfo
	}
	u, err := url.Parse(s)
	if err != nil {
		return UpstreamProxy{}, fmt.Errorf("%q is not a URL (write http://host:port or https://host:port)", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return UpstreamProxy{}, fmt.Errorf("%q: the scheme must be http or https (write http://host:port)", s)
	}
	if u.Opaque != "" || u.Host == "" {
		return UpstreamProxy{}, fmt.Errorf("%q has no host (write http://host:port)", s)
	}
	if u.User != nil {
		return UpstreamProxy{}, errUserinfo
	}
	if u.Path != "" || u.RawPath != "" {
		return UpstreamProxy{}, fmt.Errorf("%q: no path allowed (write %s://%s)", s, u.Scheme, u.Host)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(s, "?#") {
		return UpstreamProxy{}, fmt.Errorf("%q: no query or fragment allowed (write %s://%s)", s, u.Scheme, u.Host)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" {
		return UpstreamProxy{}, fmt.Errorf("%q: the port is required (e.g. %s://%s:3128)", s, u.Scheme, u.Hostname())
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' {
		return UpstreamProxy{}, fmt.Errorf("%q: port %q is not 1-65535", s, port)
	}
	h := hostname.Normalize(host)
	if h == "" || !(hostname.IsIP(h) || hostname.Valid(h)) || strings.Contains(h, "%") {
		return UpstreamProxy{}, fmt.Errorf("%q: %q is not a host name or IP address", s, host)
	}
	return UpstreamProxy{Scheme: u.Scheme, Addr: net.JoinHostPort(h, port)}, nil
}

// upstreamProxy parses an `upstream_proxy:` value: a URL string, a mapping
// {url:, credential:}, or (rules only) "none". It returns the value and
// whether one was set; on a problem it is reported and ok is false.
func (ps *parser) upstreamProxy(n *yaml.Node, what string, allowNone bool) (UpstreamProxy, bool) {
	what += ": upstream_proxy"
	if !ps.noAlias(n) {
		return UpstreamProxy{}, false
	}
	var raw string
	var cred *yaml.Node
	var urlNode = n
	switch n.Kind {
	case yaml.ScalarNode:
		s, ok := ps.str(n, what)
		if !ok {
			return UpstreamProxy{}, false
		}
		if s == "none" {
			if !allowNone {
				ps.errf(n, "%s: none only applies to a rule (to turn off its set's upstream proxy); leave the key out instead", what)
				return UpstreamProxy{}, false
			}
			return UpstreamProxy{}, true
		}
		raw = s
	case yaml.MappingNode:
		f := ps.fields(n, what, "url", "credential")
		if f == nil {
			return UpstreamProxy{}, false
		}
		u, ok := f["url"]
		if !ok {
			ps.errf(n, "%s: url is required (http://host:port or https://host:port)", what)
			return UpstreamProxy{}, false
		}
		s, ok := ps.str(u, what+": url")
		if !ok {
			return UpstreamProxy{}, false
		}
		raw, urlNode, cred = s, u, f["credential"]
	default:
		ps.errf(n, "%s must be a URL (http://host:port), a mapping {url: ..., credential: NAME}%s", what, map[bool]string{true: " or none", false: ""}[allowNone])
		return UpstreamProxy{}, false
	}
	up, err := ParseUpstreamProxyURL(raw)
	if err != nil {
		ps.errf(urlNode, "%s: %v", what, err)
		return UpstreamProxy{}, false
	}
	if cred != nil {
		c, ok := ps.str(cred, what+": credential")
		if !ok {
			return UpstreamProxy{}, false
		}
		if !credentialRE.MatchString(c) {
			// Not echoed: what was written may be the password itself.
			ps.errf(cred, "%s: credential is not a secret name ([a-z0-9][a-z0-9_-]{0,62}); it names a clawd secret (`clawd secret set NAME --clawd`), never the password itself", what)
			return UpstreamProxy{}, false
		}
		up.Credential = c
	}
	return up, true
}

// UpstreamProxies lists the addresses ("host:port") of every upstream
// proxy the policy names: clawd's own next hops, which no agent may dial.
func (p *Policy) UpstreamProxies() []string {
	p.proxiesOnce.Do(p.listProxies)
	return p.proxies
}

// UpstreamProxyAddrs are the upstream proxies named by address (not by
// host name), computed once per policy.
func (p *Policy) UpstreamProxyAddrs() []netip.AddrPort {
	p.proxiesOnce.Do(p.listProxies)
	return p.proxyAddrs
}

func (p *Policy) listProxies() {
	p.proxies = p.collectProxies()
	for _, a := range p.proxies {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			p.proxyAddrs = append(p.proxyAddrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
}

func (p *Policy) collectProxies() []string {
	seen := map[string]bool{}
	var out []string
	add := func(u UpstreamProxy) {
		if !u.IsZero() && !seen[u.Addr] {
			seen[u.Addr] = true
			out = append(out, u.Addr)
		}
	}
	for _, s := range append([]*ruleSet{p.def}, p.sets...) {
		if s == nil {
			continue
		}
		add(s.upstream)
		for _, r := range s.rules {
			if r.upstream != nil {
				add(*r.upstream)
			}
		}
	}
	return out
}
