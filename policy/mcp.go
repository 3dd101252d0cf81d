package policy

// MCP tool calls (issue 16, "mcp"): a rule with `mcp: true` reads the
// JSON-RPC body of every request to its hosts (internal/mcp parses it
// exactly) and decides each tools/call by the rule's `tools:` list; other
// JSON-RPC methods (initialize, tools/list, notifications, ping, ...) and
// requests without a body (the GET that opens an event stream, the DELETE
// that ends a session) are decided by the rule's ordinary action.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/clawd-dev/clawd/internal/mcp"
)

// MCPDecision is what an `mcp: true` rule decided about one request.
type MCPDecision struct {
	// Invalid says why the body is not JSON-RPC clawd could decide on
	// exactly; "" when it parsed (or the request had no body).
	Invalid string
	// ContentTypeRefused says why the request's Content-Type was refused
	// (mcp.ContentType: a charset other than UTF-8, a header that does
	// not parse exactly or comes twice); Calls still hold what clawd read
	// of the body, so each request is answered with its id.
	ContentTypeRefused string
	// ContentType is the media type to forward in place of the
	// agent's Content-Type ("" : none was sent): the body goes on
	// labelled as what clawd read, UTF-8, with no parameters.
	ContentType string
	Batch       bool
	Calls       []MCPCall // the body's messages, in order; nil without a body
	tools       []toolRule
}

// MCPCall is the decision on one JSON-RPC message.
type MCPCall struct {
	Kind   mcp.Kind
	ID     json.RawMessage // nil for notifications
	Method string
	Tool   string // tools/call only
	Args   string // tools/call only: compact JSON of the arguments (redact before showing)
	Action Action
	Reason string
	// NextSteps is the deciding tools entry's next_steps ("" : the rule's,
	// else clawd's hint), for a refused or held call (issue 16 C).
	NextSteps string
}

// Visible reports whether tools/list should show the tool: some entry of
// the rule's tools could allow or approve a call to it. Filtering the list
// is for the agent's benefit; every call is decided on its own.
func (m *MCPDecision) Visible(name string) bool {
	if m == nil {
		return false
	}
	for _, t := range m.tools {
		if !glob(t.name, name) {
			continue
		}
		if t.action != Deny {
			return true
		}
		if len(t.args) == 0 {
			return false
		}
	}
	return false
}

// toolRule is one entry of a rule's tools: list.
type toolRule struct {
	name   string // exact, or a glob with *
	action Action
	args   []argCond
	line   int
	// nextSteps is the entry's next_steps for the agent (issue 16 C).
	nextSteps string
}

// argCond is a condition on one top-level argument.
type argCond struct {
	key    string
	equals *scalar
	in     []scalar
	re     *regexp.Regexp
	// reNL: the pattern opts into line breaks with (?s); without it a
	// value holding one is unknown to matches.
	reNL     bool
	min, max *float64
}

// scalar is a policy value compared with a JSON argument.
type scalar struct {
	kind byte // 's' string, 'n' number, 'b' bool, 'z' null
	s    string
	n    float64 // exactly a float64: what a JSON.parse server compares
	b    bool
}

// tri is a condition's outcome: a missing argument, or one of another type
// than the condition is about, is unknown.
type tri int

const (
	no tri = iota
	yes
	unknown
)

func (c argCond) eval(args map[string]any) tri {
	v, ok := args[c.key]
	if !ok {
		return unknown
	}
	// All of the entry's conditions must hold: any no is no, else any
	// unknown is unknown.
	res := yes
	and := func(t tri) {
		if t == no || (t == unknown && res == yes) {
			res = t
		}
	}
	if c.equals != nil {
		and(c.equals.eq(v))
	}
	if len(c.in) > 0 {
		t := no
		for _, s := range c.in {
			if e := s.eq(v); e == yes {
				t = yes
				break
			} else if e == unknown {
				t = unknown
			}
		}
		and(t)
	}
	if c.re != nil {
		if s, ok := v.(string); !ok {
			and(unknown)
		} else if !c.reNL && strings.ContainsFunc(s, lineBreak) {
			// A pattern written for one line says nothing about a
			// value with several (nor about one a server may trim).
			and(unknown)
		} else if !c.re.MatchString(s) {
			and(no)
		}
	}
	if c.min != nil || c.max != nil {
		n, ok := number(v)
		switch {
		case !ok:
			and(unknown)
		case c.min != nil && n < *c.min, c.max != nil && n > *c.max:
			and(no)
		}
	}
	return res
}

