package policy

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/internal/hostname"
)

// DefaultPath is where the daemon reads its policy unless told otherwise.
const DefaultPath = "/etc/clawd/policy.yaml"

// DefaultApprovalTimeout is how long an approve decision holds a request when
// neither the rule nor its set says otherwise.
const DefaultApprovalTimeout = 10 * time.Minute

// maxApprovalTimeout bounds holds so a typo ("1000h") cannot pin requests
// and their buffered bodies in memory for weeks.
const maxApprovalTimeout = 24 * time.Hour

// maxPolicySize bounds what Load reads: a policy file is written by hand and
// a multi-megabyte one is a mistake (or an attack on the YAML parser).
const maxPolicySize = 16 << 20

// Problem is one thing wrong with a policy file.
type Problem struct {
	File string
	Line int // 1-based; 0 when no line applies
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// ValidationError lists every problem found in a policy file, so an operator
// fixes them in one go instead of one per reload.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	if len(data) > maxPolicySize {
		return nil, fmt.Errorf("load policy %s: file is larger than %d bytes", path, maxPolicySize)
	}
	return Parse(data, path)
}

// Check validates the policy file at path. The error lists every problem as
// file:line: message.
func Check(path string) error {
	_, err := Load(path)
	return err
}

// Parse decodes and validates a policy. Unknown keys, duplicate keys and
// invalid values are all reported, each with its file and line; on any
// problem no Policy is returned.
func Parse(data []byte, filename string) (*Policy, error) {
	if filename == "" {
		filename = "policy"
	}
	if len(data) > maxPolicySize {
		return nil, &ValidationError{Problems: []Problem{{File: filename, Msg: fmt.Sprintf("file is larger than %d bytes", maxPolicySize)}}}
	}
	ps := &parser{file: filename}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		ps.yamlError(err)
		return nil, ps.err()
	}
	var root *yaml.Node
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root == nil || (root.Kind == yaml.ScalarNode && root.Tag == "!!null") {
		ps.add(0, "policy is empty: it needs at least a default: section or a sets: list")
		return nil, ps.err()
	}
	p := ps.policy(root)
	if len(ps.probs) > 0 {
		return nil, ps.err()
	}
	p.file = filename
	p.limits = newLimiter()
	return p, nil
}

type parser struct {
	file   string
	probs  []Problem
	groups map[string][]string // approver_groups, for routes
}

func (ps *parser) add(line int, format string, args ...any) {
	ps.probs = append(ps.probs, Problem{File: ps.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (ps *parser) errf(n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	ps.add(line, format, args...)
}

func (ps *parser) err() error {
	if len(ps.probs) == 0 {
		return nil
	}
	sort.SliceStable(ps.probs, func(i, j int) bool { return ps.probs[i].Line < ps.probs[j].Line })
	return &ValidationError{Problems: ps.probs}
}

// yamlError turns yaml.v3's "yaml: line N: msg" into a Problem with a line.
func (ps *parser) yamlError(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if i := strings.Index(rest, ":"); i > 0 {
			if n, cerr := strconv.Atoi(rest[:i]); cerr == nil {
				ps.add(n, "invalid YAML: %s", strings.TrimSpace(rest[i+1:]))
				return
			}
		}
	}
	ps.add(0, "invalid YAML: %s", msg)
}

// fields checks that n is a mapping with only allowed keys and returns the
// value node of each key present. Aliases and merge keys are refused: they
// make hand-written policies hard to review and can blow up in size.
func (ps *parser) fields(n *yaml.Node, what string, allowed ...string) map[string]*yaml.Node {
	if !ps.noAlias(n) {
		return nil
	}
	out := map[string]*yaml.Node{}
	if n.Kind != yaml.MappingNode {
		ps.errf(n, "%s must be a mapping (key: value lines)", what)
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !ps.noAlias(k) || !ps.noAlias(v) {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			ps.errf(k, "%s: keys must be plain words", what)
			continue
		}
		if !contains(allowed, k.Value) {
			msg := fmt.Sprintf("%s: unknown key %q", what, k.Value)
			if s := suggest(k.Value, allowed); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += fmt.Sprintf(" (allowed: %s)", strings.Join(allowed, ", "))
			}
			ps.errf(k, "%s", msg)
			continue
		}
		if _, dup := out[k.Value]; dup {
			ps.errf(k, "%s: key %q appears twice", what, k.Value)
			continue
		}
		out[k.Value] = v
	}
	return out
}

func (ps *parser) noAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		ps.errf(n, "YAML anchors and aliases are not supported in policies; write the value out")
		return false
	}
	return true
}

