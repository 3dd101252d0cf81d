package approval

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/policy"
)

func cliRoute() *policy.Route {
	return &policy.Route{Approvers: []policy.Audience{{Channel: ChannelCLI}}, Required: 1}
}

// A grant is looked up before the hold's route is consulted: after the
// policy is reloaded with grants: false on the rule, a grant obtained
// under the previous generation keeps releasing its requests without
// anyone being asked.
func TestAttackGrantOutlivesGrantsFalse(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "POST", "/repos/o/r/issues")
	h.Route, h.Generation = cliRoute(), 1
	ch := async(e.m, context.Background(), h)
	id := waitPending(t, e.m, 1)[0].ID
	if _, err := decideCompat(e.m, id, true, "cli", "", 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	if out := recv(t, ch); !out.Approved {
		t.Fatalf("first: %+v", out)
	}
	// New policy generation: the rule is now judged request by request.
	h2 := hold("a", "POST", "/repos/o/r/issues")
	h2.Route = cliRoute()
	h2.Route.NoGrants = true
	h2.Generation = 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if out := e.m.Request(ctx, h2); out.Approved {
		t.Errorf("rule now has grants: false, yet the request was released by %q (%s) without a human deciding it", out.By, out.Status)
	}
}

// Same, with the rule made a two-person rule: a grant given by one
// approver under the old policy releases requests that now need two.
func TestAttackGrantOutlivesTwoPersonRule(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "DELETE", "/repos/o/r")
	h.Route, h.Generation = cliRoute(), 1
	ch := async(e.m, context.Background(), h)
	id := waitPending(t, e.m, 1)[0].ID
	if _, err := decideCompat(e.m, id, true, "cli", "", 15*time.Minute); err != nil {
		t.Fatal(err)
	}
	recv(t, ch)
	h2 := hold("a", "DELETE", "/repos/o/r")
	h2.Route = &policy.Route{Approvers: []policy.Audience{{Channel: ChannelCLI}, {Channel: "rec", People: []string{"U1"}}}, Required: 2}
	h2.Generation = 2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if out := e.m.Request(ctx, h2); out.Approved {
		t.Errorf("rule now needs 2 approvers, yet a one-person grant released it (%s by %s)", out.Status, out.By)
	}
}

// Headers are outside the digest, so two pending requests that differ
// only in headers share one approval: the card shows the first one's
// headers and the approval releases the second, whose headers
// (X-HTTP-Method-Override: DELETE, another Authorization) nobody saw.
func TestAttackDedupIgnoresHeaders(t *testing.T) {
	e := newEnv(t, nil)
	h1 := hold("a", "POST", "/repos/o/r")
	h1.Route = cliRoute()
	h2 := h1
	h2.Header = map[string][]string{"X-Http-Method-Override": {"DELETE"}, "Accept": {"application/json"}}
	c1 := async(e.m, context.Background(), h1)
	list := waitPending(t, e.m, 1)
	c2 := async(e.m, context.Background(), h2)
	waitWaiters(t, e.m, 2)
	if n := len(waitPending(t, e.m, 1)); n != 1 {
		t.Fatalf("pending %d", n)
	}
	a := list[0]
	if _, ok := a.Header["X-Http-Method-Override"]; ok {
		t.Fatalf("card shows the override")
	}
	if _, err := decideCompat(e.m, a.ID, true, "cli", "", 0); err != nil {
		t.Fatal(err)
	}
	recv(t, c1)
	if out := recv(t, c2); out.Approved {
		t.Errorf("a request with X-HTTP-Method-Override: DELETE was released by the approval of a card that showed different headers (headers are not in the digest, dedup merged them)")
	}
}

// Identity is "channel name:user". Two configured channels of the same
// platform (two Slack channels of one workspace, #ops and #sec) give the
// same person two identities: U1 approving on both satisfies a two-person
// rule, and a requester label naming one does not stop the other.
func TestAttackSamePersonTwoChannelsOfOnePlatform(t *testing.T) {
	a1, a2 := &recNotifier{name: "slack-ops"}, &recNotifier{name: "slack-sec"}
	e := newEnv(t, func(c *Config) { c.Channels = []Channel{a1, a2} })
	h := hold("a", "DELETE", "/repos/o/r")
	h.Route = &policy.Route{Required: 2, Approvers: []policy.Audience{
		{Channel: "slack-ops", People: []string{"U1", "U2"}}, {Channel: "slack-sec", People: []string{"U1", "U3"}}}}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	dg := a.Digest[:16]
	r1 := e.m.Decide(context.Background(), Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "slack-ops", User: "U1"})
	r2 := e.m.Decide(context.Background(), Decision{ID: a.ID, Digest: dg, Approve: true, Channel: "slack-sec", User: "U1"})
	if r2.Outcome == ResultDecided {
		out := recv(t, ch)
		t.Errorf("Slack user U1 alone approved a two-person rule by clicking on two clawd channels of the same workspace (%s, %s; by %q)", r1.Outcome, r2.Outcome, out.By)
	}
}

