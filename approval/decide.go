package approval

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// Built-in channels that need no package: the host operator (the CLI on
// the root-only socket, the API with its bearer token and the web page) and
// signed links (whoever holds a card's link).
const (
	ChannelCLI  = "cli" // the root-only control socket; routes name it for the host operator
	ChannelAPI  = "api" // the bearer-token API and web page: also the host operator (asked when cli is)
	ChannelLink = "link"
)

// RequesterLabel is the container label naming the people an agent acts
// for ("slack:U0123,telegram:42"): they never count as approvers of its
// requests.
const RequesterLabel = "clawd.dev/requester"

// requestDigest binds a decision to one exact request: container, method,
// URL, body (hash and size), rule, the policy generation that decided and
// the program that connected.
func requestDigest(h *Hold) string {
	// (headers included: see headerDigest)
	s := sha256.New()
	body := h.BodySHA256
	if body == "" {
		sum := sha256.Sum256(h.Body)
		body = hex.EncodeToString(sum[:])
	}
	for _, p := range []string{"clawd-approval-v2", h.Container.Key(), strings.ToUpper(h.Method), h.URL, headerDigest(h.Header), body,
		strconv.FormatInt(h.BodySize, 10), h.Rule, strconv.FormatUint(h.Generation, 10)} {
		s.Write([]byte(p))
		s.Write([]byte{0})
	}
	if k := programKey(h.Program); k != "" {
		// ident: the same request from another program is another request.
		s.Write([]byte("program\x00" + k + "\x00"))
	}
	for _, t := range h.Tools { // the body hash covers them too; named for clarity
		for _, p := range []string{"tool", t.Name, t.Args} {
			s.Write([]byte(p))
			s.Write([]byte{0})
		}
	}
	return hex.EncodeToString(s.Sum(nil))
}