// str decodes a non-empty scalar.
func (ps *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		ps.errf(n, "%s must be a single value", what)
		return "", false
	}
	v := strings.TrimSpace(n.Value)
	if v == "" {
		ps.errf(n, "%s must not be empty", what)
		return "", false
	}
	return v, true
}

func (ps *parser) boolean(n *yaml.Node, what string) (bool, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		ps.errf(n, "%s must be true or false", what)
		return false, false
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		ps.errf(n, "%s must be true or false", what)
		return false, false
	}
	return b, true
}

// list accepts a single scalar or a sequence of scalars, so both
// `hosts: api.github.com` and `hosts: [a, b]` work.
func (ps *parser) list(n *yaml.Node, what string) []*yaml.Node {
	if !ps.noAlias(n) {
		return nil
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			ps.errf(n, "%s must not be empty", what)
			return nil
		}
		return []*yaml.Node{n}
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			ps.errf(n, "%s must not be an empty list (leave the key out instead)", what)
			return nil
		}
		var out []*yaml.Node
		for _, it := range n.Content {
			if !ps.noAlias(it) {
				continue
			}
			if it.Kind != yaml.ScalarNode || it.Tag == "!!null" {
				ps.errf(it, "%s: each entry must be a single value", what)
				continue
			}
			out = append(out, it)
		}
		return out
	default:
		ps.errf(n, "%s must be a value or a list of values", what)
		return nil
	}
}

func (ps *parser) action(n *yaml.Node, what string) (Action, bool) {
	s, ok := ps.str(n, what)
	if !ok {
		return "", false
	}
	switch a := Action(strings.ToLower(s)); a {
	case Allow, Deny, Approve:
		return a, true
	}
	ps.errf(n, "%s: unknown action %q (use allow, deny or approve)", what, s)
	return "", false
}

func (ps *parser) timeout(n *yaml.Node, what string) (time.Duration, bool) {
	s, ok := ps.str(n, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > maxApprovalTimeout {
		ps.errf(n, "%s: %q is not a duration between 1s and 24h (write e.g. 10m or 1h30m)", what, s)
		return 0, false
	}
	return d, true
}

// maxAgentText bounds reason and next_steps: the agent reads them in every
// refusal (and the audit log keeps them), so they are a sentence or two.
const maxAgentText = 500

// agentText decodes a text the agent is shown (reason, next_steps): one
// value of at most maxAgentText bytes of printable UTF-8, line breaks
// folded into spaces by YAML's own rules or refused here, so a refusal's
// JSON, headers and log lines stay one clean line each.
func (ps *parser) agentText(n *yaml.Node, what string) string {
	v, ok := ps.str(n, what)
	if !ok {
		return ""
	}
	if len(v) > maxAgentText {
		ps.errf(n, "%s is %d bytes; keep it under %d (a sentence or two for the agent)", what, len(v), maxAgentText)
		return ""
	}
	if !utf8.ValidString(v) {
		ps.errf(n, "%s is not valid UTF-8", what)
		return ""
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r) {
			ps.errf(n, "%s: control or invisible character %U not allowed (write it on one line; use a folded scalar \">\" for long text)", what, r)
			return ""
		}
	}
	return v
}

// mode decodes a set's mode: enforce (the default) or audit.
func (ps *parser) mode(n *yaml.Node, what string) bool {
	s, ok := ps.str(n, what+": mode")
	if !ok {
		return false
	}
	switch Mode(s) {
	case Enforce:
		return false
	case AuditMode:
		return true
	}
	ps.errf(n, "%s: mode %q is not enforce or audit", what, s)
	return false
}

