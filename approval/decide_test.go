package approval

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

// routed is a hold whose rule asks the given people on channel "rec" (the
// recording test channel).
func routed(h Hold, required int, people ...string) Hold {
	h.Route = &policy.Route{Approvers: []policy.Audience{{Channel: "rec", People: people}}, Required: required}
	return h
}

func click(m *Manager, a *Approval, act, user string) Result {
	d, err := ParseButton(ButtonValue(act, a))
	if err != nil {
		panic(err)
	}
	d.Channel, d.User = "rec", user
	return m.Decide(context.Background(), d)
}

func TestDecideExactAndIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	ch := async(e.m, context.Background(), routed(hold("a", "PUT", "/repos/o/r/pulls/1/merge"), 1, "U1", "U2"))
	a := waitPending(t, e.m, 1)[0]

	// A button for another request (same ID, another digest) changes nothing.
	forged := Decision{ID: a.ID, Digest: strings.Repeat("0", 16), Approve: true, Channel: "rec", User: "U1"}
	if r := e.m.Decide(context.Background(), forged); r.Outcome != ResultStale {
		t.Fatalf("forged digest: %+v", r)
	}
	// No digest at all from a channel: refused (only the local CLI decides by ID).
	forged.Digest = ""
	if r := e.m.Decide(context.Background(), forged); r.Outcome != ResultStale {
		t.Fatalf("no digest: %+v", r)
	}
	// Someone the route does not ask, on the asked channel and on another.
	if r := click(e.m, a, ActApprove, "U3"); r.Outcome != ResultNotApprover {
		t.Fatalf("U3: %+v", r)
	}
	other := Decision{ID: a.ID, Digest: a.Digest, Approve: true, Channel: "slack", User: "U1"}
	if r := e.m.Decide(context.Background(), other); r.Outcome != ResultNotApprover {
		t.Fatalf("other channel: %+v", r)
	}
	// The local operator is not asked by this route either.
	if r := e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: true, Channel: ChannelCLI}); r.Outcome != ResultNotApprover {
		t.Fatalf("cli not on the route: %+v", r)
	}
	if got, _ := e.m.Get(a.ID); got.Status != Pending || len(got.Votes) != 0 {
		t.Fatalf("refused clicks changed the approval: %+v", got)
	}
	if n := len(e.audit.find("refused")); n != 5 {
		t.Errorf("%d refused audit lines, want 5", n)
	}

	r := click(e.m, a, ActApprove, "U1")
	if r.Outcome != ResultDecided || r.Approval.Status != Approved || r.Approval.By != "rec:U1" {
		t.Fatalf("approve: %+v", r)
	}
	if out := recv(t, ch); !out.Approved || out.By != "rec:U1" {
		t.Fatalf("outcome %+v", out)
	}
	// Again: already; the other way: conflict, nothing changes.
	if r := click(e.m, a, ActApprove, "U2"); r.Outcome != ResultAlready || !strings.Contains(r.Message, "Already approved by rec:U1") {
		t.Fatalf("again: %+v", r)
	}
	if r := click(e.m, a, ActDeny, "U2"); r.Outcome != ResultConflict || r.Approval.Status != Approved {
		t.Fatalf("opposite: %+v", r)
	}
	// A click on a timed-out approval says it expired.
	ch2 := async(e.m, context.Background(), routed(hold("a", "PUT", "/repos/o/r/pulls/2/merge"), 1, "U1"))
	b := waitPending(t, e.m, 1)[0]
	e.clock.Add(11 * time.Minute)
	if out := recv(t, ch2); out.Status != StatusTimeout {
		t.Fatalf("timeout outcome %+v", out)
	}
	if r := click(e.m, b, ActApprove, "U1"); r.Outcome != ResultExpired || !strings.Contains(r.Message, "timed out") {
		t.Fatalf("expired: %+v", r)
	}
	// The card got the expiry too.
	e.m.wait()
	_, ups, _ := e.note.snapshot()
	if last := ups[len(ups)-1]; last.ID != b.ID || last.Status != TimedOut {
		t.Fatalf("last card update %+v", last)
	}
}