// The requester label names the operator ("cli"): the token API and the
// web page are the same operator (their votes count as "cli"), but the
// self check compares "api", so the requester approves its own request.
func TestAttackRequesterCLIViaAPI(t *testing.T) {
	e := newEnv(t, nil)
	h := hold("a", "POST", "/x")
	h.Container.Labels = map[string]string{RequesterLabel: "cli"}
	h.Route = &policy.Route{Required: 1, Approvers: []policy.Audience{{Channel: ChannelCLI}, {Channel: "rec", People: []string{"U2"}}}}
	ch := async(e.m, context.Background(), h)
	a := waitPending(t, e.m, 1)[0]
	rc := e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: true, Channel: ChannelCLI})
	if rc.Outcome != ResultSelf {
		t.Fatalf("cli: %s", rc.Outcome)
	}
	ra := e.m.Decide(context.Background(), Decision{ID: a.ID, Approve: true, Channel: ChannelAPI})
	if ra.Outcome != ResultSelf {
		out := recv(t, ch)
		t.Errorf("requester \"cli\" is refused on the socket but approves through the token API / web page (%s, released %v): api counts as cli for votes but not for the self check", ra.Outcome, out.Approved)
	}
}

// Race decisions, grants, timeout and cancel: exactly one ending, at most
// one grant, waiters all see it. (Held in our runs; kept as a regression.)
func TestAttackRaceDecideTimeoutCancel(t *testing.T) {
	for i := 0; i < 20; i++ {
		e := newEnv(t, nil)
		h := hold("a", "POST", "/race")
		h.Route = &policy.Route{Required: 2, Approvers: []policy.Audience{{Channel: ChannelCLI}, {Channel: "rec", People: []string{"U1", "U2"}}}}
		ctx, cancel := context.WithCancel(context.Background())
		c1 := async(e.m, ctx, h)
		c2 := async(e.m, context.Background(), h)
		a := waitWaiters(t, e.m, 2)[0]
		var wg sync.WaitGroup
		res := make([]Result, 6)
		for j, d := range []Decision{
			{Channel: ChannelCLI, Approve: true, GrantFor: time.Minute},
			{Channel: ChannelAPI, Approve: true, GrantFor: time.Minute},
			{Channel: "rec", User: "U1", Approve: true, GrantFor: time.Minute, Digest: a.Digest[:16]},
			{Channel: "rec", User: "U2", Approve: true, GrantFor: time.Minute, Digest: a.Digest[:16]},
			{Channel: "rec", User: "U2", Digest: a.Digest[:16]},
			{Channel: "rec", User: "U1", Approve: true, Digest: a.Digest[:16]},
		} {
			wg.Add(1)
			go func() { defer wg.Done(); d.ID = a.ID; res[j] = e.m.Decide(context.Background(), d) }()
		}
		wg.Add(2)
		go func() { defer wg.Done(); cancel() }()
		go func() { defer wg.Done(); e.clock.Add(time.Hour) }()
		wg.Wait()
		o1, o2 := recv(t, c1), recv(t, c2)
		decided := 0
		for _, r := range res {
			if r.Outcome == ResultDecided {
				decided++
			}
		}
		if decided > 1 {
			t.Errorf("round %d: %d decisions ended the same approval: %+v", i, decided, res)
		}
		if g := len(e.m.ListGrants()); g > 1 {
			t.Errorf("round %d: %d grants from one approval", i, g)
		}
		if o2.Approved && o2.Status == StatusApproved {
			got, _ := e.m.Get(a.ID)
			if len(got.Votes) < 2 {
				t.Errorf("round %d: released with %d votes", i, len(got.Votes))
			}
		}
		_ = o1
	}
}
