package suggest

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/policy"
)

// group is one set of the output: a container (whole policy), or the
// current policy's set the containers fall in (--diff).
type group struct {
	name       string   // the set's name; "default" for the default section
	containers []string // match.name
	targets    map[target]*targetObs
}

type targetObs struct {
	reads  map[uint16]bool
	rmeth  map[string]bool
	rsegs  map[string]bool
	rhttps bool
	writes map[string]*writeObs // by method
	conns  map[uint16]bool
}

type writeObs struct {
	ports map[uint16]bool
	segs  map[string]bool
	https bool
}

// Result is a proposal.
type Result struct {
	YAML    []byte   // a policy file `clawd policy check` accepts; nil when nothing is proposed
	Rules   int      // rules proposed
	Refused []string // names never proposed: audited at a special address or refused by clawd itself
	Skipped []string // targets left out, with why
}

// Propose builds the proposal from what was collected.
func (c *Collector) Propose() (Result, error) {
	groups := map[string]*group{}
	var res Result
	keys := make([]obsKey, 0, len(c.obs))
	for k := range c.obs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return lessKey(keys[i], keys[j]) })
	for _, k := range keys {
		v := c.obs[k]
		if k.t.host != "" && c.special[k.t.host] {
			continue
		}
		gname := "suggested-" + strings.TrimPrefix(k.container, "/")
		if c.o.Current != nil {
			if c.covered(k, v) {
				continue
			}
			gname = c.o.Current.SetFor(container(v))
		}
		g := groups[gname]
		if g == nil {
			g = &group{name: gname, targets: map[target]*targetObs{}}
			groups[gname] = g
		}
		if n := strings.TrimPrefix(k.container, "/"); !slices.Contains(g.containers, n) {
			g.containers = append(g.containers, n)
		}
		to := g.targets[k.t]
		if to == nil {
			to = &targetObs{reads: map[uint16]bool{}, rmeth: map[string]bool{}, rsegs: map[string]bool{}, writes: map[string]*writeObs{}, conns: map[uint16]bool{}}
			g.targets[k.t] = to
		}
		switch {
		case k.method == "":
			to.conns[k.port] = true
		case readMethods[k.method]:
			to.reads[k.port] = true
			to.rmeth[k.method] = true
			to.rsegs[k.seg] = true
			to.rhttps = to.rhttps || k.https
		default:
			w := to.writes[k.method]
			if w == nil {
				w = &writeObs{ports: map[uint16]bool{}, segs: map[string]bool{}}
				to.writes[k.method] = w
			}
			w.ports[k.port] = true
			w.segs[k.seg] = true
			w.https = w.https || k.https
		}
	}
	for h := range c.special {
		res.Refused = append(res.Refused, h)
	}
	slices.Sort(res.Refused)

	var gnames []string
	for n := range groups {
		gnames = append(gnames, n)
	}
	slices.Sort(gnames)
	var def *yaml.Node
	var sets []*yaml.Node
	for _, gn := range gnames {
		g := groups[gn]
		rules := c.rules(g, &res)
		if len(rules) == 0 {
			continue
		}
		res.Rules += len(rules)
		rl := seq(rules...)
		if gn == "default" {
			def = mapping(key("rules"), rl)
			continue
		}
		if len(gn) > 128 {
			gn = "suggested-" + strconv.Itoa(len(sets)+1)
		}
		slices.Sort(g.containers)
		names := make([]*yaml.Node, len(g.containers))
		for i, n := range g.containers {
			names[i] = str(n)
		}
		sets = append(sets, mapping(key("name"), str(gn), key("match"), mapping(key("name"), seq(names...)), key("rules"), rl))
	}
	if res.Rules == 0 {
		return res, nil
	}
	root := mapping(key("version"), str("1"))
	root.HeadComment = "Proposed by clawd policy suggest from the audit log: it allows what was\n" +
		"seen (reads by host and path prefix), holds writes for approval, and\n" +
		"denies everything else. Review it, then load it (mode: enforce is the default)."
	if c.o.Current != nil {
		root.HeadComment += "\nOnly what the current policy (" + safeComment(c.o.Current.File()) + ") does not allow yet:\n" +
			"copy these rules into the set of the same name, above its rules (first match wins)."
	}
	if len(res.Refused) > 0 {
		r := res.Refused
		if len(r) > 20 {
			r = r[:20]
		}
		root.HeadComment += "\nNever proposed (seen at special addresses or refused by clawd): " + strings.Join(r, ", ")
	}
	if def != nil {
		root.Content = append(root.Content, key("default"), def)
	}
	if len(sets) > 0 {
		root.Content = append(root.Content, key("sets"), seq(sets...))
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return res, fmt.Errorf("suggest: encode: %w", err)
	}
	enc.Close()
	// Fail closed: what is printed must be a valid policy.
	if _, err := policy.Parse(buf.Bytes(), "suggested policy"); err != nil {
		return res, fmt.Errorf("suggest: the proposal does not validate (a bug; please report it): %w", err)
	}
	res.YAML = buf.Bytes()
	return res, nil
}

