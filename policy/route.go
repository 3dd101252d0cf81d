package policy

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Route says who is asked when a rule holds a request for approval. Rules
// and sets write it as:
//
//	approvers:                 # who is asked; several channels at once
//	  - channel: slack
//	    people: [U0123ABCD]     # the platform's user IDs
//	    groups: [ops]           # names from the top-level approver_groups:
//	    target: acme/api#12     # where on the channel, for channels with places (optional)
//	approvals_required: 2      # two different people (the requester never counts)
//	escalate:
//	  after: 5m                # nobody decided: ask these too (before the timeout)
//	  approvers: [{channel: ntfy, people: [alice]}]
//	grants: false              # no "approve for 15 min": judge each request
//
// A rule without approvers uses its set's; a set without them the daemon's
// default route. The names of channels are only names here: the daemon
// checks them against the channels clawd.yaml configures (CheckRoutes).
type Route struct {
	// Approvers is who is asked at once; nil = the daemon's default route.
	Approvers []Audience
	// Required is how many different people must approve (≥ 1).
	Required int
	// EscalateAfter > 0 asks Escalate too once that long passed undecided.
	EscalateAfter time.Duration
	Escalate      []Audience
	// NoGrants turns off "approve for …" for the rule.
	NoGrants bool
	line     int
	escLine  int
}

// checkEscalation: an escalation must come before the hold times out, or
// it never happens.
func (ps *parser) checkEscalation(rt *Route, timeout time.Duration, what string) {
	if rt != nil && rt.EscalateAfter > 0 && rt.EscalateAfter >= timeout {
		ps.add(rt.escLine, "%s: escalate: after %s is not before the approval timeout (%s): the escalation would never happen", what, rt.EscalateAfter, timeout)
	}
}

// Audience is who is asked on one channel: People are user IDs on that
// channel (groups expanded). Empty People means the channel's own approvers.
type Audience struct {
	Channel string
	People  []string
	// Target is where on the channel the card goes, when the channel has
	// places of its own: "acme/api#12" (a GitHub issue or pull request),
	// "ENG-123" (a Linear issue), a chat or room ID. "" = the channel's
	// configured default.
	Target string
	line   int
}

// Directory is what the daemon knows about approval channels: for each
// configured channel name, its own approvers (who may decide when a route
// names the channel without people). A channel whose People may be empty
// (the local CLI) is listed with Open true.
type Directory map[string]ChannelInfo

// ChannelInfo describes one configured channel for CheckRoutes.
type ChannelInfo struct {
	People []string
	Open   bool // anyone who can reach it decides (cli: root on the host)
	// NoClicks: the channel shows cards but cannot take a decision (a
	// webhook, a Slack channel without Socket Mode or a signing secret).
	NoClicks bool
	// Listed: only People can be asked there (ntfy topics, e-mail
	// recipients); a route naming anyone else names nobody.
	Listed bool
}

// routeKeys are the keys a rule or set may carry about its route.
var routeKeys = []string{"approvers", "approvals_required", "escalate", "grants"}

// maxApprovalsRequired bounds approvals_required: more is a typo.
const maxApprovalsRequired = 5