// headerDigest hashes the request's headers (canonical names, sorted, all
// values in order): two requests that differ only in a header are two
// requests to decide.
func headerDigest(hd http.Header) string {
	keys := make([]string, 0, len(hd))
	for k := range hd {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := sha256.New()
	for _, k := range keys {
		for _, v := range hd[k] {
			s.Write([]byte(http.CanonicalHeaderKey(k)))
			s.Write([]byte{0})
			s.Write([]byte(v))
			s.Write([]byte{0})
		}
	}
	return hex.EncodeToString(s.Sum(nil))
}

// defaultRoute is who is asked when neither rule nor set names anyone:
// every channel with its own approvers, the host operator and links.
func (m *Manager) defaultRoute() []Audience {
	if m.cfg.DefaultRoute != nil && m.cfg.DefaultRoute.Approvers != nil {
		return m.audiences(m.cfg.DefaultRoute.Approvers)
	}
	out := []Audience{{Channel: ChannelCLI}, {Channel: ChannelLink}}
	for _, c := range m.cfg.Channels {
		out = append(out, Audience{Channel: c.Name(), People: slices.Clone(m.cfg.Approvers[c.Name()])})
	}
	return out
}

// audiences resolves a policy route's audiences: people named there, or
// the channel's own approvers.
func (m *Manager) audiences(list []policy.Audience) []Audience {
	out := make([]Audience, 0, len(list))
	for _, a := range list {
		people := slices.Clone(a.People)
		if len(people) == 0 {
			people = slices.Clone(m.cfg.Approvers[a.Channel])
		}
		out = append(out, Audience{Channel: a.Channel, People: people, Target: a.Target})
	}
	return out
}

// route fills the routing fields of a new approval from its hold.
func (m *Manager) route(a *Approval, h *Hold) (escalate []Audience, after time.Duration) {
	rt := h.Route
	if rt == nil {
		rt = m.cfg.DefaultRoute
	}
	a.Required, a.GrantsAllowed = 1, true
	if rt == nil || rt.Approvers == nil {
		a.Asked = m.defaultRoute()
	} else {
		a.Asked = m.audiences(rt.Approvers)
	}
	if rt != nil {
		if rt.Required > 1 {
			a.Required = rt.Required
		}
		a.GrantsAllowed = !rt.NoGrants
		if rt.EscalateAfter > 0 && len(rt.Escalate) > 0 {
			escalate, after = m.audiences(rt.Escalate), rt.EscalateAfter
		}
	}
	return escalate, after
}

// mergeAudiences adds more to asked, channel by channel, and returns the
// channels that were not asked before.
// mergeAudiences adds more to asked, channel by channel, and returns the
// channels that were not asked before, for the others the people newly
// asked on them, and the audiences on asked channels at another target.
func mergeAudiences(asked []Audience, more []Audience) ([]Audience, []string, map[string][]string, []Audience) {
	var added []string
	var extra []Audience
	newPeople := map[string][]string{}
	for _, x := range more {
		i := slices.IndexFunc(asked, func(a Audience) bool { return a.Channel == x.Channel })
		if i < 0 {
			asked = append(asked, Audience{Channel: x.Channel, People: slices.Clone(x.People), Target: x.Target})
			added = append(added, x.Channel)
			continue
		}
		if x.Target != asked[i].Target {
			// Another place on an asked channel: its own card there.
			extra = append(extra, Audience{Channel: x.Channel, People: slices.Clone(x.People), Target: x.Target})
		} else {
			for _, p := range x.People {
				if !slices.Contains(asked[i].People, p) {
					newPeople[x.Channel] = append(newPeople[x.Channel], p)
				}
			}
		}
		p := append(asked[i].People, x.People...)
		slices.Sort(p)
		asked[i].People = slices.Compact(p)
	}
	return asked, added, newPeople, extra
}

// eligible counts the different people who could still approve a: asked
// people (the escalation's too), minus the requesters; the host operator
// counts once, a signed link never for a two-person rule.
func (m *Manager) eligible(a *Approval, more []Audience, requesters []string) int {
	seen := map[string]bool{}
	for _, r := range requesters {
		seen[m.person(r)] = false
	}
	n := 0
	for _, au := range append(slices.Clone(a.Asked), more...) {
		var ids []string
		switch au.Channel {
		case ChannelCLI, ChannelAPI:
			ids = []string{ChannelCLI}
		case ChannelLink:
			if a.Required == 1 {
				ids = []string{ChannelLink}
			}
		default:
			for _, u := range au.People {
				ids = append(ids, Identity(au.Channel, u))
			}
		}
		for _, id := range ids {
			p := m.person(id)
			if _, done := seen[p]; !done {
				seen[p] = true
				n++
			}
		}
	}
	return n
}

// mayDecide reports whether d's person is asked for a.
func mayDecide(a *Approval, d Decision) bool {
	ch := d.Channel
	if ch == ChannelAPI {
		ch = ChannelCLI
	}
	for _, au := range a.Asked {
		if au.Channel != ch {
			continue
		}
		if ch == ChannelCLI || ch == ChannelLink {
			return true // the host operator; whoever holds a signed link
		}
		return d.User != "" && slices.Contains(au.People, d.User)
	}
	return false
}

// requesters are the identities the container acts for.
func requesters(h *Hold) []string {
	v := h.Container.Labels[RequesterLabel]
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func who(d Decision) string {
	if d.Display != "" && d.Display != d.User {
		return d.Identity() + " (" + d.Display + ")"
	}
	return d.Identity()
}

// Decide records one human's decision. It is the single entry point for
// every channel, the API, links and the web page; see Result for what can
// happen. It never approves a request its decider was not asked about, a
// request other than the one the card showed, or one that ended.
func (m *Manager) Decide(ctx context.Context, d Decision) Result {
	if !validID(d.ID) {
		return Result{Outcome: ResultNotFound, Message: "No such approval."}
	}
	if d.Channel == "" {
		return Result{Outcome: ResultInvalid, Message: "Decision without a channel."}
	}
	if d.GrantFor < 0 || d.GrantFor > m.cfg.MaxGrant || (d.GrantFor > 0 && !d.Approve) {
		return Result{Outcome: ResultInvalid, Message: fmt.Sprintf("A grant must last between 0 and %s and comes with an approval.", m.cfg.MaxGrant)}
	}
	d.Reason = truncate(strings.TrimSpace(d.Reason), 500)
	d.Display = truncate(strings.TrimSpace(d.Display), 100)
	want := Denied
	if d.Approve {
		want = Approved
	}
	if r, ok := m.forward(ctx, d); ok {
		return r
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.pending[d.ID]
	if e == nil {
		a, err := m.store.GetApproval(d.ID)
		if err != nil {
			if err == ErrNotFound {
				return Result{Outcome: ResultNotFound, Message: "No such approval."}
			}
			return Result{Outcome: ResultError, Message: "clawd could not read the approval; try again."}
		}
		return m.endedResult(a, want, d)
	}
	a := e.a
	if !digestMatches(a.Digest, d.Digest, d.Channel) {
		m.refused(a, d, ResultStale)
		return Result{Outcome: ResultStale, Message: "This card is not for the request now waiting; nothing changed.", Approval: a.clone()}
	}
	if !mayDecide(a, d) {
		m.refused(a, d, ResultNotApprover)
		return Result{Outcome: ResultNotApprover, Message: "You are not asked to decide this request; nothing changed.", Approval: a.clone()}
	}
	if slices.ContainsFunc(e.requesters, func(r string) bool { return m.person(r) == m.person(d.Identity()) }) {
		m.refused(a, d, ResultSelf)
		return Result{Outcome: ResultSelf, Message: "This request was made on your behalf: someone else must decide it.", Approval: a.clone()}
	}
	if !d.Approve {
		reason := d.Reason
		if reason == "" {
			reason = "denied by " + who(d)
		}
		m.finishLocked(e, Denied, Outcome{Status: StatusDenied, ID: d.ID, By: d.Identity(), Reason: reason}, d.Identity(), reason)
		return Result{Outcome: ResultDecided, Message: "Denied: the request was refused.", Approval: e.a.clone()}
	}
	if d.GrantFor > 0 && !a.GrantsAllowed {
		return Result{Outcome: ResultInvalid, Message: fmt.Sprintf("Rule %q is judged request by request: approve once or deny.", a.Rule), Approval: a.clone()}
	}
	id := d.Identity()
	if a.Required > 1 && d.Channel == ChannelLink {
		m.refused(a, d, ResultNotApprover)
		return Result{Outcome: ResultNotApprover, Message: fmt.Sprintf("Rule %q needs %d named approvers; a signed link cannot count as one.", a.Rule, a.Required), Approval: a.clone()}
	}
	if slices.ContainsFunc(a.Votes, func(v Vote) bool { return m.person(v.By) == m.person(id) }) {
		return Result{Outcome: ResultAlready, Message: fmt.Sprintf("You already approved; %d of %d approvals so far.", len(a.Votes), a.Required), Approval: a.clone()}
	}
	now := m.now().UTC()
	// Cards show who voted by identity (Vote.Label), never only by the
	// name the voter chose on their platform.
	a.Votes = append(a.Votes, Vote{By: id, Display: d.Display, At: now})
	if len(a.Votes) == 1 || d.GrantFor < e.grantFor {
		e.grantFor = d.GrantFor // a grant needs every approver to ask for one
	}
	if len(a.Votes) < a.Required {
		if err := m.store.PutApproval(a); err != nil {
			a.Votes = a.Votes[:len(a.Votes)-1]
			return Result{Outcome: ResultError, Message: "clawd could not record the approval; try again.", Approval: a.clone()}
		}
		m.audit.Log(audit.Entry{
			Time: now, Event: audit.EventApproval, Action: ResultRecorded, By: id, ApprovalID: a.ID, Rule: a.Rule,
			Container: a.Container.Name, ContainerID: a.Container.ID, Runtime: a.Container.Runtime,
			Method: a.Method, Host: a.Host, Path: a.Path,
			Reason: fmt.Sprintf("%d of %d approvals", len(a.Votes), a.Required),
		})
		m.bumpLocked()
		e.cardsChanged()
		return Result{Outcome: ResultRecorded, Message: fmt.Sprintf("Approval %d of %d recorded; waiting for someone else.", len(a.Votes), a.Required), Approval: a.clone()}
	}
	by := voters(a.Votes)
	reason := d.Reason
	if e.grantFor > 0 {
		g := &Grant{
			ID: newID(), ContainerKey: a.Container.Key(), Container: a.Container.Name,
			Rule: a.Rule, Host: a.Host, Method: a.Method, Path: a.Path, PathSHA256: pathHash(e.rawPath),
			Created: now, Expires: now.Add(e.grantFor), By: by, ApprovalID: a.ID,
			Program: e.program,
		}
		if err := m.store.PutGrant(g); err != nil {
			a.Votes = a.Votes[:len(a.Votes)-1]
			return Result{Outcome: ResultError, Message: "clawd could not store the grant; try again.", Approval: a.clone()}
		}
		m.grants[g.ID] = g
		m.met.grants.Set(float64(len(m.grants)))
		a.GrantID = g.ID
		if reason == "" {
			reason = "approved for " + e.grantFor.String()
		}
		m.audit.Log(audit.Entry{
			Time: now, Event: audit.EventGrant, Action: audit.ActionCreated, By: by, ApprovalID: a.ID, Rule: g.Rule,
			Container: g.Container, Method: g.Method, Host: g.Host, Path: a.Path,
			Reason: "until " + g.Expires.Format(time.RFC3339),
		})
	}
	m.finishLocked(e, Approved, Outcome{Approved: true, Status: StatusApproved, ID: a.ID, By: by, Reason: reason}, by, reason)
	msg := "Approved: the request is released."
	if a.GrantID != "" {
		msg = fmt.Sprintf("Approved: the request is released, and matching requests for %s.", e.grantFor)
	}
	return Result{Outcome: ResultDecided, Message: msg, Approval: e.a.clone()}
}

// forward passes d to the host holding its approval when that is not this
// one and the store is shared (Forwarder); that host's Decide judges it.
func (m *Manager) forward(ctx context.Context, d Decision) (Result, bool) {
	f, shared := m.store.(Forwarder)
	if !shared {
		return Result{}, false
	}
	m.mu.Lock()
	_, here := m.pending[d.ID]
	m.mu.Unlock()
	if here {
		return Result{}, false
	}
	return f.Forward(ctx, d)
}

// digestMatches: a click must carry (a prefix of at least 16 digits of) the
// digest of the request its card showed; the local operator may decide by
// ID alone.
func digestMatches(full, got, channel string) bool {
	if got == "" {
		return channel == ChannelCLI || channel == ChannelAPI
	}
	return len(got) >= digestShown && strings.HasPrefix(full, got)
}

// person is who an identity ("channel:user") is: the socket and the token
// are the same host operator, and one user ID on two channels of one
// platform is one person.
func (m *Manager) person(id string) string {
	if id == ChannelAPI {
		return ChannelCLI
	}
	ch, user, ok := strings.Cut(id, ":")
	if p, known := m.cfg.Platforms[ch]; known && ok {
		return "platform:" + p + ":" + user
	}
	return id
}

func voters(vs []Vote) string {
	ids := make([]string, len(vs))
	for i, v := range vs {
		ids[i] = v.By
	}
	return strings.Join(ids, ",")
}

// endedResult answers a decision on an approval that is no longer pending:
// the same decision again is "already", the other one a conflict, and an
// approval that timed out, was cancelled or expired says so.
func (m *Manager) endedResult(a *Approval, want string, d Decision) Result {
	switch {
	case a.Status == want && want == Approved:
		return Result{Outcome: ResultAlready, Message: "Already approved by " + a.By + ".", Approval: a}
	case a.Status == want:
		return Result{Outcome: ResultAlready, Message: "Already denied by " + a.By + ".", Approval: a}
	case a.Status == Approved || a.Status == Denied:
		return Result{Outcome: ResultConflict, Message: fmt.Sprintf("Already %s by %s; your decision was not applied.", a.Status, a.By), Approval: a}
	}
	what := map[string]string{TimedOut: "timed out", Cancelled: "was cancelled (the agent went away)", Expired: "expired when clawd restarted"}[a.Status]
	if what == "" {
		what = "ended (" + a.Status + ")"
	}
	return Result{Outcome: ResultExpired, Message: "This request " + what + "; nothing was sent and your decision was not applied.", Approval: a}
}

// refused audits a click that changed nothing because of who made it or
// what it was for.
func (m *Manager) refused(a *Approval, d Decision, why string) {
	m.audit.Log(audit.Entry{
		Time: m.now().UTC(), Event: audit.EventApproval, Action: "refused", By: d.Identity(), Reason: why,
		ApprovalID: a.ID, Rule: a.Rule, Container: a.Container.Name, ContainerID: a.Container.ID,
		Runtime: a.Container.Runtime, Method: a.Method, Host: a.Host, Path: a.Path,
	})
}

// escalate asks the escalation route too, once, if e is still pending.
func (m *Manager) escalate(e *entry, more []Audience) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending[e.a.ID] != e {
		return
	}
	var added []string
	var newPeople map[string][]string
	var extra []Audience
	e.a.Asked, added, newPeople, extra = mergeAudiences(e.a.Asked, more)
	e.a.EscalateAt = time.Time{}
	if err := m.store.PutApproval(e.a); err != nil {
		m.log.Warn("persist escalation: " + err.Error())
	}
	m.audit.Log(audit.Entry{
		Time: m.now().UTC(), Event: audit.EventApproval, Action: "escalated", ApprovalID: e.a.ID, Rule: e.a.Rule,
		Container: e.a.Container.Name, Method: e.a.Method, Host: e.a.Host, Path: e.a.Path,
		Reason: "asked " + strings.Join(audienceNames(more), ", "),
	})
	m.bumpLocked()
	e.cardsChanged()
	for _, name := range added {
		if c := m.channel(name); c != nil {
			m.wg.Add(1)
			m.postLocked(c, e)
		}
	}
	// Channels that message each person (e-mail, ntfy, WhatsApp) post a
	// card of its own to the people the escalation added; the others
	// show them on the card they already have (the Update above).
	for _, au := range extra {
		if c := m.channel(au.Channel); c != nil {
			snap := m.cardFor(au.Channel, e.a)
			snap.People, snap.Target = au.People, au.Target
			m.wg.Add(1)
			go m.card(c, e, snap, e.changed, fmt.Sprintf("%s#%d", au.Channel, len(e.a.Refs)+len(extra)))
		}
	}
	for name, people := range newPeople {
		if c := m.channel(name); c != nil {
			if p, ok := c.(Personal); ok && p.Personal() {
				snap := m.cardFor(name, e.a)
				snap.People = people
				m.wg.Add(1)
				go m.card(c, e, snap, e.changed, fmt.Sprintf("%s#%d", name, len(e.a.Refs)))
			}
		}
	}
}

func audienceNames(l []Audience) []string {
	out := make([]string, len(l))
	for i, a := range l {
		out[i] = a.Channel
	}
	return out
}

// channel is the channel this Manager posts name's cards on (nil: none,
// or they are posted elsewhere, Config.CardsElsewhere).
func (m *Manager) channel(name string) Channel {
	if m.cfg.CardsElsewhere[name] {
		return nil
	}
	for _, c := range m.cfg.Channels {
		if c.Name() == name {
			return c
		}
	}
	return nil
}