// eq compares the policy value with a JSON value: values of another type
// are unknown (the server might convert them), not merely different.
func (s scalar) eq(v any) tri {
	bt := func(b bool) tri {
		if b {
			return yes
		}
		return no
	}
	switch s.kind {
	case 's':
		if x, ok := v.(string); ok {
			return bt(x == s.s)
		}
	case 'n':
		if n, ok := number(v); ok {
			return bt(n == s.n) // -0 == 0, as in JavaScript
		}
	case 'b':
		if x, ok := v.(bool); ok {
			return bt(x == s.b)
		}
	case 'z':
		return bt(v == nil)
	}
	return unknown
}

// number is the float64 the server reads for a JSON number argument
// (mcp.Parse has refused every number that is not exactly one).
func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := mcp.Float(string(n))
	return f, err == nil
}

// match reports whether the entry decides the call: its name matches and
// its argument conditions hold. A condition that is unknown (the argument
// is missing or of another type) never makes a call less restricted: it
// fails an allow entry and holds for a deny or approve entry.
func (t toolRule) match(tool string, args map[string]any) bool {
	if !glob(t.name, tool) {
		return false
	}
	for _, c := range t.args {
		switch c.eval(args) {
		case no:
			return false
		case unknown:
			if t.action == Allow {
				return false
			}
		}
	}
	return true
}

// decideMCP decides the JSON-RPC body of a request matched by the mcp rule
// r: the action for the whole request (the most restrictive of its calls)
// and each call's.
func (r *rule) decideMCP(in Input) (Action, *MCPDecision) {
	md := &MCPDecision{tools: r.tools}
	if strings.EqualFold(in.Method, "CONNECT") || len(in.Header.Values("Upgrade")) > 0 {
		// A tunnel (WebSocket, extended CONNECT) would carry JSON-RPC
		// clawd does not read: only plain requests reach MCP hosts.
		md.Invalid = "protocol upgrades and CONNECT tunnels to MCP hosts would carry calls clawd cannot read"
		return Deny, md
	}
	if len(in.Body) == 0 && !strings.EqualFold(in.Method, "POST") {
		return r.action, md // GET (event stream), DELETE (end of session)
	}
	// The server decodes the body with the charset the agent names: the
	// decision must be on the text it will parse, which clawd reads as
	// UTF-8 only.
	ct, cterr := mcp.ContentType(in.Header.Values("Content-Type"))
	md.ContentType = ct
	msg, err := mcp.Parse(in.Body)
	if cterr != nil {
		md.ContentTypeRefused = "the request " + cterr.Error()
		if err == nil {
			md.Batch = msg.Batch
			for _, it := range msg.Items {
				md.Calls = append(md.Calls, MCPCall{Kind: it.Kind, ID: it.ID, Method: it.Method, Action: Deny, Reason: md.ContentTypeRefused})
			}
		}
		return Deny, md
	}
	if err != nil {
		md.Invalid = err.Error()
		return Deny, md
	}
	md.Batch = msg.Batch
	worst := Allow
	for _, it := range msg.Items {
		c := MCPCall{Kind: it.Kind, ID: it.ID, Method: it.Method}
		if it.Kind != mcp.Response && it.Method == mcp.ToolsCall {
			c.Tool, c.Args = it.Tool, mcp.ArgsJSON(it.Args)
			c.Action, c.Reason, c.NextSteps = r.decideTool(it.Tool, it.Args)
		} else {
			c.Action = r.action
			switch r.action {
			case Allow:
				c.Reason = r.allowReason
			case Approve:
				c.Reason = r.approveReason
			default:
				c.Reason = fmt.Sprintf("denied by rule %q", r.name)
			}
		}
		if severity(c.Action) > severity(worst) {
			worst = c.Action
		}
		md.Calls = append(md.Calls, c)
	}
	if worst == Approve {
		if n := md.toolCalls(); n > MaxHeldBatch {
			// A held batch is approved whole, on one card: past a
			// few calls no approver reads them all, and no channel
			// shows them all.
			for i := range md.Calls {
				if md.Calls[i].Action == Approve {
					md.Calls[i].Action = Deny
					md.Calls[i].Reason = fmt.Sprintf("a batch of %d tools/call needs approval, and clawd holds batches of at most %d calls for one approver's card; send the calls separately or in smaller batches (%s)", n, MaxHeldBatch, md.Calls[i].Reason)
				}
			}
			return Deny, md
		}
	}
	return worst, md
}