// route parses a rule's or set's route keys. inherit is the set's route
// (nil for sets); groups are the top-level approver_groups.
func (ps *parser) route(f map[string]*yaml.Node, what string, inherit *Route, groups map[string][]string) *Route {
	has := false
	for _, k := range routeKeys {
		if _, ok := f[k]; ok {
			has = true
		}
	}
	if !has {
		return inherit
	}
	r := &Route{Required: 1}
	if inherit != nil {
		c := *inherit
		r = &c
	}
	if v, ok := f["approvers"]; ok {
		r.Approvers = ps.audiences(v, what+": approvers", groups)
		r.line = v.Line
	}
	if v, ok := f["approvals_required"]; ok {
		var n int
		if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&n) != nil || n < 1 || n > maxApprovalsRequired {
			ps.errf(v, "%s: approvals_required must be a whole number from 1 to %d", what, maxApprovalsRequired)
		} else {
			r.Required = n
			if r.line == 0 {
				r.line = v.Line
			}
		}
	}
	if v, ok := f["escalate"]; ok {
		ef := ps.fields(v, what+": escalate", "after", "approvers")
		if ef != nil {
			a, okA := ef["after"]
			ap, okP := ef["approvers"]
			if !okA || !okP {
				ps.errf(v, "%s: escalate needs after: (a duration) and approvers:", what)
			} else {
				if d, ok := ps.timeout(a, what+": escalate: after"); ok {
					r.EscalateAfter = d
					r.escLine = a.Line
				}
				r.Escalate = ps.audiences(ap, what+": escalate: approvers", groups)
			}
		}
	}
	if v, ok := f["grants"]; ok {
		if b, ok := ps.boolean(v, what+": grants"); ok {
			r.NoGrants = !b
		}
	}
	return r
}

func (ps *parser) audiences(n *yaml.Node, what string, groups map[string][]string) []Audience {
	if !ps.noAlias(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		ps.errf(n, "%s must be a list of {channel:, people:, groups:} entries", what)
		return nil
	}
	var out []Audience
	seen := map[string]int{}
	for _, it := range n.Content {
		f := ps.fields(it, what, "channel", "people", "groups", "target")
		if f == nil {
			continue
		}
		cn, ok := f["channel"]
		if !ok {
			ps.errf(it, "%s: each entry needs channel:", what)
			continue
		}
		ch, ok := ps.str(cn, what+": channel")
		if !ok {
			continue
		}
		if !validName(ch) {
			ps.errf(cn, "%s: channel %q: use letters, digits, '-', '_' and '.' only", what, ch)
			continue
		}
		if line, dup := seen[ch]; dup {
			ps.errf(cn, "%s: channel %q is listed twice (first at line %d); put its people in one entry", what, ch, line)
			continue
		}
		seen[ch] = cn.Line
		a := Audience{Channel: ch, line: cn.Line}
		if v, ok := f["target"]; ok {
			a.Target, _ = ps.str(v, what+": target")
		}
		if v, ok := f["people"]; ok {
			for _, p := range ps.list(v, what+": people") {
				if strings.TrimSpace(p.Value) == "" {
					ps.errf(p, "%s: people: an empty user ID names nobody", what)
					continue
				}
				if strings.ContainsAny(p.Value, " \t,") {
					ps.errf(p, "%s: people: %q: one user ID per entry", what, p.Value)
					continue
				}
				a.People = append(a.People, p.Value)
			}
		}
		if v, ok := f["groups"]; ok {
			for _, g := range ps.list(v, what+": groups") {
				members, ok := groups[g.Value]
				if !ok {
					ps.errf(g, "%s: group %q is not defined under approver_groups:", what, g.Value)
					continue
				}
				n := 0
				for _, id := range members {
					c, user, _ := strings.Cut(id, ":")
					if c == ch {
						a.People = append(a.People, user)
						n++
					}
				}
				if n == 0 {
					ps.errf(g, "%s: group %q has nobody on channel %q", what, g.Value, ch)
				}
			}
		}
		slices.Sort(a.People)
		a.People = slices.Compact(a.People)
		out = append(out, a)
	}
	return out
}