// covered reports whether the current policy already allows what k saw
// (or holds it, for a write, which is what would be proposed).
func (c *Collector) covered(k obsKey, v *obsVal) bool {
	in := policy.Input{Container: container(v), DstIP: v.ip, DstPort: k.port, Host: k.t.host, Method: k.method, Path: v.path, BodyKnown: true, Recheck: true}
	if k.method != "" && in.Path == "" {
		in.Path = "/"
	}
	d := c.o.Current.Decide(in)
	switch d.Action {
	case policy.Allow:
		return true
	case policy.Approve:
		return k.method != "" && !readMethods[k.method]
	}
	return false
}

func lessKey(a, b obsKey) bool {
	if a.container != b.container {
		return a.container < b.container
	}
	if a.t.String() != b.t.String() {
		return a.t.String() < b.t.String()
	}
	if a.port != b.port {
		return a.port < b.port
	}
	if a.method != b.method {
		return a.method < b.method
	}
	return a.seg < b.seg
}

// rules are a group's proposed rules, per target: reads, writes, then
// connections.
func (c *Collector) rules(g *group, res *Result) []*yaml.Node {
	var ts []target
	for t := range g.targets {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].String() < ts[j].String() })
	var out []*yaml.Node
	for _, t := range ts {
		to := g.targets[t]
		id := strings.NewReplacer(":", "-").Replace(t.String())
		dest := func(kind string, ports map[uint16]bool, https bool) []*yaml.Node {
			name := fmt.Sprintf("%s-%s", kind, id)
			if len(name) > 128 {
				name = fmt.Sprintf("%s-%d", kind, len(out)+1)
			}
			f := []*yaml.Node{key("name"), str(name)}
			if t.host != "" {
				f = append(f, key("hosts"), str(t.host))
			} else {
				f = append(f, key("cidrs"), str(t.ip.String()))
			}
			f = append(f, key("ports"), portList(ports))
			if kind != "connect" && t.host != "" && (https || ports[443]) {
				f = append(f, key("intercept"), boolean(true))
			}
			return f
		}
		httpOK := func(ports map[uint16]bool, https bool) bool {
			if t.host == "" && (https || ports[443]) {
				res.Skipped = append(res.Skipped, t.String()+": HTTPS to an address without a name cannot be matched by method or path")
				return false
			}
			return true
		}
		httpPorts := map[uint16]bool{}
		if len(to.reads) > 0 && httpOK(to.reads, to.rhttps) {
			f := dest("read", to.reads, to.rhttps)
			f = append(f, key("methods"), strList(sortedKeys(to.rmeth)))
			if p := paths(to.rsegs, maxReadPaths); p != nil {
				f = append(f, key("paths"), p)
			}
			f = append(f, key("action"), str("allow"))
			out = append(out, mapping(f...))
			for p := range to.reads {
				httpPorts[p] = true
			}
		}
		for _, m := range sortedKeys(to.writes) {
			w := to.writes[m]
			if !httpOK(w.ports, w.https) {
				continue
			}
			f := dest("write-"+strings.ToLower(m), w.ports, w.https)
			f = append(f, key("methods"), str(m))
			if p := paths(w.segs, maxWritePaths); p != nil {
				f = append(f, key("paths"), p)
			}
			f = append(f, key("action"), str("approve"))
			out = append(out, mapping(f...))
			for p := range w.ports {
				httpPorts[p] = true
			}
		}
		// A connection-level allow on a port HTTP rules cover would let
		// every method through: those ports stay with the HTTP rules.
		conns := map[uint16]bool{}
		for p := range to.conns {
			if !httpPorts[p] {
				conns[p] = true
			}
		}
		if len(conns) > 0 {
			f := dest("connect", conns, false)
			f = append(f, key("action"), str("allow"))
			out = append(out, mapping(f...))
		}
	}
	return out
}

// paths generalises first segments to "/seg/**" patterns ("/" for the
// root); nil (host-wide) when a segment was not plain or there are more
// than max.
func paths(segs map[string]bool, max int) *yaml.Node {
	if segs["\x00"] || len(segs) > max {
		return nil
	}
	var out []string
	for _, s := range sortedKeys(segs) {
		if s == "" {
			out = append(out, "/")
		} else {
			out = append(out, "/"+s+"/**")
		}
	}
	return strList(out)
}

func container(v *obsVal) policy.Container {
	return policy.Container{ID: v.e.ContainerID, Name: v.e.Container, Runtime: v.e.Runtime, Labels: v.e.Labels}
}

func sortedKeys[K string | uint16, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func portList(ports map[uint16]bool) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, p := range sortedKeys(ports) {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(int(p))})
	}
	return n
}

// str is a double-quoted string scalar: nothing in it can be read as
// YAML syntax, whatever the audit log held.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func strList(ss []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range ss {
		n.Content = append(n.Content, str(s))
	}
	return n
}

func seq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Content: items}
}

// key is a plain key scalar (a policy keyword, never data).
func key(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// mapping builds a mapping from alternating keys and values.
func mapping(kv ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.MappingNode, Content: kv}
}

// safeComment keeps a file name from breaking out of a YAML comment.
func safeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 || r == 0x85 {
			return '?'
		}
		return r
	}, s)
}
