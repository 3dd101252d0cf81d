package ntfy

import (
	"context"
	"testing"
	"time"

	"github.com/clawd-dev/clawd/approval"
	"github.com/clawd-dev/clawd/approval/approvaltest"
	"github.com/clawd-dev/clawd/approval/ntfy/fake"
	"github.com/clawd-dev/clawd/policy"
)

// Escalation to a person on a channel the route already asks: the core
// merges bob into the ntfy audience and updates the existing card, but
// Update only republishes to the approvers in the card's ref (alice). Bob
// is never notified and never gets tokens: the escalation exists on paper
// only, and the request times out.
func TestAttackEscalationToSameChannelNeverReachesNewPerson(t *testing.T) {
	srv := fake.New()
	defer srv.Close()
	var clk func() time.Time
	ch, err := New("phone", srv.Settings(), approval.Env{StateDir: t.TempDir(), Now: func() time.Time { return clk() }})
	if err != nil {
		t.Fatal(err)
	}
	e := approvaltest.New(t, func(c *approval.Config) {
		c.Channels = []approval.Channel{ch}
		c.Approvers = map[string][]string{"phone": {"alice", "bob"}}
	})
	clk = e.Clock.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx, e.M) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()

	h := approvaltest.Hold("agent1", "PUT", "/repos/acme/api/pulls/7/merge")
	h.Timeout = time.Hour
	h.Route = &policy.Route{Required: 1,
		Approvers:     []policy.Audience{{Channel: "phone", People: []string{"alice"}}},
		EscalateAfter: 10 * time.Minute,
		Escalate:      []policy.Audience{{Channel: "phone", People: []string{"bob"}}}}
	out := approvaltest.Async(e.M, context.Background(), h)
	a := approvaltest.WaitPending(t, e.M, 1)[0]
	if _, err := srv.WaitCard(wctx, a.ID, func(m fake.Message) bool { return m.Topic == srv.Topics["alice"] }); err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(11 * time.Minute) // escalate
	approvaltest.WaitFor(t, e.M, func(l []*approval.Approval) bool {
		for _, au := range l[0].Asked {
			for _, p := range au.People {
				if p == "bob" {
					return true
				}
			}
		}
		return false
	})
	bctx, bcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer bcancel()
	if _, err := srv.WaitMessage(bctx, "bob", func(m fake.Message) bool { return len(m.Actions) > 0 }); err != nil {
		t.Errorf("after escalation bob is asked (Asked has him) but never got an ntfy card with buttons: %v", err)
	} else if _, err := srv.Click(wctx, a.ID, approval.ActApprove, "bob"); err != nil {
		t.Errorf("bob's press: %v", err)
	} else if o := approvaltest.Recv(t, out); !o.Approved {
		t.Errorf("bob's approval: %+v", o)
	}
}
