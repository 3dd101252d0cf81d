package approval

import (
	"context"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// Attacks that held in this round, kept as regressions.
func TestAttackHeldCore(t *testing.T) {
	bg := context.Background()
	e := newEnv(t, nil)
	h := hold("a", "DELETE", "/repos/o/r")
	h.Container.Labels = map[string]string{RequesterLabel: "rec:U9"}
	h.Timeout = time.Hour
	h.Route = &policy.Route{Required: 2, NoGrants: true,
		Approvers:     []policy.Audience{{Channel: ChannelCLI}, {Channel: ChannelLink}, {Channel: "rec", People: []string{"U1", "U9"}}},
		EscalateAfter: 10 * time.Minute, Escalate: []policy.Audience{{Channel: "rec", People: []string{"U2"}}}}
	ch := async(e.m, bg, h)
	a := waitPending(t, e.m, 1)[0]
	h2 := hold("a", "DELETE", "/repos/o/r2")
	h2.Route = h.Route
	_ = async(e.m, bg, h2)
	b := waitPending(t, e.m, 2)
	other := b[0]
	if other.ID == a.ID {
		other = b[1]
	}
	dg := a.Digest[:16]
	for name, c := range map[string]struct {
		d    Decision
		want string
	}{
		"other request's digest":   {Decision{ID: a.ID, Digest: other.Digest[:16], Approve: true, Channel: "rec", User: "U1"}, ResultStale},
		"short digest":             {Decision{ID: a.ID, Digest: dg[:8], Approve: true, Channel: "rec", User: "U1"}, ResultStale},
		"no digest from a channel": {Decision{ID: a.ID, Approve: true, Channel: "rec", User: "U1"}, ResultStale},
		"escalation person early":  {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "U2"}, ResultNotApprover},
		"requester":                {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "U9"}, ResultSelf},
		"unknown channel":          {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "slack", User: "U1"}, ResultNotApprover},
		"empty user":               {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec"}, ResultNotApprover},
		"case variant":             {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "u1"}, ResultNotApprover},
		"link in two-person":       {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: ChannelLink}, ResultNotApprover},
		"grant when grants false":  {Decision{ID: a.ID, Digest: dg, Approve: true, GrantFor: GrantFor, Channel: "rec", User: "U1"}, ResultInvalid},
		"grant via api for":        {Decision{ID: a.ID, Approve: true, GrantFor: time.Hour, Channel: ChannelAPI}, ResultInvalid},
	} {
		if r := e.m.Decide(bg, c.d); r.Outcome != c.want {
			t.Errorf("%s: %s (%s), want %s", name, r.Outcome, r.Message, c.want)
		}
	}
	// cli then api: one operator.
	if r := e.m.Decide(bg, Decision{ID: a.ID, Approve: true, Channel: ChannelCLI}); r.Outcome != ResultRecorded {
		t.Fatalf("cli: %s", r.Outcome)
	}
	if r := e.m.Decide(bg, Decision{ID: a.ID, Approve: true, Channel: ChannelAPI}); r.Outcome != ResultAlready {
		t.Errorf("api after cli: %s", r.Outcome)
	}
	if r := e.m.Decide(bg, Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "U1"}); r.Outcome != ResultDecided {
		t.Fatalf("U1: %s", r.Outcome)
	}
	if out := recv(t, ch); !out.Approved {
		t.Fatalf("%+v", out)
	}
	for name, c := range map[string]struct {
		d    Decision
		want string
	}{
		"again":    {Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "U1"}, ResultAlready},
		"opposite": {Decision{ID: a.ID, Digest: dg, Channel: "rec", User: "U1"}, ResultConflict},
	} {
		if r := e.m.Decide(bg, c.d); r.Outcome != c.want {
			t.Errorf("%s: %s, want %s", name, r.Outcome, c.want)
		}
	}
	if g := e.m.ListGrants(); len(g) != 0 {
		t.Errorf("grants %+v", g)
	}
	// Timed out: approve says expired.
	e.clock.Add(2 * time.Hour)
	eventually(t, "timeout", func() bool { x, _ := e.m.Get(other.ID); return x.Status == TimedOut })
	if r := e.m.Decide(bg, Decision{ID: other.ID, Approve: true, Channel: ChannelCLI}); r.Outcome != ResultExpired {
		t.Errorf("after timeout: %s", r.Outcome)
	}
}

// Approve once, then "approve 15 min" on the decided card: no grant.
func TestAttackHeldNoGrantAfterApproval(t *testing.T) {
	bg := context.Background()
	e := newEnv(t, nil)
	h := hold("a", "POST", "/x")
	h.Route = &policy.Route{Required: 1, Approvers: []policy.Audience{{Channel: "rec", People: []string{"U1", "U2"}}}}
	ch := async(e.m, bg, h)
	a := waitPending(t, e.m, 1)[0]
	dg := a.Digest[:16]
	if r := e.m.Decide(bg, Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "rec", User: "U1"}); r.Outcome != ResultDecided {
		t.Fatal(r.Outcome)
	}
	recv(t, ch)
	for _, u := range []string{"U1", "U2"} {
		if r := e.m.Decide(bg, Decision{ID: a.ID, Digest: dg, Approve: true, GrantFor: GrantFor, Channel: "rec", User: u}); r.Outcome != ResultAlready {
			t.Errorf("%s grant after approval: %s", u, r.Outcome)
		}
	}
	if g := e.m.ListGrants(); len(g) != 0 {
		t.Errorf("grant created after the approval ended: %+v", g)
	}
}