func (ps *parser) policy(root *yaml.Node) *Policy {
	f := ps.fields(root, "policy", "version", "approver_groups", "default", "sets")
	p := &Policy{}
	ps.groups = map[string][]string{}
	if v, ok := f["approver_groups"]; ok {
		ps.groups = ps.approverGroups(v)
	}
	if v, ok := f["version"]; ok {
		if s, ok := ps.str(v, "version"); ok && s != "1" {
			ps.errf(v, "version: unsupported policy version %q (this clawd understands version 1)", s)
		}
	}
	if d, ok := f["default"]; ok {
		p.def = ps.set(d, true)
	}
	if p.def == nil {
		// No default section: containers that match no set reach nothing.
		p.def = newSet("default", 0)
	}
	if s, ok := f["sets"]; ok && ps.noAlias(s) {
		if s.Kind != yaml.SequenceNode {
			ps.errf(s, "sets must be a list (each entry starting with \"- name:\")")
		} else {
			names := map[string]int{"default": 0}
			for _, it := range s.Content {
				rs := ps.set(it, false)
				if rs == nil {
					continue
				}
				if line, dup := names[rs.name]; dup {
					if rs.name == "default" {
						ps.errf(it, "set name \"default\" is reserved for the default: section")
					} else {
						ps.errf(it, "set %q is defined twice (first at line %d)", rs.name, line)
					}
					continue
				}
				names[rs.name] = rs.line
				p.sets = append(p.sets, rs)
			}
		}
	}
	for _, s := range append([]*ruleSet{p.def}, p.sets...) {
		if s != nil {
			p.nrules += len(s.rules)
		}
	}
	return p
}

func (ps *parser) set(n *yaml.Node, isDefault bool) *ruleSet {
	what := "default"
	var f map[string]*yaml.Node
	if isDefault {
		f = ps.fields(n, what, append([]string{"description", "default_action", "approval_timeout", "upstream_proxy", "rules", "mode", "next_steps"}, routeKeys...)...)
	} else {
		what = "set"
		if name := peekName(n); name != "" {
			what = fmt.Sprintf("set %q", name)
		}
		f = ps.fields(n, what, append([]string{"name", "description", "match", "default_action", "approval_timeout", "upstream_proxy", "rules", "mode", "next_steps"}, routeKeys...)...)
	}
	if f == nil {
		return nil
	}
	s := newSet("default", n.Line)
	if !isDefault {
		nn, ok := f["name"]
		if !ok {
			ps.errf(n, "set: name is required")
			return nil
		}
		name, ok := ps.str(nn, "set name")
		if !ok {
			return nil
		}
		if !validName(name) {
			ps.errf(nn, "set name %q: use letters, digits, '-', '_' and '.' only", name)
		}
		s.name = name
		what = fmt.Sprintf("set %q", name)
		m, ok := f["match"]
		if !ok {
			ps.errf(n, "%s: match is required (containers that match no set use the default: section)", what)
		} else {
			s.sel = ps.selector(m, what)
		}
	}
	if v, ok := f["description"]; ok {
		ps.str(v, what+": description")
	}
	if v, ok := f["default_action"]; ok {
		if a, ok := ps.action(v, what+": default_action"); ok {
			s.def = a
		}
	}
	if v, ok := f["approval_timeout"]; ok {
		if d, ok := ps.timeout(v, what+": approval_timeout"); ok {
			s.defTimeout = d
		}
	}
	s.route = ps.route(f, what, nil, ps.groups)
	if s.def == Approve {
		ps.checkEscalation(s.route, s.defTimeout, what)
	}
	if v, ok := f["upstream_proxy"]; ok {
		s.upstream, _ = ps.upstreamProxy(v, what, false)
	}
	if v, ok := f["mode"]; ok {
		s.audit = ps.mode(v, what)
	}
	if v, ok := f["next_steps"]; ok {
		s.nextSteps = ps.agentText(v, what+": next_steps")
	}
	if v, ok := f["rules"]; ok && ps.noAlias(v) {
		if v.Kind != yaml.SequenceNode {
			ps.errf(v, "%s: rules must be a list (each rule starting with \"- name:\")", what)
		} else {
			seen := map[string]int{}
			for _, rn := range v.Content {
				r := ps.rule(rn, s, what)
				if r == nil {
					continue
				}
				if line, dup := seen[r.name]; dup {
					ps.errf(rn, "%s: rule %q is defined twice (first at line %d); rule names must be unique within a set", what, r.name, line)
					continue
				}
				seen[r.name] = r.line
				if s.ruleNames == nil {
					s.ruleNames = map[string]bool{}
				}
				s.ruleNames[r.name] = true
				if r.enabled {
					s.add(r)
				}
			}
		}
	}
	ps.checkIntercept(s, what)
	ps.checkMCPShadow(s, what)
	return s
}