// MaxHeldBatch is the most tools/call messages a batch held for approval
// may hold: the card must show every one of them (approval/toolview.go).
const MaxHeldBatch = 10

func (m *MCPDecision) toolCalls() int {
	n := 0
	for _, c := range m.Calls {
		if c.Tool != "" {
			n++
		}
	}
	return n
}

func severity(a Action) int {
	switch a {
	case Allow:
		return 0
	case Approve:
		return 1
	}
	return 2
}

func (r *rule) decideTool(tool string, args map[string]any) (Action, string, string) {
	for _, t := range r.tools {
		if !t.match(tool, args) {
			continue
		}
		switch t.action {
		case Allow:
			return Allow, fmt.Sprintf("tool %q allowed by rule %q", tool, r.name), ""
		case Approve:
			return Approve, fmt.Sprintf("rule %q requires human approval for tool %q", r.name, tool), t.nextSteps
		}
		return Deny, fmt.Sprintf("tool %q denied by rule %q (line %d)", tool, r.name, t.line), t.nextSteps
	}
	return Deny, fmt.Sprintf("tool %q (with these arguments) is not allowed by rule %q; add it to the rule's tools", tool, r.name), ""
}

// Parsing of `mcp:` and `tools:`.

var toolKeys = []string{"name", "action", "args", "next_steps"}
var argKeys = []string{"equals", "in", "matches", "min", "max"}

// maxToolPattern bounds tool names and regexps written in a policy.
const maxToolPattern = 1024

func (ps *parser) mcpRule(f map[string]*yaml.Node, r *rule, what string) {
	if v, ok := f["mcp"]; ok {
		r.mcp, _ = ps.boolean(v, what+": mcp")
	}
	tv, hasTools := f["tools"]
	if !r.mcp {
		if hasTools {
			ps.errf(tv, "%s: tools only applies to rules with mcp: true", what)
		}
		return
	}
	mv := f["mcp"]
	if len(r.hosts) == 0 {
		ps.errf(mv, "%s: mcp: true needs hosts (the MCP servers' names; clawd intercepts their TLS to read the calls)", what)
	}
	if r.readonly {
		ps.errf(mv, "%s: mcp rules decide by tool, not readonly; remove readonly", what)
	}
	if v, ok := f["intercept"]; ok && !r.intercept {
		ps.errf(v, "%s: mcp: true reads request bodies, so it needs intercept (remove intercept: false)", what)
	}
	// mcp implies intercept: an HTTPS MCP server's calls are only
	// visible inside the TLS clawd terminates.
	r.intercept = true
	if !hasTools {
		ps.errf(mv, "%s: mcp: true needs tools: the tools the container may call (name: \"*\" for any)", what)
		return
	}
	if !ps.noAlias(tv) {
		return
	}
	if tv.Kind != yaml.SequenceNode || len(tv.Content) == 0 {
		ps.errf(tv, "%s: tools must be a list of entries (each starting with \"- name:\")", what)
		return
	}
	for _, n := range tv.Content {
		if t, ok := ps.toolRule(n, what); ok {
			r.tools = append(r.tools, t)
		}
	}
}