func TestDecideTwoPersonRule(t *testing.T) {
	e := newEnv(t, nil)
	h := routed(hold("a", "DELETE", "/repos/o/r"), 2, "U1", "U2", "U3")
	h.Container.Labels = map[string]string{RequesterLabel: "rec:U3, slack:U9"}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if a.Required != 2 {
		t.Fatalf("required %d", a.Required)
	}
	// The requester never counts, even though the route names them.
	if r := click(e.m, a, ActApprove, "U3"); r.Outcome != ResultSelf {
		t.Fatalf("requester: %+v", r)
	}
	r := click(e.m, a, ActApprove, "U1")
	if r.Outcome != ResultRecorded || r.Approval.Status != Pending || len(r.Approval.Votes) != 1 {
		t.Fatalf("first: %+v", r)
	}
	// The same person twice does not make two.
	if r := click(e.m, a, ActApproveFor, "U1"); r.Outcome != ResultAlready {
		t.Fatalf("twice: %+v", r)
	}
	select {
	case out := <-ch:
		t.Fatalf("released after one approval: %+v", out)
	default:
	}
	// The card was updated with the first vote while pending.
	waitFor(t, e.m, func([]*Approval) bool {
		_, ups, _ := e.note.snapshot()
		return len(ups) > 0 && len(ups[len(ups)-1].Votes) == 1 && ups[len(ups)-1].Status == Pending
	})
	r = click(e.m, a, ActApprove, "U2")
	if r.Outcome != ResultDecided || r.Approval.By != "rec:U1,rec:U2" {
		t.Fatalf("second: %+v", r)
	}
	if out := recv(t, ch); !out.Approved {
		t.Fatalf("outcome %+v", out)
	}
	// One deny ends a two-person approval at once.
	ch2 := async(e.m, context.Background(), routed(hold("a", "DELETE", "/repos/o/s"), 2, "U1", "U2"))
	b := waitPending(t, e.m, 1)[0]
	click(e.m, b, ActApprove, "U1")
	if r := click(e.m, b, ActDeny, "U2"); r.Outcome != ResultDecided || r.Approval.Status != Denied {
		t.Fatalf("deny: %+v", r)
	}
	if out := recv(t, ch2); out.Approved || out.Status != StatusDenied {
		t.Fatalf("outcome %+v", out)
	}
}

func TestDecideGrantsOff(t *testing.T) {
	e := newEnv(t, nil)
	h := routed(hold("a", "PUT", "/repos/o/r/pulls/3/merge"), 1, "U1")
	h.Route.NoGrants = true
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if a.GrantsAllowed {
		t.Fatal("grants allowed")
	}
	card := &Card{Approval: a}
	for _, b := range card.Buttons() {
		if b.Act == ActApproveFor {
			t.Fatal("card offers approve-for with grants: false")
		}
	}
	if r := click(e.m, a, ActApproveFor, "U1"); r.Outcome != ResultInvalid {
		t.Fatalf("approve-for: %+v", r)
	}
	if r := click(e.m, a, ActApprove, "U1"); r.Outcome != ResultDecided || r.Approval.GrantID != "" {
		t.Fatalf("approve: %+v", r)
	}
	recv(t, ch)
	if g := e.m.ListGrants(); len(g) != 0 {
		t.Fatalf("grants %+v", g)
	}
}

func TestDecideEscalation(t *testing.T) {
	esc := &recNotifier{name: "esc"}
	e := newEnv(t, func(c *Config) { c.Channels = append(c.Channels, esc) })
	h := routed(hold("a", "PUT", "/repos/o/r/pulls/4/merge"), 1, "U1")
	h.Route.EscalateAfter = 5 * time.Minute
	h.Route.Escalate = []policy.Audience{{Channel: "esc", People: []string{"BOSS"}}, {Channel: "rec", People: []string{"U2"}}}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	escClick := func(user string) Result {
		return e.m.Decide(context.Background(), Decision{ID: a.ID, Digest: a.Digest, Approve: true, Channel: "esc", User: user})
	}
	if r := escClick("BOSS"); r.Outcome != ResultNotApprover {
		t.Fatalf("before escalation: %+v", r)
	}
	if n, _, _ := esc.snapshot(); len(n) != 0 {
		t.Fatal("escalation channel asked before the delay")
	}
	e.clock.Add(5 * time.Minute)
	waitFor(t, e.m, func([]*Approval) bool { n, _, _ := esc.snapshot(); return len(n) == 1 })
	if len(e.audit.find("escalated")) != 1 {
		t.Fatal("no escalated audit line")
	}
	// U2 joined the first channel's people; the card there was updated.
	got, _ := e.m.Get(a.ID)
	if len(got.Asked) != 2 || strings.Join(got.Asked[0].People, ",") != "U1,U2" {
		t.Fatalf("asked %+v", got.Asked)
	}
	if r := escClick("EVE"); r.Outcome != ResultNotApprover {
		t.Fatalf("EVE: %+v", r)
	}
	if r := escClick("BOSS"); r.Outcome != ResultDecided {
		t.Fatalf("BOSS: %+v", r)
	}
	if out := recv(t, ch); !out.Approved || out.By != "esc:BOSS" {
		t.Fatalf("outcome %+v", out)
	}
}