// peekName finds a mapping's name so problems reported before "name:" is
// processed (unknown keys above it) can still say which rule or set.
func peekName(n *yaml.Node) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
			return strings.TrimSpace(n.Content[i+1].Value)
		}
	}
	return ""
}

func (ps *parser) selector(n *yaml.Node, what string) *selector {
	f := ps.fields(n, what+": match", "name", "runtime", "namespace", "labels")
	if len(f) == 0 {
		if n.Kind == yaml.MappingNode {
			ps.errf(n, "%s: match needs at least one of name, runtime, namespace, labels", what)
		}
		return nil
	}
	sel := &selector{}
	if v, ok := f["name"]; ok {
		for _, it := range ps.list(v, what+": match.name") {
			g := strings.TrimPrefix(strings.TrimSpace(it.Value), "/")
			if g == "" {
				ps.errf(it, "%s: match.name must not be empty", what)
				continue
			}
			sel.names = append(sel.names, g)
		}
	}
	if v, ok := f["runtime"]; ok {
		for _, it := range ps.list(v, what+": match.runtime") {
			r := strings.TrimSpace(it.Value)
			switch r {
			case "containerd", "docker", "pid":
				sel.runtimes = append(sel.runtimes, r)
			default:
				ps.errf(it, "%s: match.runtime %q is not one of containerd, docker, pid", what, r)
			}
		}
	}
	if v, ok := f["namespace"]; ok {
		for _, it := range ps.list(v, what+": match.namespace") {
			sel.namespaces = append(sel.namespaces, strings.TrimSpace(it.Value))
		}
	}
	if v, ok := f["labels"]; ok && ps.noAlias(v) {
		if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
			ps.errf(v, "%s: match.labels must be a mapping of label: value (value may use *)", what)
		} else {
			seen := map[string]bool{}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, val := v.Content[i], v.Content[i+1]
				if !ps.noAlias(k) || !ps.noAlias(val) {
					continue
				}
				if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode || k.Value == "" {
					ps.errf(k, "%s: match.labels entries must be label: value", what)
					continue
				}
				if seen[k.Value] {
					ps.errf(k, "%s: match.labels: label %q appears twice", what, k.Value)
					continue
				}
				seen[k.Value] = true
				value := val.Value
				if val.Tag == "!!null" {
					value = ""
				}
				sel.labels = append(sel.labels, labelCond{key: k.Value, value: value})
			}
		}
	}
	return sel
}

var ruleKeys = []string{
	"name", "description", "enabled", "hosts", "ports", "cidrs", "methods", "paths",
	"headers", "body_contains", "readonly", "action", "approval_timeout", "rate_limit",
	"intercept", "reason", "upstream_proxy", "approvers", "approvals_required", "escalate", "grants",
	"binaries",
	"next_steps",   // issue 16 C
	"budget",       // LLM budgets (issue 16, budget)
	"mcp", "tools", // issue 16, "mcp"
}