// approverGroups parses the top-level approver_groups: name → identities
// written "channel:user".
func (ps *parser) approverGroups(n *yaml.Node) map[string][]string {
	out := map[string][]string{}
	if !ps.noAlias(n) {
		return out
	}
	if n.Kind != yaml.MappingNode {
		ps.errf(n, "approver_groups must be a mapping of group name to a list of channel:user entries")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !validName(k.Value) {
			ps.errf(k, "approver_groups: group name %q: use letters, digits, '-', '_' and '.' only", k.Value)
			continue
		}
		if _, dup := out[k.Value]; dup {
			ps.errf(k, "approver_groups: group %q appears twice", k.Value)
			continue
		}
		var ids []string
		for _, it := range ps.list(v, "approver_groups: "+k.Value) {
			c, u, ok := strings.Cut(it.Value, ":")
			if !ok || c == "" || u == "" || !validName(c) || strings.ContainsAny(u, " \t,") {
				ps.errf(it, "approver_groups: %s: %q must be channel:user (e.g. slack:U0123ABCD)", k.Value, it.Value)
				continue
			}
			ids = append(ids, it.Value)
		}
		out[k.Value] = ids
	}
	return out
}

// CheckRoutes reports every approve rule that nobody configured in dir can
// answer: a channel clawd.yaml does not configure, a channel with nobody
// to ask, or fewer people than approvals_required. Its error lists
// file:line problems like Parse's. Rules without a route use the daemon's
// default route, which the daemon checks itself.
func (p *Policy) CheckRoutes(dir Directory, def *Route) error {
	var probs []Problem
	add := func(line int, format string, args ...any) {
		probs = append(probs, Problem{File: p.file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	names := make([]string, 0, len(dir))
	for n := range dir {
		names = append(names, n)
	}
	slices.Sort(names)
	if def == nil {
		// The daemon's default route: every configured channel with its
		// own approvers (approval.Manager's default).
		def = &Route{Required: 1}
		for _, n := range names {
			def.Approvers = append(def.Approvers, Audience{Channel: n})
		}
	}
	check := func(what string, rt *Route) {
		if rt == nil {
			rt = def
		}
		if rt == nil {
			return
		}
		if rt.Approvers == nil && def != nil {
			c := *rt
			c.Approvers = def.Approvers
			rt = &c
		}
		if rt.Approvers == nil {
			return // no default route given: nothing to check against
		}
		people := map[string]bool{}
		before := len(probs)
		count := func(list []Audience, label string) {
			for _, a := range list {
				info, ok := dir[a.Channel]
				if !ok {
					add(a.line, "%s: %s: channel %q is not configured in clawd.yaml (configured: %s)", what, label, a.Channel, strings.Join(names, ", "))
					continue
				}
				who := a.People
				if len(who) == 0 {
					who = info.People
				}
				if info.Listed {
					for _, u := range a.People {
						if !slices.Contains(info.People, u) {
							add(a.line, "%s: %s: %q cannot be asked on channel %q (it can reach only %s)", what, label, u, a.Channel, strings.Join(info.People, ", "))
						}
					}
				}
				switch {
				case info.NoClicks:
					continue // shows the card; decisions come from elsewhere (links, the CLI)
				case len(who) == 0 && !info.Open:
					add(a.line, "%s: %s: nobody on channel %q can answer: name people: here or approvers: in the channel's settings", what, label, a.Channel)
				}
				for _, u := range who {
					people[a.Channel+":"+strings.ToLower(u)] = true // IDs differing only in case are one person at most
				}
				if info.Open && len(who) == 0 && !(a.Channel == "link" && rt.Required > 1) {
					people[a.Channel] = true // a signed link is nobody in particular: never one of two
				}
			}
		}
		count(rt.Approvers, "approvers")
		count(rt.Escalate, "escalate")
		if len(probs) == before && len(people) < max(rt.Required, 1) {
			add(rt.line, "%s: approvals_required is %d but only %d different people can answer", what, rt.Required, len(people))
		}
	}
	for _, s := range append([]*ruleSet{p.def}, p.sets...) {
		if s == nil {
			continue
		}
		if s.def == Approve {
			check(fmt.Sprintf("set %q: default_action approve", s.name), s.route)
		}
		for _, r := range s.rules {
			if r.action == Approve || r.readonly {
				check(fmt.Sprintf("set %q: rule %q", s.name, r.name), r.route)
			}
		}
	}
	if len(probs) > 0 {
		return &ValidationError{Problems: probs}
	}
	return nil
}