func TestButtonValues(t *testing.T) {
	a := &Approval{ID: "abcdefghijklmnopqrstuvwxyz", Digest: strings.Repeat("ab", 32), Status: Pending, GrantsAllowed: true}
	for _, b := range (&Card{Approval: a}).Buttons() {
		if len(b.Value) > 45 || len(b.Value) > 64 {
			t.Fatalf("value %q too long", b.Value)
		}
		d, err := ParseButton(b.Value)
		if err != nil || d.ID != a.ID || d.Digest != a.Digest[:16] {
			t.Fatalf("%q: %+v %v", b.Value, d, err)
		}
	}
	for _, bad := range []string{"", "a", "a:abcdefghijklmnopqrstuvwxyz", "x:abcdefghijklmnopqrstuvwxyz:abababababababab",
		"a:ABCDEFGHIJKLMNOPQRSTUVWXYZ:abababababababab", "a:abcdefghijklmnopqrstuvwxyz:ABABABABABABABAB",
		"a:abcdefghijklmnopqrstuvwxyz:abab", "a:abcdefghijklmnopqrstuvwxyz:abababababababab:x"} {
		if _, err := ParseButton(bad); err == nil {
			t.Errorf("ParseButton(%q) accepted", bad)
		}
	}
	if (&Card{Approval: &Approval{Status: Approved}}).Buttons() != nil {
		t.Fatal("decided card has buttons")
	}
}

func TestRecent(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 3; i++ {
		ch := async(e.m, context.Background(), hold("a", "PUT", "/repos/o/r/pulls/"+string(rune('1'+i))+"/merge"))
		a := waitPending(t, e.m, 1)[0]
		e.clock.Add(time.Second)
		e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: i != 1, Channel: ChannelCLI})
		recv(t, ch)
	}
	r := e.m.Recent(10)
	if len(r) != 3 || r[0].Status != Approved || r[1].Status != Denied || r[0].By != "cli" || !r[0].Decided.After(r[2].Decided) {
		t.Fatalf("recent %+v", r)
	}
	// Kept across a restart.
	e.m.Shutdown()
	m2, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Shutdown()
	if r := m2.Recent(2); len(r) != 2 || r[0].ID != e.m.Recent(1)[0].ID {
		t.Fatalf("after restart %+v", r)
	}
}

// The host operator is one person however they decide (socket or token),
// and a signed link is nobody in particular: neither makes a second
// approval of a two-person rule.
func TestDecideOperatorIsOnePerson(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "DELETE", "/repos/o/r")
	h.Route = &policy.Route{Required: 2, Approvers: []policy.Audience{{Channel: ChannelCLI}, {Channel: ChannelLink}, {Channel: "rec", People: []string{"U1"}}}}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	if r := e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: true, Channel: ChannelCLI}); r.Outcome != ResultRecorded {
		t.Fatalf("cli: %+v", r)
	}
	if r := e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: true, Channel: ChannelAPI}); r.Outcome != ResultAlready {
		t.Fatalf("api after cli: %+v", r)
	}
	if r := e.m.Decide(context.Background(), Decision{ID: a.ID, Digest: a.Digest, Approve: true, Channel: ChannelLink}); r.Outcome != ResultNotApprover {
		t.Fatalf("link as second person: %+v", r)
	}
	if r := click(e.m, a, ActApprove, "U1"); r.Outcome != ResultDecided {
		t.Fatalf("U1: %+v", r)
	}
	if out := recv(t, ch); !out.Approved || out.By != "cli,rec:U1" {
		t.Fatalf("outcome %+v", out)
	}
}