// parseList parses each item of the list under key with parse, reporting
// every bad item with its line.
func parseList[T any](ps *parser, f map[string]*yaml.Node, key, what string, parse func(string) (T, error)) []T {
	v, ok := f[key]
	if !ok {
		return nil
	}
	var out []T
	for _, it := range ps.list(v, what+": "+key) {
		x, err := parse(it.Value)
		if err != nil {
			ps.errf(it, "%s: %s: %v", what, key, err)
			continue
		}
		out = append(out, x)
	}
	return out
}

func (ps *parser) rule(n *yaml.Node, s *ruleSet, setWhat string) *rule {
	label := setWhat + ": rule"
	if name := peekName(n); name != "" {
		label = fmt.Sprintf("%s: rule %q", setWhat, name)
	}
	f := ps.fields(n, label, ruleKeys...)
	if f == nil {
		return nil
	}
	nn, ok := f["name"]
	if !ok {
		if n.Kind == yaml.MappingNode {
			ps.errf(n, "%s: every rule needs a name (it shows up in logs and approval cards)", setWhat)
		}
		return nil
	}
	name, ok := ps.str(nn, setWhat+": rule name")
	if !ok {
		return nil
	}
	if !validName(name) {
		ps.errf(nn, "%s: rule name %q: use letters, digits, '-', '_' and '.' only", setWhat, name)
	} else if name == "default" {
		// Audit lines and decisions name the set's default action so:
		// a rule of that name would pass for it (policy suggest proposes
		// what the default refused, never what a rule did).
		ps.errf(nn, "%s: rule name \"default\" is reserved (audit lines name the set's default action so); choose another", setWhat)
	}
	r := &rule{name: name, line: n.Line, enabled: true}
	what := fmt.Sprintf("%s: rule %q", setWhat, name)

	if v, ok := f["description"]; ok {
		ps.str(v, what+": description")
	}
	if v, ok := f["enabled"]; ok {
		r.enabled, _ = ps.boolean(v, what+": enabled")
	}
	r.hosts = parseList(ps, f, "hosts", what, parseHostPattern)
	r.ports = parseList(ps, f, "ports", what, parsePortRange)
	r.cidrs = parseList(ps, f, "cidrs", what, parseCIDR)
	if v, ok := f["methods"]; ok {
		for _, it := range ps.list(v, what+": methods") {
			m := strings.ToUpper(strings.TrimSpace(it.Value))
			if !validMethod(m) {
				ps.errf(it, "%s: methods: %q is not an HTTP method", what, it.Value)
				continue
			}
			r.methods = append(r.methods, m)
		}
	}
	if v, ok := f["paths"]; ok {
		for _, it := range ps.list(v, what+": paths") {
			pp, err := parsePathPattern(it.Value)
			if err != nil {
				ps.errf(it, "%s: paths: %v", what, err)
				continue
			}
			r.paths = append(r.paths, pp)
		}
	}
	if v, ok := f["headers"]; ok && ps.noAlias(v) {
		if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
			ps.errf(v, "%s: headers must be a mapping of Header-Name: value (value may use *)", what)
		} else {
			seen := map[string]bool{}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, val := v.Content[i], v.Content[i+1]
				if !ps.noAlias(k) || !ps.noAlias(val) {
					continue
				}
				if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode || val.Tag == "!!null" || !validToken(k.Value) {
					ps.errf(k, "%s: headers entries must be Header-Name: value", what)
					continue
				}
				name := http.CanonicalHeaderKey(k.Value)
				if seen[name] {
					ps.errf(k, "%s: headers: %q appears twice", what, name)
					continue
				}
				seen[name] = true
				r.headers = append(r.headers, headerCond{name: name, value: val.Value})
			}
		}
	}
	if v, ok := f["body_contains"]; ok {
		for _, it := range ps.list(v, what+": body_contains") {
			if it.Value == "" {
				ps.errf(it, "%s: body_contains must not be empty", what)
				continue
			}
			r.body = append(r.body, []byte(strings.ToLower(it.Value)))
		}
	}
	if v, ok := f["readonly"]; ok {
		r.readonly, _ = ps.boolean(v, what+": readonly")
	}
	if v, ok := f["intercept"]; ok {
		r.intercept, _ = ps.boolean(v, what+": intercept")
	}
	ps.mcpRule(f, r, what)
	av, hasAction := f["action"]
	switch {
	case r.readonly && hasAction:
		ps.errf(av, "%s: readonly sets the action (GET, HEAD, OPTIONS allowed, everything else approve); remove action", what)
	case r.readonly:
		if len(r.methods) > 0 {
			ps.errf(f["methods"], "%s: readonly already decides by method; remove methods", what)
		}
	case hasAction:
		r.action, _ = ps.action(av, what+": action")
	default:
		ps.errf(n, "%s: action is required (allow, deny or approve), or set readonly: true", what)
	}
	r.timeout = s.defTimeout
	r.route = ps.route(f, what, s.route, ps.groups)
	if r.route != s.route && r.action != Approve && !r.readonly && !r.approvesTool() {
		for _, k := range routeKeys {
			if v, ok := f[k]; ok {
				ps.errf(v, "%s: %s only applies to action approve or readonly rules", what, k)
			}
		}
	}
	if v, ok := f["approval_timeout"]; ok {
		if r.action != Approve && !r.readonly && !r.approvesTool() {
			ps.errf(v, "%s: approval_timeout only applies to action approve or readonly rules", what)
		} else if d, ok := ps.timeout(v, what+": approval_timeout"); ok {
			r.timeout = d
		}
	}
	if r.route != s.route || f["approval_timeout"] != nil {
		ps.checkEscalation(r.route, r.timeout, what)
	}
	if v, ok := f["rate_limit"]; ok {
		if s, ok := ps.str(v, what+": rate_limit"); ok {
			rs, err := parseRate(s)
			if err != nil {
				ps.errf(v, "%s: rate_limit: %v", what, err)
			} else if r.action == Deny {
				ps.errf(v, "%s: rate_limit on a deny rule has no effect; remove it", what)
			} else {
				r.rate = &rs
			}
		}
	}
	if v, ok := f["reason"]; ok {
		r.reason = ps.agentText(v, what+": reason")
	}
	if v, ok := f["next_steps"]; ok {
		r.nextSteps = ps.agentText(v, what+": next_steps")
		if r.action == Allow && !r.readonly && r.rate == nil && !r.mcp {
			ps.errf(v, "%s: next_steps is shown to the agent when a request is refused, held or rate limited; an allow rule without rate_limit (or mcp tools) never is, so remove it", what)
		}
	}
	if v, ok := f["upstream_proxy"]; ok {
		if up, ok := ps.upstreamProxy(v, what, true); ok {
			if r.action == Deny && !r.readonly {
				ps.errf(v, "%s: upstream_proxy on a deny rule has no effect (nothing it denies is dialled); remove it", what)
			} else {
				r.upstream = &up
			}
		}
	}
	if v, ok := f["binaries"]; ok {
		r.binaries = parseList(ps, f, "binaries", what, parseBinaryPattern)
		if err := checkBinaries(r.binaries); err != nil {
			ps.errf(v, "%s: binaries: %v", what, err)
		}
	}
	// LLM budgets (issue 16, budget): usage is read from HTTP answers, so a
	// budget rule applies to HTTP requests only, like a method condition:
	// never to a raw connection clawd could not meter.
	if v, ok := f["budget"]; ok {
		if b := ps.budget(v, what); b != nil {
			if r.action == Deny && !r.readonly {
				ps.errf(v, "%s: budget on a deny rule has no effect; remove it", what)
			} else {
				b.ID = s.name + "/" + r.name
				r.budget = b
			}
		}
	}
	r.httpCond = r.budget != nil || len(r.methods) > 0 || len(r.paths) > 0 || len(r.headers) > 0 || len(r.body) > 0 || r.readonly || r.mcp
	if r.intercept && len(r.cidrs) > 0 && len(r.hosts) == 0 {
		ps.errf(f["intercept"], "%s: intercept works by host name (TLS SNI); add hosts or remove intercept", what)
	}
	return r
}