func (ps *parser) toolRule(n *yaml.Node, what string) (toolRule, bool) {
	f := ps.fields(n, what+": tools entry", toolKeys...)
	if f == nil {
		return toolRule{}, false
	}
	t := toolRule{line: n.Line}
	nn, ok := f["name"]
	if !ok {
		ps.errf(n, "%s: every tools entry needs a name (the tool's, or a glob with *)", what)
		return toolRule{}, false
	}
	name, ok := ps.str(nn, what+": tools: name")
	if !ok {
		return toolRule{}, false
	}
	if len(name) > maxToolPattern || strings.ContainsAny(name, "\x00\r\n") {
		ps.errf(nn, "%s: tools: name %q is not a tool name", what, truncateStr(name))
		return toolRule{}, false
	}
	t.name = name
	tw := fmt.Sprintf("%s: tool %q", what, name)
	av, ok := f["action"]
	if !ok {
		ps.errf(n, "%s: action is required (allow, deny or approve)", tw)
		return toolRule{}, false
	}
	if t.action, ok = ps.action(av, tw+": action"); !ok {
		return toolRule{}, false
	}
	if v, ok := f["next_steps"]; ok {
		t.nextSteps = ps.agentText(v, tw+": next_steps")
		if t.action == Allow {
			ps.errf(v, "%s: next_steps is shown to the agent when a call is refused or held; an allow entry never refuses one, so remove it", tw)
		}
	}
	if v, ok := f["args"]; ok && ps.noAlias(v) {
		if v.Kind != yaml.MappingNode || len(v.Content) == 0 {
			ps.errf(v, "%s: args must be a mapping of argument: {equals|in|matches|min|max: ...}", tw)
			return toolRule{}, false
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, cv := v.Content[i], v.Content[i+1]
			if !ps.noAlias(k) || k.Kind != yaml.ScalarNode || k.Value == "" {
				ps.errf(k, "%s: args: keys must be argument names", tw)
				continue
			}
			if seen[k.Value] {
				ps.errf(k, "%s: args: %q appears twice", tw, k.Value)
				continue
			}
			seen[k.Value] = true
			if c, ok := ps.argCond(k.Value, cv, fmt.Sprintf("%s: args: %s", tw, k.Value)); ok {
				t.args = append(t.args, c)
			}
		}
	}
	return t, true
}

func (ps *parser) argCond(key string, n *yaml.Node, what string) (argCond, bool) {
	f := ps.fields(n, what, argKeys...)
	if f == nil {
		return argCond{}, false
	}
	if len(f) == 0 {
		ps.errf(n, "%s: needs one of equals, in, matches, min, max", what)
		return argCond{}, false
	}
	c := argCond{key: key}
	ok := true
	if v, has := f["equals"]; has {
		if s, good := ps.scalar(v, what+": equals"); good {
			c.equals = &s
		} else {
			ok = false
		}
	}
	if v, has := f["in"]; has {
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			ps.errf(v, "%s: in must be a non-empty list of values", what)
			ok = false
		} else {
			for _, it := range v.Content {
				if s, good := ps.scalar(it, what+": in"); good {
					c.in = append(c.in, s)
				} else {
					ok = false
				}
			}
		}
	}
	if v, has := f["matches"]; has {
		s, good := ps.str(v, what+": matches")
		if good && len(s) > maxToolPattern {
			ps.errf(v, "%s: matches: regexp longer than %d characters", what, maxToolPattern)
			good = false
		}
		if good {
			// A full match of the whole value: \A and \z, which no
			// flag makes match at a line break. The pattern must parse
			// on its own, so it cannot close the anchoring group.
			ast, err := syntax.Parse(s, syntax.Perl)
			var re *regexp.Regexp
			if err == nil {
				re, err = regexp.Compile(`\A(?:` + s + `)\z`)
			}
			if err != nil {
				ps.errf(v, "%s: matches: %v", what, err)
				ok = false
			} else {
				c.re, c.reNL = re, dotNL(ast)
			}
		} else {
			ok = false
		}
	}
	for _, k := range []string{"min", "max"} {
		v, has := f[k]
		if !has {
			continue
		}
		s, good := ps.scalar(v, what+": "+k)
		if good && s.kind != 'n' {
			ps.errf(v, "%s: %s must be a number", what, k)
			good = false
		}
		if !good {
			ok = false
			continue
		}
		n := s.n
		if k == "min" {
			c.min = &n
		} else {
			c.max = &n
		}
	}
	if c.min != nil && c.max != nil && *c.min > *c.max {
		ps.errf(n, "%s: min is larger than max", what)
		ok = false
	}
	if c.re != nil && (c.min != nil || c.max != nil) {
		ps.errf(n, "%s: matches is for strings and min/max for numbers; one argument cannot be both", what)
		ok = false
	}
	return c, ok
}

