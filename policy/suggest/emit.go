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
	Skipped []string // targets or requests left out, with why
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
			switch c.current(k, v) {
			case covered:
				continue
			case byRule:
				c.ByRule++
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
	for _, t := range sortedKeys(c.unplain) {
		res.Skipped = append(res.Skipped, fmt.Sprintf("%s: %d requests with a path that is not plain (wildcards, %%-escapes, dot segments, spaces); no rule widened for them", t, c.unplain[t]))
	}

	var gnames []string
	for n := range groups {
		gnames = append(gnames, n)
	}
	slices.Sort(gnames)
	setName := setNames(gnames, c.o.Current != nil)
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
		gn = setName[gn]
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
		root.HeadComment += "\nOnly what the current policy (" + safeComment(c.o.Current.File()) + ") left to a set's default action:\n" +
			"append these rules to the set of the same name, AFTER its rules. The first match wins, so the\n" +
			"rules already there (explicit denies and approvals) keep deciding what they match; nothing\n" +
			"the author's own rules refused or held is proposed."
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

// standing is what the current policy makes of an observation.
type standing int

const (
	candidate standing = iota // the set's default action refused it: propose
	covered                   // already allowed (or held, for a write)
	byRule                    // an author's rule refused it, or holds the read: never proposed
)

// current says what the current policy decides about what k saw. Only
// what falls to a set's default action is a candidate: the proposal goes
// after the author's rules, and must not undo a deny or a hold.
func (c *Collector) current(k obsKey, v *obsVal) standing {
	in := policy.Input{Container: container(v), DstIP: v.ip, DstPort: k.port, Host: k.t.host, Method: k.method, Path: v.path, BodyKnown: true, Recheck: true}
	if k.method != "" && in.Path == "" {
		in.Path = "/"
	}
	d := c.o.Current.Decide(in)
	write := k.method != "" && !readMethods[k.method]
	switch {
	case d.Action == policy.Allow, d.Action == policy.Approve && write:
		return covered
	case d.Rule == "default":
		return candidate
	}
	return byRule
}

// setNames gives each group a valid set name, unique in the output: the
// group's own name when the parser takes it, else "suggested-N" with the
// lowest N no other set uses. With --diff the names are the current
// policy's (valid and unique already).
func setNames(gnames []string, diff bool) map[string]string {
	out := map[string]string{}
	used := map[string]bool{"default": true}
	var fallback []string
	for _, g := range gnames {
		if diff || policy.ValidName(g) {
			out[g], used[g] = g, true
		} else {
			fallback = append(fallback, g)
		}
	}
	n := 1
	for _, g := range fallback {
		for used["suggested-"+strconv.Itoa(n)] {
			n++
		}
		out[g] = "suggested-" + strconv.Itoa(n)
		used[out[g]] = true
	}
	return out
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
	used := map[string]bool{}
	for _, t := range ts {
		to := g.targets[t]
		id := strings.NewReplacer(":", "-").Replace(t.String())
		dest := func(kind string, ports map[uint16]bool, https bool) []*yaml.Node {
			name := c.ruleName(g.name, used, kind, id)
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
			p := paths(to.rsegs, maxReadPaths)
			if p != nil {
				f = append(f, key("paths"), p)
			}
			f = append(f, key("action"), str("allow"))
			r := mapping(f...)
			if p == nil {
				r.HeadComment = wideComment(len(to.rsegs), maxReadPaths)
			}
			out = append(out, r)
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
			p := paths(w.segs, maxWritePaths)
			if p != nil {
				f = append(f, key("paths"), p)
			}
			f = append(f, key("action"), str("approve"))
			r := mapping(f...)
			if p == nil {
				r.HeadComment = wideComment(len(w.segs), maxWritePaths)
			}
			out = append(out, r)
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

// ruleName is a valid rule name for kind and target id, unique in the
// group (and, with --diff, among the current set's rules, which the
// proposal is appended to): "kind-id", else "kind-N" when that is no
// valid name, with "-2", "-3", ... appended on a collision ("2001-db8--1"
// the host and 2001:db8::1 the address spell the same). Deterministic:
// targets come sorted.
func (c *Collector) ruleName(set string, used map[string]bool, kind, id string) string {
	base := kind + "-" + id
	if !policy.ValidName(base) {
		base = kind + "-" + strconv.Itoa(len(used)+1)
	}
	taken := func(n string) bool {
		return used[n] || c.o.Current != nil && c.o.Current.HasRule(set, n)
	}
	name := base
	for i := 2; taken(name) || !policy.ValidName(name); i++ {
		sfx := "-" + strconv.Itoa(i)
		if len(base)+len(sfx) > 128 {
			base = base[:128-len(sfx)]
		}
		name = base + sfx
	}
	used[name] = true
	return name
}

// wideComment says why a rule has no paths: it was widened to the host.
func wideComment(n, max int) string {
	return fmt.Sprintf("Host-wide: %d distinct first path segments were seen (more than %d). Review before loading;\nnarrow it to the paths the agent needs.", n, max)
}

// paths generalises first segments to "/seg/**" patterns ("/" for the
// root); nil (host-wide) when there are more than max distinct ones.
// Requests whose path was not plain never get here (they are skipped).
func paths(segs map[string]bool, max int) *yaml.Node {
	if len(segs) > max {
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