// checkIntercept enforces that HTTP conditions are only written where clawd
// can see HTTP: on intercepted hosts, or on ports the rule restricts to
// plain HTTP. A method/path rule for an HTTPS host that is not intercepted
// could never match and would silently fall through to the next rule.
func (ps *parser) checkIntercept(s *ruleSet, setWhat string) {
	for _, r := range s.rules {
		if !r.httpCond {
			continue
		}
		tls := len(r.ports) == 0
		for _, pr := range r.ports {
			if pr.lo <= 443 && 443 <= pr.hi {
				tls = true
			}
		}
		if !tls {
			continue
		}
		conds := "method/path/header/body conditions"
		if r.budget != nil && !(len(r.methods) > 0 || len(r.paths) > 0 || len(r.headers) > 0 || len(r.body) > 0 || r.readonly) {
			conds = "a budget (usage is read from the HTTP answers)"
		}
		if len(r.hosts) == 0 && len(r.cidrs) == 0 && !s.interceptAll {
			ps.add(r.line, "%s: rule %q: %s on every host need intercept: true, or ports limited to plain HTTP (e.g. ports: [80])", setWhat, r.name, conds)
			continue
		}
		if len(r.hosts) == 0 && len(r.cidrs) > 0 {
			ps.add(r.line, "%s: rule %q: %s on cidrs only work over plain HTTP; set ports (e.g. ports: [80]) or match by hosts with intercept: true", setWhat, r.name, conds)
			continue
		}
		for _, h := range r.hosts {
			if !s.interceptsPattern(h) {
				ps.add(r.line, "%s: rule %q: %s on host %q need intercept: true (TLS on port 443 hides them otherwise), or ports limited to plain HTTP (e.g. ports: [80])", setWhat, r.name, conds, h.String())
				break
			}
		}
	}
}