// lineBreak reports the characters that end a line somewhere (Unicode's
// line terminators and the vertical tab and form feed).
func lineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\v', '\f', 0x85, 0x2028, 0x2029:
		return true
	}
	return false
}

// dotNL reports whether a pattern has a . that matches newlines: the
// author wrote (?s), saying values may hold several lines.
func dotNL(re *syntax.Regexp) bool {
	if re.Op == syntax.OpAnyChar {
		return true
	}
	for _, s := range re.Sub {
		if dotNL(s) {
			return true
		}
	}
	return false
}

// jsonNumber is JSON's number syntax (YAML also has 0x10, 0o7, .inf, +1).
var jsonNumber = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$`)

// scalar reads a YAML scalar as the JSON value it stands for: quoted or
// plain text is a string, 3 or 2.5 a number, true/false a bool, null null.
func (ps *parser) scalar(n *yaml.Node, what string) (scalar, bool) {
	if !ps.noAlias(n) {
		return scalar{}, false
	}
	if n.Kind != yaml.ScalarNode {
		ps.errf(n, "%s must be a single value", what)
		return scalar{}, false
	}
	switch n.Tag {
	case "!!str":
		return scalar{kind: 's', s: n.Value}, true
	case "!!int", "!!float":
		// The server compares float64s (JSON.parse): a policy number
		// must be one exactly, or the author's bound is not the one
		// enforced.
		v := strings.ReplaceAll(n.Value, "_", "")
		if !jsonNumber.MatchString(v) {
			ps.errf(n, "%s: %q is not a number clawd can compare exactly (write decimal digits, as in JSON)", what, n.Value)
			return scalar{}, false
		}
		f, err := mcp.Float(v)
		if err != nil {
			ps.errf(n, "%s: %v; write the number the server will compare", what, err)
			return scalar{}, false
		}
		return scalar{kind: 'n', n: f}, true
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			ps.errf(n, "%s must be true or false", what)
			return scalar{}, false
		}
		return scalar{kind: 'b', b: b}, true
	case "!!null":
		return scalar{kind: 'z'}, true
	}
	ps.errf(n, "%s: unsupported value type %s", what, n.Tag)
	return scalar{}, false
}

func truncateStr(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// approvesTool reports whether some tools entry asks for approval (route
// and approval_timeout keys then apply to the rule).
func (r *rule) approvesTool() bool {
	for _, t := range r.tools {
		if t.action == Approve {
			return true
		}
	}
	return false
}

// reason explains a decision that one of the request's calls made.
func (m *MCPDecision) reason(r *rule) string {
	if m.ContentTypeRefused != "" {
		return fmt.Sprintf("rule %q reads MCP calls to this host and %s", r.name, m.ContentTypeRefused)
	}
	if m.Invalid != "" {
		return fmt.Sprintf("rule %q reads MCP calls to this host and the request body is not JSON-RPC clawd can decide exactly: %s", r.name, m.Invalid)
	}
	worst := -1
	for i, c := range m.Calls {
		if worst < 0 || severity(c.Action) > severity(m.Calls[worst].Action) {
			worst = i
		}
	}
	if worst < 0 {
		return fmt.Sprintf("rule %q", r.name)
	}
	c := m.Calls[worst]
	if m.Batch {
		return fmt.Sprintf("batch message %d: %s", worst+1, c.Reason)
	}
	return c.Reason
}

// checkMCPShadow refuses an allow, approve or readonly rule placed before
// an mcp rule that could decide the same host's requests: first match wins,
// so such a rule would let tool calls through unread. A rule with cidrs
// matches every request to an address inside them, whatever its Host (hosts
// and cidrs are either/or), and clawd cannot know where the mcp rule's
// hosts resolve when it parses: so a rule with cidrs shadows every mcp
// rule after it, whatever its hosts.
func (ps *parser) checkMCPShadow(s *ruleSet, setWhat string) {
	for i, r := range s.rules {
		if !r.mcp {
			continue
		}
		for _, q := range s.rules[:i] {
			if q.mcp || (q.action == Deny && !q.readonly) {
				continue
			}
			if len(q.cidrs) > 0 && len(r.hosts) > 0 {
				ps.add(q.line, "%s: rule %q comes before mcp rule %q (line %d) and matches by cidrs (%s), which may hold the address of %q: clawd cannot know where MCP hosts resolve, and first match wins, so their tool calls would go unread; move the mcp rule first", setWhat, q.name, r.name, r.line, q.cidrs[0], r.hosts[0].String())
				break
			}
			if h, ok := overlap(q.hosts, r.hosts); ok {
				ps.add(q.line, "%s: rule %q comes before mcp rule %q (line %d) and can decide requests to %s, whose tool calls would then go unread; move the mcp rule first", setWhat, q.name, r.name, r.line, h)
				break
			}
		}
		// After it too: a request to the MCP server by its address (TLS
		// without a server name, Host an address) names no host, so the
		// mcp rule does not match it, and a rule that allows by address or
		// without hosts on the same ports would carry its tool calls
		// unread.
		for _, q := range s.rules[i+1:] {
			if q.mcp || (q.action == Deny && !q.readonly) || len(q.hosts) > 0 || !portsOverlap(q.ports, r.ports) {
				continue
			}
			what := "matches without hosts"
			if len(q.cidrs) > 0 {
				what = fmt.Sprintf("matches by cidrs (%s)", q.cidrs[0])
			}
			ps.add(q.line, "%s: rule %q %s on the ports of mcp rule %q (line %d): a request to %q's server by its address names no host, so the mcp rule would not read it and this rule would let its tool calls through; give this rule hosts, or other ports", setWhat, q.name, what, r.name, r.line, firstHost(r))
			break
		}
	}
}

// portsOverlap reports whether two rules' ports (none: every port) meet.
func portsOverlap(a, b []portRange) bool {
	if len(a) == 0 || len(b) == 0 {
		return true
	}
	for _, x := range a {
		for _, y := range b {
			if x.lo <= y.hi && y.lo <= x.hi {
				return true
			}
		}
	}
	return false
}

func firstHost(r *rule) string {
	if len(r.hosts) > 0 {
		return r.hosts[0].String()
	}
	return r.name
}

// overlap reports a host of mcp some pattern of qs can match (every host
// when qs is empty).
func overlap(qs, mcp []hostPattern) (string, bool) {
	if len(qs) == 0 && len(mcp) > 0 {
		return fmt.Sprintf("%q", mcp[0].String()), true
	}
	for _, q := range qs {
		for _, m := range mcp {
			if q.covers(m) || m.covers(q) {
				return fmt.Sprintf("%q", m.String()), true
			}
		}
	}
	return "", false
}
