package proxy

import (
	"strings"

	"go.uber.org/zap"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/audit"
	"github.com/clawd-dev/clawd/policy"
)

// live is an open stream whose verdict was given once and which carries
// bytes without further decisions: a splice, a forwarded request (its body
// and response may stream for hours), an upgraded (WebSocket) stream.
// Recheck re-decides it on every policy reload and grant
// revocation, so an open connection never outlives the rule that allowed it.
type live struct {
	entry audit.Entry // identifies the stream in the revocation line
	// recheck decides the stream again from the facts it was decided on:
	// the new decision, and whether the stream may stay open.
	recheck func() (policy.Decision, bool)
	kill    func() // closes both sides
}

// track registers l until the returned func is called.
func (s *Server) track(l *live) func() {
	s.liveMu.Lock()
	s.live[l] = struct{}{}
	s.liveMu.Unlock()
	return func() {
		s.liveMu.Lock()
		delete(s.live, l)
		s.liveMu.Unlock()
	}
}

// Recheck re-decides every open splice and upgraded stream and closes those
// the policy (or the approvals) no longer allow, each with an audit line
// (event "revoked") saying why. The others are left untouched. why says what
// changed ("policy reloaded", "grant revoked"). It returns how many were
// closed. Streams being set up meanwhile (held, dialling) see the
// generation change in trackChecked and decide themselves again.
func (s *Server) Recheck(why string) int {
	if n, ok := s.cfg.Names.(interface{ PolicyChanged() }); ok {
		n.PolicyChanged() // names that became HTTP-level are remembered first
	}
	s.gen.Add(1)
	s.liveMu.Lock()
	ls := make([]*live, 0, len(s.live))
	for l := range s.live {
		ls = append(ls, l)
	}
	s.liveMu.Unlock()
	closed := 0
	for _, l := range ls {
		d, keep := l.recheck()
		if keep {
			continue
		}
		s.liveMu.Lock()
		_, still := s.live[l]
		delete(s.live, l)
		s.liveMu.Unlock()
		if !still {
			continue // ended meanwhile
		}
		l.kill()
		closed++
		s.revoked(l.entry, d, why)
	}
	return closed
}

// trackChecked is track for a stream decided at generation g0 (read before
// its decision): when a Recheck ran since, Recheck may have missed it, so
// it is decided again here. false: it is no longer allowed (untracked,
// audited; the caller refuses it).
func (s *Server) trackChecked(l *live, g0 uint64) (func(), bool) {
	untrack := s.track(l)
	if s.gen.Load() == g0 {
		return untrack, true
	}
	if d, keep := l.recheck(); !keep {
		untrack()
		s.revoked(l.entry, d, "the policy or approvals changed while it was being set up")
		return func() {}, false
	}
	return untrack, true
}

// revoked audits and logs a stream closed (or refused at set-up) because
// its verdict no longer holds.
func (s *Server) revoked(e audit.Entry, d policy.Decision, why string) {
	e.Time = s.cfg.Now().UTC()
	e.Event, e.Action, e.Rule = audit.EventRevoked, string(policy.Deny), d.Rule
	e.Status, e.BytesIn, e.BytesOut, e.DurationMS = 0, 0, 0, 0
	e.By, e.ApprovalID = "", ""
	e.Reason = why + ": the open connection is no longer allowed"
	if d.Reason != "" {
		e.Reason += " (" + d.Reason + ")"
	}
	s.audit.Log(e)
	s.log.Info("closed a connection the policy no longer allows", zap.String("container", e.Container),
		zap.String("dst", e.Dst), zap.String("host", e.Host), zap.String("rule", e.Rule), zap.String("why", why))
}

// GrantChecker is implemented by an Approver (*approval.Manager) that can
// say whether a grant is still in force.
type GrantChecker interface {
	GrantActive(id string) bool
}

// stillAllowed reports whether a stream first decided as was (with outcome
// out when it was held) may stay open under the new decision now.
func (s *Server) stillAllowed(was policy.Decision, out approval.Outcome, now policy.Decision) bool {
	switch now.Action {
	case policy.Allow:
		return true
	case policy.Approve:
		if !out.Approved {
			return false // allowed before, needs a human now: reconnect and ask
		}
		if id, ok := strings.CutPrefix(out.By, "grant:"); ok {
			gc, _ := s.cfg.Approver.(GrantChecker)
			return gc != nil && gc.GrantActive(id)
		}
		return now.Rule == was.Rule // a human approved it under this rule
	}
	return false
}