func parseHostPattern(s string) (hostPattern, error) {
	if t := strings.TrimSpace(s); t == "*" || t == "**" {
		return hostPattern{}, fmt.Errorf("%q: to match every host, leave hosts out", s)
	}
	p, err := hostname.Pattern(s)
	if err != nil {
		return hostPattern{}, err
	}
	if hostname.IsIP(p) {
		return hostPattern{}, fmt.Errorf("%q is an IP address; put IP addresses under cidrs", s)
	}
	name, glob := strings.CutPrefix(p, "*.")
	return hostPattern{name: name, glob: glob}, nil
}

func parsePortRange(s string) (portRange, error) {
	s = strings.TrimSpace(s)
	lo, hi, isRange := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.Atoi(strings.TrimSpace(hi))
	}
	if err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return portRange{}, fmt.Errorf("%q is not a port (1-65535) or range (8000-8100)", s)
	}
	return portRange{lo: uint16(a), hi: uint16(b)}, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR (e.g. 10.0.0.0/8)", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 ranges in IPv4 form (e.g. 10.0.0.0/8)", s)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR (e.g. 10.0.0.0/8)", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func parseRate(s string) (rateSpec, error) {
	n, unit, ok := strings.Cut(strings.ReplaceAll(s, " ", ""), "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 || count > 1_000_000 {
		return rateSpec{}, fmt.Errorf("%q is not a rate; write N/second, N/minute, N/hour or N/day with N >= 1", s)
	}
	var per time.Duration
	switch strings.ToLower(unit) {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	case "d", "day":
		per = 24 * time.Hour
	default:
		return rateSpec{}, fmt.Errorf("%q is not a rate; write N/second, N/minute, N/hour or N/day with N >= 1", s)
	}
	return rateSpec{n: count, per: per}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

func validMethod(m string) bool {
	if !validToken(m) || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the allowed key closest to a misspelt one, if close enough.
func suggest(key string, allowed []string) string {
	best, bestD := "", 3
	for _, a := range allowed {
		if d := editDistance(key, a); d < bestD {
			best, bestD = a, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
